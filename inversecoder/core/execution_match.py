"""Execution matching: does a corpus row's code solve a benchmark task, whatever its wording?

The lexical and embedding layers of the decontamination see text; a rewritten solution (new names,
reordered arguments, wrapped in a class) slips past them yet still answers the task. This tier runs
the row's code on a candidate task's tests in the sandbox (`verification_suite`: the base tests, topped up
with plus inputs to 20): if one of its functions passes every base input and 80% of the others, the row
solves the task.

The row's functions are not named like the task's entry point, so the trusted side reads the code's
AST (never executing it) and lists `Adapter`s (`call_adapters.py`): ways to call a top-level
function, a class's method or a class built from the arguments with the task's argument tuple
(permuted, or packed into one argument). One sandbox run per row loads the code once and calls
every adapter of every candidate task on each input; as in `checker.py`, the program never sees an
expected output: it writes its outputs' encodings to the shared page and this process judges them
with evalplus's comparison (`checker.judge`). A program that forges equality, patches numpy or
crashes only fails itself.

Loading runs the top-level statements one by one (a failing test line or an `input()` after the
definitions does not lose them); an adapter stops at its first raise, timeout or unencodable output on
a base input.
MBPP's lax oracles (Mbpp/164 accepts anything, Mbpp/295 accepts 0) are judged strictly here: as
evidence of contamination they would flag any function of the right arity.

Trusted side: `task_suites`, `adapters`, `verify`, `verify_many`, `python_code`. Sandbox side:
`run_adapters` (and what it calls), which imports nothing after the fork.
"""

from __future__ import annotations
import __future__

import ast
import copy
import math
import os
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from inversecoder.core import checker, values
from inversecoder.core.benchmarks import Benchmark
from inversecoder.core.call_adapters import (
    CONSTRUCTED,
    DEFAULT_MAX_ADAPTERS,
    METHOD,
    PACKED,
    Adapter,
    definitions,
    fitting,
    parse,
)
from inversecoder.core.call_adapters import FUNCTION as FUNCTION  # re-exported with the rest of the API
from inversecoder.core.call_adapters import adapters as adapters
from inversecoder.core.call_adapters import python_code as python_code
from inversecoder.core.sandbox import Sandbox

SOLVED, FAILED, NO_FUNCTION, LOAD_FAILED, ERROR = "solved", "failed", "no-function", "load-failed", "error"
#: Cached verdicts are keyed by it: bump it when the adapters, the limits or the verdict rule change.
VERSION = 4
#: Inputs a task is checked on at least (its base tests, then its first plus inputs), and the share of the
#: added ones a solution must pass: a copy that misses an edge case still counts, a chance pass on 3 does not.
MIN_INPUTS = 20
EXTRA_SHARE = 0.8
LOAD_SECONDS = 3.0  # loading the row's code (its top-level statements), whatever its tasks
MAX_RUN_SECONDS = 30.0  # the most one row's run may take besides the 2 s of slack
_LAX_ORACLES = frozenset({"are_equivalent", "sum_div"})
_MAX_PAGE = 32 * 1024**2  # outputs beyond the page's room are compared by digest (`checker._Page`); it is what
# the trusted process reads back per run, one run per sandbox worker at a time


@dataclass(frozen=True)
class TaskSuite:
    """One task's tests as the judge needs them (built once, shared by every row checked)."""

    task_id: str
    dataset: str  # humaneval | mbpp
    entry_point: str
    inputs: list[Any]  # base_input: one argument list per test
    expected: list[Any]  # the canonical solution's outputs (evalplus's ground truth)
    atol: float
    ref_time: list[float]  # the canonical solution's time per input: the time limits derive from it
    expect: checker.Expectation
    #: the first `must_pass` inputs (the base tests) must all pass; the rest (plus inputs added by
    #: `verification_suite`) at least EXTRA_SHARE of them. None: all inputs must pass.
    must_pass: int | None = None

    @property
    def arity(self) -> int:
        return len(self.inputs[0]) if self.inputs else 0

    @property
    def required(self) -> int:
        return len(self.inputs) if self.must_pass is None else self.must_pass

    def solved_by(self, details: Sequence[int]) -> bool:
        """Every required input passed, and EXTRA_SHARE of the others."""
        base, extra = details[: self.required], details[self.required :]
        extras = len(self.inputs) - self.required
        return len(base) == self.required and all(base) and sum(extra) >= math.ceil(EXTRA_SHARE * extras)


