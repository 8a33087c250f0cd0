"""Writes `data/decontamination_rephrased.jsonl`: a held-out set of HumanEval+/MBPP+ problems in disguise,
to measure the decontamination layers' recall per family of rephrasing (and precision on the negatives).

The mechanical families transform each task's canonical solution with `ast` and rename every identifier it
defines: `renamed`, `for-to-while`, `noop` (inserted no-op statements), `reordered` (independent adjacent
assignments swapped), and the signature families `args-reordered`, `args-merged` and `class-wrapped`.
Every generated program is run in a subprocess (`benchmarks/rephrased_harness.py`) on the task's base inputs,
through the adapter its family needs, against the canonical solution's outputs; the ones that do not solve the
task are dropped. The hand-written rows (`statement-only`, `other-language`, `negative`, `generic`) come from
`benchmarks/rephrased_hand.jsonl` and are appended as they are. The output is deterministic (seeded).

    python benchmarks/make_rephrased.py           # writes the file (~20 s on 8 cores)
    python benchmarks/make_rephrased.py --check   # exit status 1 when the shipped file differs
"""

from __future__ import annotations

import argparse
import ast
import builtins
import json
import keyword
import pickle
import random
import subprocess
import sys
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from inversecoder.core.benchmarks import load_benchmark

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "data" / "decontamination_rephrased.jsonl"
HAND = REPO / "benchmarks" / "rephrased_hand.jsonl"
HARNESS = REPO / "benchmarks" / "rephrased_harness.py"
SEED = "inversecoder-rephrased-v1"
GENERIC = ("renamed", "for-to-while", "noop", "reordered")
SIGNATURE = ("args-reordered", "args-merged", "class-wrapped")
PER_BENCHMARK = {"renamed": 70, "for-to-while": 70, "noop": 70, "reordered": 70}
PER_BENCHMARK.update(dict.fromkeys(SIGNATURE, 25))

WORDS = (
    "values items data seq entries elems records parts chunks tokens words chars digits nums total count acc "
    "result out buf pos idx cursor step size width limit bound target key val item elem node head tail pair "
    "left right low high mid first last prev curr nxt flag found ok best score weight amount level depth span "
    "gap delta ratio factor base power rest head_idx cache memo seen pool stack queue bucket table row col cell "
    "letter text line phrase label tag code value number integer candidate piece block segment frame window"
)
WORDS += "|cur new old tmp raw src dst max min run sum n full part temp inner outer local main aux"
WORDS += "|compute find get calc solve process check build count make derive evaluate handle run transform"
NOUNS, ADJECTIVES, VERBS = (part.split() for part in WORDS.split("|"))
CLASS_NAMES = ("Solver", "Solution", "Calculator", "Processor", "Helper", "Analyzer", "Worker", "Task")
METHOD_NAMES = ("solve", "compute", "run", "evaluate", "result", "apply", "execute", "answer")
PURE_CALLS = {"len", "range", "int", "str", "float", "abs", "min", "max", "sum", "sorted", "list", "set", "dict"}
PURE_CALLS |= {"tuple", "bool", "ord", "chr", "round", "enumerate", "zip", "reversed"}
WITH_CODE = (
    "Can you add comments to this function?\n\n{code}",
    "Refactor the following code for readability.\n\n{code}",
    "What does this code do?\n\n{code}",
    "Please review this Python snippet and tell me if it can be simplified.\n\n{code}",
    "Rewrite this code so that it follows PEP 8.\n\n{code}",
    "Is there a bug in this code? It seems to work, but I am not sure.\n\n{code}",
)
WITHOUT_CODE = (
    "Show me a clean Python version of the helper we talked about earlier.",
    "Write the function again, but without any docstrings or comments.",
    "Give me a compact Python implementation, with an example call.",
    "Please paste the final version of the solution here.",
    "Can you send me the refactored code?",
    "Give me the final version, cleaned up.",
)
OPENERS = ("Here is the code:", "Sure, here is a tidied-up version.", "This is the refactored version:", "Here you go.")
Adapter = tuple[str, str, str, tuple[int, ...]]  # kind, function or class name, method name, permutation


