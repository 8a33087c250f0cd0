"""Checking solutions with evalplus's checker in our sandbox: ground truth, verdicts, pass@k.

Scoring is evalplus 0.3.1's, step for step: the ground truth is its canonical solutions run with its
`trusted_exec` (timed; the time limits derive from it), each program is judged by its
`unsafe_execute`'s comparison (output comparison, atol, special oracles; in this process, on the
outputs the sandboxed program returned as data: see `checker.py`), statuses and pass@k are its own
(`estimate_pass_at_k`: the unbiased estimator; the "+" score needs base and plus tests). What
differs, and is recorded in eval_results.json:
- each program runs in `inversecoder.core.sandbox` (no network, read-only file system, own uid and
  PID namespace, clean environment, resource limits) instead of a bare forked process;
- HumanEval/32's checker bug is fixed (see `checker.py`): canonical solutions score 164/164, not 163
  (`fix_humaneval_32=False` restores evalplus's behaviour);
- no fixed waits: `evalplus.evaluate` always sleeps ~20 s in a stall-checker thread, and recomputes
  the ground truth of any dataset file it has not seen; ours is cached per task subset (written
  atomically: a killed run never leaves a truncated cache) and reused by the full dataset's hash,
  the same file `evalplus.evaluate` reads;
- subsets are fine (evalplus insists on every task), and nothing prints unless asked.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from inversecoder.core import checker
from inversecoder.core.benchmarks import BENCHMARK_NAMES, Benchmark
from inversecoder.core.errors import UserError
from inversecoder.core.groundtruth import expected_outputs, groundtruth_hash, open_sandbox
from inversecoder.core.sandbox import Limits, Sandbox

logger = logging.getLogger(__name__)


def _outcome(result: dict[str, Any]) -> dict[str, Any]:
    base_status, base_details = result["base"]
    plus_status, plus_details = result["plus"]
    return {
        "base_status": base_status,
        "plus_status": plus_status,
        "passed_base": base_status == checker.PASS,
        "passed_plus": base_status == checker.PASS and plus_status == checker.PASS,  # evalplus's "+" needs both
        # evalplus stops at the first failing input: these count the inputs passed before it
        "base_tests_passed": int(sum(base_details)),
        "plus_tests_passed": int(sum(plus_details)),
    }


def _run_checks(
    benchmark: Benchmark,
    samples: Sequence[dict[str, Any]],
    expected: dict[str, Any],
    sandbox: Sandbox,
    min_time_limit: float,
    gt_time_limit_factor: float,
    fix_humaneval_32: bool,
    progress: bool,
) -> list[dict[str, Any]]:
    """Every sample through `checker.check_correctness`; one thread per sandbox worker."""
    from tqdm.auto import tqdm

    completion_ids: dict[str, int] = {}
    jobs = []
    for index, sample in enumerate(samples):
        completion_ids[sample["task_id"]] = completion_ids.get(sample["task_id"], -1) + 1
        jobs.append((index, completion_ids[sample["task_id"]]))

    # each task's expected outputs, encoded and hashed once for all its samples (the judge's side)
    expectations = {
        task_id: {
            suite: checker.expectation(expected[task_id][suite], benchmark.problems[task_id][f"{suite}_input"])
            for suite in ("base", "plus")
        }
        for task_id in dict.fromkeys(sample["task_id"] for sample in samples)
    }

    def check(job: tuple[int, int]) -> dict[str, Any]:
        index, completion_id = job
        sample = samples[index]
        return checker.check_correctness(
            sandbox,
            benchmark.name,
            completion_id,
            benchmark.problems[sample["task_id"]],
            sample["solution"] or "",
            expected[sample["task_id"]],
            base_only=False,
            fast_check=True,
            identifier=str(index),
            min_time_limit=min_time_limit,
            gt_time_limit_factor=gt_time_limit_factor,
            fix_find_zero=fix_humaneval_32,
            expectations=expectations[sample["task_id"]],
        )

    workers = max(1, min(sandbox.workers, len(samples)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(check, jobs)
        bar = tqdm(
            results,
            total=len(jobs),
            desc=f"check {benchmark.name}",
            unit="sample",
            disable=not progress,
            dynamic_ncols=True,
        )
        return list(bar)


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


def evalplus_eval_section(benchmark: Benchmark, results: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The "eval" part of evalplus's `*_eval_results.json` (fast-check mode: the one failing input),
    so our per-sample results diff directly against `evalplus.evaluate`'s."""
    from evalplus.data.mbpp import mbpp_serialize_inputs

    def failed(status: str, details: list[int], inputs: list[Any]) -> list[Any]:
        if status == checker.PASS or not details:
            return []
        return [inputs[len(details) - 1]]

    section: dict[str, list[dict[str, Any]]] = {}
    for result in sorted(results, key=lambda r: (r["task_id"], r["completion_id"])):
        problem = benchmark.problems[result["task_id"]]
        (base_status, base_details), (plus_status, plus_details) = result["base"], result["plus"]
        base = failed(base_status, base_details, problem["base_input"])
        plus = failed(plus_status, plus_details, problem["plus_input"])
        if benchmark.name == "mbpp":
            base, plus = mbpp_serialize_inputs(result["task_id"], base), mbpp_serialize_inputs(result["task_id"], plus)
        section.setdefault(result["task_id"], []).append(
            {
                "task_id": result["task_id"],
                "solution": result["solution"],
                "base_status": result["base"][0],
                "plus_status": result["plus"][0],
                "base_fail_tests": base,
                "plus_fail_tests": plus,
            }
        )
    return {task_id: section[task_id] for task_id in benchmark.problems if task_id in section}


