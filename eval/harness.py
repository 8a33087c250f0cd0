"""Step 6: HumanEval+ / MBPP+ with the paper's prompts, scored with evalplus's checker in our sandbox.

Two ways in: `evaluate_model` generates (greedy pass@1, or n sampled solutions per task for
pass@k) and scores; `score_samples_file` scores pre-generated samples in EvalPlus's format
(`task_id` + `solution` or `completion`, any subset of tasks), so a published samples file can be
rescored and compared with `evalplus.evaluate` directly.

Scoring is evalplus 0.3.1's, step for step: the ground truth is its canonical solutions run with its
`trusted_exec` (timed; the time limits derive from it), each program goes through its
`unsafe_execute` (output comparison, atol, special oracles), statuses and pass@k are its own
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

Prompts follow Magicoder/InverseCoder's text2code: HumanEval instructs with the stripped problem
prompt and pre-fills the response with it; MBPP+ takes the description and the assertion from the
problem's docstring (a '.' appended to the description when missing) and pre-fills "```python".
Generation stops at the closing fence.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import importlib.metadata
import json
import os
import pickle
import platform
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inversecoder.core import checker, prompts
from inversecoder.core.backends.base import CachedModel, GenerationRequest, SamplingParams
from inversecoder.core.benchmarks import BENCHMARK_NAMES, Benchmark, load_benchmark
from inversecoder.core.errors import ConfigError, UserError
from inversecoder.core.files import atomic_path, file_sha256
from inversecoder.core.sandbox import Limits, Sandbox

if TYPE_CHECKING:
    from inversecoder.core.config import EvalConfig

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
@dataclass(frozen=True)
class Decoding:
    """How solutions are drawn: greedy (n_samples 1, temperature 0) or n seeded samples per task."""

    max_new_tokens: int = 512
    n_samples: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0  # sample j of every task uses seed + j

    def __post_init__(self) -> None:
        if self.n_samples < 1:
            raise ConfigError(f"evaluate.n_samples must be >= 1, got {self.n_samples}")
        if self.n_samples > 1 and self.temperature <= 0:
            raise ConfigError("evaluate.n_samples > 1 needs evaluate.temperature > 0 (greedy decoding gives one solution)")

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    def params(self) -> SamplingParams:
        if self.greedy:
            return greedy_params(self.max_new_tokens)
        return SamplingParams(temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens, stop=(FENCE,))

    def record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"greedy": self.greedy, "max_new_tokens": self.max_new_tokens, "stop": [FENCE],
                                  "n_samples": self.n_samples}
        if not self.greedy:
            record |= {"temperature": self.temperature, "top_p": self.top_p, "seeds": f"sample j uses seed {self.seed} + j"}
        return record


def greedy_params(max_new_tokens: int) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens, stop=(FENCE,))


def _cut_at_fence(text: str) -> str:
    """Backends that return the stop string (or ignore stops) still yield just the code."""
    index = text.find(FENCE)
    return text if index == -1 else text[:index]


def generate_solutions(
    model: CachedModel, tasks: Sequence[EvalTask], max_new_tokens: int, desc: str = "evaluate",
    decoding: Decoding | None = None,
) -> list[dict[str, Any]]:
    """`decoding.n_samples` completions per task (one greedy by default), as evalplus samples (plus
    our raw fields), task by task in order."""
    decoding = decoding or Decoding(max_new_tokens=max_new_tokens)
    seeds = [0] if decoding.greedy else [decoding.seed + j for j in range(decoding.n_samples)]
    requests = [GenerationRequest(task.prompt, seed=seed) for task in tasks for seed in seeds]
    completions = model.generate(requests, decoding.params(), desc=desc)
    samples = []
    for index, completion in enumerate(completions):
        task = tasks[index // len(seeds)]
        failed = completion.error is not None or completion.text is None
        raw = completion.text or ""
        sample = {
            "task_id": task.task_id,
            "solution": "" if failed else task.prefill_code + _cut_at_fence(raw),
            "raw_completion": raw,
            "finish_reason": completion.finish_reason,
            "error": completion.error if failed else None,
        }
        if not decoding.greedy:
            sample["seed"] = seeds[index % len(seeds)]
        samples.append(sample)
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


def _groundtruth_cache_dir() -> Path:
    import evalplus.evaluate

    return Path(evalplus.evaluate.CACHE_DIR)


def _load_groundtruth(path: Path, task_ids: set[str]) -> dict[str, Any] | None:
    """A cached ground truth, or None when missing, unreadable or incomplete (then it is recomputed)."""
    try:
        with path.open("rb") as handle:
            data = pickle.load(handle)  # our own cache file (or evalplus's, same format)
    except FileNotFoundError:
        return None
    except Exception:  # truncated by a killed run, written by another version, ...
        return None
    keys = {"base", "plus", "base_time", "plus_time"}
    if not isinstance(data, dict) or not all(isinstance(data.get(t), dict) and keys <= set(data[t]) for t in task_ids):
        return None
    return data


def expected_outputs(benchmark: Benchmark, task_ids: Iterable[str]) -> dict[str, Any]:
    """evalplus's oracle: the canonical solutions run in-process with its `trusted_exec` (timed, inputs
    deep-copied), exactly as `evalplus.evaluate.get_groundtruth` does; cached as `{hash}.pkl` in its
    cache folder (the full dataset under the dataset hash: evalplus reads and writes the same file)."""
    from evalplus.eval._special_oracle import MBPP_OUTPUT_NOT_NONE_TASKS
    from evalplus.gen.util import trusted_exec

    wanted = set(task_ids)
    problems = {tid: problem for tid, problem in benchmark.problems.items() if tid in wanted}
    key = groundtruth_hash(benchmark, problems)
    folder = _groundtruth_cache_dir()
    path = folder / f"{key}.pkl"
    if (cached := _load_groundtruth(path, set(problems))) is not None:
        return cached
    not_none = MBPP_OUTPUT_NOT_NONE_TASKS if benchmark.name == "mbpp" else []
    expected = {}
    for task_id, problem in problems.items():
        oracle: dict[str, Any] = {}
        for suite in ("base", "plus"):
            oracle[suite], oracle[f"{suite}_time"] = trusted_exec(
                problem["prompt"] + problem["canonical_solution"], problem[f"{suite}_input"], problem["entry_point"],
                record_time=True, output_not_none=problem["entry_point"] in not_none,
            )
        expected[task_id] = oracle
    with atomic_path(path) as scratch, scratch.open("wb") as handle:  # a unique scratch name: evalplus shares the folder
        pickle.dump(expected, handle)
    return expected


def open_sandbox(
    parallel: int = 0, limits: Limits | None = None, isolation: str = "auto", require_isolation: bool = False
) -> Sandbox:
    """The sandbox the checks run in: `parallel` workers (0: one per CPU core)."""
    workers = min(max(1, parallel or os.cpu_count() or 1), 1024)
    return Sandbox(workers, limits=limits, isolation=isolation, preload=[checker.__name__],
                   require_isolation=require_isolation)


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
    benchmark: Benchmark, samples: Sequence[dict[str, Any]], expected: dict[str, Any], sandbox: Sandbox,
    min_time_limit: float, gt_time_limit_factor: float, fix_humaneval_32: bool, progress: bool,
) -> list[dict[str, Any]]:
    """Every sample through `checker.check_correctness`; one thread per sandbox worker."""
    from tqdm.auto import tqdm

    completion_ids: dict[str, int] = {}
    jobs = []
    for index, sample in enumerate(samples):
        completion_ids[sample["task_id"]] = completion_ids.get(sample["task_id"], -1) + 1
        jobs.append((index, completion_ids[sample["task_id"]]))

    def check(job: tuple[int, int]) -> dict[str, Any]:
        index, completion_id = job
        sample = samples[index]
        return checker.check_correctness(
            sandbox, benchmark.name, completion_id, benchmark.problems[sample["task_id"]], sample["solution"] or "",
            expected[sample["task_id"]], base_only=False, fast_check=True, identifier=str(index),
            min_time_limit=min_time_limit, gt_time_limit_factor=gt_time_limit_factor, fix_find_zero=fix_humaneval_32,
        )

    workers = max(1, min(sandbox.workers, len(samples)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(check, jobs)
        bar = tqdm(results, total=len(jobs), desc=f"check {benchmark.name}", unit="sample", disable=not progress,
                   dynamic_ncols=True)
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
        base = failed(*result["base"], problem["base_input"])
        plus = failed(*result["plus"], problem["plus_input"])
        if benchmark.name == "mbpp":
            base, plus = mbpp_serialize_inputs(result["task_id"], base), mbpp_serialize_inputs(result["task_id"], plus)
        section.setdefault(result["task_id"], []).append({
            "task_id": result["task_id"], "solution": result["solution"],
            "base_status": result["base"][0], "plus_status": result["plus"][0],
            "base_fail_tests": base, "plus_fail_tests": plus,
        })
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
    progress: bool = False,
) -> dict[str, Any]:
    """Run evalplus's base and plus tests on every sample (any number per task), each in the sandbox.

    Returns {"tasks": {task_id: outcome}, "samples": [per-sample outcome], "pass@1": {"base", "plus"}
    (and pass@10 / pass@100 when every task has that many samples), "eval": evalplus's per-sample
    format, "groundtruth_hash", "checker": settings, "sandbox": what the programs ran under,
    "seconds"}; only the tasks present in `samples` are scored. Pass `sandbox` to reuse one (else one
    is started with `parallel` workers, `limits`, `isolation` and `require_isolation`).
    """
    unknown = sorted({s["task_id"] for s in samples} - set(benchmark.problems))
    if unknown:
        raise UserError(f"{len(unknown)} sample task ids are not in {BENCHMARK_NAMES[benchmark.name]}: {unknown[:5]}")
    settings = checker_settings(benchmark, min_time_limit, gt_time_limit_factor, fix_humaneval_32)
    if not samples:
        return {"tasks": {}, "samples": [], "pass@1": {"base": 0.0, "plus": 0.0}, "eval": {}, "groundtruth_hash": None,
                "checker": settings, "sandbox": None, "sandbox_errors": 0, "seconds": 0.0}
    start = time.monotonic()
    task_ids = {s["task_id"] for s in samples}
    expected = expected_outputs(benchmark, task_ids)
    owned = sandbox is None
    sandbox = sandbox or open_sandbox(parallel, limits, isolation, require_isolation)
    errors_before = sandbox.errors
    try:
        results = _run_checks(benchmark, samples, expected, sandbox, min_time_limit, gt_time_limit_factor,
                              fix_humaneval_32, progress)
        info = sandbox.info
        errors = sandbox.errors - errors_before
    finally:
        if owned:
            sandbox.close()
    if errors:
        print(f"warning: the sandbox failed {errors} run(s) (scored as timeouts, as evalplus scores a dead run)",
              file=sys.stderr)
    per_sample = [{"task_id": sample["task_id"], **_outcome(result)} for sample, result in zip(samples, results, strict=True)]
    tasks = _task_outcomes(benchmark, per_sample)
    return {
        "tasks": tasks, "samples": per_sample, **pass_at_k(tasks), "eval": evalplus_eval_section(benchmark, results),
        "groundtruth_hash": groundtruth_hash(benchmark, task_ids), "checker": settings, "sandbox": info,
        "sandbox_errors": errors, "seconds": time.monotonic() - start,
    }


def checker_settings(benchmark: Benchmark, min_time_limit: float, gt_time_limit_factor: float,
                     fix_humaneval_32: bool) -> dict[str, Any]:
    """Everything that decides a verdict besides the program: for eval_results.json."""
    fixes = [checker.FIND_ZERO_FIX] if fix_humaneval_32 and benchmark.name == "humaneval" and checker.find_zero_fix_applies() else []
    return {
        "checker": "evalplus.eval.unsafe_execute (fast check: stops at the first failing input)",
        "min_time_limit": min_time_limit,
        "gt_time_limit_factor": gt_time_limit_factor,
        "timeout_per_task": float(os.environ.get("EVALPLUS_TIMEOUT_PER_TASK", checker.DEFAULT_TIMEOUT_PER_TASK)),
        "fixes": fixes,
    }


# -- writing ----------------------------------------------------------------------------------------
def write_json_atomic(path: Path, data: Any) -> None:
    """Readers see the old file or the new one, never half of one."""
    _write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, default=repr) + "\n")


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
    found = {name: _version(name) for name in ("evalplus", "transformers", "torch", "numpy", "inversecoder")}
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


def _write_benchmark_files(output_dir: Path, benchmark: Benchmark, samples: Sequence[dict[str, Any]],
                           checked: dict[str, Any], write_samples: bool = True) -> None:
    if write_samples:
        write_jsonl_atomic(output_dir / f"{benchmark.name}_samples.jsonl", samples)
    raw = [{**sample, **outcome} for sample, outcome in zip(samples, checked["samples"], strict=True)]
    write_json_atomic(output_dir / f"{benchmark.name}_raw_results.json", {
        "hash": benchmark.hash, "groundtruth_hash": checked["groundtruth_hash"],
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "tasks": checked["tasks"], "samples": raw, "eval": checked["eval"],
    })


def _print_summary(summary: dict[str, Any]) -> None:
    scores = ", ".join(
        f"{key} base {value['base']:.3f}, plus {value['plus']:.3f}" for key, value in summary.items() if key.startswith("pass@")
    )
    print(f"{summary['dataset']} {summary['version']} ({summary['n_tasks']}/{summary['n_tasks_total']} tasks): {scores}")


# -- the whole step ---------------------------------------------------------------------------------
def _decoding_from(config: EvalConfig, **overrides: Any) -> Decoding:
    """The decoding settings: explicit arguments, else the config's fields (when it has them)."""
    fields = {"n_samples": 1, "temperature": 0.0, "top_p": 1.0, "seed": 0}
    values = {name: overrides[name] if overrides.get(name) is not None else getattr(config, name, default)
              for name, default in fields.items()}
    return Decoding(max_new_tokens=config.max_new_tokens, **values)