def fence(code: str, lang: str = "python") -> str:
    return f"```{lang}\n{code.rstrip()}\n```"


def drop_docstrings(tree: ast.Module) -> None:
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            body = node.body
            first = body[0] if body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                body.pop(0)
            if not body and not isinstance(node, ast.Module):
                body.append(ast.Pass())


def entry_def(tree: ast.Module, entry: str) -> ast.FunctionDef | None:
    found = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == entry]
    return found[0] if found else None


def plain_params(fn: ast.FunctionDef) -> bool:
    a = fn.args
    return not (a.vararg or a.kwarg or a.kwonlyargs or a.defaults or a.posonlyargs or fn.decorator_list)


class Renamer(ast.NodeTransformer):
    """Renames every name the program defines (functions, parameters, locals) to words from the lists."""

    def __init__(self, tree: ast.Module, rng: random.Random) -> None:
        methods = {id(f) for c in ast.walk(tree) if isinstance(c, ast.ClassDef) for f in c.body}
        defined: dict[str, bool] = {}  # name -> is a function
        taken = set(dir(builtins)) | set(keyword.kwlist) | {"self"}
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and id(node) not in methods:
                defined.setdefault(node.name, True)
            elif isinstance(node, ast.arg) and node.arg != "self":
                defined.setdefault(node.arg, False)
            elif isinstance(node, ast.Name) and isinstance(getattr(node, "ctx", None), ast.Store):
                defined.setdefault(node.id, False)
            elif isinstance(node, ast.ExceptHandler) and node.name:
                defined.setdefault(node.name, False)
            for field in ("id", "attr", "name", "arg", "asname"):
                value = getattr(node, field, None)
                if isinstance(value, str):
                    taken.add(value.split(".")[0])
        self.functions = {name for name, is_function in defined.items() if is_function}
        self.mapping: dict[str, str] = {}
        for name in defined:
            if name in dir(builtins) or name == "self":
                continue
            while True:
                if defined[name]:
                    new = f"{rng.choice(VERBS)}_{rng.choice(NOUNS)}"
                else:
                    new = rng.choice(NOUNS) if rng.random() < 0.6 else f"{rng.choice(ADJECTIVES)}_{rng.choice(NOUNS)}"
                if new not in taken:
                    break
            taken.add(new)
            self.mapping[name] = new

    def visit_Name(self, node: ast.Name) -> ast.Name:
        node.id = self.mapping.get(node.id, node.id)
        return node

    def visit_arg(self, node: ast.arg) -> ast.arg:
        node.arg = self.mapping.get(node.arg, node.arg)
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.FunctionDef:
        if node.name in self.functions:
            node.name = self.mapping.get(node.name, node.name)
        self.generic_visit(node)
        return node

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> ast.ExceptHandler:
        if node.name:
            node.name = self.mapping.get(node.name, node.name)
        self.generic_visit(node)
        return node

    def visit_Global(self, node: ast.Global | ast.Nonlocal) -> ast.AST:
        node.names = [self.mapping.get(n, n) for n in node.names]
        return node

    visit_Nonlocal = visit_Global

    def visit_Call(self, node: ast.Call) -> ast.Call:
        if isinstance(node.func, ast.Name) and node.func.id in self.functions:
            for kw in node.keywords:
                kw.arg = self.mapping.get(kw.arg, kw.arg) if kw.arg else None
        self.generic_visit(node)
        return node


