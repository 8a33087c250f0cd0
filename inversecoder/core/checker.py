"""evalplus's checking semantics; the program's process returns data, the verdict is reached outside it.

`untrusted_check` and `check_correctness` mirror evalplus 0.3.1's functions of the same names
(the sandbox first, then the same arguments; the same return values; the same time limits: per
input max(min_time_limit, gt_time_limit_factor x the canonical solution's time), the whole run
killed after min(EVALPLUS_TIMEOUT_PER_TASK or 60, sum of the limits) + 2 s; we read that variable
as a number, where evalplus 0.3.1 compares its string with a float and raises).

evalplus compares each output with the expected one inside the process that runs the program, so a
program can forge its verdict (an object whose `__eq__` is always True, a patched `numpy.allclose`,
writing the status through the caller's frames, reading the expected output from them). Here the
sandboxed process (`execute`) gets the inputs only, never the expected outputs: it runs the program
on each input under evalplus's own guards (`reliability_guard`, `swallow_io`, `time_limit`) and
writes each output's encoding (`values.encode`: builtin types only, anything else fails its input)
to the shared page. The trusted process decodes the page defensively (`values.decode`) and judges
with evalplus's comparison (`judge`: `unsafe_execute`'s loop, line for line: its exact match, atol
and `is_floats`, special oracles, fast-check stop and status codes).

Differences from evalplus, each a program that it passes and we fail, or a case it cannot reach:
outputs that are not builtin values (a subclass of one, a numpy scalar, a class of the program's
own) fail their input, except in MBPP's "not None" oracle (only `is not None` is asked) and Mbpp/164
(anything passes); the special oracles that look at the input (find_zero, Mbpp/558, Mbpp/581) see
the input as given, not as the program may have left it; an output whose encoding exceeds the
expected one's plus the input's plus 64 KiB (`Expectation.budgets`), or 32 MiB, is compared by its
digest only (equal to the expected output's, or a failure). Since the program still runs the inputs
after its first wrong output (it cannot know), the page says where it stopped: a run killed later is
judged on what it returned, as evalplus would have stopped at the first failure.

One fix, applied by default and recorded in eval_results.json: HumanEval/32 (`find_zero`). evalplus
0.3.1's special oracle asserts the root and then `continue`s before recording the input as passed,
so no solution, the canonical one included, can pass (163/164 is its ceiling). `judge` records the
pass, as evalplus's repository later fixed it (`details[i] = True; progress.value += 1` before the
`continue`); `fix_find_zero=False` keeps evalplus 0.3.1's behaviour.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import os
import struct
from dataclasses import dataclass
from typing import Any

from inversecoder.core import values
from inversecoder.core.sandbox import Sandbox

DEFAULT_MIN_TIME_LIMIT = 1.0
DEFAULT_GT_TIME_LIMIT_FACTOR = 4.0
DEFAULT_TIMEOUT_PER_TASK = 60.0

FIND_ZERO_FIX = "humaneval-32-find-zero"
_FIND_ZERO_BUG = """                            assert abs(_poly(*inp, out)) <= atol
                            continue
"""

# evalplus's status codes (evalplus.eval._SUCCESS, ...) and their names
_SUCCESS, _FAILED, _TIMEOUT, _UNKNOWN = 0, 1, 2, 3
PASS, FAIL, TIMEOUT = "pass", "fail", "timeout"
_STATUS = {_SUCCESS: PASS, _FAILED: FAIL, _TIMEOUT: TIMEOUT, _UNKNOWN: None}

# The shared page: a header (bytes used, which the sandbox returns; load state; records written),
# then one record per input run: kind, sha256 of the output's encoding, size of the encoding carried.
_PAGE = struct.Struct("<QII")
_RECORD = struct.Struct("<B32sI")
_LOADING, _LOADED, _LOAD_FAILED = 0, 1, 2
VALUE, DIGEST, RAISED, OPAQUE = 1, 2, 3, 4  # DIGEST: too big to carry; OPAQUE: not a builtin value
MAX_CARRIED = 32 * 1024**2
_SLACK = 64 * 1024
_MIN_PAGE, _MAX_PAGE = 16 * 1024**2, 1024**3


def sandbox_preload() -> None:
    """Import now what `execute` needs: the sandbox's zygote calls this once, so forked programs never do."""
    import evalplus.eval
    import evalplus.eval.utils  # noqa: F401


def find_zero_fix_applies() -> bool:
    """True when the installed evalplus still has the HumanEval/32 bug (0.3.1 does)."""
    import evalplus.eval as evalplus_eval

    return _FIND_ZERO_BUG in inspect.getsource(evalplus_eval.unsafe_execute)


