"""Step 4 as two stages: the source rows before anything is generated from them, the pairs after selection.

With `decontaminate.original` (the default), the source rows are screened first (`screen_sources_stage`):
a contaminated one leaves the `original` config and nothing is generated from it (its code answers a
benchmark task; a summary of it can paraphrase the task in words no layer catches). The selected pairs
are then screened on their own (`decontaminate_stage`): their new instructions can paraphrase a task
too, and without `original` (the paper's setting: the corpus as it is) theirs is the only screening.
A removed pair takes its snippet's K candidates out of the `candidates` config with it. With
`action: report` nothing is removed: contaminated rows stay and are listed, a pair whose source row
matched under layer `source row`. `original_action: report` with `action: remove` (the paper's setting,
`fidelity: paper`) keeps the corpus as it is but lists its contaminated rows; their pairs are listed under
`source row` too, and screened on their own like every other pair (removed only on their own evidence).
Every flagged row gets one `contamination` row per task it matched (tier, rank, similarity, tests passed or
P(Yes)); a removed one also gets one `Rejected` record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from inversecoder.builders.cascade import Cascade
from inversecoder.builders.decontaminate import (
    REPORT_LAYERS,
    SOURCE_ROW,
    TIER_OF_LAYER,
    TIERS,
    Decontaminator,
    summarize_report,
)
from inversecoder.builders.stage import StageContext, StageResult
from inversecoder.core.data import DOWNLOAD
from inversecoder.core.rows import Rejected

GENERATED_REMOVED = "generated pairs removed by decontamination"
ORIGINAL_REMOVED = "source pairs removed by decontamination"
GENERATED_FLAGGED = "generated pairs flagged by decontamination"
ORIGINAL_FLAGGED = "source pairs flagged by decontamination"
#: groups of the contamination config: the source rows' matches, then the pairs of those rows, then the others
ORIGINAL, INHERITED, GENERATED = "contamination:0", "contamination:1", "contamination:2"


def original_row(row) -> dict[str, Any]:
    return {
        "instruction": row.instruction,
        "response": row.response,
        "row_id": row.row_id,
        "source_index": row.source_index,
    }


@dataclass
class Screen:
    """The cascade, built once per build, and the (where, row, task, layer, score) of every match so far (no
    evidence text): what the card's per-task and per-tier tables are made from."""

    cascade: Cascade
    remove: bool = True
    matches: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self):
        self.checker: Decontaminator = self.cascade.checker
        self.benchmark_of = {task.task_id: task.benchmark for task in self.checker.tasks}

    def close(self) -> None:
        self.cascade.close()

    def screen(
        self,
        items,
        where: str,
        candidate_id,
        rejected: list,
        report: list,
        flagged: dict | None = None,
        remove: bool | None = None,
    ):
        """The items to keep (all of them when not removing: `remove`, default `self.remove`); a flagged item's
        rejection (when removed) and report rows go to `rejected` / `report`, its matches to `flagged`."""
        remove = self.remove if remove is None else remove
        kept = []
        results = self.cascade.check_rows([(item.instruction, item.response) for item in items])
        for item, matches in zip(items, results, strict=True):
            if matches:
                if flagged is not None:
                    flagged[item.row_id] = matches
                self.record(item, where, candidate_id(item), matches, rejected, report, remove=remove)
                if not remove:
                    kept.append(item)
            else:
                kept.append(item)
        return kept

    def record(
        self,
        item,
        where: str,
        candidate_id,
        matches,
        rejected: list,
        report: list,
        inherited: bool = False,
        remove: bool | None = None,
    ) -> None:
        best = matches[0]
        if self.remove if remove is None else remove:
            reason = f"its source row had a {best.describe()}" if inherited else best.describe()
            rejected.append(Rejected(f"decontaminate-{where}", reason, item.source_index, item.row_id, best.text))
        for match in matches:
            layer = SOURCE_ROW if inherited else match.layer
            row = {
                "where": where,
                "row_id": item.row_id,
                "source_index": item.source_index,
                "candidate_id": candidate_id,
                "task_id": match.task_id,
                "benchmark": self.benchmark_of[match.task_id],
                "tier": match.tier,
                "layer": layer,
                "field": match.field,
                "score": match.score,
                "rank": match.rank,
                "similarity": match.similarity,
                "tests_passed": match.tests_passed,
                "tests_total": match.tests_total,
                "p_yes": match.p_yes,
                "evidence": match.text,
            }
            report.append(row)
            self.matches.append(
                {key: row[key] for key in ("where", "row_id", "task_id", "benchmark", "tier", "layer", "score")}
            )


