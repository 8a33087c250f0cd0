"""Step 6: greedy pass@1 on HumanEval+ / MBPP+ with the paper's prompts and evalplus's own checker.

Why not `evalplus.evaluate.evaluate()`: it insists on every task of the dataset (no quick runs), always
sleeps ~20 s in a stall-checker thread, and prints instead of returning. We call the same building
blocks it does (`get_groundtruth`, `check_correctness`, `estimate_pass_at_k`), so a full run scores
exactly as `evalplus.evaluate --samples {name}_samples.jsonl` would.

Prompts follow Magicoder/InverseCoder's text2code: HumanEval instructs with the stripped problem
prompt and pre-fills the response with it; MBPP+ takes the description and the assertion from the
problem's docstring (a '.' appended to the description when missing) and pre-fills "```python".
Generation stops at the closing fence.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inversecoder.builders import prompts
from inversecoder.builders.backends.base import CachedModel, GenerationRequest, SamplingParams
from inversecoder.eval.benchmarks import BENCHMARK_NAMES, Benchmark, load_benchmark
from inversecoder.errors import UserError

if TYPE_CHECKING:
    from inversecoder.config import EvalConfig

FENCE = "```"
CODE_FENCE = "```python"
#: MBPP's response prefix, as in Magicoder's text2code and the paper (no newline after the tag).
MBPP_RESPONSE_PREFIX = CODE_FENCE


@dataclass(frozen=True)
class EvalTask:
    """One benchmark problem as the model sees it; `prefill_code` is the code already written in the
    response, so solution = prefill_code + completion."""

    task_id: str
    instruction: str
    prompt: str  # the full Magicoder prompt, pre-filled response included
    prefill_code: str


# -- prompts ----------------------------------------------------------------------------------------
def humaneval_task(problem: dict[str, Any]) -> EvalTask:
    """The model continues the function it was shown, inside an open ```python block."""
    code = problem["prompt"].strip()
    instruction = prompts.humaneval_instruction(code)
    prompt = prompts.magicoder_prompt(instruction, f"{CODE_FENCE}\n{code}")
    return EvalTask(problem["task_id"], instruction, prompt, code)


def mbpp_text_and_assertion(problem: dict[str, Any]) -> tuple[str, str]:
    """Split the MBPP+ docstring prompt into its description and its (single) assert line.

    The docstring's assertion, not the first line of the `assertion` field: they differ for 19 tasks
    (e.g. Mbpp/2 wraps both sides in set()), and upstream prompts use the docstring's.
    """
    source = problem["prompt"]
    body = source[source.index('"""') + 3 : source.rindex('"""')]
    split = body.index("assert")
    text = body[:split].strip()
    if not text.endswith("."):
        text += "."
    return text, body[split:].strip()


def mbpp_task(problem: dict[str, Any]) -> EvalTask:
    """The model writes the whole program after an opening ```python fence."""
    instruction = prompts.mbpp_instruction(*mbpp_text_and_assertion(problem))
    prompt = prompts.magicoder_prompt(instruction, MBPP_RESPONSE_PREFIX)
    return EvalTask(problem["task_id"], instruction, prompt, "")


def build_tasks(benchmark: Benchmark, limit: int | None = None) -> list[EvalTask]:
    """The paper's prompts for the first `limit` problems (all when None), in dataset order."""
    make = humaneval_task if benchmark.name == "humaneval" else mbpp_task
    problems = list(benchmark.problems.values())
    return [make(problem) for problem in (problems if limit is None else problems[:limit])]


def prompt_templates() -> dict[str, Any]:
    """The templates with placeholders, rendered by the same functions the prompts go through."""
    return {
        "format": prompts.magicoder_prompt("{instruction}", "{response_prefix}"),
        "humaneval": {
            "instruction": prompts.humaneval_instruction("{prompt}"),
            "response_prefix": f"{CODE_FENCE}\n{{prompt}}",
            "prompt": "problem['prompt'].strip()",
        },
        "mbpp": {
            "instruction": prompts.mbpp_instruction("{text}", "{assertion}"),
            "response_prefix": MBPP_RESPONSE_PREFIX,
            "text": "the docstring's description (a '.' appended when missing)",
            "assertion": "the docstring's assert line",
        },
    }


# -- generation -------------------------------------------------------------------------------------
def greedy_params(max_new_tokens: int) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens, stop=(FENCE,))


def _cut_at_fence(text: str) -> str:
    """Backends that return the stop string (or ignore stops) still yield just the code."""
    index = text.find(FENCE)
    return text if index == -1 else text[:index]


