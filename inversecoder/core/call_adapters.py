"""How a row's code can be called as a benchmark task's entry point: `Adapter`s read from its AST.

The trusted side of the execution tier (`execution_match.py`) parses the code, never executes it:
top-level functions and classes are the candidates (nested functions, `test_*` and `main` are not),
and each fitting way to call one with the task's argument tuple `args` is an adapter:
- function: `f(*args)`, and `f` with the arguments permuted (all orders up to 3, else reversed);
- packed: `f(args)` / `f(list(args))`, where `f` takes one argument and the task at least two;
- method: `C().m(*args)` (permuted as above; static and class methods too);
- constructed: `C(*args).m()`, where `m` takes nothing besides self (dataclasses' fields count).
Parameter counts must fit (defaults and *args respected). Direct calls come first, a function named
like the entry point first of all, and the list is capped, so the order is the priority.
"""

from __future__ import annotations

import ast
import itertools
import math
import re
import textwrap
import warnings
from dataclasses import dataclass

from inversecoder.core.code_tokens import canonical_tokens

FUNCTION, PACKED, METHOD, CONSTRUCTED = "function", "packed", "method", "constructed"
DEFAULT_MAX_ADAPTERS = 24
_PYTHON_TAGS = frozenset({"", "python", "py", "python3", "py3"})
_FENCE = re.compile(r"^[ \t]*```[ \t]*([^\s`]*)[^\n]*\n(.*?)(?:^[ \t]*```|\Z)", re.DOTALL | re.MULTILINE)


@dataclass(frozen=True)
class Adapter:
    """How the row's code is called as the task's entry point with the task's arguments `args`."""

    kind: str  # function | packed | method | constructed
    name: str  # the top-level function or class called
    method: str = ""  # method and constructed: the method called
    order: tuple[int, ...] = ()  # the task's arguments in the order passed: args[order[0]], ...
    packing: str = ""  # packed: "tuple" (f(args)) or "list" (f(list(args)))
    tokens: int = 0  # canonical tokens of the function (or class) used: how much code solves the task

    def describe(self) -> str:
        if self.kind == PACKED:
            return f"{self.name}({'args' if self.packing == 'tuple' else 'list(args)'})"
        identity = self.order == tuple(range(len(self.order)))
        call = "*args" if identity else ", ".join(f"args[{i}]" for i in self.order)
        if self.kind == METHOD:
            return f"{self.name}().{self.method}({call})"
        if self.kind == CONSTRUCTED:
            return f"{self.name}({call}).{self.method}()"
        return f"{self.name}({call})"

    def spec(self) -> tuple[str, str, str, tuple[int, ...], str]:
        """What the sandboxed side needs (plain data: it unpickles nothing of ours)."""
        return self.kind, self.name, self.method, self.order, self.packing


@dataclass(frozen=True)
class Params:
    """How many positional arguments a callable takes: between `low` and `high` (inf: *args)."""

    low: int
    high: float

    def fits(self, count: int) -> bool:
        return self.low <= count <= self.high


@dataclass(frozen=True)
class Definition:
    name: str
    params: Params | None  # a function's; a class's constructor (None: unknown, inherited)
    tokens: int
    methods: tuple[tuple[str, Params], ...] = ()  # a class's methods, without self / cls
    is_class: bool = False


def parse(code: str) -> ast.Module | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return ast.parse(code)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return None


def _params(args: ast.arguments, bound: bool) -> Params | None:
    """None when the callable cannot be called positionally (a keyword-only argument without default)."""
    if any(default is None for default in args.kw_defaults):
        return None
    positional = [*args.posonlyargs, *args.args]
    defaults = len(args.defaults)
    if bound:  # self / cls
        if not positional and args.vararg is None:
            return None
        if positional:
            positional, defaults = positional[1:], min(defaults, len(positional) - 1)
    return Params(max(0, len(positional) - defaults), math.inf if args.vararg else len(positional))