def has_continue(body: list[ast.stmt]) -> bool:
    stack: list[ast.AST] = list(body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Continue):
            return True
        if not isinstance(node, ast.For | ast.While | ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            stack.extend(ast.iter_child_nodes(node))
    return False


class LoopToWhile(ast.NodeTransformer):
    def __init__(self) -> None:
        self.count = 0

    def visit_For(self, node: ast.For) -> Any:
        self.generic_visit(node)
        n, self.count = self.count, self.count + 1
        idx, stop = f"loop_idx_{n}", f"loop_stop_{n}"
        it = node.iter
        is_range = isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "range"
        if is_range and isinstance(it, ast.Call) and not it.keywords and 1 <= len(it.args) <= 3:
            args = it.args if len(it.args) > 1 else [ast.Constant(0), it.args[0]]
            step_node = args[2] if len(args) == 3 else ast.Constant(1)
            try:
                step = ast.literal_eval(step_node)
            except ValueError:
                return node
            if not isinstance(step, int) or step == 0 or any(isinstance(a, ast.Starred) for a in args):
                return node
            natural = isinstance(node.target, ast.Name) and not has_continue(node.body) and not node.orelse
            if natural:
                stored = {
                    n.id
                    for s in node.body
                    for n in ast.walk(s)
                    if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store | ast.Del)
                }
                natural = isinstance(node.target, ast.Name) and node.target.id not in stored
            counter = node.target.id if natural and isinstance(node.target, ast.Name) else idx
            pre: list[ast.stmt] = [ast.parse(f"{counter} = 0").body[0]]
            pre[0].value = args[0]  # type: ignore[attr-defined]
            limit: ast.expr = args[1]
            if not isinstance(limit, ast.Constant):
                pre.append(ast.Assign([ast.Name(stop, ast.Store())], limit))
                limit = ast.Name(stop, ast.Load())
            op: ast.cmpop = ast.Lt() if step > 0 else ast.Gt()
            test: ast.expr = ast.Compare(ast.Name(counter, ast.Load()), [op], [limit])
            bump = ast.AugAssign(ast.Name(counter, ast.Store()), ast.Add(), step_node)
            if natural:
                body = [*node.body, bump]
            else:
                body = [ast.Assign([node.target], ast.Name(counter, ast.Load())), bump, *node.body]
            return [*pre, ast.While(test, body, node.orelse)]
        items = f"loop_items_{n}"
        pre = [ast.parse(f"{items} = list(x)\n{idx} = 0").body[0], ast.parse(f"{idx} = 0").body[0]]
        pre[0].value.args = [it]  # type: ignore[attr-defined]
        test = ast.parse(f"{idx} < len({items})", mode="eval").body
        head = ast.parse(f"x = {items}[{idx}]\n{idx} += 1").body
        head[0].targets = [node.target]  # type: ignore[attr-defined]
        return [*pre, ast.While(test, [*head, *node.body], node.orelse)]


def function_bodies(tree: ast.Module) -> list[tuple[ast.FunctionDef, list[ast.stmt]]]:
    out = []
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef):
            for node in ast.walk(fn):
                for field in ("body", "orelse", "finalbody"):
                    block = getattr(node, field, None)
                    if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                        out.append((fn, block))
    return out


def insert_noops(tree: ast.Module, rng: random.Random) -> bool:
    blocks = function_bodies(tree)
    if not blocks:
        return False
    for fn in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]:
        params = [a.arg for a in fn.args.args if a.arg != "self"]
        if params and rng.random() < 0.6:
            p = rng.choice(params)
            fn.body.insert(0, ast.parse(f"{p} = {p}").body[0])
    for k in range(rng.randint(2, 4)):
        _, block = rng.choice(blocks)
        const = rng.choice(["0", "None", "''", "[]", "1.0", "False", "()"])
        stmt = rng.choice([f"noop_{k} = {const}", "pass", f"if False:\n    noop_{k} = {const}"])
        block.insert(rng.randrange(len(block)), ast.parse(stmt).body[0])
    return True


