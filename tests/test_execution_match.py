"""The execution tier of the decontamination: a row's code is run on a task's base tests in the sandbox.

Real benchmark data and the real sandbox throughout: a rewritten canonical solution (renamed, its
arguments reordered or packed, wrapped in a class) is recognised as solving its task; wrong, absent,
hostile and forging code is not, and never breaks the caller.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import pickle
import time

import pytest

from inversecoder.core import execution_match as em
from inversecoder.core import groundtruth

TASKS = {"humaneval": ["HumanEval/0", "HumanEval/2", "HumanEval/12"], "mbpp": ["Mbpp/2"]}

# HumanEval/0 (has_close_elements(numbers, threshold)) written from scratch, as a class would hold it
CLOSE_BODY = """
        for i, a in enumerate(values):
            for j, b in enumerate(values):
                if i != j and abs(a - b) < limit:
                    return True
        return False
"""


@pytest.fixture(scope="module")
def suites(benchmarks, tmp_path_factory):
    """The suites of TASKS, with evalplus's ground truth cached where the session keeps it."""
    import evalplus.evaluate

    found = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(evalplus.evaluate, "CACHE_DIR", str(tmp_path_factory.getbasetemp() / "evalplus-cache"))
        for name, ids in TASKS.items():
            expected = groundtruth.expected_outputs(benchmarks[name], ids)
            found.update(em.task_suites(benchmarks[name], expected))
    return found


def renamed(benchmarks, task_id: str, name: str = "solve_it", reverse: bool = False) -> str:
    """The canonical solution with its function and parameters renamed (parameters reversed if asked)."""
    dataset = "humaneval" if task_id.startswith("HumanEval") else "mbpp"
    problem = benchmarks[dataset].problems[task_id]
    tree = ast.parse(problem["prompt"] + problem["canonical_solution"])
    (function,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == problem["entry_point"]]
    names = {arg.arg: f"p{i}" for i, arg in enumerate(function.args.args)}
    function.name = name
    for arg in function.args.args:
        arg.arg = names[arg.arg]
    for node in ast.walk(function):
        if isinstance(node, ast.Name) and node.id in names:
            node.id = names[node.id]
    if reverse:
        function.args.args.reverse()
    return ast.unparse(tree)


def one(sandbox, code: str, suite, **options) -> em.ExecutionVerdict:
    (verdict,) = em.verify(sandbox, code, [suite], **options)
    return verdict


# -- solved through every kind of adapter ---------------------------------------------------------------
@pytest.mark.parametrize("task_id", ["HumanEval/0", "HumanEval/12", "Mbpp/2"])
def test_a_renamed_canonical_solution_solves_its_task(benchmarks, sandbox, suites, task_id):
    verdict = one(sandbox, renamed(benchmarks, task_id), suites[task_id])
    assert verdict.status == em.SOLVED and verdict.passed == verdict.total == len(suites[task_id].inputs)
    assert verdict.adapter == "solve_it(*args)" and verdict.function_tokens > 5


def test_reordered_arguments_are_found_by_a_permutation(benchmarks, sandbox, suites):
    verdict = one(sandbox, renamed(benchmarks, "HumanEval/0", reverse=True), suites["HumanEval/0"])
    assert verdict.status == em.SOLVED and verdict.adapter == "solve_it(args[1], args[0])"


def test_arguments_merged_into_one_parameter_are_packed(sandbox, suites):
    code = f"def close(pair):\n    values, limit = pair\n    if True:{CLOSE_BODY}"
    verdict = one(sandbox, code, suites["HumanEval/0"])
    assert verdict.status == em.SOLVED and verdict.adapter == "close(args)"


@pytest.mark.parametrize(
    ("code", "adapter"),
    [
        (f"class Checker:\n    def run(self, values, limit):{CLOSE_BODY}", "Checker().run(*args)"),
        (
            f"class Checker:\n    @staticmethod\n    def run(limit, values):{CLOSE_BODY}",
            "Checker().run(args[1], args[0])",
        ),
        (
            "class C:\n    def __init__(self, values, limit):\n        self.values, self.limit = values, limit\n\n"
            f"    def result(self):\n        values, limit = self.values, self.limit{CLOSE_BODY}",
            "C(*args).result()",
        ),
        (
            "from dataclasses import dataclass\n\n@dataclass\nclass C:\n    values: list\n    limit: float\n\n"
            f"    def result(self):\n        values, limit = self.values, self.limit{CLOSE_BODY}",
            "C(*args).result()",
        ),
    ],
    ids=["method", "staticmethod-reordered", "constructed", "dataclass"],
)
def test_a_solution_inside_a_class_is_solved(sandbox, suites, code, adapter):
    verdict = one(sandbox, code, suites["HumanEval/0"])
    assert verdict.status == em.SOLVED and verdict.adapter == adapter, verdict