def evaluate_benchmark(
    model: CachedModel, benchmark: Benchmark, config: EvalConfig, output_dir: Path,
    sandbox: Sandbox | None = None, decoding: Decoding | None = None,
) -> dict[str, Any]:
    """Generate, check and write one benchmark's samples and raw results; returns its summary."""
    decoding = decoding or _decoding_from(config)
    tasks = build_tasks(benchmark, config.limit)
    samples = generate_solutions(model, tasks, config.max_new_tokens, desc=f"evaluate {benchmark.name}", decoding=decoding)
    checked = check_solutions(benchmark, samples, config.parallel, config.min_time_limit, config.gt_time_limit_factor,
                              sandbox=sandbox, fix_humaneval_32=getattr(config, "fix_humaneval_32", True))
    _write_benchmark_files(output_dir, benchmark, samples, checked)
    summary = _summary(benchmark, checked, len(tasks), config.limit)
    summary["generation_errors"] = sum(s["error"] is not None for s in samples)
    summary["sandbox_errors"] = checked["sandbox_errors"]
    summary["checker"] = checked["checker"]
    _print_summary(summary)
    return summary


def evaluate_model(
    model: CachedModel, config: EvalConfig, benchmarks_dir: str | None, cache_dir: Path, output_dir: Path,
    *, n_samples: int | None = None, temperature: float | None = None, top_p: float | None = None,
    seed: int | None = None, isolation: str | None = None, require_isolation: bool | None = None,
) -> dict[str, Any]:
    """Every benchmark in `config.benchmarks`; writes {name}_samples.jsonl, {name}_raw_results.json and
    eval_results.json (scores, per-task outcomes, and the settings and versions that produced them)
    under `output_dir`. Keyword arguments override the config's decoding/sandbox fields."""
    output_dir = Path(output_dir)
    decoding = _decoding_from(config, n_samples=n_samples, temperature=temperature, top_p=top_p, seed=seed)
    results: dict[str, Any] = {"benchmarks": {}}
    with open_sandbox(
        config.parallel,
        isolation=isolation or getattr(config, "sandbox", "auto"),
        require_isolation=require_isolation if require_isolation is not None else getattr(config, "require_isolation", False),
    ) as sandbox:
        for name in config.benchmarks:
            benchmark = load_benchmark(name, benchmarks_dir, Path(cache_dir))
            results["benchmarks"][name] = evaluate_benchmark(model, benchmark, config, output_dir, sandbox, decoding)
        sandbox_info = sandbox.info
    results["settings"] = {
        "prompt_templates": prompt_templates(),
        "decoding": decoding.record(),
        "checker": {"min_time_limit": config.min_time_limit, "gt_time_limit_factor": config.gt_time_limit_factor,
                    "fixes": sorted({f for b in results["benchmarks"].values() for f in b["checker"]["fixes"]})},
        "sandbox": sandbox_info,
        "backend": dataclasses.asdict(model.info()),
    }
    results["versions"] = versions()
    write_json_atomic(output_dir / "eval_results.json", results)
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
    checked = check_solutions(loaded, samples, parallel, min_time_limit, gt_time_limit_factor,
                              fix_humaneval_32=fix_humaneval_32, isolation=isolation,
                              require_isolation=require_isolation, progress=progress)
    _write_benchmark_files(output_dir, loaded, samples, checked, write_samples=False)
    summary = _summary(loaded, checked, len(checked["tasks"]), None)
    summary["sandbox_errors"] = checked["sandbox_errors"]
    summary["checker"] = checked["checker"]
    _print_summary(summary)
    results = {
        "benchmarks": {benchmark: summary},
        "settings": {
            "samples": {"path": str(samples_path.resolve()), "sha256": file_sha256(samples_path), "n_samples": len(samples)},
            "decoding": None,  # not known: the samples were generated elsewhere
            "checker": {"min_time_limit": min_time_limit, "gt_time_limit_factor": gt_time_limit_factor,
                        "fixes": checked["checker"]["fixes"]},
            "sandbox": checked["sandbox"],
        },
        "versions": versions(),
    }
    write_json_atomic(output_dir / "eval_results.json", results)
    return results
