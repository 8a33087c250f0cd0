"""Verdicts that a program cannot forge, and that agree with evalplus's own on honest programs.

The program's process returns its outputs as data (`inversecoder.core.values`); the comparison runs
in this process (`checker.judge`, evalplus's `unsafe_execute` loop). The forgeries below each passed
under a checker that compared inside the program's process; here each fails. The agreement tests
run the same programs through `evalplus.evaluate.check_correctness` (evalplus's own forked checker)
and through ours, and compare statuses and details: a representative subset by default (float
tolerance, every special oracle, a Counter output), every task with `pytest -m slow`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import pytest

from inversecoder.core import checker, values
from inversecoder.eval import scoring


def canonical(benchmark, task_id: str) -> str:
    problem = benchmark.problems[task_id]
    return problem["prompt"] + problem["canonical_solution"]


def wrapped(benchmark, task_id: str, body: str, prelude: str = "") -> str:
    """The canonical solution renamed `__real`, and the entry point returning `body` (over `result`)."""
    entry = benchmark.problems[task_id]["entry_point"]
    return (
        f"{canonical(benchmark, task_id)}\n\n__real = {entry}\n{prelude}\n"
        f"def {entry}(*args):\n    result = __real(*args)\n    return {body}\n"
    )


# -- forgeries ----------------------------------------------------------------------------------------
ALWAYS_EQUAL = "class Anything:\n    def __eq__(self, other):\n        return True\n    __hash__ = None\n"
FLOAT_EQUAL = "class Sly(float):\n    def __eq__(self, other):\n        return True\n    __hash__ = float.__hash__\n"
PATCH_ALLCLOSE = "import numpy\nnumpy.allclose = lambda *a, **k: True\n"
SET_STATUS = """
import sys
def __forge():
    frame = sys._getframe(1)
    while frame is not None:
        names = frame.f_locals
        if "stat" in names and "details" in names and "progress" in names:
            names["stat"].value = 0
            for i in range(len(names["inputs"])):
                names["details"][i] = True
            names["progress"].value = len(names["inputs"])
            import posix
            posix._exit(0)
        frame = frame.f_back
    import posix
    posix._exit(0)
"""
READ_EXPECTED = """
import sys
def __peek(default):
    frame = sys._getframe(2)
    while frame is not None:
        names = frame.f_locals
        if "expected" in names and "i" in names:
            return names["expected"][names["i"]]
        frame = frame.f_back
    return default