def generate_solutions(
    model: CachedModel, tasks: Sequence[EvalTask], max_new_tokens: int, desc: str = "evaluate"
) -> list[dict[str, Any]]:
    """One greedy completion per task, as evalplus samples (plus our raw fields)."""
    requests = [GenerationRequest(task.prompt, seed=0) for task in tasks]
    completions = model.generate(requests, greedy_params(max_new_tokens), desc=desc)
    samples = []
    for task, completion in zip(tasks, completions):
        failed = completion.error is not None or completion.text is None
        raw = completion.text or ""
        samples.append(
            {
                "task_id": task.task_id,
                "solution": "" if failed else task.prefill_code + _cut_at_fence(raw),
                "raw_completion": raw,
                "finish_reason": completion.finish_reason,
                "error": completion.error if failed else None,
            }
        )
    return samples


# -- checking ---------------------------------------------------------------------------------------
def groundtruth_hash(benchmark: Benchmark, task_ids: Iterable[str]) -> str:
    """The ground-truth cache key: the dataset hash for the whole dataset, a derived one for a subset,
    so a partial ground truth is never stored where `evalplus.evaluate` looks for the full one."""
    wanted = sorted(set(task_ids))
    if set(wanted) == set(benchmark.problems):
        return benchmark.hash
    digest = hashlib.sha256("\n".join(wanted).encode()).hexdigest()[:12]
    return f"{benchmark.hash}-{digest}"


def expected_outputs(benchmark: Benchmark, task_ids: Iterable[str]) -> dict[str, Any]:
    """evalplus's oracle (canonical solutions run in-process, timed), cached under its own hash."""
    from evalplus.eval._special_oracle import MBPP_OUTPUT_NOT_NONE_TASKS
    from evalplus.evaluate import get_groundtruth

    wanted = set(task_ids)
    problems = {tid: problem for tid, problem in benchmark.problems.items() if tid in wanted}
    not_none = MBPP_OUTPUT_NOT_NONE_TASKS if benchmark.name == "mbpp" else []
    return get_groundtruth(problems, groundtruth_hash(benchmark, problems), not_none)


def _outcome(result: dict[str, Any]) -> dict[str, Any]:
    from evalplus.eval import PASS

    base_status, base_details = result["base"]
    plus_status, plus_details = result["plus"]
    return {
        "base_status": base_status,
        "plus_status": plus_status,
        "passed_base": base_status == PASS,
        "passed_plus": base_status == PASS and plus_status == PASS,  # evalplus's "+" counts both
        # evalplus stops at the first failing input: these count the inputs passed before it
        "base_tests_passed": int(sum(base_details)),
        "plus_tests_passed": int(sum(plus_details)),
    }


