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

import yaml

from inversecoder.builders import stages
from inversecoder.builders.backends import CachedModel, make_backend
from inversecoder.builders.cache import ResultCache
from inversecoder.builders.dataset import write_dataset_folder
from inversecoder.builders.rows import Rejected
from inversecoder.builders.sources import load_source
from inversecoder.config import RunConfig

PACKAGES = ("inversecoder", "torch", "transformers", "datasets", "huggingface_hub", "trl", "evalplus")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


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


def _decontaminate(config: RunConfig, pairs, source_rows, log):
    """Check generated pairs and source pairs; returns clean lists, rejections and the report rows."""
    if not config.decontaminate.enabled:
        return pairs, source_rows, [], [], {"enabled": False}
    from inversecoder.builders.decontaminate import Decontaminator

    checker = Decontaminator(config.decontaminate, config.benchmarks_dir, cache_dir(config) / "benchmarks")
    rejected, report = [], []

    def screen(items, where, text_of):
        clean = []
        for item in items:
            match = checker.check(text_of(item))
            if match is None:
                clean.append(item)
                continue
            rejected.append(Rejected(f"decontaminate-{where}", match.describe(), item.source_index, item.row_id, match.text))
            report.append({"where": where, "row_id": item.row_id, "source_index": item.source_index,
                           "task_id": match.task_id, "layer": match.layer, "field": match.field})
        return clean

    pairs = screen(pairs, "generated", lambda p: p.instruction + "\n" + p.response)
    source_rows = screen(source_rows, "original", lambda r: r.instruction + "\n" + r.response)
    log(f"decontaminate: {len(report)} rows matched {checker.task_count} benchmark tasks")
    summary = {"enabled": True, "ngram": config.decontaminate.ngram, "benchmarks": config.decontaminate.benchmarks,
               "tasks": checker.task_count, "versions": "; ".join(f"{k} {v}" for k, v in checker.versions.items())}
    return pairs, source_rows, rejected, report, summary


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
    clean_pairs, clean_sources, decon_rejected, contamination, decon_summary = _decontaminate(config, pairs, source.rows, log)

    rejected = source.rejected + extract_rejected + summarize_rejected + score_rejected + select_rejected + decon_rejected
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
    counts = {
        "source rows read": source.info["rows_read"],
        "usable source rows": len(source.rows),
        "code snippets extracted": len(snippets),
        "candidates generated": len(candidates),
        "candidates scored": sum(c.score is not None for c in candidates),
        "pairs selected": len(pairs),
        "generated pairs removed by decontamination": len(pairs) - len(clean_pairs),
        "source pairs removed by decontamination": len(source.rows) - len(clean_sources),
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
        "config_fingerprint": config.fingerprint("source", "generator", "summarize", "decontaminate", "seed"),
        "generator": {"model": info.model, "revision": info.revision, "backend": info.backend},
        "source": source.info | {"revision": config.source.revision},
        "built_at": started.strftime("%Y-%m-%d %H:%M UTC"),
        "versions": package_versions(),
        "num_samples": config.summarize.num_samples,
        "summarize": config.summarize,
        "answer_tokens": answer_tokens,
        "seed": config.seed,
        "counts": counts,
        "decontamination": decon_summary,
        "contamination": contamination,
    }
    dataset_dir = config.output / "dataset"
    build_config = yaml.safe_dump(config.to_dict(), sort_keys=False)
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