def test_one_run_checks_every_candidate_task(benchmarks, sandbox, suites):
    """Several solutions in one row, checked against all candidate tasks at once; verify_many agrees."""
    code = renamed(benchmarks, "HumanEval/0", "first") + "\n\n" + renamed(benchmarks, "HumanEval/12", "second")
    candidates = [suites[t] for t in ("HumanEval/0", "HumanEval/2", "HumanEval/12", "Mbpp/2")]
    verdicts = em.verify(sandbox, code, candidates)
    assert [(v.task_id, v.status) for v in verdicts] == [
        ("HumanEval/0", em.SOLVED),
        ("HumanEval/2", em.FAILED),  # one argument: `second` fits, and fails
        ("HumanEval/12", em.SOLVED),
        ("Mbpp/2", em.FAILED),  # two arguments: `first` fits, and fails
    ]
    assert [v.adapter for v in verdicts if v.solved] == ["first(*args)", "second(*args)"]
    wrong = "def solve_it(numbers, threshold):\n    return False\n"
    assert em.verify_many(sandbox, [(code, candidates), (wrong, candidates[:1])]) == [
        verdicts,
        em.verify(sandbox, wrong, candidates[:1]),
    ]


# -- not solved -------------------------------------------------------------------------------------------
def test_a_wrong_solution_fails_with_its_pass_count(sandbox, suites):
    suite = suites["HumanEval/0"]
    verdict = one(sandbox, "def solve_it(numbers, threshold):\n    return False\n", suite)
    assert verdict.status == em.FAILED and 0 < verdict.passed < verdict.total == len(suite.inputs)
    assert verdict.adapter == "solve_it(*args)"  # the best adapter: it passed some inputs


@pytest.mark.parametrize(
    "code",
    [
        "x = 1\nprint(x)\n",
        "def five(a, b, c, d, e):\n    return a\n",  # HumanEval/0 takes two arguments
        "def keyword_only(*, a, b):\n    return a\n",
        "def outer():\n    def inner(a, b):\n        return a\n    return inner\n",  # nested: not a candidate
        "def test_close(a, b):\n    return True\n\ndef main(a, b):\n    return True\n",
        "def broken(a, b):\n    return (\n",  # not Python
    ],
    ids=["no-def", "arity", "keyword-only", "nested", "test-and-main", "syntax-error"],
)
def test_code_without_a_fitting_function_runs_nothing(sandbox, suites, code):
    verdict = one(sandbox, code, suites["HumanEval/0"])
    assert verdict.status == em.NO_FUNCTION and verdict.passed == 0 and verdict.adapter == ""


def test_python_code_of_a_response():
    assert em.python_code("Here:\n```python\ndef f(x):\n    return x\n```\nand\n```\ny = 2\n```") == (
        "def f(x):\n    return x\n\n\ny = 2\n"
    )
    assert em.python_code("```py\n  def f(x):\n      return x\n```") == "def f(x):\n    return x\n"  # dedented
    assert em.python_code("def f(x):\n    return x\n") == "def f(x):\n    return x\n"  # no fence: all of it
    assert em.python_code("```javascript\nfunction f(x) { return x; }\n```") is None
    assert em.python_code("```\n>>> f(1)\n1\n```") is None  # a session, not code
    assert em.python_code("The function returns the sum of its two arguments.") is None
    assert em.python_code("Hello") is None  # parses, but is a bare name
    assert em.python_code("") is None


