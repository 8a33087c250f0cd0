"""Step 6: HumanEval+ / MBPP+ with the paper's prompts, scored with evalplus's checker in our sandbox.

Two ways in: `evaluate_model` generates (greedy pass@1, or n sampled solutions per task for
pass@k) and scores; `score_samples_file` scores pre-generated samples in EvalPlus's format
(`task_id` + `solution` or `completion`, any subset of tasks), so a published samples file can be
rescored and compared with `evalplus.evaluate` directly.

The prompts and the decoding are in `inversecoder.eval.generation`, the checking and the scores in
`inversecoder.eval.scoring`; this module runs the step and writes its files.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import logging
import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inversecoder.core import checker
from inversecoder.core.backends.base import CachedModel
from inversecoder.core.benchmarks import BENCHMARK_NAMES, Benchmark, load_benchmark
from inversecoder.core.data import DOWNLOAD
from inversecoder.core.errors import UserError
from inversecoder.core.files import file_sha256, write_atomic, write_json
from inversecoder.core.groundtruth import open_sandbox
from inversecoder.core.layout import EVAL_RESULTS
from inversecoder.core.sandbox import Sandbox
from inversecoder.core.versions import version
from inversecoder.eval.generation import Decoding, build_tasks, generate_solutions, prompt_templates
from inversecoder.eval.scoring import check_solutions

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from inversecoder.core.config import EvalConfig


def versions() -> dict[str, str | None]:
    found = {name: version(name) for name in ("evalplus", "transformers", "torch", "numpy", "inversecoder")}
    return found | {"python": platform.python_version()}


def _summary(benchmark: Benchmark, checked: dict[str, Any], n_tasks: int, limit: int | None) -> dict[str, Any]:
    counts = [task["n"] for task in checked["tasks"].values()] or [0]
    return {
        "dataset": BENCHMARK_NAMES[benchmark.name],
        "version": benchmark.version,
        "hash": benchmark.hash,
        "n_tasks": n_tasks,
        "n_tasks_total": len(benchmark.problems),
        "limit": limit,
        "subset": n_tasks < len(benchmark.problems),
        "samples_per_task": min(counts) if min(counts) == max(counts) else [min(counts), max(counts)],
        **{key: value for key, value in checked.items() if key.startswith("pass@")},
        "tasks": checked["tasks"],
    }


def _write_benchmark_files(
    output_dir: Path,
    benchmark: Benchmark,
    samples: Sequence[dict[str, Any]],
    checked: dict[str, Any],
    write_samples: bool = True,
) -> None:
    if write_samples:
        write_atomic(
            output_dir / f"{benchmark.name}_samples.jsonl",
            "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in samples),
        )
    raw = [{**sample, **outcome} for sample, outcome in zip(samples, checked["samples"], strict=True)]
    write_json(
        output_dir / f"{benchmark.name}_raw_results.json",
        {
            "hash": benchmark.hash,
            "groundtruth_hash": checked["groundtruth_hash"],
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
            "tasks": checked["tasks"],
            "samples": raw,
            "eval": checked["eval"],
        },
    )


def _print_summary(summary: dict[str, Any]) -> None:
    scores = ", ".join(
        f"{key} base {value['base']:.3f}, plus {value['plus']:.3f}"
        for key, value in summary.items()
        if key.startswith("pass@")
    )
    logger.info(
        f"{summary['dataset']} {summary['version']} ({summary['n_tasks']}/{summary['n_tasks_total']} tasks): {scores}"
    )


# -- the whole step ---------------------------------------------------------------------------------
def _decoding_from(config: EvalConfig, **overrides: Any) -> Decoding:
    """The decoding settings: explicit arguments, else the config's fields (when it has them)."""
    fields = {"n_samples": 1, "temperature": 0.0, "top_p": 1.0, "seed": 0}
    values: dict[str, Any] = {
        name: overrides[name] if overrides.get(name) is not None else getattr(config, name, default)
        for name, default in fields.items()
    }
    return Decoding(max_new_tokens=config.max_new_tokens, **values)


def evaluate_benchmark(
    model: CachedModel,
    benchmark: Benchmark,
    config: EvalConfig,
    output_dir: Path,
    sandbox: Sandbox | None = None,
    decoding: Decoding | None = None,
) -> dict[str, Any]:
    """Generate, check and write one benchmark's samples and raw results; returns its summary."""
    decoding = decoding or _decoding_from(config)
    tasks = build_tasks(benchmark, config.limit)
    samples = generate_solutions(
        model, tasks, config.max_new_tokens, desc=f"evaluate {benchmark.name}", decoding=decoding
    )
    checked = check_solutions(
        benchmark,
        samples,
        config.parallel,
        config.min_time_limit,
        config.gt_time_limit_factor,
        sandbox=sandbox,
        fix_humaneval_32=getattr(config, "fix_humaneval_32", True),
    )
    _write_benchmark_files(output_dir, benchmark, samples, checked)
    summary = _summary(benchmark, checked, len(tasks), config.limit)
    summary["generation_errors"] = sum(s["error"] is not None for s in samples)
    summary["sandbox_errors"] = checked["sandbox_errors"]
    summary["checker"] = checked["checker"]
    _print_summary(summary)
    return summary