"""
FORGERIES = {
    "always_equal": ("Anything()", ALWAYS_EQUAL),
    "float_subclass": ("Sly(result + 1.0)", FLOAT_EQUAL),
    "patched_allclose": ("result + 0.5", PATCH_ALLCLOSE),
    "frame_status": ("__forge()", SET_STATUS),
    "frame_expected": ("__peek(None)", READ_EXPECTED),
}


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
def test_forged_verdicts_fail(benchmarks, sandbox, forgery):
    """HumanEval/2 (truncate_number, floats with a tolerance): every forgery returns a wrong output
    and tries to make it pass; it fails, and the same program with an honest output still passes."""
    benchmark = benchmarks["humaneval"]
    body, prelude = FORGERIES[forgery]
    samples = [
        {"task_id": "HumanEval/2", "solution": wrapped(benchmark, "HumanEval/2", body, prelude)},
        {"task_id": "HumanEval/2", "solution": wrapped(benchmark, "HumanEval/2", "result", prelude)},
    ]
    result = scoring.check_solutions(benchmark, samples, sandbox=sandbox)
    forged, honest = result["samples"]
    assert not forged["passed_base"] and not forged["passed_plus"], forged
    assert forged["base_tests_passed"] == 0
    if forgery != "frame_status":  # that prelude ends the process on the first call, honest or not
        assert honest["passed_plus"], honest


def test_expected_outputs_never_reach_the_program(benchmarks, sandbox):
    """The arguments of the sandboxed entry carry inputs and limits only."""
    import inspect

    assert "expected" not in inspect.signature(checker.execute).parameters
    assert "atol" not in inspect.signature(checker.execute).parameters


# -- the encoding -----------------------------------------------------------------------------------
def encoded(value) -> bytes:
    data = values.encode(value)
    assert data is not None, value
    return data


ROUND_TRIP: list[object] = [
    None,
    True,
    0,
    -(2**200) + 7,
    2**31,
    1.5,
    -0.0,
    math.inf,
    (1, [2.5, "x"], {"k": (None, b"\x00\xff")}),
    {frozenset({1, 2}), (3, 4)},
    {1: [1, 2], "a": {"b": 1j}},
    "\ud800 lone surrogate",
    [],
    (),
    {},
]


@pytest.mark.parametrize("value", ROUND_TRIP, ids=repr)
def test_builtin_values_survive_with_their_types(value):
    decoded = values.decode(encoded(value))
    assert decoded == value and repr(decoded) == repr(value)
    assert type(decoded) is type(value)


def test_nan_and_negative_zero_survive_bit_for_bit():
    nan = values.decode(encoded([math.nan, -0.0]))
    assert math.isnan(nan[0]) and math.copysign(1.0, nan[1]) == -1.0


def test_counter_and_other_stdlib_containers_are_rebuilt_by_the_trusted_side():
    import collections

    for value in (collections.Counter("abca"), collections.OrderedDict(a=1), collections.deque([1, 2])):
        decoded = values.decode(encoded(value))
        assert type(decoded) is type(value) and decoded == value


def test_anything_else_is_not_encodable():

    import numpy as np

    class Mine:
        pass

    class Sub(float):
        pass

    class Point(NamedTuple):
        x: int

    point = Point(1)
    for value in (Mine(), Sub(1.0), [Sub(1.0)], {"k": Mine()}, point):
        assert values.encode(value) is None, value
    # buffer objects come back as the bytes they hold, never as what they claimed to be
    assert values.decode(encoded(np.float64(1.5))) == np.float64(1.5).tobytes()
    assert values.decode(encoded([bytearray(b"ab")])) == [b"ab"]


def test_nan_is_found_where_a_copy_would_not_compare_equal():
    import collections

    assert values.has_nan([1.0, [2, (math.nan,)]]) and values.has_nan({"k": complex(0, math.nan)})
    assert values.has_nan(collections.Counter("a"))  # marked containers: no fast path either
    assert not values.has_nan([1.0, 2, "x", {"k": (True, None, b"")}])


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"N\x00",  # trailing bytes
        b"c\x00\x00\x00\x00",  # a code object
        b"\xe9\x01\x00\x00\x00",  # a reference flag
        b"[\xff\xff\xff\x7fN",  # more items than bytes
        b"<\x01\x00\x00\x00[\x00\x00\x00\x00",  # an unhashable set member
        b"l\x01\x00\x00\x00\xff\xff",  # a bad long digit
        b"(\x03\x00\x00\x00.u\x03\x00\x00\x00Foo{0",  # an unknown marked value
        b".",  # a bare Ellipsis
        b"[\x01\x00\x00\x00" * 200 + b"N",  # nested too deeply
    ],
)
def test_malformed_bytes_are_rejected(data):
    with pytest.raises(values.MalformedValue):
        values.decode(data)


# -- agreement with evalplus's own checker ------------------------------------------------------------
def near_misses(benchmark, task_id: str, expected: dict) -> list[str]:
    """Programs that differ from the canonical one by a little: a type, a value just past the
    tolerance, one just inside it."""
    sample = next((e for e in expected["base"] if e is not None), None)
    programs = [wrapped(benchmark, task_id, "None")]
    if isinstance(sample, bool):
        programs.append(wrapped(benchmark, task_id, "not result"))
    elif isinstance(sample, float):
        programs += [wrapped(benchmark, task_id, "result + 1e-3"), wrapped(benchmark, task_id, "result + 1e-9")]
    elif isinstance(sample, int):
        programs += [wrapped(benchmark, task_id, "result + 1"), wrapped(benchmark, task_id, "float(result)")]
    elif isinstance(sample, str):
        programs.append(wrapped(benchmark, task_id, "result + ' '"))
    elif isinstance(sample, list):
        programs += [wrapped(benchmark, task_id, "tuple(result)"), wrapped(benchmark, task_id, "result[1:]")]
        if sample and all(isinstance(x, float) for x in sample):
            programs.append(wrapped(benchmark, task_id, "[x + 1e-9 for x in result]"))
    elif isinstance(sample, tuple):
        programs.append(wrapped(benchmark, task_id, "list(result)"))
    elif isinstance(sample, dict):
        programs.append(wrapped(benchmark, task_id, "dict(result)"))
    return programs


def agreement(benchmark, task_ids, sandbox, fix: bool = True) -> list:
    import evalplus.evaluate

    expected = scoring.expected_outputs(benchmark, task_ids)
    disagreements = []
    for task_id in task_ids:
        problem = benchmark.problems[task_id]
        programs = [canonical(benchmark, task_id), *near_misses(benchmark, task_id, expected[task_id])]
        for index, program in enumerate(programs):
            theirs = evalplus.evaluate.check_correctness(
                benchmark.name, 0, problem, program, expected[task_id], fast_check=True
            )
            ours = checker.check_correctness(
                sandbox, benchmark.name, 0, problem, program, expected[task_id], fast_check=True, fix_find_zero=fix
            )
            for suite in ("base", "plus"):
                mine = (ours[suite][0], [int(d) for d in ours[suite][1]])
                upstream = (theirs[suite][0], [int(d) for d in theirs[suite][1]])
                if mine != upstream:
                    disagreements.append((task_id, index, suite, mine, upstream))
    return disagreements


SUBSET = {
    "humaneval": ["HumanEval/0", "HumanEval/2", "HumanEval/4", "HumanEval/12", "HumanEval/32", "HumanEval/107"],
    "mbpp": [
        "Mbpp/2",  # set equality
        "Mbpp/82",  # float tolerance
        "Mbpp/88",  # a Counter
        "Mbpp/120",  # float tolerance
        "Mbpp/558",  # digit_distance_nums
        "Mbpp/581",  # surface_Area
        "Mbpp/737",  # not None (a re.Match)
        "Mbpp/787",
        "Mbpp/794",
        "Mbpp/164",  # anything passes
        "Mbpp/295",  # sum_div
    ],
}


@pytest.mark.parametrize("name", ["humaneval", "mbpp"])
def test_verdicts_agree_with_evalplus_on_a_subset(benchmarks, sandbox, name):
    """Canonical, `return None` and near-miss programs: our status and details equal evalplus's
    (HumanEval/32 with evalplus's own, unfixed find_zero oracle)."""
    benchmark = benchmarks[name]
    ids = [t for t in SUBSET[name] if t in benchmark.problems]
    assert agreement(benchmark, ids, sandbox, fix=False) == []


@pytest.mark.slow
@pytest.mark.parametrize("name", ["humaneval", "mbpp"])
def test_verdicts_agree_with_evalplus_on_every_task(benchmarks, request, name):
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("every task against evalplus takes tens of minutes: run with `pytest -m slow`")
    benchmark = benchmarks[name]
    with scoring.open_sandbox(parallel=0) as box:
        disagreements = agreement(benchmark, list(benchmark.problems), box, fix=False)
    # Mbpp/255's canonical solution returns a 644 MB list on one plus input: evalplus's own forked
    # checker, which inherits this process's whole ground truth under its 4 GiB limit, fails it there
    # (measured: at input 87 of 109); ours passes it. A resource limit of evalplus's, not its comparison.
    resources = [d for d in disagreements if d[:3] == ("Mbpp/255", 0, "plus") and d[3][0] == "pass"]
    assert [d for d in disagreements if d not in resources] == []
