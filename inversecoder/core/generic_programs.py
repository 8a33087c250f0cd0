"""Generic programs: one builtin or operator applied to the arguments. A task whose tests one of them passes
cannot be verified by running a corpus row on those tests.

Passing a task's tests is evidence of contamination only if it is unlikely for code written for another
purpose: `sorted(xs)` passes the tests of every "sort this list with algorithm X" task, `a + b` those of
HumanEval/53, `math.gcd` those of HumanEval/13, and such code is everywhere in an instruction corpus. These
programs are ours and the inputs are the benchmark's data, so they run here, in this process (as evalplus's
`trusted_exec` runs the canonical solutions), with each input deep-copied.
"""

from __future__ import annotations

import copy
import math
import operator
from collections.abc import Callable, Sequence
from typing import Any

UNARY: dict[str, Callable[[Any], Any]] = {
    "len": len,
    "sum": sum,
    "max": max,
    "min": min,
    "sorted": sorted,
    "sorted descending": lambda a: sorted(a, reverse=True),
    "reversed": lambda a: a[::-1],
    "sorted unique": lambda a: sorted(set(a)),
    "abs": abs,
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "list": list,
    "tuple": tuple,
    "set": set,
    "any": any,
    "all": all,
    "upper": lambda a: a.upper(),
    "lower": lambda a: a.lower(),
    "strip": lambda a: a.strip(),
    "split": lambda a: a.split(),
    "title": lambda a: a.title(),
    "capitalize": lambda a: a.capitalize(),
    "swapcase": lambda a: a.swapcase(),
    "join": lambda a: "".join(a),
    "join with spaces": lambda a: " ".join(a),
    "is palindrome": lambda a: a == a[::-1],
    "squares": lambda a: [x * x for x in a],
    "cubes": lambda a: [x**3 for x in a],
    "negate": operator.neg,
    "double": lambda a: a * 2,
    "square": lambda a: a * a,
    "cube": lambda a: a * a * a,
    "is even": lambda a: a % 2 == 0,
    "is odd": lambda a: a % 2 == 1,
}
BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "add": operator.add,
    "subtract": operator.sub,
    "multiply": operator.mul,
    "divide": operator.truediv,
    "floor divide": operator.floordiv,
    "modulo": operator.mod,
    "equal": operator.eq,
    "not equal": operator.ne,
    "less": operator.lt,
    "less or equal": operator.le,
    "greater": operator.gt,
    "greater or equal": operator.ge,
    "min": min,
    "max": max,
    "gcd": math.gcd,
    "lcm": math.lcm,
    "in": lambda a, b: a in b,
    "contains": lambda a, b: b in a,
    "count": lambda a, b: a.count(b),
    "index": lambda a, b: a.index(b),
    "split by": lambda a, b: a.split(b),
    "starts with": lambda a, b: a.startswith(b),
    "ends with": lambda a, b: a.endswith(b),
    "half product": lambda a, b: a * b / 2,
}
PROGRAMS: dict[int, dict[str, Callable[..., Any]]] = {1: UNARY, 2: BINARY}


def _same(output: Any, expected: Any, atol: float) -> bool:
    """evalplus's comparison, simply: exact, or numbers (and lists of them) within a tolerance."""
    try:
        if type(output) is type(expected) and output == expected:
            return True
        if isinstance(expected, float) or (
            isinstance(expected, (list, tuple)) and expected and all(isinstance(x, float) for x in expected)
        ):
            import numpy as np

            return bool(np.allclose(output, expected, rtol=1e-07, atol=max(atol, 1e-6)))
    except Exception:  # an output of another shape: not the same
        return False
    return False


def _bounded(args: Sequence[Any]) -> bool:
    """False where a program could build a huge value: a sequence and a big count (`"ab" * 10**9`)."""
    has_sequence = any(isinstance(a, (str, bytes, list, tuple)) for a in args)
    return not (has_sequence and any(isinstance(a, int) and abs(a) > 10_000 for a in args))


def generic_program(inputs: Sequence[Any], expected: Sequence[Any], atol: float, passes: Callable) -> str | None:
    """The name of a generic program that passes a task's tests (`passes(details)`, the task's own rule), or None."""
    arity = len(inputs[0]) if inputs else 0
    for name, program in PROGRAMS.get(arity, {}).items():
        details = []
        for args, want in zip(inputs, expected, strict=True):
            if not _bounded(args):
                details.append(0)
                continue
            try:
                details.append(int(_same(program(*copy.deepcopy(args)), want, atol)))
            except Exception:  # the program does not apply to this input
                details.append(0)
        if passes(details):
            return name
    return None