def _decorators(node: ast.FunctionDef | ast.ClassDef) -> set[str]:
    names = set()
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        names.add(target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", ""))
    return names


def _candidate(name: str) -> bool:
    return not name.startswith("test_") and name != "main"


def _dunder(name: str) -> bool:
    return name != "__call__" and name.startswith("__") and name.endswith("__")


def _class(node: ast.ClassDef, lines: list[str]) -> Definition:
    methods: list[tuple[str, Params]] = []
    init: Params | None = None
    plain = all(isinstance(b, ast.Name) and b.id == "object" for b in node.bases)
    for item in node.body:
        if not isinstance(item, ast.FunctionDef):
            continue
        decorators = _decorators(item)
        params = _params(item.args, bound="staticmethod" not in decorators)
        if item.name == "__init__":
            init = params or Params(1, 0)  # not callable positionally: fits nothing
            plain = True
        elif params and "property" not in decorators and _candidate(item.name) and not _dunder(item.name):
            methods.append((item.name, params))
    if "dataclass" in _decorators(node) and init is None and plain:  # its generated __init__: the fields
        fields = [
            item
            for item in node.body
            if isinstance(item, ast.AnnAssign)
            and isinstance(item.target, ast.Name)
            and "ClassVar" not in ast.unparse(item.annotation)
        ]
        init = Params(sum(f.value is None for f in fields), len(fields))
    elif init is None and plain:
        init = Params(0, 0)
    return Definition(node.name, init, len(canonical_tokens(_segment(lines, node))), tuple(methods), is_class=True)


def _segment(lines: list[str], node: ast.stmt) -> str:
    """The lines of `node`'s source (ast.get_source_segment splits the whole source at every call: quadratic)."""
    return "".join(lines[node.lineno - 1 : node.end_lineno or node.lineno])


def definitions(tree: ast.Module, code: str) -> list[Definition]:
    """The module's top-level functions and classes, each name as its last definition leaves it."""
    found: dict[str, Definition | None] = {}
    lines = [line + "\n" for line in code.split("\n")]  # numbered as ast numbers them (splitlines splits on more)
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found.pop(node.name, None)  # a redefinition: the last one counts, in its place
            if isinstance(node, ast.ClassDef):
                found[node.name] = _class(node, lines)
            elif isinstance(node, ast.FunctionDef) and _candidate(node.name):
                params = _params(node.args, bound=False)
                tokens = len(canonical_tokens(_segment(lines, node)))
                found[node.name] = Definition(node.name, params, tokens) if params else None
    return [item for item in found.values() if item is not None]


def _orders(arity: int) -> tuple[tuple[int, ...], list[tuple[int, ...]]]:
    """The identity, and the other argument orders tried: all of them up to 3 arguments, else reversed."""
    identity = tuple(range(arity))
    if arity <= 3:
        return identity, [p for p in itertools.permutations(identity) if p != identity]
    return identity, [identity[::-1]]


def fitting(found: list[Definition], arity: int, max_adapters: int, entry_point: str = "") -> list[Adapter]:
    """Every fitting adapter, direct calls first (a function named like the entry point first of all)."""
    functions = sorted((c for c in found if not c.is_class), key=lambda c: c.name != entry_point)
    classes = [c for c in found if c.is_class]
    identity, others = _orders(arity)
    adapters: list[Adapter] = []

    def calls(order: tuple[int, ...]) -> None:
        for function in functions:
            if function.params and function.params.fits(arity):
                adapters.append(Adapter(FUNCTION, function.name, order=order, tokens=function.tokens))
        for cls in classes:
            if cls.params is None or cls.params.fits(0):  # C() may work: inherited or no constructor
                for method, params in cls.methods:
                    if params.fits(arity):
                        adapters.append(Adapter(METHOD, cls.name, method, order, tokens=cls.tokens))
            if cls.params is not None and arity and cls.params.fits(arity):
                for method, params in cls.methods:
                    if params.fits(0):
                        adapters.append(Adapter(CONSTRUCTED, cls.name, method, order, tokens=cls.tokens))

    calls(identity)
    if arity >= 2:
        for function in functions:
            if function.params and function.params.fits(1) and function.params.high == 1:
                for packing in ("tuple", "list"):
                    adapters.append(Adapter(PACKED, function.name, packing=packing, tokens=function.tokens))
    for order in others:
        calls(order)
    return adapters[:max_adapters]


def adapters(code: str, arity: int, max_adapters: int = DEFAULT_MAX_ADAPTERS, entry_point: str = "") -> list[Adapter]:
    """The ways `code` can be called with `arity` arguments, from its AST ([] when it does not parse)."""
    tree = parse(code)
    return fitting(definitions(tree, code), arity, max_adapters, entry_point) if tree else []


def python_code(response: str) -> str | None:
    """The Python code of a markdown response: its fenced blocks tagged python/py or untagged that
    parse (joined), or the whole response when it has no fence and is Python with more than bare
    expressions (prose like "Hello" parses too); None when there is none."""
    blocks = _FENCE.findall(response)
    if not blocks:
        tree = parse(response) if response.strip() else None
        return response if tree and any(not isinstance(node, ast.Expr) for node in tree.body) else None
    code = [textwrap.dedent(body) for tag, body in blocks if tag.lower() in _PYTHON_TAGS]
    code = [block for block in code if block.strip() and parse(block) is not None]
    return "\n\n".join(code) if code else None
