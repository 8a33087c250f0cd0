"""Runs in a subprocess for `make_rephrased.py`: reads a pickled job on stdin (a task's canonical solution, entry
point, base inputs, atol and the generated variants with their adapters), calls every variant on every base input
and prints one verdict per variant: "ok", or the name of the exception (AssertionError: a wrong output)."""

from __future__ import annotations

import copy
import math
import pickle
import signal
import sys
from typing import Any


def same(a: Any, b: Any, atol: float) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(a, b, rel_tol=1e-6, abs_tol=max(atol, 1e-9)) or (a != a and b != b)
        except TypeError:
            return False
    if isinstance(a, list | tuple) and type(a) is type(b):
        return len(a) == len(b) and all(same(x, y, atol) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def call(ns: dict[str, Any], adapter: tuple[str, str, str, tuple[int, ...]], args: list[Any]) -> Any:
    kind, name, method, perm = adapter
    if kind == "perm":
        return ns[name](*[args[p] for p in perm])
    if kind == "packed":
        return ns[name](tuple(args))
    if kind == "method":
        return getattr(ns[name](), method)(*args)
    if kind == "ctor":
        return getattr(ns[name](*args), method)()
    return ns[name](*args)


def timeout(*_: Any) -> None:
    raise TimeoutError


def main() -> None:
    job = pickle.load(sys.stdin.buffer)
    signal.signal(signal.SIGALRM, timeout)
    canonical: dict[str, Any] = {}
    exec(job["canonical"], canonical)
    verdicts = []
    for code, adapter in job["variants"]:
        try:
            signal.alarm(60)  # generous: a verdict must not depend on the machine's load
            ns: dict[str, Any] = {}
            exec(code, ns)
            for args in job["inputs"]:
                want = canonical[job["entry"]](*copy.deepcopy(args))
                if not same(want, call(ns, adapter, copy.deepcopy(args)), job["atol"]):
                    raise AssertionError("wrong output")
            verdicts.append("ok")
        except BaseException as error:
            verdicts.append(type(error).__name__)
        finally:
            signal.alarm(0)
    print(repr(verdicts))


if __name__ == "__main__":
    main()
