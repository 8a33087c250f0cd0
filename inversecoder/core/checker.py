"""evalplus's checking semantics, with each program run under our sandbox.

`untrusted_check` and `check_correctness` mirror evalplus 0.3.1's functions of the same names
(the sandbox first, then the same arguments; the same return values; the same time limits: per
input max(min_time_limit, gt_time_limit_factor x the canonical solution's time), the whole run
killed after min(EVALPLUS_TIMEOUT_PER_TASK or 60, sum of the limits) + 2 s; we read that variable
as a number, where evalplus 0.3.1 compares its string with a float and raises). Inside the sandbox
the program runs through evalplus's own `unsafe_execute`: its output comparison, atol, special
oracles and `reliability_guard` are evalplus's code, not a copy.

One fix, applied by default and recorded in eval_results.json: HumanEval/32 (`find_zero`). evalplus
0.3.1's special oracle asserts the root and then `continue`s before recording the input as passed,
so no solution, the canonical one included, can pass (163/164 is its ceiling). We compile
`unsafe_execute` from evalplus's source with the two missing lines inserted, exactly as evalplus's
repository later fixed it (`details[i] = True; progress.value += 1` before the `continue`);
`fix_find_zero=False` runs evalplus's function unmodified.
"""

from __future__ import annotations

import ctypes
import inspect
import math
import os
import struct
from collections.abc import Callable
from typing import Any

from inversecoder.core.sandbox import Sandbox

DEFAULT_MIN_TIME_LIMIT = 1.0
DEFAULT_GT_TIME_LIMIT_FACTOR = 4.0
DEFAULT_TIMEOUT_PER_TASK = 60.0

FIND_ZERO_FIX = "humaneval-32-find-zero"
_FIND_ZERO_BUG = """                            assert abs(_poly(*inp, out)) <= atol
                            continue
"""
_FIND_ZERO_FIXED = """                            assert abs(_poly(*inp, out)) <= atol
                            details[i] = True
                            progress.value += 1
                            continue
"""

# evalplus's status codes (evalplus.eval._SUCCESS, ...) and their names
_SUCCESS, _FAILED, _TIMEOUT, _UNKNOWN = 0, 1, 2, 3
PASS, FAIL, TIMEOUT = "pass", "fail", "timeout"
_STATUS = {_SUCCESS: PASS, _FAILED: FAIL, _TIMEOUT: TIMEOUT, _UNKNOWN: None}
_HEADER = struct.Struct("ii")  # stat, progress; then one byte per input (evalplus's `details`)

_unsafe_execute: dict[bool, Callable[..., None]] = {}


def unsafe_execute_function(fix_find_zero: bool = True) -> Callable[..., None]:
    """evalplus's `unsafe_execute`, with the find_zero fix when asked (compiled once per process)."""
    if fix_find_zero not in _unsafe_execute:
        import evalplus.eval as evalplus_eval

        function = evalplus_eval.unsafe_execute
        if fix_find_zero:
            source = inspect.getsource(function)
            if source.count(_FIND_ZERO_BUG) == 1:
                namespace = dict(vars(evalplus_eval))  # its globals (np, _poly, reliability_guard, ...)
                code = compile(
                    source.replace(_FIND_ZERO_BUG, _FIND_ZERO_FIXED),
                    inspect.getsourcefile(function) or "evalplus",
                    "exec",
                )
                exec(code, namespace)  # evalplus's own source, patched above
                function = namespace["unsafe_execute"]
            elif _FIND_ZERO_FIXED not in source:
                raise RuntimeError("evalplus's unsafe_execute changed: the find_zero fix no longer applies")
        _unsafe_execute[fix_find_zero] = function
    return _unsafe_execute[fix_find_zero]


def sandbox_preload() -> None:
    """Compile both variants now: the sandbox's zygote calls this once, so forked programs never do."""
    unsafe_execute_function(True)
    unsafe_execute_function(False)


def find_zero_fix_applies() -> bool:
    """True when the installed evalplus still has the HumanEval/32 bug (0.3.1 does)."""
    import evalplus.eval as evalplus_eval

    return _FIND_ZERO_BUG in inspect.getsource(evalplus_eval.unsafe_execute)