def task_suites(benchmark: Benchmark, expected: dict[str, Any]) -> dict[str, TaskSuite]:
    """A suite per task of `expected` (`groundtruth.expected_outputs(benchmark, ...)`)."""
    suites = {}
    for task_id, oracle in expected.items():
        problem = benchmark.problems[task_id]
        inputs = problem["base_input"]
        if len({len(inp) for inp in inputs}) > 1:
            raise ValueError(f"{task_id}: base inputs of different lengths, no single arity to adapt to")
        suites[task_id] = TaskSuite(
            task_id,
            benchmark.name,
            problem["entry_point"],
            inputs,
            oracle["base"],
            problem["atol"],
            oracle["base_time"],
            checker.expectation(oracle["base"], inputs),
        )
    return suites


def settings() -> dict[str, Any]:
    """Everything besides the code and the tasks that decides a verdict (part of the cached verdicts' key)."""
    return {
        "min_inputs": MIN_INPUTS,
        "extra_share": EXTRA_SHARE,
        "load_seconds": LOAD_SECONDS,
        "max_adapters": DEFAULT_MAX_ADAPTERS,
        "min_time_limit": checker.DEFAULT_MIN_TIME_LIMIT,
        "gt_time_limit_factor": checker.DEFAULT_GT_TIME_LIMIT_FACTOR,
        "max_page": _MAX_PAGE,
    }


def verification_suite(benchmark: Benchmark, task_id: str, min_inputs: int = MIN_INPUTS) -> TaskSuite | None:
    """The task's base tests, topped up with its first plus inputs to `min_inputs` (MBPP has 3 base tests:
    an unrelated utility can pass them by chance, and did); their expected outputs come from the canonical
    solution run here with evalplus's `trusted_exec`, as for the ground truth. None for a task whose inputs
    have no single arity."""
    from evalplus.eval._special_oracle import MBPP_OUTPUT_NOT_NONE_TASKS
    from evalplus.gen.util import trusted_exec

    problem = benchmark.problems[task_id]
    base = list(problem["base_input"])
    inputs = base + list(problem.get("plus_input") or [])[: max(0, min_inputs - len(base))]
    not_none = MBPP_OUTPUT_NOT_NONE_TASKS if benchmark.name == "mbpp" else []
    expected, times = trusted_exec(
        problem["prompt"] + problem["canonical_solution"],
        inputs,
        problem["entry_point"],
        record_time=True,
        output_not_none=problem["entry_point"] in not_none,
    )
    if len({len(inp) for inp in inputs}) != 1:
        return None
    return TaskSuite(
        task_id,
        benchmark.name,
        problem["entry_point"],
        inputs,
        expected,
        problem["atol"],
        times,
        checker.expectation(expected, inputs),
        must_pass=len(base),
    )


@dataclass(frozen=True)
class ExecutionVerdict:
    task_id: str
    status: str  # solved | failed | no-function | load-failed | error (the sandbox failed, not the code)
    passed: int = 0  # inputs the best adapter passed
    total: int = 0  # inputs the task was checked on
    adapter: str = ""  # the best adapter, described ("" when none passed an input)
    function_tokens: int = 0  # canonical tokens of the best adapter's function or class

    @property
    def solved(self) -> bool:
        return self.status == SOLVED


# -- inside the sandbox ---------------------------------------------------------------------------------
def _load(code: str, namespace: dict[str, Any], seconds: float, swallow_io: Any, time_limit: Any) -> None:
    """The code's top-level statements one by one, all within `seconds`: a failing test line, an
    `input()` or a `while True` after the definitions does not lose them."""
    tree = ast.parse(code)
    flags = 0
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            for alias in node.names:
                feature = getattr(__future__, alias.name, None)
                flags |= getattr(feature, "compiler_flag", 0)
    deadline = time.monotonic() + seconds
    for node in tree.body:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            unit = compile(
                ast.Module(body=[node], type_ignores=[]), "<solution>", "exec", flags=flags, dont_inherit=True
            )
            with time_limit(left), swallow_io():
                exec(unit, namespace)
        except BaseException:  # the statement's failure only: what it defined before stays
            continue