def open_screen(config, context: StageContext) -> Screen:
    """The build's `Screen` (the benchmarks are indexed on first use). The judge is the generator M unless
    `decontaminate.judge_model` names one; where there is no model yet (step 0's data), no judge."""
    if "decontaminate" not in context.state:
        settings = config.decontaminate
        checker = Decontaminator(
            settings, config.benchmarks_dir, context.layout.benchmark_cache, embedding_cache=context.layout.embeddings
        )
        judge = context.model
        if settings.judge and settings.judge_model is not None and checker.embedder is not None:
            from inversecoder.core.backends import open_model

            judge = open_model(config, model=settings.judge_model, progress=context.progress)
            context.other_models.append(judge)
        cascade = Cascade(
            checker,
            settings,
            context.layout,
            judge,
            progress=context.progress,
            benchmark_source=(config.benchmarks_dir, context.layout.benchmark_cache),
            sandbox_hidden=[
                str(context.layout.benchmark_cache),
                *([config.benchmarks_dir] if config.benchmarks_dir not in (None, DOWNLOAD) else []),
            ],
        )
        if judge is not context.model:
            cascade.owned.append(judge)  # closed with the cascade
        context.state["decontaminate"] = Screen(cascade, remove=settings.action == "remove")
    return context.state["decontaminate"]


def screens_sources(config) -> bool:
    return config.decontaminate.enabled and config.decontaminate.original


def screen_sources(rows, config, context: StageContext) -> StageResult:
    """The source rows alone (the generator's and stage 2's training data): kept are the clean ones (all under
    `action: report`). `context.contaminated` then holds this shard's flagged rows only (a row's pairs are in
    its shard), so it never grows."""
    context.contaminated.clear()
    rows = list(rows)
    if not screens_sources(config):
        return StageResult(rows, [], {ORIGINAL_REMOVED: 0, ORIGINAL_FLAGGED: 0})
    screen = open_screen(config, context)
    rejected: list[Rejected] = []
    report: list[dict[str, Any]] = []
    remove = config.decontaminate.source_action == "remove"
    kept = screen.screen(rows, "original", lambda r: None, rejected, report, context.contaminated, remove=remove)
    counts = {ORIGINAL_REMOVED: len(rows) - len(kept), ORIGINAL_FLAGGED: len(context.contaminated)}
    return StageResult(kept, rejected, counts, tables={ORIGINAL: report})


def screen_sources_stage(rows, config, context: StageContext) -> StageResult:
    """Before extraction: the kept source rows go on to be summarized, and are the `original` config's rows."""
    result = screen_sources(rows, config, context)
    kept = list(result.kept)
    return StageResult(
        kept, result.rejected, result.report, dict(result.tables) | {"original": [original_row(r) for r in kept]}
    )


def decontaminate_stage(pairs, config, context: StageContext) -> StageResult:
    """The shard's selected pairs; kept are the clean ones (all under `action: report`). Writes the shard's
    `candidates` (from the select stage, `context.candidates`) without those of removed pairs, and leaves
    those in `context.candidates` for the preferences stage."""
    pairs = list(pairs)
    candidates = context.candidates
    if not config.decontaminate.enabled:
        return StageResult(pairs, [], {GENERATED_REMOVED: 0, GENERATED_FLAGGED: 0}, {"candidates": candidates})
    screen = open_screen(config, context)
    rejected: list[Rejected] = []
    inherited_report: list[dict[str, Any]] = []
    generated_report: list[dict[str, Any]] = []
    # Only where source rows are reported (`original_action` or `action: report`) does a flagged row have pairs.
    # They are listed through their source row; removing pairs (`action: remove`) screens them on their own too.
    own_screen = screen.remove
    for pair in pairs:
        if pair.row_id in context.contaminated:
            matches = context.contaminated[pair.row_id]
            screen.record(
                pair, "generated", pair.candidate_id, matches, rejected, inherited_report, inherited=True, remove=False
            )
    flagged: dict[str, Any] = {}
    kept = screen.screen(
        [p for p in pairs if own_screen or p.row_id not in context.contaminated],
        "generated",
        lambda p: p.candidate_id,
        rejected,
        generated_report,
        flagged,
    )
    if not own_screen:
        kept += [p for p in pairs if p.row_id in context.contaminated]  # flagged through their source, kept
    kept.sort(key=lambda p: (p.source_index, p.row_id))
    if screen.remove:
        removed = set(flagged)
        candidates = [c for c in candidates if c["row_id"] not in removed]
        context.candidates = candidates
    tables = {"candidates": candidates, INHERITED: inherited_report, GENERATED: generated_report}
    inherited = {row["row_id"] for row in inherited_report}
    context.flagged = set(flagged) | inherited  # (removed ones are gone anyway)
    report = {GENERATED_REMOVED: len(pairs) - len(kept), GENERATED_FLAGGED: len(set(flagged) | inherited)}
    return StageResult(kept, rejected, report, tables)