def simple_rw(stmt: ast.stmt) -> tuple[set[str], set[str]] | None:
    """The names a plain assignment reads and writes (all it reads, with a call that may mutate), or None."""
    if not isinstance(stmt, ast.Assign | ast.AugAssign | ast.AnnAssign) or stmt.value is None:
        return None
    targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
    writes = set()
    for t in targets:
        names = t.elts if isinstance(t, ast.Tuple) else [t]
        if not all(isinstance(x, ast.Name) for x in names):
            return None
        writes |= {x.id for x in names if isinstance(x, ast.Name)}
    effects = False  # a call that is not a pure builtin: it may mutate what it reads
    for node in ast.walk(stmt.value):
        if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in PURE_CALLS):
            effects = True
            if isinstance(node.func, ast.Name) and node.func.id in ("print", "input", "next", "exec", "eval"):
                return None
        if isinstance(node, ast.Yield | ast.YieldFrom | ast.Await | ast.NamedExpr | ast.Lambda):
            return None
    reads = {n.id for n in ast.walk(stmt.value) if isinstance(n, ast.Name)}
    reads |= writes if isinstance(stmt, ast.AugAssign) else set()
    return reads, (writes | reads if effects else writes)


def reorder(tree: ast.Module) -> bool:
    swapped = False
    for _, block in function_bodies(tree):
        i = 0
        while i + 1 < len(block):
            a, b = simple_rw(block[i]), simple_rw(block[i + 1])
            if a and b and not (a[1] & (b[0] | b[1])) and not (b[1] & a[0]):
                block[i], block[i + 1] = block[i + 1], block[i]
                swapped, i = True, i + 2
            else:
                i += 1
    defs = [i for i, n in enumerate(tree.body) if isinstance(n, ast.FunctionDef)]
    if swapped and len(defs) > 1:  # helpers after the entry point: also independent at module level
        tree.body[defs[0]], tree.body[defs[-1]] = tree.body[defs[-1]], tree.body[defs[0]]
    return swapped


class CallRewriter(ast.NodeTransformer):
    """Rewrites the program's own calls to the entry point for its new signature."""

    def __init__(self, entry: str, n: int, make: Any) -> None:
        self.entry, self.n, self.make, self.inside = entry, n, make, False

    def visit_Call(self, node: ast.Call) -> Any:
        self.generic_visit(node)
        own = isinstance(node.func, ast.Name) and node.func.id == self.entry and not node.keywords
        if own and len(node.args) == self.n and not any(isinstance(a, ast.Starred) for a in node.args):
            return self.make(node.args, self.inside)
        return node


def signature(tree: ast.Module, family: str, entry: str, rng: random.Random) -> Adapter | None:
    fn = entry_def(tree, entry)
    if fn is None or fn.decorator_list:
        return None
    names = [a.arg for a in fn.args.args]
    n = len(names)
    if family in ("args-reordered", "args-merged") and (n < 2 or not plain_params(fn)):
        return None
    if family == "args-reordered":
        perm = tuple(range(n))
        while perm == tuple(range(n)):
            perm = tuple(rng.sample(range(n), n))
        fn.args.args = [fn.args.args[p] for p in perm]
        CallRewriter(entry, n, lambda args, _: ast.Call(ast.Name(entry), [args[p] for p in perm], [])).visit(tree)
        return ("perm", entry, "", perm)
    if family == "args-merged":
        fn.args.args = [ast.arg("merged_args")]
        unpack = ast.Assign(
            [ast.Tuple([ast.Name(x, ast.Store()) for x in names], ast.Store())], ast.Name("merged_args")
        )
        fn.body.insert(0, unpack)
        CallRewriter(entry, n, lambda args, _: ast.Call(ast.Name(entry), [ast.Tuple(args, ast.Load())], [])).visit(tree)
        return ("packed", entry, "", ())
    cls, method = rng.choice(CLASS_NAMES), rng.choice(METHOD_NAMES)
    ctor = plain_params(fn) and n >= 1 and rng.random() < 0.5
    rewriter = CallRewriter(entry, n, None)
    if ctor:
        attrs = rng.sample([w for w in NOUNS if w not in names], n)
        init = ast.parse(f"def __init__(self, {', '.join(names)}):\n    pass").body[0]
        assert isinstance(init, ast.FunctionDef)
        init.body = [ast.parse(f"self.{a} = {x}").body[0] for a, x in zip(attrs, names, strict=True)]
        load = ast.parse(f"{', '.join(names)} = {', '.join(f'self.{a}' for a in attrs)}").body[0]
        fn.args.args, fn.body = [ast.arg("self")], [load, *fn.body]
        rewriter.make = lambda args, _: ast.Call(ast.Attribute(ast.Call(ast.Name(cls), args, []), method), [], [])
        adapter: Adapter = ("ctor", cls, method, ())
    else:
        fn.args.args.insert(0, ast.arg("self"))
        rewriter.make = lambda args, inside: ast.Call(
            ast.Attribute(ast.Name("self") if inside else ast.Call(ast.Name(cls), [], []), method), args, []
        )
        adapter = ("method", cls, method, ())
    rewriter.visit(tree)
    rewriter.inside = True
    rewriter.visit(fn)
    fn.name = method
    position = tree.body.index(fn)
    wrapper = ast.parse(f"class {cls}:\n    pass").body[0]
    assert isinstance(wrapper, ast.ClassDef)
    wrapper.body = [init, fn] if ctor else [fn]
    tree.body[position] = wrapper
    return adapter