def check_solutions(
    benchmark: Benchmark,
    samples: Sequence[dict[str, Any]],
    parallel: int = 0,
    min_time_limit: float = checker.DEFAULT_MIN_TIME_LIMIT,
    gt_time_limit_factor: float = checker.DEFAULT_GT_TIME_LIMIT_FACTOR,
    *,
    sandbox: Sandbox | None = None,
    fix_humaneval_32: bool = True,
    limits: Limits | None = None,
    isolation: str = "auto",
    require_isolation: bool = False,
    allow_weak_sandbox: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Run evalplus's base and plus tests on every sample (any number per task), each in the sandbox.

    Returns {"tasks": {task_id: outcome}, "samples": [per-sample outcome], "pass@1": {"base", "plus"}
    (and pass@10 / pass@100 when every task has that many samples), "eval": evalplus's per-sample
    format, "groundtruth_hash", "checker": settings, "sandbox": what the programs ran under,
    "seconds"}; only the tasks present in `samples` are scored. Pass `sandbox` to reuse one (else one
    is started with `parallel` workers, `limits`, `isolation`, `require_isolation` and
    `allow_weak_sandbox`).
    """
    unknown = sorted({s["task_id"] for s in samples} - set(benchmark.problems))
    if unknown:
        raise UserError(f"{len(unknown)} sample task ids are not in {BENCHMARK_NAMES[benchmark.name]}: {unknown[:5]}")
    settings = checker_settings(benchmark, min_time_limit, gt_time_limit_factor, fix_humaneval_32)
    if not samples:
        return {
            "tasks": {},
            "samples": [],
            "pass@1": {"base": 0.0, "plus": 0.0},
            "eval": {},
            "groundtruth_hash": None,
            "checker": settings,
            "sandbox": None,
            "sandbox_errors": 0,
            "seconds": 0.0,
        }
    start = time.monotonic()
    task_ids = {s["task_id"] for s in samples}
    expected = expected_outputs(benchmark, task_ids)
    owned = sandbox is None
    sandbox = sandbox or open_sandbox(
        parallel, limits, isolation, require_isolation, allow_weak_sandbox, hidden=[Path(benchmark.path).parent]
    )
    errors_before = sandbox.errors
    try:
        results = _run_checks(
            benchmark, samples, expected, sandbox, min_time_limit, gt_time_limit_factor, fix_humaneval_32, progress
        )
        info = sandbox.info
        errors = sandbox.errors - errors_before
    finally:
        if owned:
            sandbox.close()
    if errors:
        logger.warning(f"the sandbox failed {errors} run(s) (scored as timeouts, as evalplus scores a dead run)")
    per_sample = [
        {"task_id": sample["task_id"], **_outcome(result)} for sample, result in zip(samples, results, strict=True)
    ]
    tasks = _task_outcomes(benchmark, per_sample)
    return {
        "tasks": tasks,
        "samples": per_sample,
        **pass_at_k(tasks),
        "eval": evalplus_eval_section(benchmark, results),
        "groundtruth_hash": groundtruth_hash(benchmark, task_ids),
        "checker": settings,
        "sandbox": info,
        "sandbox_errors": errors,
        "seconds": time.monotonic() - start,
    }


def checker_settings(
    benchmark: Benchmark, min_time_limit: float, gt_time_limit_factor: float, fix_humaneval_32: bool
) -> dict[str, Any]:
    """Everything that decides a verdict besides the program: for eval_results.json."""
    fixes = (
        [checker.FIND_ZERO_FIX]
        if fix_humaneval_32 and benchmark.name == "humaneval" and checker.find_zero_fix_applies()
        else []
    )
    return {
        "checker": "evalplus.eval.unsafe_execute's comparison, outside the program's process (fast check: "
        "stops at the first failing input)",
        "min_time_limit": min_time_limit,
        "gt_time_limit_factor": gt_time_limit_factor,
        "timeout_per_task": float(os.environ.get("EVALPLUS_TIMEOUT_PER_TASK", checker.DEFAULT_TIMEOUT_PER_TASK)),
        "fixes": fixes,
    }