def layer_counts(matches: list[dict]) -> list[dict]:
    """Flagged rows per layer and tier (a row counts once, under its strongest match) and where they were."""
    strongest: dict[tuple[str, str], str] = {}
    for row in matches:
        key = (row["where"], row["row_id"])
        if key not in strongest or REPORT_LAYERS.index(row["layer"]) < REPORT_LAYERS.index(strongest[key]):
            strongest[key] = row["layer"]
    return [
        {
            "tier": TIER_OF_LAYER.get(layer, SOURCE_ROW),
            "layer": layer,
            "generated": sum(1 for (w, _), best in strongest.items() if best == layer and w == "generated"),
            "original": sum(1 for (w, _), best in strongest.items() if best == layer and w == "original"),
        }
        for layer in REPORT_LAYERS
    ]


def decontaminate_summary(config, context: StageContext, counts: dict[str, int]) -> dict[str, Any]:
    """The card's decontamination section (settings, benchmark versions, what each tier did, per-task and
    per-layer tables, the measured recall and precision)."""
    from inversecoder.builders.embeddings import EMBEDDING_MODEL, EMBEDDING_PACKAGE, SCREEN_MARGIN
    from inversecoder.core.data import DECONTAMINATION_QUALITY, read_quality

    settings = config.decontaminate
    if not settings.enabled:
        return {"enabled": False, "by_task": [], "by_layer": layer_counts([])}
    screen = open_screen(config, context)
    checker, cascade = screen.checker, screen.cascade
    flagged_generated, flagged_original = counts.get(GENERATED_FLAGGED, 0), counts.get(ORIGINAL_FLAGGED, 0)
    embedded = ""
    if checker.embedder is not None:
        embedded = f"; {checker.embedder.computed} embeddings computed ({checker.embedder.runtime})"
        if checker.embedder.approximate:
            embedded += f", {checker.rescored} rows near the threshold re-scored in fp32"
    done = cascade.counts
    verb = "removed" if screen.remove else "flagged (kept: action report)"
    if screen.remove and settings.source_action == "report":
        verb = "flagged (source rows kept: original_action report; generated pairs removed)"
    context.logger.info(
        f"decontaminate: {flagged_generated + flagged_original} rows {verb}, {len(screen.matches)} (row, task) "
        f"matches against {checker.task_count} benchmark tasks{embedded}"
        + (
            f"; cascade: {done.candidates} candidates, {done.executed} executed in {done.sandbox_runs} sandboxed "
            f"runs ({done.executions_cached} verdicts cached), {done.judged} judged"
            if cascade.enabled
            else ""
        )
    )
    layers = ["substring", f"word {settings.ngram}-gram"]
    if settings.code:
        layers.append(
            f"code (identifier-normalized 5-token shingles, containment >= {settings.code_threshold}, "
            f"solutions >= {settings.code_min_tokens} tokens)"
        )
    if settings.semantic:
        assert checker.embedder is not None  # the checker embeds whenever the semantic layer is on
        layers.append(
            f"semantic ({EMBEDDING_MODEL} from `{EMBEDDING_PACKAGE}` {checker.embedder.version}, "
            f"cosine >= {settings.semantic_threshold}, first {settings.semantic_max_tokens} tokens"
            + (
                f"; int8 screen, rows within {SCREEN_MARGIN} of the threshold scored in fp32"
                if checker.embedder.approximate
                else ""
            )
            + ")"
        )
    return {
        "enabled": True,
        "action": settings.action,
        "original": settings.original,
        "original_action": settings.source_action,
        "ngram": settings.ngram,
        "benchmarks": list(settings.benchmarks),
        "tasks": checker.task_count,
        "versions": "; ".join(f"{k} {v}" for k, v in checker.versions.items()),
        "layers": layers,
        "cascade": cascade.summary(),
        "removed_generated": counts.get(GENERATED_REMOVED, 0),
        "removed_original": counts.get(ORIGINAL_REMOVED, 0),
        "flagged_generated": flagged_generated,
        "flagged_original": flagged_original,
        "quality": read_quality(DECONTAMINATION_QUALITY),
        "by_task": summarize_report(screen.matches),
        "by_layer": layer_counts(screen.matches),
        "by_tier": tier_counts(screen.matches),
    }


def tier_counts(matches: list[dict]) -> list[dict]:
    """Flagged rows per tier (under their strongest match), as `layer_counts` per layer."""
    by_layer = layer_counts(matches)
    return [
        {
            "tier": tier,
            "generated": sum(row["generated"] for row in by_layer if row["tier"] == tier),
            "original": sum(row["original"] for row in by_layer if row["tier"] == tier),
        }
        for tier in (*TIERS, SOURCE_ROW)
    ]