def execute(
    shared: Any,
    dataset: str,
    entry_point: str,
    code: str,
    inputs: list[Any],
    expected: list[Any],
    time_limits: list[float],
    atol: float,
    fast_check: bool,
    memory_bytes: int | None,
    fix_find_zero: bool,
) -> None:
    """Sandbox entry: evalplus's `unsafe_execute`, reporting through the shared page."""
    import evalplus.eval as evalplus_eval

    function = unsafe_execute_function(fix_find_zero)
    # evalplus asks psutil/the environment for the memory limit: hand it the one the sandbox set
    function.__globals__["query_maximum_memory_bytes"] = lambda: memory_bytes
    evalplus_eval.query_maximum_memory_bytes = lambda: memory_bytes
    stat = ctypes.c_int.from_buffer(shared, 0)
    progress = ctypes.c_int.from_buffer(shared, 4)
    details = (ctypes.c_byte * max(len(inputs), 1)).from_buffer(shared, _HEADER.size)
    function(dataset, entry_point, code, inputs, expected, time_limits, atol, fast_check, stat, details, progress)


def time_limits_for(ref_time: list[float], min_time_limit: float, gt_time_limit_factor: float) -> list[float]:
    return [max(min_time_limit, gt_time_limit_factor * t) for t in ref_time]


def run_deadline(time_limits: list[float], fast_check: bool) -> float:
    """evalplus's wall-clock budget for one run: its `timeout` plus the extra second of `join`."""
    per_task = float(os.environ.get("EVALPLUS_TIMEOUT_PER_TASK", DEFAULT_TIMEOUT_PER_TASK))
    timeout = min(per_task, sum(time_limits)) + 1
    if not fast_check:
        timeout += 1
    return timeout + 1


def untrusted_check(
    sandbox: Sandbox,
    dataset: str,
    code: str,
    inputs: list[Any],
    entry_point: str,
    expected: list[Any],
    atol: float,
    ref_time: list[float],
    fast_check: bool = False,
    min_time_limit: float = DEFAULT_MIN_TIME_LIMIT,
    gt_time_limit_factor: float = DEFAULT_GT_TIME_LIMIT_FACTOR,
    fix_find_zero: bool = True,
) -> tuple[str, list[int]]:
    """evalplus.eval.untrusted_check, the program in our sandbox: (status, details up to the stop)."""
    time_limits = time_limits_for(ref_time, min_time_limit, gt_time_limit_factor)
    wall = run_deadline(time_limits, fast_check)
    outcome = sandbox.call(
        f"{__name__}:execute",
        (
            dataset,
            entry_point,
            code,
            inputs,
            expected,
            time_limits,
            atol,
            fast_check,
            sandbox.limits.memory_bytes,
            fix_find_zero,
        ),
        wall_seconds=wall,
        cpu_seconds=math.ceil(wall) + 1,
        shared_bytes=_HEADER.size + max(len(inputs), 1),
        shared_init=_HEADER.pack(_UNKNOWN, 0),  # as evalplus's Value("i", _UNKNOWN): a run that dies reads as unknown
    )
    if (
        outcome.error
    ):  # the sandbox failed, not the program: counted in sandbox.errors, scored as evalplus scores a dead run
        return TIMEOUT, []
    stat_code, progress = _HEADER.unpack_from(outcome.shared, 0)
    progress = min(max(progress, 0), len(inputs))
    details = list(outcome.shared[_HEADER.size : _HEADER.size + progress])
    stat = _STATUS.get(stat_code) or TIMEOUT
    if stat == PASS and (len(details) != len(inputs) or not all(details)):
        stat = FAIL
    return stat, details


def check_correctness(
    sandbox: Sandbox,
    dataset: str,
    completion_id: int,
    problem: dict[str, Any],
    solution: str,
    expected_output: dict[str, list],
    base_only: bool = False,
    fast_check: bool = False,
    identifier: str | None = None,
    min_time_limit: float = DEFAULT_MIN_TIME_LIMIT,
    gt_time_limit_factor: float = DEFAULT_GT_TIME_LIMIT_FACTOR,
    fix_find_zero: bool = True,
) -> dict[str, Any]:
    """evalplus.evaluate.check_correctness, each run in our sandbox."""
    result: dict[str, Any] = {
        "completion_id": completion_id,
        "task_id": problem["task_id"],
        "_identifier": identifier,
        "solution": solution,
    }
    suites = [("base", "base_input")] + ([] if base_only else [("plus", "plus_input")])
    for name, inputs in suites:
        result[name] = untrusted_check(
            sandbox,
            dataset,
            solution,
            problem[inputs],
            problem["entry_point"],
            expected=expected_output[name],
            atol=problem["atol"],
            ref_time=expected_output[f"{name}_time"],
            fast_check=fast_check,
            min_time_limit=min_time_limit,
            gt_time_limit_factor=gt_time_limit_factor,
            fix_find_zero=fix_find_zero,
        )
    return result