def transform(source: str, entry: str, family: str, rng: random.Random) -> tuple[str, Adapter] | None:
    tree = ast.parse(source)
    drop_docstrings(tree)
    adapter: Adapter | None = ("plain", entry, "", ())
    if family == "for-to-while":
        if not any(isinstance(n, ast.For) for n in ast.walk(tree)):
            return None
        tree = LoopToWhile().visit(tree)
    elif (family == "noop" and not insert_noops(tree, rng)) or (family == "reordered" and not reorder(tree)):
        return None
    elif family in SIGNATURE:
        adapter = signature(tree, family, entry, rng)
    if adapter is None:
        return None
    renamer = Renamer(tree, rng)
    renamer.visit(tree)
    kind, name, method, perm = adapter
    adapter = (kind, renamer.mapping.get(name, name) if kind in ("plain", "perm", "packed") else name, method, perm)
    return ast.unparse(ast.fix_missing_locations(tree)) + "\n", adapter


def verify(job: dict[str, Any]) -> list[str]:
    """Runs a task's variants on its base inputs against the canonical solution, in a subprocess."""
    try:
        proc = subprocess.run(
            [sys.executable, str(HARNESS)], input=pickle.dumps(job), capture_output=True, timeout=1800, cwd=job["cwd"]
        )
        return list(ast.literal_eval(proc.stdout.decode().strip().splitlines()[-1]))
    except (subprocess.TimeoutExpired, IndexError, ValueError, SyntaxError):
        return ["harness failed"] * len(job["variants"])


def example_call(adapter: Adapter, args: list[Any]) -> str | None:
    kind, name, method, perm = adapter
    text = ", ".join(repr(a) for a in ([args[p] for p in perm] if kind == "perm" else args))
    call = {
        "plain": f"{name}({text})",
        "perm": f"{name}({text})",
        "packed": f"{name}(({text}{',' * (len(args) == 1)}))",
    }
    call |= {"method": f"{name}().{method}({text})", "ctor": f"{name}({text}).{method}()"}
    result = call[kind]
    return result if len(result) <= 100 and "<" not in text and "\n" not in text else None


