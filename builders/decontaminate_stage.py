"""Step 4 as a stage: the shard's source rows and generated pairs against the benchmarks.

The source rows are screened first: a contaminated one leaves the `original` config, and every pair
generated from it goes too, whatever its new instruction says (its code answers that task; a summary
of it can paraphrase the task in words no layer catches): layer `source row` in the report. The
remaining pairs are screened on their own. Each removed row gets one `Rejected` record and one
`contamination` row per benchmark task it matched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from inversecoder.builders.decontaminate import REPORT_LAYERS, SOURCE_ROW, Decontaminator, summarize_report
from inversecoder.builders.stage import StageContext, StageResult
from inversecoder.core.rows import Rejected

GENERATED_REMOVED = "generated pairs removed by decontamination"
ORIGINAL_REMOVED = "source pairs removed by decontamination"
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
    """The benchmark index, built once per build, and the (where, row, task, layer, score) of every match
    so far (no evidence text): what the card's per-task and per-layer tables are made from."""

    checker: Decontaminator
    matches: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self):
        self.benchmark_of = {task.task_id: task.benchmark for task in self.checker.tasks}

    def screen(
        self, items, where: str, candidate_id, progress: bool, rejected: list, report: list, flagged: dict | None = None
    ) -> list:
        """The clean items; a flagged item's rejection and report rows go to `rejected` / `report`."""
        clean = []
        results = self.checker.check_rows([(item.instruction, item.response) for item in items], progress=progress)
        for item, matches in zip(items, results, strict=True):
            if matches:
                if flagged is not None:
                    flagged[item.row_id] = matches
                self.remove(item, where, candidate_id(item), matches, rejected, report)
            else:
                clean.append(item)
        return clean

    def remove(
        self, item, where: str, candidate_id, matches, rejected: list, report: list, inherited: bool = False
    ) -> None:
        best = matches[0]
        reason = f"its source row had a {best.describe()}" if inherited else best.describe()
        rejected.append(Rejected(f"decontaminate-{where}", reason, item.source_index, item.row_id, best.text))
        for match in matches:
            row = {
                "where": where,
                "row_id": item.row_id,
                "source_index": item.source_index,
                "candidate_id": candidate_id,
                "task_id": match.task_id,
                "benchmark": self.benchmark_of[match.task_id],
                "layer": SOURCE_ROW if inherited else match.layer,
                "field": match.field,
                "score": match.score,
                "evidence": match.text,
            }
            report.append(row)
            self.matches.append(
                {key: row[key] for key in ("where", "row_id", "task_id", "benchmark", "layer", "score")}
            )


def open_screen(config, context: StageContext) -> Screen:
    """The build's `Screen` (the benchmarks are indexed on first use)."""
    if "decontaminate" not in context.state:
        checker = Decontaminator(
            config.decontaminate,
            config.benchmarks_dir,
            context.layout.benchmark_cache,
            embedding_cache=context.layout.embeddings,
        )
        context.state["decontaminate"] = Screen(checker)
    return context.state["decontaminate"]


def screen_sources(rows, config, context: StageContext) -> StageResult:
    """The source rows alone (the generator's training data): kept are the clean ones. `context.contaminated`
    then holds this shard's contaminated rows only (a row's pairs are in its shard), so it never grows."""
    context.contaminated.clear()
    if not config.decontaminate.enabled:
        return StageResult(list(rows), [], {ORIGINAL_REMOVED: 0})
    screen = open_screen(config, context)
    rejected: list[Rejected] = []
    report: list[dict[str, Any]] = []
    clean = screen.screen(
        list(rows), "original", lambda r: None, context.progress, rejected, report, context.contaminated
    )
    return StageResult(clean, rejected, {ORIGINAL_REMOVED: len(rejected)}, tables={ORIGINAL: report})


def decontaminate_stage(pairs, config, context: StageContext) -> StageResult:
    """The shard's source rows (`context.sources`) and its selected pairs; kept are the clean pairs, and the
    clean source rows are the `original` config's rows."""
    pairs = list(pairs)
    sources = screen_sources(context.sources, config, context)
    tables = dict(sources.tables) | {"original": [original_row(r) for r in sources.kept]}
    if not config.decontaminate.enabled:
        return StageResult(pairs, [], {GENERATED_REMOVED: 0, ORIGINAL_REMOVED: 0}, tables)
    screen = open_screen(config, context)
    rejected = list(sources.rejected)
    inherited_report: list[dict[str, Any]] = []
    generated_report: list[dict[str, Any]] = []
    for pair in pairs:
        if pair.row_id in context.contaminated:
            screen.remove(
                pair,
                "generated",
                pair.candidate_id,
                context.contaminated[pair.row_id],
                rejected,
                inherited_report,
                inherited=True,
            )
    clean = screen.screen(
        [p for p in pairs if p.row_id not in context.contaminated],
        "generated",
        lambda p: p.candidate_id,
        context.progress,
        rejected,
        generated_report,
    )
    tables |= {INHERITED: inherited_report, GENERATED: generated_report}
    report = {GENERATED_REMOVED: len(pairs) - len(clean), **sources.report}
    return StageResult(clean, rejected, report, tables)


def layer_counts(matches: list[dict]) -> list[dict]:
    """Removed rows per layer (a row counts once, under its strongest match) and where they were."""
    strongest: dict[tuple[str, str], str] = {}
    for row in matches:
        key = (row["where"], row["row_id"])
        if key not in strongest or REPORT_LAYERS.index(row["layer"]) < REPORT_LAYERS.index(strongest[key]):
            strongest[key] = row["layer"]
    return [
        {
            "layer": layer,
            "generated": sum(1 for (w, _), best in strongest.items() if best == layer and w == "generated"),
            "original": sum(1 for (w, _), best in strongest.items() if best == layer and w == "original"),
        }
        for layer in REPORT_LAYERS
    ]


def decontaminate_summary(config, context: StageContext, counts: dict[str, int]) -> dict[str, Any]:
    """The card's decontamination section (settings, benchmark versions, per-task and per-layer tables)."""
    from inversecoder.builders.embeddings import EMBEDDING_MODEL, EMBEDDING_PACKAGE, SCREEN_MARGIN

    if not config.decontaminate.enabled:
        return {"enabled": False, "by_task": [], "by_layer": layer_counts([])}
    settings = config.decontaminate
    screen = open_screen(config, context)
    checker = screen.checker
    removed_generated, removed_original = counts.get(GENERATED_REMOVED, 0), counts.get(ORIGINAL_REMOVED, 0)
    embedded = ""
    if checker.embedder is not None:
        embedded = f"; {checker.embedder.computed} embeddings computed ({checker.embedder.runtime})"
        if checker.embedder.approximate:
            embedded += f", {checker.rescored} rows near the threshold re-scored in fp32"
    context.logger.info(
        f"decontaminate: {removed_generated + removed_original} rows removed, {len(screen.matches)} (row, task) "
        f"matches against {checker.task_count} benchmark tasks{embedded}"
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
        "ngram": settings.ngram,
        "benchmarks": list(settings.benchmarks),
        "tasks": checker.task_count,
        "versions": "; ".join(f"{k} {v}" for k, v in checker.versions.items()),
        "layers": layers,
        "removed_generated": removed_generated,
        "removed_original": removed_original,
        "by_task": summarize_report(screen.matches),
        "by_layer": layer_counts(screen.matches),
    }