def _call(namespace: dict[str, Any], spec: tuple[str, str, str, tuple[int, ...], str], args: list[Any]) -> Any:
    kind, name, method, order, packing = spec
    target = namespace[name]
    if kind == PACKED:
        return target(tuple(args) if packing == "tuple" else list(args))
    ordered = [args[i] for i in order]
    if kind == METHOD:
        return getattr(target(), method)(*ordered)
    if kind == CONSTRUCTED:
        return getattr(target(*ordered), method)()
    return target(*ordered)


def run_adapters(
    shared: Any,
    code: str,
    jobs: list[tuple[list[Any], list[tuple[str, str, str, tuple[int, ...], str]], int]],
    time_limits: list[list[float]],
    memory_bytes: int | None,
    load_seconds: float = LOAD_SECONDS,
) -> None:
    """Sandbox entry: load `code` once, then for each job (a task's inputs and adapters) call every
    adapter on every input (a fresh deep copy each time: programs mutate their inputs), writing one
    page record per (task, adapter, input) in that order. After an adapter's first raise, timeout or
    unencodable output among a job's first `must` inputs, its remaining inputs get a cheap RAISED record
    each, so the records always align; a definition that runs out of time is not called again (exponential
    code on a benchmark's inputs would spend every adapter's limits). The judge decides the rest outside."""
    from evalplus.eval.utils import create_tempdir, reliability_guard, swallow_io, time_limit

    deepcopy, monotonic = copy.deepcopy, time.monotonic  # bound before the program can patch the modules
    page = checker._Page(shared, sum(len(inputs) * len(specs) for inputs, specs, _ in jobs))
    with create_tempdir():
        rmtree, rmdir, chdir = shutil.rmtree, os.rmdir, os.chdir
        reliability_guard(maximum_memory_bytes=memory_bytes)
        try:
            namespace: dict[str, Any] = {}
            _load(code, namespace, load_seconds, swallow_io, time_limit)
            page.state = checker._LOADED
            page.commit()
            slow: set[str] = set()  # definitions that ran out of time once: not called again in this run
            for (inputs, specs, must), limits in zip(jobs, time_limits, strict=True):
                for spec in specs:
                    failed = spec[1] in slow
                    for position, (inp, limit) in enumerate(zip(inputs, limits, strict=True)):
                        if failed:
                            page.add(checker.RAISED)
                            continue
                        started = monotonic()
                        try:
                            args = deepcopy(inp)
                            with time_limit(limit), swallow_io():
                                out = _call(namespace, spec, args)
                        except BaseException:
                            page.add(checker.RAISED)
                            failed = position < must
                            if monotonic() - started >= limit:
                                slow.add(spec[1])
                                failed = True
                            continue
                        data = values.encode(out)
                        failed = data is None and position < must
                        page.add(checker.OPAQUE if data is None else checker.VALUE, data or b"")
        except BaseException:
            if page.state == checker._LOADING:
                page.state = checker._LOAD_FAILED
                page.commit()
        shutil.rmtree, os.rmdir, os.chdir = rmtree, rmdir, chdir


# -- the trusted side -----------------------------------------------------------------------------------
def _page_bytes(planned: list[tuple[int, TaskSuite, list[Adapter]]]) -> int:
    need = checker._PAGE.size + sum(
        len(found) * sum(checker._RECORD.size + budget for budget in suite.expect.budgets)
        for _, suite, found in planned
    )
    size = checker._MIN_PAGE
    while size < need and size < _MAX_PAGE:
        size *= 2
    return size


def _judge(suite: TaskSuite, state: int, records: list[tuple[int, bytes, bytes]]) -> list[int]:
    """Per input, 1 if it passed: evalplus's comparison, lax oracles strict."""
    lax = suite.dataset == "mbpp" and suite.entry_point in _LAX_ORACLES
    entry = f"{suite.entry_point} (strict)" if lax else suite.entry_point
    _, details = checker.judge(
        suite.dataset, entry, suite.inputs, suite.expected, suite.expect, suite.atol, False, True, state, records
    )
    return list(details) + [0] * (len(suite.inputs) - len(details))