# -- inside the sandbox -----------------------------------------------------------------------------
class _Page:
    """Writes the records; the header is rewritten after each one, so a killed run leaves a prefix."""

    def __init__(self, shared: Any, n_inputs: int):
        self.shared, self.n_inputs = shared, n_inputs
        self.pos, self.state, self.count = _PAGE.size, _LOADING, 0
        self.commit()

    def commit(self) -> None:
        _PAGE.pack_into(self.shared, 0, self.pos, self.state, self.count)

    def add(self, kind: int, data: bytes = b"") -> None:
        digest = hashlib.sha256(data).digest() if kind == VALUE else b""
        reserve = _RECORD.size * (self.n_inputs - self.count)  # room for a record per input left
        if kind == VALUE and (len(data) > MAX_CARRIED or self.pos + len(data) + reserve > len(self.shared)):
            kind, data = DIGEST, b""
        if self.pos + _RECORD.size + len(data) > len(self.shared):
            return
        _RECORD.pack_into(self.shared, self.pos, kind, digest, len(data))
        start = self.pos + _RECORD.size
        self.shared[start : start + len(data)] = data
        self.pos, self.count = start + len(data), self.count + 1
        self.commit()


def execute(
    shared: Any,
    entry_point: str,
    code: str,
    inputs: list[Any],
    time_limits: list[float],
    fast_check: bool,
    memory_bytes: int | None,
) -> None:
    """Sandbox entry: evalplus's `unsafe_execute` without the comparison; outputs go to the page."""
    import shutil

    from evalplus.eval.utils import create_tempdir, reliability_guard, swallow_io, time_limit

    page = _Page(shared, len(inputs))
    with create_tempdir():
        rmtree, rmdir, chdir = shutil.rmtree, os.rmdir, os.chdir
        reliability_guard(maximum_memory_bytes=memory_bytes)
        try:
            exec_globals: dict[str, Any] = {}
            with swallow_io():
                exec(code, exec_globals)
                fn = exec_globals[entry_point]
            page.state = _LOADED
            page.commit()
            for i, inp in enumerate(inputs):
                try:
                    with time_limit(time_limits[i]), swallow_io():
                        out = fn(*inp)
                except BaseException:
                    page.add(RAISED)
                    if fast_check:
                        break
                    continue
                data = values.encode(out)
                page.add(OPAQUE if data is None else VALUE, data or b"")
        except BaseException:
            if page.state == _LOADING:
                page.state = _LOAD_FAILED
                page.commit()
        shutil.rmtree, os.rmdir, os.chdir = rmtree, rmdir, chdir


# -- the trusted side -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Expectation:
    """One suite's expected outputs as the judge needs them (computed once per task)."""

    digests: list[bytes | None]  # sha256 of each expected output's encoding; None: compare by value
    budgets: list[int]  # the most bytes of an output's encoding that get decoded
    page_bytes: int  # the shared page for a run (a power of two: it tells the program little)


def expectation(expected: list[Any], inputs: list[Any]) -> Expectation:
    digests: list[bytes | None] = []
    budgets = []
    for exp, inp in zip(expected, inputs, strict=True):
        data = values.encode(exp)
        # the fast path hands the judge the expected object itself: only where a decoded copy would
        # compare equal to it (not with NaN inside, which is unequal to itself, nor marked containers)
        same = data is not None and not values.has_nan(exp)
        digests.append(hashlib.sha256(data).digest() if data is not None and same else None)
        try:
            input_size = len(values.encode(tuple(inp)) or b"")
        except TypeError:
            input_size = 0
        budgets.append(min(len(data or b"") + input_size + _SLACK, MAX_CARRIED))
    total = _PAGE.size + sum(_RECORD.size + b for b in budgets)
    page = _MIN_PAGE
    while page < total and page < _MAX_PAGE:
        page *= 2
    return Expectation(digests, budgets, page)


class _Opaque:
    """An output that is not a builtin value: not None, not a bool, equal to nothing."""


class _Failed(Exception):
    pass


def read_page(page: bytes, n_inputs: int) -> tuple[int, list[tuple[int, bytes, bytes]]]:
    """(load state, records) from the page as the program left it; a bad record ends the list."""
    if len(page) < _PAGE.size:
        return _LOADING, []
    _, state, count = _PAGE.unpack_from(page, 0)
    records: list[tuple[int, bytes, bytes]] = []
    pos = _PAGE.size
    for _ in range(min(count, n_inputs)):
        if pos + _RECORD.size > len(page):
            records.append((RAISED, b"", b""))
            break
        kind, digest, size = _RECORD.unpack_from(page, pos)
        pos += _RECORD.size
        if pos + size > len(page):
            records.append((RAISED, b"", b""))
            break
        records.append((kind, digest, page[pos : pos + size]))
        pos += size
    return state, records


