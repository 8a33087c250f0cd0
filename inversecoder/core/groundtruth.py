"""evalplus's ground truth (the canonical solutions' expected outputs and times, cached) and the sandbox
that untrusted programs are checked in: shared by the evaluation (`eval/scoring.py`) and the
decontamination's execution tier (`execution_match.py`), so both live in the core."""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from inversecoder.core import checker
from inversecoder.core.benchmarks import Benchmark
from inversecoder.core.errors import ConfigError
from inversecoder.core.files import atomic_path
from inversecoder.core.sandbox import NAMESPACE_LEVELS, Limits, Sandbox

#: Modules every sandbox zygote preloads: the entries that run programs (`checker.execute`,
#: `execution_match.run_adapters`) then import nothing in the forked program.
SANDBOX_ENTRIES = (checker.__name__, "inversecoder.core.execution_match")


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
                problem["prompt"] + problem["canonical_solution"],
                problem[f"{suite}_input"],
                problem["entry_point"],
                record_time=True,
                output_not_none=problem["entry_point"] in not_none,
            )
        expected[task_id] = oracle
    with (
        atomic_path(path) as scratch,
        scratch.open("wb") as handle,
    ):  # a unique scratch name: evalplus shares the folder
        pickle.dump(expected, handle)
    return expected


def open_sandbox(
    parallel: int = 0,
    limits: Limits | None = None,
    isolation: str = "auto",
    require_isolation: bool = False,
    allow_weak_sandbox: bool = False,
    hidden: Sequence[str | Path] = (),
    setting: str = "evaluate.allow_weak_sandbox",
) -> Sandbox:
    """The sandbox the checks run in: `parallel` workers (0: one per CPU core). A level without a mount
    namespace (`uid`, `rlimits`: programs can read the user's files) is refused unless
    `allow_weak_sandbox`; the refusal names `setting`, the configuration key that allows it.
    Programs never see evalplus's ground truth, the shipped benchmark files or the folders in
    `hidden` (the run's benchmark copies): they hold the expected answers."""
    workers = min(max(1, parallel or os.cpu_count() or 1), 1024)
    sandbox = Sandbox(
        workers,
        limits=limits,
        isolation=isolation,
        preload=list(SANDBOX_ENTRIES),
        require_isolation=require_isolation,
        hidden=[str(_groundtruth_cache_dir()), *map(str, hidden)],
    )
    if sandbox.level not in NAMESPACE_LEVELS and not allow_weak_sandbox:
        level, reasons = sandbox.level, sandbox.info["levels_unavailable"]
        sandbox.close()
        why = "; ".join(f"{name}: {reason}" for name, reason in reasons.items())[:300]
        raise ConfigError(
            f"{setting}: the sandbox reached only level '{level}' (no mount namespace: programs "
            f"could read your files); set it to true to run anyway, or allow user namespaces ({why or 'requested'})"
        )
    return sandbox