def verify(
    sandbox: Sandbox,
    code: str,
    suites: Sequence[TaskSuite],
    max_adapters: int = DEFAULT_MAX_ADAPTERS,
    min_time_limit: float = checker.DEFAULT_MIN_TIME_LIMIT,
    gt_time_limit_factor: float = checker.DEFAULT_GT_TIME_LIMIT_FACTOR,
    max_seconds: float = MAX_RUN_SECONDS,
) -> list[ExecutionVerdict]:
    """A verdict per suite on whether `code` (Python) solves it: one sandbox run for all of them.
    Never raises on what the code does; per input the time limit is evalplus's, the whole run gets
    min(load + every adapter's limits, `max_seconds`) + 2 s, and adapters it did not finish fail."""
    tree = parse(code)
    found = definitions(tree, code) if tree else []
    verdicts: dict[int, ExecutionVerdict] = {}
    planned: list[tuple[int, TaskSuite, list[Adapter]]] = []
    for index, suite in enumerate(suites):
        found_here = fitting(found, suite.arity, max_adapters, suite.entry_point) if suite.inputs else []
        if found_here:
            planned.append((index, suite, found_here))
        else:
            verdicts[index] = ExecutionVerdict(suite.task_id, NO_FUNCTION, 0, len(suite.inputs))
    if planned:
        verdicts.update(_run(sandbox, code, planned, min_time_limit, gt_time_limit_factor, max_seconds))
    return [verdicts[index] for index in range(len(suites))]


def _run(
    sandbox: Sandbox,
    code: str,
    planned: list[tuple[int, TaskSuite, list[Adapter]]],
    min_time_limit: float,
    gt_time_limit_factor: float,
    max_seconds: float,
) -> dict[int, ExecutionVerdict]:
    limits = [checker.time_limits_for(suite.ref_time, min_time_limit, gt_time_limit_factor) for _, suite, _ in planned]
    budget = LOAD_SECONDS + sum(len(found) * sum(limit) for (_, _, found), limit in zip(planned, limits, strict=True))
    wall = min(budget, max_seconds) + 2
    jobs = [(suite.inputs, [adapter.spec() for adapter in found], suite.required) for _, suite, found in planned]
    outcome = sandbox.call(
        f"{__name__}:run_adapters",
        (code, jobs, limits, sandbox.limits.memory_bytes, LOAD_SECONDS),
        wall_seconds=wall,
        cpu_seconds=math.ceil(wall) + 1,
        shared_bytes=_page_bytes(planned),
        shared_trim=True,
    )
    if outcome.error:  # the sandbox failed, not the program: no verdict on the code
        return {index: ExecutionVerdict(suite.task_id, ERROR, 0, len(suite.inputs)) for index, suite, _ in planned}
    total = sum(len(suite.inputs) * len(found) for _, suite, found in planned)
    state, records = checker.read_page(outcome.shared, total)
    if state != checker._LOADED:  # it crashed or hung while loading (uninterruptibly: the timer would stop it)
        return {
            index: ExecutionVerdict(suite.task_id, LOAD_FAILED, 0, len(suite.inputs)) for index, suite, _ in planned
        }
    verdicts = {}
    offset = 0
    for index, suite, found in planned:
        size = len(suite.inputs)
        best, best_passed, solved = None, 0, False
        for position, adapter in enumerate(found):
            start = offset + position * size
            details = _judge(suite, state, records[start : start + size])
            solved = suite.solved_by(details)
            if solved or sum(details) > best_passed:
                best, best_passed = adapter, sum(details)
            if solved:
                break
        offset += len(found) * size
        verdicts[index] = ExecutionVerdict(
            suite.task_id,
            SOLVED if solved else FAILED,
            best_passed,
            size,
            best.describe() if best else "",
            best.tokens if best else 0,
        )
    return verdicts


def verify_many(
    sandbox: Sandbox,
    jobs: Sequence[tuple[str, Sequence[TaskSuite]]],
    progress: bool = False,
    max_adapters: int = DEFAULT_MAX_ADAPTERS,
    min_time_limit: float = checker.DEFAULT_MIN_TIME_LIMIT,
    gt_time_limit_factor: float = checker.DEFAULT_GT_TIME_LIMIT_FACTOR,
    max_seconds: float = MAX_RUN_SECONDS,
) -> list[list[ExecutionVerdict]]:
    """`verify` for many rows (code, its candidate suites), one thread per sandbox worker, in order."""
    from tqdm.auto import tqdm

    def one(job: tuple[str, Sequence[TaskSuite]]) -> list[ExecutionVerdict]:
        return verify(sandbox, job[0], job[1], max_adapters, min_time_limit, gt_time_limit_factor, max_seconds)

    if not jobs:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(sandbox.workers, len(jobs)))) as pool:
        results = pool.map(one, jobs)
        bar = tqdm(results, total=len(jobs), desc="execution match", unit="row", disable=not progress)
        return list(bar)