def make_row(task_id: str, family: str, code: str, adapter: Adapter, args: list[Any], rng: random.Random) -> dict:
    with_code = rng.random() < 0.5
    instruction = rng.choice(WITH_CODE).format(code=fence(code)) if with_code else rng.choice(WITHOUT_CODE)
    shown = code
    if instruction.startswith("Can you add comments"):
        shown = "\n".join(
            ("# Entry point of the snippet.\n" if line.startswith(("def ", "class ")) else "") + line
            for line in code.splitlines()
        )
        opener = "I added a short comment above each top-level definition:"
    elif instruction.startswith("What does"):
        opener = f"It defines `{adapter[1]}` and computes its result from the arguments; here it is, laid out:"
    else:
        opener = rng.choice(OPENERS)
    response = f"{opener}\n\n{fence(shown)}"
    call = example_call(adapter, args)
    if call and rng.random() < 0.6:
        response += f"\n\nExample usage:\n\n{fence(f'print({call})')}"
    return {"task_id": task_id, "family": family, "instruction": instruction, "response": response}


def generate() -> tuple[str, Counter, Counter]:
    problems: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as cache:
        for name in ("humaneval", "mbpp"):
            problems.update(load_benchmark(name, None, Path(cache)).problems)
    families = GENERIC + SIGNATURE
    candidates: dict[str, dict[str, tuple[str, Adapter]]] = {}
    jobs = []
    with tempfile.TemporaryDirectory() as cwd:
        for task_id, p in problems.items():
            source = (
                p["prompt"] + p["canonical_solution"] if task_id.startswith("HumanEval") else p["canonical_solution"]
            )
            made = {}
            for family in families:
                out = transform(source, p["entry_point"], family, random.Random(f"{SEED}:{family}:{task_id}"))
                if out is not None:
                    made[family] = out
            candidates[task_id] = made
            job = {"canonical": source, "entry": p["entry_point"], "inputs": p["base_input"], "atol": p["atol"]}
            jobs.append(job | {"variants": list(made.values()), "cwd": cwd})
        with ThreadPoolExecutor(8) as pool:
            verdicts = list(pool.map(verify, jobs))
    dropped: Counter = Counter()
    for task_id, made in candidates.items():
        verdict_of = dict(zip(made, verdicts[list(problems).index(task_id)], strict=True))
        for family, verdict in verdict_of.items():
            if verdict != "ok":
                dropped[(family, task_id, verdict)] += 1
    rows: list[dict[str, Any]] = []
    counts: Counter = Counter()
    for family in families:
        for bench in ("HumanEval", "Mbpp"):
            order = sorted(t for t in problems if t.startswith(bench + "/"))
            random.Random(f"{SEED}:{family}:{bench}").shuffle(order)
            taken = 0
            for task_id in order:
                if taken == PER_BENCHMARK[family] or family not in candidates[task_id]:
                    continue
                verdict = verdicts[list(problems).index(task_id)][list(candidates[task_id]).index(family)]
                if verdict != "ok":
                    continue
                code, adapter = candidates[task_id][family]
                rng = random.Random(f"{SEED}:row:{family}:{task_id}")
                args = problems[task_id]["base_input"][0]
                rows.append({"label": "contaminated"} | make_row(task_id, family, code, adapter, args, rng))
                taken += 1
                counts[(family, bench)] += 1
    for line in HAND.read_text().splitlines():
        row = json.loads(line)
        rows.append(row)
        counts[(row["family"], (row["task_id"] or "none").split("/")[0])] += 1
    keys = ("id", "label", "task_id", "family", "instruction", "response")
    text = ""
    for number, row in enumerate(rows, 1):
        row = {"id": f"rph-{number:05d}"} | row
        text += json.dumps({k: row[k] for k in keys}, ensure_ascii=False) + "\n"
    return text, counts, dropped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the shipped file differs")
    options = parser.parse_args()
    text, counts, dropped = generate()
    for (family, bench), n in sorted(counts.items()):
        print(f"{family:15} {bench:10} {n}")
    for family, task_id, why in sorted(dropped):
        print(f"dropped by verification: {family} {task_id} ({why})")
    if options.check:
        same = OUTPUT.is_file() and OUTPUT.read_text() == text
        print("up to date" if same else f"{OUTPUT} differs from what the generator writes", file=sys.stderr)
        sys.exit(0 if same else 1)
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT} ({len(text.splitlines())} rows, {len(text.encode()) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