def _output(record: tuple[int, bytes, bytes], exp: Any, digest: bytes | None, budget: int) -> Any:
    kind, claimed, data = record
    if kind == OPAQUE:
        return _Opaque()
    if kind not in (VALUE, DIGEST):
        raise _Failed
    if digest is not None and claimed == digest:
        return exp  # the same bytes as the expected output: the trusted object stands for it
    if kind == DIGEST or len(data) > budget:
        raise _Failed
    return values.decode(data)


def judge(
    dataset: str,
    entry_point: str,
    inputs: list[Any],
    expected: list[Any],
    expect: Expectation,
    atol: float,
    fast_check: bool,
    fix_find_zero: bool,
    state: int,
    records: list[tuple[int, bytes, bytes]],
) -> tuple[int, list[int]]:
    """evalplus 0.3.1's `unsafe_execute` loop on the outputs the program returned: (status, details)."""
    import numpy as np
    from evalplus.eval import is_floats
    from evalplus.eval._special_oracle import (
        MBPP_OUTPUT_NOT_NONE_TASKS,
        MBPP_OUTPUT_SET_EQ_TASKS,
        _digit_distance_nums,
        _poly,
        _surface_Area,
    )

    if state == _LOAD_FAILED:
        return _FAILED, []
    details = [0] * len(inputs)
    progress = 0
    for i, inp in enumerate(inputs):
        if i >= len(records):  # the run ended here (killed, or it exited): evalplus's "unknown"
            return _UNKNOWN, details[:progress]
        try:
            out = _output(records[i], expected[i], expect.digests[i], expect.budgets[i])
            exp = expected[i]
            exact_match = out == exp
            if dataset == "mbpp":
                if entry_point == "are_equivalent":  # Mbpp/164 special oracle
                    exact_match = exact_match or True
                elif entry_point == "sum_div":  # Mbpp/295 special oracle
                    exact_match = exact_match or out == 0
                elif entry_point == "surface_Area":  # Mbpp/581 special oracle
                    exact_match = exact_match or abs(out - _surface_Area(*inp)) <= atol
                elif entry_point == "digit_distance_nums":  # Mbpp/558 special oracle
                    exact_match = exact_match or out == _digit_distance_nums(*inp)
                elif entry_point in MBPP_OUTPUT_SET_EQ_TASKS:
                    exact_match = set(out) == set(exp)
                elif entry_point in MBPP_OUTPUT_NOT_NONE_TASKS:
                    exact_match = out == exp if isinstance(out, bool) else exp == (out is not None)
            if dataset == "humaneval" and entry_point == "find_zero":
                if not abs(_poly(*inp, out)) <= atol:
                    raise _Failed
                if fix_find_zero:
                    details[i] = 1
                    progress += 1
                continue
            if atol == 0 and is_floats(exp):
                atol = 1e-6  # evalplus: enforce atol for float comparison (from here on)
            if not exact_match and atol != 0:
                if type(out) != type(exp):  # noqa: E721  (evalplus's check, exactly)
                    raise _Failed
                if isinstance(exp, (list, tuple)) and len(out) != len(exp):
                    raise _Failed
                if not np.allclose(out, exp, rtol=1e-07, atol=atol):
                    raise _Failed
            elif not exact_match:
                raise _Failed
        except Exception:  # the input failed (no asserts here: they vanish under python -O)
            details[i] = 0
            progress += 1
            if fast_check:
                return _FAILED, details[:progress]
            continue
        details[i] = 1
        progress += 1
    return _SUCCESS, details[:progress]


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
    expect: Expectation | None = None,
) -> tuple[str, list[int]]:
    """evalplus.eval.untrusted_check, the program in our sandbox and the verdict outside it: (status,
    details up to the stop). `expect`: `expectation(expected, inputs)`, when the caller keeps it."""
    time_limits = time_limits_for(ref_time, min_time_limit, gt_time_limit_factor)
    wall = run_deadline(time_limits, fast_check)
    expect = expect or expectation(expected, inputs)
    outcome = sandbox.call(
        f"{__name__}:execute",
        (entry_point, code, inputs, time_limits, fast_check, sandbox.limits.memory_bytes),
        wall_seconds=wall,
        cpu_seconds=math.ceil(wall) + 1,
        shared_bytes=expect.page_bytes,
        shared_trim=True,  # only the bytes the header says were used come back
    )
    if (
        outcome.error
    ):  # the sandbox failed, not the program: counted in sandbox.errors, scored as evalplus scores a dead run
        return TIMEOUT, []
    state, records = read_page(outcome.shared, len(inputs))
    stat_code, details = judge(
        dataset, entry_point, inputs, expected, expect, atol, fast_check, fix_find_zero, state, records
    )
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
    expectations: dict[str, Expectation] | None = None,
) -> dict[str, Any]:
    """evalplus.evaluate.check_correctness, each run in our sandbox (`expectations`: per suite, kept
    by a caller that checks several samples of the task)."""
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
            expect=(expectations or {}).get(name),
        )
    return result