def evaluate_model(
    model: CachedModel,
    config: EvalConfig,
    benchmarks_dir: str | None,
    cache_dir: Path,
    output_dir: Path,
    *,
    n_samples: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    isolation: str | None = None,
    require_isolation: bool | None = None,
    allow_weak_sandbox: bool | None = None,
) -> dict[str, Any]:
    """Every benchmark in `config.benchmarks`; writes {name}_samples.jsonl, {name}_raw_results.json and
    eval_results.json (scores, per-task outcomes, and the settings and versions that produced them)
    under `output_dir`. Keyword arguments override the config's decoding/sandbox fields."""
    output_dir = Path(output_dir)
    decoding = _decoding_from(config, n_samples=n_samples, temperature=temperature, top_p=top_p, seed=seed)
    results: dict[str, Any] = {"benchmarks": {}}
    configured_isolation: str = getattr(config, "sandbox", "auto")
    with open_sandbox(
        config.parallel,
        isolation=isolation or configured_isolation,
        require_isolation=require_isolation
        if require_isolation is not None
        else getattr(config, "require_isolation", False),
        allow_weak_sandbox=allow_weak_sandbox
        if allow_weak_sandbox is not None
        else getattr(config, "allow_weak_sandbox", False),
        hidden=[Path(cache_dir), *([benchmarks_dir] if benchmarks_dir not in (None, DOWNLOAD) else [])],
    ) as sandbox:
        for name in config.benchmarks:
            benchmark = load_benchmark(name, benchmarks_dir, Path(cache_dir))
            results["benchmarks"][name] = evaluate_benchmark(model, benchmark, config, output_dir, sandbox, decoding)
        sandbox_info = sandbox.info
    results["settings"] = {
        "prompt_templates": prompt_templates(),
        "decoding": decoding.record(),
        "checker": {
            "min_time_limit": config.min_time_limit,
            "gt_time_limit_factor": config.gt_time_limit_factor,
            "fixes": sorted({f for b in results["benchmarks"].values() for f in b["checker"]["fixes"]}),
        },
        "sandbox": sandbox_info,
        "backend": dataclasses.asdict(model.info()),
    }
    results["versions"] = versions()
    write_json(output_dir / EVAL_RESULTS, results)
    return results


# -- pre-generated samples --------------------------------------------------------------------------
def read_samples(path: Path, benchmark: Benchmark) -> list[dict[str, Any]]:
    """EvalPlus's samples format: one JSON object a line with `task_id` and `solution` (the whole
    program) or `completion` (appended to the task's prompt, as evalplus does). .jsonl or .jsonl.gz."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        raise UserError(f"samples file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read samples file {path}: {error}") from None
    samples, unknown = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserError(f"{path}:{number}: not JSON ({error.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("task_id"), str):
            raise UserError(f"{path}:{number}: expected an object with a string task_id")
        code = row.get("solution", row.get("completion"))
        if not isinstance(code, str):
            raise UserError(f"{path}:{number}: needs a string 'solution' or 'completion'")
        problem = benchmark.problems.get(row["task_id"])
        if problem is None:
            unknown.append(row["task_id"])
            continue
        solution = row["solution"] if "solution" in row else problem["prompt"] + row["completion"]
        samples.append({"task_id": row["task_id"], "solution": solution, "line": number})
    if unknown:
        raise UserError(
            f"{path}: {len(unknown)} task ids are not in {BENCHMARK_NAMES[benchmark.name]} {benchmark.version} "
            f"(wrong --benchmark?): {sorted(set(unknown))[:5]}"
        )
    if not samples:
        raise UserError(f"{path}: no samples")
    return samples


def score_samples_file(
    samples_path: Path,
    benchmark: str,
    benchmarks_dir: str | None,
    cache_dir: Path,
    output_dir: Path,
    parallel: int = 0,
    *,
    min_time_limit: float = checker.DEFAULT_MIN_TIME_LIMIT,
    gt_time_limit_factor: float = checker.DEFAULT_GT_TIME_LIMIT_FACTOR,
    fix_humaneval_32: bool = True,
    isolation: str = "auto",
    require_isolation: bool = False,
    allow_weak_sandbox: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """`inversecoder evaluate --samples FILE --benchmark humaneval|mbpp`: score pre-generated samples.

    Any subset of tasks and any number of samples per task (pass@k for every k <= the smallest
    count among 1, 10, 100). Writes `output_dir/eval_results.json` (as `evaluate_model` does, with the
    samples file and its sha256 in place of prompts and decoding) and `{benchmark}_raw_results.json`
    (per-sample outcomes and evalplus's "eval" format); returns the eval_results dict.
    """
    samples_path, output_dir = Path(samples_path), Path(output_dir)
    loaded = load_benchmark(benchmark, benchmarks_dir, Path(cache_dir))
    samples = read_samples(samples_path, loaded)
    checked = check_solutions(
        loaded,
        samples,
        parallel,
        min_time_limit,
        gt_time_limit_factor,
        fix_humaneval_32=fix_humaneval_32,
        isolation=isolation,
        require_isolation=require_isolation,
        allow_weak_sandbox=allow_weak_sandbox,
        progress=progress,
    )
    _write_benchmark_files(output_dir, loaded, samples, checked, write_samples=False)
    summary = _summary(loaded, checked, len(checked["tasks"]), None)
    summary["sandbox_errors"] = checked["sandbox_errors"]
    summary["checker"] = checked["checker"]
    _print_summary(summary)
    results = {
        "benchmarks": {benchmark: summary},
        "settings": {
            "samples": {
                "path": str(samples_path.resolve()),
                "sha256": file_sha256(samples_path),
                "n_samples": len(samples),
            },
            "decoding": None,  # not known: the samples were generated elsewhere
            "checker": {
                "min_time_limit": min_time_limit,
                "gt_time_limit_factor": gt_time_limit_factor,
                "fixes": checked["checker"]["fixes"],
            },
            "sandbox": checked["sandbox"],
        },
        "versions": versions(),
    }
    write_json(output_dir / EVAL_RESULTS, results)
    return results