# -- hostile code ----------------------------------------------------------------------------------------
HOSTILE = {
    "loop-at-import": "while True:\n    pass\n\ndef solve_it(numbers, threshold):\n    return True\n",
    "loop-in-function": "def solve_it(numbers, threshold):\n    while True:\n        pass\n",
    "swallowed-timeout": (
        "def solve_it(numbers, threshold):\n    while True:\n        try:\n            while True:\n"
        "                pass\n        except BaseException:\n            pass\n"
    ),
    "fork-bomb": (
        "import posix\n\ndef solve_it(numbers, threshold):\n    while True:\n        try:\n"
        "            posix.fork()\n        except OSError:\n            pass\n"
    ),
    "read-files": "def solve_it(numbers, threshold):\n    return open('/etc/passwd').read()\n",
    "print-megabytes": "def solve_it(numbers, threshold):\n    for _ in range(50):\n        print('x' * 10**6)\n",
    "exit": "import posix\n\ndef solve_it(numbers, threshold):\n    posix._exit(0)\n",
    "exit-at-import": "import posix\nposix._exit(0)\n\ndef solve_it(numbers, threshold):\n    return True\n",
    "uninterruptible-import": "sum(range(10**13))\n\ndef solve_it(numbers, threshold):\n    return True\n",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_code_is_contained(sandbox, suites, name):
    """Nothing is solved, nothing raises here, and the run ends within its deadline (max_seconds=2:
    the whole run at most 4 s)."""
    start = time.monotonic()
    verdict = one(sandbox, HOSTILE[name], suites["HumanEval/0"], max_seconds=2.0)
    seconds = time.monotonic() - start
    assert verdict.status in (em.FAILED, em.LOAD_FAILED) and verdict.passed < verdict.total, verdict
    assert seconds < 8, seconds
    if name in ("exit-at-import", "uninterruptible-import"):
        assert verdict.status == em.LOAD_FAILED


FORGERIES = {
    "always-equal": "class Anything:\n    def __eq__(self, other):\n        return True\n    __hash__ = None\n"
    "\ndef solve_it(numbers, threshold):\n    return Anything()\n",
    "bool-subclass": "class Sly(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
    "\ndef solve_it(numbers, threshold):\n    return Sly(2)\n",
    "patched-comparison": "import numpy, operator\nnumpy.allclose = lambda *a, **k: True\n"
    "operator.eq = lambda a, b: True\n\ndef solve_it(numbers, threshold):\n    return 0.5\n",
    "frame-peek": "import sys\n\ndef solve_it(numbers, threshold):\n    frame = sys._getframe(1)\n"
    "    while frame is not None:\n        for key in ('expected', 'expect', 'exp'):\n"
    "            if key in frame.f_locals:\n                return frame.f_locals[key]\n"
    "        frame = frame.f_back\n    return None\n",
}


@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_a_forged_verdict_is_not_solved(sandbox, suites, name):
    verdict = one(sandbox, FORGERIES[name], suites["HumanEval/0"])
    assert verdict.status == em.FAILED and verdict.passed < verdict.total, verdict


def test_the_program_never_receives_expected_outputs():
    import inspect

    parameters = set(inspect.signature(em.run_adapters).parameters)
    assert parameters == {"shared", "code", "jobs", "time_limits", "memory_bytes", "load_seconds"}


def test_an_adapter_that_mutates_its_inputs_does_not_change_the_next_ones(benchmarks, sandbox, suites):
    clobber = (
        "def clobber(numbers, threshold):\n    numbers.clear()\n    numbers.extend([0.0, 0.0])\n    return None\n\n"
    )
    verdict = one(sandbox, clobber + renamed(benchmarks, "HumanEval/0"), suites["HumanEval/0"])
    assert verdict.status == em.SOLVED and verdict.adapter == "solve_it(*args)"


# -- the adapters, from the AST --------------------------------------------------------------------------
def test_adapters_fit_the_parameters_in_a_fixed_order():
    code = (
        "import math\n\n"
        "def helper(x):\n    return x\n\n"
        "def main(a, b):\n    return a\n\n"
        "def defaults(a, b, c=1, d=2):\n    return a\n\n"
        "def star(*args):\n    return args\n\n"
        "class Solver:\n    def solve(self, a, b):\n        return a\n\n"
        "    def __eq__(self, other):\n        return True\n\n"
        "    @property\n    def value(self):\n        return 1\n\n"
        "class Needs:\n    def __init__(self, a, b):\n        self.a = a\n\n"
        "    def result(self):\n        return self.a\n\n"
        "def target(a, b):\n    return b\n"
    )
    found = em.adapters(code, 2, max_adapters=100, entry_point="target")
    described = [a.describe() for a in found]
    assert described[:6] == [
        "target(*args)",  # the entry point's name first
        "defaults(*args)",
        "star(*args)",
        "Solver().solve(*args)",
        "Needs(*args).result()",
        "helper(args)",  # packed, after every direct call
    ]
    assert described[6:] == [
        "helper(list(args))",
        "target(args[1], args[0])",
        "defaults(args[1], args[0])",
        "star(args[1], args[0])",
        "Solver().solve(args[1], args[0])",
        "Needs(args[1], args[0]).result()",
    ]
    assert [a.describe() for a in em.adapters(code, 2, max_adapters=3)] == [  # source order, then capped
        "defaults(*args)",
        "star(*args)",
        "target(*args)",
    ]
    four = [a.describe() for a in em.adapters(code, 4) if a.name in ("defaults", "star")]
    assert four == ["defaults(*args)", "star(*args)", "defaults(args[3], args[2], args[1], args[0])",
                    "star(args[3], args[2], args[1], args[0])"]  # fmt: skip
    three = [a.order for a in em.adapters(code, 3) if a.name == "defaults"]
    assert len(three) == 6 and three[0] == (0, 1, 2)  # every permutation up to three arguments
    assert all(a.tokens > 0 for a in found)
    assert em.adapters("def f(:\n", 2) == []


def test_an_adapter_is_plain_data():
    (adapter,) = em.adapters("def f(a, b):\n    return a\n", 2, max_adapters=1)
    assert pickle.loads(pickle.dumps(adapter)) == adapter
    assert json.loads(json.dumps(dataclasses.asdict(adapter)))["name"] == "f"


def test_the_last_definition_of_a_name_counts():
    code = "def f(a, b):\n    return a\n\ndef f(a):\n    return a\n"
    assert [a.describe() for a in em.adapters(code, 2)] == ["f(args)", "f(list(args))"]


def test_the_weak_sandbox_refusal_names_the_callers_setting():
    from inversecoder.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^decontaminate\.allow_weak_sandbox: .*'rlimits'"):
        groundtruth.open_sandbox(parallel=1, isolation="rlimits", setting="decontaminate.allow_weak_sandbox")