def _run_checks(
    benchmark: Benchmark, samples: Sequence[dict[str, Any]], expected: dict[str, Any],
    parallel: int, min_time_limit: float, gt_time_limit_factor: float,
) -> list[dict[str, Any]]:
    """Every sample through `check_correctness`; threads suffice, each check forks its own process."""
    from evalplus.evaluate import check_correctness

    def check(index: int) -> dict[str, Any]:
        sample = samples[index]
        problem = benchmark.problems[sample["task_id"]]
        return check_correctness(
            benchmark.name, index, problem, sample["solution"], expected[sample["task_id"]],
            base_only=False, fast_check=True, identifier=str(index),
            min_time_limit=min_time_limit, gt_time_limit_factor=gt_time_limit_factor,
        )

    workers = max(1, min(parallel or os.cpu_count() or 1, len(samples)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(check, range(len(samples))))


def pass_at_k(tasks: dict[str, dict[str, Any]], ks: Sequence[int] = (1, 10, 100)) -> dict[str, dict[str, float]]:
    """evalplus's unbiased estimator, averaged over tasks; pass@k only where every task has >= k samples."""
    import numpy as np
    from evalplus.eval import estimate_pass_at_k

    total = np.array([t["n"] for t in tasks.values()])
    base = np.array([t["n_passed_base"] for t in tasks.values()])
    plus = np.array([t["n_passed_plus"] for t in tasks.values()])
    return {
        f"pass@{k}": {
            "base": float(estimate_pass_at_k(total, base, k).mean()),
            "plus": float(estimate_pass_at_k(total, plus, k).mean()),
        }
        for k in ks
        if len(total) and total.min() >= k
    }


def _task_outcomes(benchmark: Benchmark, per_sample: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per task, in dataset order: the first sample's outcome, the pass counts, all samples if n > 1."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for outcome in per_sample:
        grouped.setdefault(outcome["task_id"], []).append(outcome)
    tasks = {}
    for task_id in (tid for tid in benchmark.problems if tid in grouped):
        outcomes = [{k: v for k, v in o.items() if k != "task_id"} for o in grouped[task_id]]
        entry = {key: outcomes[0][key] for key in ("base_status", "plus_status", "passed_base", "passed_plus")}
        entry |= {
            "n": len(outcomes),
            "n_passed_base": sum(o["passed_base"] for o in outcomes),
            "n_passed_plus": sum(o["passed_plus"] for o in outcomes),
        }
        if len(outcomes) > 1:
            entry["samples"] = outcomes
        tasks[task_id] = entry
    return tasks


def check_solutions(
    benchmark: Benchmark,
    samples: Sequence[dict[str, Any]],
    parallel: int = 0,
    min_time_limit: float = 1.0,
    gt_time_limit_factor: float = 4.0,
) -> dict[str, Any]:
    """Run evalplus's base and plus tests on every sample (any number per task).

    Returns {"tasks": {task_id: outcome}, "samples": [per-sample outcome], "pass@1": {"base", "plus"},
    ...}; only the tasks present in `samples` are scored.
    """
    unknown = sorted({s["task_id"] for s in samples} - set(benchmark.problems))
    if unknown:
        raise UserError(f"{len(unknown)} sample task ids are not in {BENCHMARK_NAMES[benchmark.name]}: {unknown[:5]}")
    if not samples:
        return {"tasks": {}, "samples": [], "pass@1": {"base": 0.0, "plus": 0.0}, "groundtruth_hash": None}
    task_ids = {s["task_id"] for s in samples}
    expected = expected_outputs(benchmark, task_ids)
    results = _run_checks(benchmark, samples, expected, parallel, min_time_limit, gt_time_limit_factor)
    per_sample = [{"task_id": sample["task_id"], **_outcome(result)} for sample, result in zip(samples, results)]
    tasks = _task_outcomes(benchmark, per_sample)
    return {"tasks": tasks, "samples": per_sample, **pass_at_k(tasks), "groundtruth_hash": groundtruth_hash(benchmark, task_ids)}


# -- the whole step ---------------------------------------------------------------------------------
def write_json_atomic(path: Path, data: Any) -> None:
    """Readers see the old file or the new one, never half of one."""
    _write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_jsonl_atomic(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    _write_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    return {name: _version(name) for name in ("evalplus", "transformers", "torch", "inversecoder")}


def evaluate_benchmark(
    model: CachedModel, benchmark: Benchmark, config: "EvalConfig", output_dir: Path
) -> dict[str, Any]:
    """Generate, check and write one benchmark's samples and raw results; returns its summary."""
    tasks = build_tasks(benchmark, config.limit)
    samples = generate_solutions(model, tasks, config.max_new_tokens, desc=f"evaluate {benchmark.name}")
    checked = check_solutions(benchmark, samples, config.parallel, config.min_time_limit, config.gt_time_limit_factor)
    write_jsonl_atomic(output_dir / f"{benchmark.name}_samples.jsonl", samples)
    raw = [{**sample, **outcome} for sample, outcome in zip(samples, checked["samples"])]
    write_json_atomic(
        output_dir / f"{benchmark.name}_raw_results.json",
        {"hash": benchmark.hash, "groundtruth_hash": checked["groundtruth_hash"], "tasks": checked["tasks"], "samples": raw},
    )
    summary = {
        "dataset": BENCHMARK_NAMES[benchmark.name],
        "version": benchmark.version,
        "hash": benchmark.hash,
        "n_tasks": len(tasks),
        "n_tasks_total": len(benchmark.problems),
        "limit": config.limit,
        "pass@1": checked["pass@1"],
        "generation_errors": sum(s["error"] is not None for s in samples),
        "tasks": checked["tasks"],
    }
    print(
        f"{summary['dataset']} {benchmark.version} ({len(tasks)}/{len(benchmark.problems)} tasks): "
        f"pass@1 base {summary['pass@1']['base']:.3f}, plus {summary['pass@1']['plus']:.3f}"
    )
    return summary


def evaluate_model(
    model: CachedModel, config: "EvalConfig", benchmarks_dir: str | None, cache_dir: Path, output_dir: Path
) -> dict[str, Any]:
    """Every benchmark in `config.benchmarks`; writes {name}_samples.jsonl, {name}_raw_results.json and
    eval_results.json (scores + the settings and versions that produced them) under `output_dir`."""
    output_dir = Path(output_dir)
    results: dict[str, Any] = {"benchmarks": {}}
    for name in config.benchmarks:
        benchmark = load_benchmark(name, benchmarks_dir, Path(cache_dir))
        results["benchmarks"][name] = evaluate_benchmark(model, benchmark, config, output_dir)
    params = greedy_params(config.max_new_tokens)
    results["settings"] = {
        "prompt_templates": prompt_templates(),
        "decoding": {"greedy": True, "max_new_tokens": params.max_new_tokens, "stop": list(params.stop), "n_samples": 1},
        "checker": {"min_time_limit": config.min_time_limit, "gt_time_limit_factor": config.gt_time_limit_factor},
        "backend": dataclasses.asdict(model.info()),
    }
    results["versions"] = versions()
    write_json_atomic(output_dir / "eval_results.json", results)
    return results
