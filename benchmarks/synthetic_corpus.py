"""A synthetic Evol-Instruct-110K look-alike for the paper-scale rehearsal (issue #19).

One module (over 500 lines): about 175 of them are the vocabulary and template tables the generator draws from.

The rehearsal measures the orchestrator (memory, passes over the data, cache, parquet writing) at the
paper's 110K rows without the real corpus, so what those costs depend on is reproduced (row count,
lengths, fences, languages, duplicates, contamination), not meaning. Measured at 110K rows, seed 0:

- lengths (characters): instructions p10/p50/p90/p99 240/472/954/1594, mean 544: a request naming the
  function, its input and (half the time) its steps, then context sentences up to a lognormal target
  (median 320, sigma 0.65); 12% also quote a flawed attempt in a fence (Evol-Instruct's "fix this code").
  Responses 875/1515/2665/4381, mean 1685: a lognormal target (median 1350, sigma 0.5), 50-80% code.
  Why: what is known of Evol-Instruct-110K (instruction median 400-500 with a long tail, response median
  1.5-2K), and its size: 256 MB of JSONL here, 255 MB for the 111K rows of evol-codealpaca-v1 it comes
  from. The bundled `data/evol_instruct_sample.jsonl` is a short demo (instruction median 92, response
  568): it is followed in shape only, below;
- fences: 7% of responses have none (6% prose answers to conceptual questions, 1% a bare Python program,
  which the extractor still takes), 71% one, 16% two (usage or output after the code), 6% three; the
  sample has 7% / 86% / 7%, Evol-Instruct answers explain more. 94% of rows yield a code block;
- languages: python 64%, javascript 8%, java 7%, cpp 5%, sql 4%, csharp 3%, typescript, go, rust and
  bash 2% each, with the tag variants seen in the sample and the corpus (js, c++, sh, py, cs, ts, bare);
- programs come from templates with random identifiers, constants, operations, docstrings and comments;
  the Python ones parse and run in microseconds (loops over their arguments only, stdlib imports only);
- duplicates as in a real corpus: every row is distinct text, but 0.1% repeat an earlier row after the
  dedup stage's normalization (case, punctuation, prose around the code) and 2.5% are near copies (a
  context sentence added or dropped, 1-4 constants of the code changed). Dedup's rates (exact / Jaccard
  0.6 / 0.7 / 0.8): instructions 0.10% / 3.6% / 2.3% / 1.5%, code 0.10% / 2.6% / 2.6% / 2.4%;
- contamination: `rows // 200` rows, at most 10, copy a HumanEval+/MBPP+ statement and canonical solution
  (or, every third, the solution alone) from `data/benchmarks/`; the stats name them. Ordinary rows use
  none of the benchmarks' names, statements or solution shapes: the substring, n-gram and code layers
  flag exactly the 10 planted rows of 110K, and the instructions of a 3,000-row sample score at most 0.68
  on the semantic layer (threshold 0.83).

    python benchmarks/synthetic_corpus.py OUT.jsonl --rows 110000 --seed 0   # ~15 s, ~110 MB of memory
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import random
import re
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from inversecoder.builders.decontaminate import benchmark_task
from inversecoder.builders.dedup import code_units
from inversecoder.core.data import BENCHMARKS_DIR

EXACT_RATE, NEAR_RATE, MAX_CONTAMINATED = 0.001, 0.025, 10
INSTRUCTION_MEDIAN, INSTRUCTION_SIGMA, RESPONSE_MEDIAN, RESPONSE_SIGMA = 320, 0.65, 1350, 0.5
Rng = random.Random
T = TypeVar("T")


def _split(text: str, sep: str | None = None) -> list[str]:
    return text.split(sep)  # a function, so that the tables below can be written as one string each


# fmt: off
LANGUAGES = {  # language: (share, {fence tag: weight})
    "python": (64, {"python": 95, "py": 2, "": 3}), "javascript": (8, {"javascript": 80, "js": 20}),
    "java": (7, {"java": 1}), "cpp": (5, {"cpp": 70, "c++": 30}), "sql": (4, {"sql": 1}),
    "csharp": (3, {"csharp": 80, "cs": 20}), "typescript": (2, {"typescript": 85, "ts": 15}),
    "go": (2, {"go": 1}), "rust": (2, {"rust": 1}), "bash": (2, {"bash": 70, "sh": 30}),
}
LANGUAGE_NAMES = {"cpp": "C++", "csharp": "C#", "javascript": "JavaScript", "typescript": "TypeScript", "sql": "SQL"}
ADJ = _split("raw valid total peak base last first next prior active pending clean sorted unique recent daily "
             "hourly net gross scaled rolling weighted signed local global outer inner upper lower stale fresh "
             "cached queued nominal spare shared primary backup partial merged")
NOUN = _split("sensor reading price order invoice user session token record sample score weight packet event "
              "metric node edge grade ticket batch frame pixel line entry quota budget rate delta offset bucket "
              "slot amount balance reward vote step tick lap shift height width depth margin signal voltage "
              "current pulse credit debit fee stock unit cargo route stop trip fare seat pallet crate parcel "
              "review rating click visit coupon wallet ledger tariff")
VERB = _split("compute collect normalize merge scale rank group tally summarize clip extract build update select "
              "trim encode shift rotate flatten partition reduce derive adjust pick bucketize sift refine "
              "aggregate reconcile project gather")
PLURALS = [n[:-1] + "ies" if n[-1] == "y" and n[-2] not in "aeiou" else n + ("es" if n.endswith(("s", "x", "ch"))
           else "s") for n in NOUN]
LOOP = _split("v x item value n elem num entry val point")
SLOT_POOLS = {name: _split(values, "|") for name, values in {
    "dom": "an e-commerce checkout service|a weather station network|a hospital scheduling tool|a logistics "
    "tracking system|a school grading portal|a fitness tracking app|a stock trading dashboard|a smart-home hub|a "
    "library catalogue|a ride-sharing backend|a factory sensor gateway|a payroll batch job|a game leaderboard|a "
    "recipe-planning app|a parking garage controller|a solar farm monitor|a ticketing kiosk|an airline crew "
    "roster|a museum visitor counter|a warehouse robot fleet|a crop irrigation planner|a bike-rental API|a call "
    "centre queue|a podcast analytics pipeline|a municipal water meter network",
    "e": "an empty input|negative numbers|duplicate values|a single element|very large values|zero|values that are "
    "all equal|an input that is already sorted|mixed upper- and lower-case words|extra whitespace|a missing "
    "field|unicode letters|an odd number of elements|a threshold larger than every value",
    "c": "shallow copies|deep copies|generators|list comprehensions|closures|decorators|context managers|iterators|"
    "recursion|memoization|mutable default arguments|duck typing|abstract classes|interfaces|dynamic dispatch|"
    "garbage collection|reference counting|thread pools|event loops|coroutines|immutability|hash tables|binary "
    "search trees|heaps|tries|dependency injection|unit tests|integration tests|lazy evaluation|static typing|"
    "exceptions|error codes|pure functions|side effects|value types|reference types",
    "t": "billing|support|analytics|data|platform|mobile|payments|growth|research|operations|security|search",
    "per": "day|hour|week|month|minute|release|quarter|shift",
}.items()}
# Expressions and conditions: (code, description, also valid in C-like languages); {v} value, {k} parameter.
EXPRS = [("{v} * {a} + {b}", "multiplies each by {a} and adds {b}", 1),
         ("({v} - {b}) % {a}", "maps each to its difference from {b} modulo {a}", 1),
         ("{v} * {k} - {b}", "scales each by `{k}` and subtracts {b}", 1),
         ("{v} + {k} * {a}", "shifts each up by {a} times `{k}`", 1),
         ("abs({v} - {k}) + {b}", "replaces each by its distance from `{k}` plus {b}", 0),
         ("{v} // {a} + {k}", "integer-divides each by {a} and adds `{k}`", 0),
         ("{v} ** 2 - {a} * {v}", "squares each and subtracts {a} times the value", 0)]
CONDS = [("{v} % {a} == {r}", "leave a remainder of {r} when divided by {a}", 1),
         ("{v} > {k} - {b}", "are greater than `{k}` minus {b}", 1),
         ("{v} % {a} != {r} && {v} < {b} * {k}", "are not {r} modulo {a} and stay below {b} times `{k}`", 1),
         ("{lo} <= {v} < {hi}", "lie between {lo} and {hi}", 0),
         ("{v} != {k} and {v} % {a} > {r}", "differ from `{k}` and have a remainder above {r} modulo {a}", 0)]
C_EXPRS, C_CONDS = [e for e in EXPRS if e[2]], [c for c in CONDS if c[2]]
# Python: steps turn the list {src} into {dst}; a terminal returns. {e}/{ed} an expression, {c}/{cd} a condition.
PY_STEPS = [
    ("{dst} = [{e} for {v} in {src} if {c}]", "keeps the values that {cd} and {ed}"),
    ("{dst} = []\nfor {i}, {v} in enumerate({src}):\n    if {c}:\n        {dst}.append({e})\n    elif {i} % {a} == 0:"
     "\n        {dst}.append({v})", "transforms the values that {cd} (it {ed}) and keeps every {a}th other one as is"),
    ("{dst} = sorted({src}, reverse={rev})[: {k} + {a}]", "sorts them ({order}) and keeps at most `{k}` + {a}"),
    ("{dst} = [left {op} right for left, right in zip({src}, {src}[1:])]", "pairs neighbours by their {opname}"),
    ("{seen}: set[int] = set()\n{dst} = []\nfor {v} in {src}:\n    if {v} not in {seen}:\n        {seen}.add({v})\n"
     "        {dst}.append({v})", "drops repeated values while keeping the first occurrence of each"),
    ("{dst} = [min(max({v}, {lo}), {hi}) for {v} in {src}]", "clamps every value into [{lo}, {hi}]"),
    ("{dst} = [sum({src}[{i} : {i} + {w3}]) for {i} in range(len({src}) - {w3} + 1)]", "sums every window of {w3}"),
]
PY_TERMINALS = [  # (code, description, return annotation, empty value, import)
    ("return {src}", "returns the resulting list", "list[int]", "[]", ""),
    ("{tot} = {b}\nfor {v} in {src}:\n    {tot} += {e}\nreturn {tot}", "returns {b} plus the sum of the values after "
     "it {ed}", "int", "{b}", ""),
    ("return max({src}, default={b})", "returns the largest remaining value ({b} when none is left)", "int", "{b}", ""),
    ("{cnt}: dict[int, int] = {{}}\nfor {v} in {src}:\n    {cnt}[{v} % {a}] = {cnt}.get({v} % {a}, 0) + 1\nreturn "
     "{cnt}", "returns how many values fall into each residue class modulo {a}", "dict[int, int]", "{{}}", ""),
    ('return "{sep}".join(str({v}) for {v} in {src})', 'returns the values joined by "{sep}"', "str", '""', ""),
    ("if not {src}:\n    return 0.0\nreturn round(sum({src}) / len({src}), {p})", "returns their mean rounded to {p} "
     "decimals (0.0 when nothing is left)", "float", "0.0", ""),
    ("return math.isqrt(sum({v} * {v} for {v} in {src}))", "returns the integer square root of the sum of their "
     "squares", "int", "0", "import math"),
]
WORD_STEPS = [
    ("{dst} = [{w} for {w} in {src} if len({w}) {cmp} {a}]", "keeps the words {cmpd} {a} characters"),
    ("{dst} = [{w}.{meth}() for {w} in {src}]", "applies `str.{meth}` to every word"),
    ("{dst} = [{w}[::-1] if {i} % 2 else {w} for {i}, {w} in enumerate({src})]", "reverses every second word"),
    ('{dst} = [{w}.replace("{ch}", "{ch2}") for {w} in {src}]', 'replaces "{ch}" with "{ch2}" inside each word'),
    ("{dst} = sorted({src}, key=len, reverse={rev})", "orders the words by length ({order})"),
]
WORD_TERMINALS = [
    ('return "{sep}".join({src})', 'returns them joined by "{sep}"', "str", '""', ""),
    ("return Counter({src}).most_common({k})", "returns the `{k}` most common words with their counts",
     "list[tuple[str, int]]", "[]", "from collections import Counter"),
    ("return {{{w}: len({w}) for {w} in {src}}}", "returns a dictionary from each word to its length", "dict[str, int]",
     "{{}}", ""),
    ("return len({src})", "returns how many words are left", "int", "0", ""),
]
WORDS_IN = [("{dst} = {text}.split()", "splits `{text}` on whitespace", ""),
            ("{dst} = re.findall(r\"[A-Za-z']+\", {text})", "extracts the words of `{text}` with a regular expression",
             "import re"),
            ('{dst} = {text}.lower().split("{sep}")', 'lowercases `{text}` and splits it on "{sep}"', "")]
# C-like languages: signature, declaration, loop, append, return, program around the functions, list literal.
C_LANGS = {
    "javascript": ("function {fn}({xs}, {k} = {K})", "const {acc} = [];", "for (const {v} of {xs})",
                   "{acc}.push({e});", "return {acc};", "{fns}\nconsole.log({call});\n", "[{n}]"),
    "typescript": ("function {fn}({xs}: number[], {k}: number = {K}): number[]", "const {acc}: number[] = [];",
                   "for (const {v} of {xs})", "{acc}.push({e});", "return {acc};", "{fns}\nconsole.log({call});\n",
                   "[{n}]"),
    "java": ("public static List<Integer> {fn}(List<Integer> {xs}, int {k})",
             "List<Integer> {acc} = new ArrayList<>();", "for (int {v} : {xs})", "{acc}.add({e});", "return {acc};",
             "import java.util.*;\n\npublic class {cls} {\n{fns}\n    public static void main(String[] args) {\n"
             "        System.out.println({call});\n    }\n}\n", "Arrays.asList({n})"),
    "cpp": ("std::vector<int> {fn}(const std::vector<int>& {xs}, int {k})", "std::vector<int> {acc};",
            "for (int {v} : {xs})", "{acc}.push_back({e});", "return {acc};", "#include <iostream>\n#include <vector>"
            "\n\n{fns}\nint main() {\n    for (int x : {call}) std::cout << x << ' ';\n    return 0;\n}\n", "{{n}}"),
    "csharp": ("public static List<int> {fn}(List<int> {xs}, int {k})", "var {acc} = new List<int>();",
               "foreach (var {v} in {xs})", "{acc}.Add({e});", "return {acc};", "using System;\nusing System."
               "Collections.Generic;\n\npublic static class {cls}\n{\n{fns}\n    public static void Main()\n    {\n"
               '        Console.WriteLine(string.Join(", ", {call}));\n    }\n}\n', "new List<int> {{n}}"),
    "go": ("func {fn}({xs} []int, {k} int) []int", "{acc} := []int{}", "for _, {v} := range {xs}",
           "{acc} = append({acc}, {e})", "return {acc}", 'package main\n\nimport "fmt"\n\n{fns}\nfunc main() {\n\tfmt.'
           "Println({call})\n}\n", "[]int{{n}}"),
    "rust": ("fn {fn}({xs}: &[i64], {k}: i64) -> Vec<i64>", "let mut {acc} = Vec::new();", "for &{v} in {xs}",
             "{acc}.push({e});", "{acc}", '{fns}\nfn main() {\n    println!("{:?}", {call});\n}\n', "&[{n}]"),
}
OPENERS = _split("Write a {L} function `{fn}` that {d}.|Develop a {L} function named `{fn}` which {d}.|Create a "
                 "function called `{fn}` in {L}. Given its input, it {d}.|I need help writing `{fn}` in {L}: it "
                 "{d}.|Implement `{fn}` ({L}). The function {d}.|Construct a {L} routine, `{fn}`, that {d}.|Can "
                 "you show me how to write a {L} function `{fn}` that {d}?|Design a {L} method `{fn}` that {d}.", "|")
CONTEXT = _split("The input comes from {dom}, where each {n1} is stored as a plain integer.|This runs inside {dom} "
                 "about {big} times per {per}, so keep it linear in the size of the input.|Handle {e} without "
                 "raising an exception.|Document the purpose of `{fn}` in a short comment.|Do not use third-party "
                 "libraries; the standard library of {L} is enough.|After the code, explain the time and space "
                 "complexity of your approach.|The function must not modify its arguments in place, because the "
                 "{t} team reuses them.|Our {t} team feeds it {n1} data exported from {dom} every {per}.|Provide a "
                 "small example that shows the result for {small} sample {n1}s.|Increase the difficulty: the "
                 "solution should also work when the input contains {e}.|Write it so that a junior developer on "
                 "the {t} team can follow it.|Keep `{fn}` a pure function and avoid global state.|Make sure the "
                 "solution scales to inputs of about {big} {n2}s.|Consider {e} and {e2} as edge cases.|Explain why "
                 "you chose this approach over {c}.|The current version of this logic lives in an old {t} script "
                 "and is hard to test.|Use descriptive variable names and the usual {L} style conventions.|The "
                 "result is consumed by {dom}, which expects one {n2} per entry.|Bonus points if you outline how "
                 "you would test `{fn}` with {e}.|Keep in mind that {n1} values can be negative when a {n2} is "
                 "refunded.|Additionally, report how the approach changes if {e2} becomes common.|We moved from "
                 "{c} to {c2} last {per}, and this helper is part of that work.", "|")
INTROS = _split("Here is a {L} implementation of `{fn}`:|Sure! Below is a solution in {L}.|You can do this in a "
                "single pass over the input:|Here's how I would write it in {L}:|The following {L} code does what "
                "you describe:|Certainly. A straightforward approach looks like this:", "|")
EXPLAIN = _split("`{fn}` {d}.|The function runs in O(n) time and uses O(n) extra memory for the result.|It never "
                 "mutates its arguments, so callers in {dom} can reuse their data.|{E} is handled explicitly: the "
                 "result is then simply empty or the default.|If you expect {e2}, add a test for it as "
                 "well.|Compared with {c}, this keeps the logic easy to follow for the {t} team.|Every step is a "
                 "plain loop or comprehension, so it is easy to step through in a debugger.|The constants are "
                 "arbitrary; tune them to your {n1} data.|You could also split the work into smaller helpers if "
                 "`{fn}` grows further.", "|")
OUTROS = _split("Let me know if you need a version for {c}.|Hope this helps!|This should fit nicely into "
                "{dom}.|Feel free to adapt the names to your {t} codebase.", "|")
QUESTIONS = ["Explain the difference between {c} and {c2} in {L}, and when you would choose each.",
             "When should I prefer {c} over {c2} in {L}? Give the trade-offs.",
             "What are the pros and cons of {c} compared with {c2} in a {L} codebase?",
             "I keep confusing {c} and {c2}. How do they relate in {L}?"]
ANSWERS = _split("{C} and {c2} solve related problems in different ways.|In {L}, {c} are usually the simpler "
                 "choice when {e} is rare.|With {c2}, the cost moves from the caller to the runtime, which matters "
                 "in {dom}.|A common mistake is to mix {c} with {c2} without documenting which one a function "
                 "expects.|Most style guides for {L} recommend {c} for small {n1} collections and {c2} for large "
                 "ones.|Performance differences only show up at around {big} {n1}s per {per}.|Testing code that "
                 "relies on {c2} is easier when {e} is covered explicitly.|The {t} team at my last job moved from "
                 "{c} to {c2} and saw fewer bugs around {e2}.|In short, prefer {c} when readability matters and "
                 "{c2} when {e2} dominates.", "|")
# fmt: on
_SLOT = re.compile(r"\{(\w+)\}")
_NUMBER = re.compile(r"\b\d+\b")
FLAWS = {" + ": " - ", " > ": " >= ", " == ": " != ", " -gt ": " -ge ", " -lt ": " -le "}  # a bug to fix
_FLAW = re.compile("|".join(map(re.escape, FLAWS)))
_FIRST_FENCE = re.compile(r"```([\w+#.-]*)\n")


def _pick(rng: Rng, seq: Sequence[T]) -> T:
    return seq[int(rng.random() * len(seq))]  # rng.choice, at a third of its cost


def _int(rng: Rng, low: int, high: int) -> int:
    return low + int(rng.random() * (high - low + 1))


def _snake(rng: Rng, *pools: list[str]) -> str:
    return "_".join(_pick(rng, pool) for pool in pools)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _nums(rng: Rng) -> str:
    return ", ".join(str(_int(rng, -20, 120)) for _ in range(_int(rng, 3, 8)))


class _Slots(dict):
    """Template slots drawn when a template first asks for them (most templates use two or three)."""

    def __init__(self, rng: Rng, base: dict[str, str]):
        super().__init__(base)
        self.rng = rng

    def __missing__(self, key: str) -> str:
        rng = self.rng
        if key in ("E", "C"):
            value = self[key.lower()].capitalize()
        elif key in ("n1", "n2"):
            value = _pick(rng, NOUN)
        elif key in ("big", "small"):
            value = f"{_int(rng, 2, 900) * 1000:,}" if key == "big" else str(_int(rng, 3, 9))
        else:
            value = _pick(rng, SLOT_POOLS[key.rstrip("2")])
        self[key] = value
        return value


def _sentence(rng: Rng, templates: list[str], base: dict[str, str]) -> str:
    return _pick(rng, templates).format_map(_Slots(rng, base))


def _fill(templates: list[tuple[str, str, int]], rng: Rng, v: str, k: str, python: bool = True) -> tuple[str, str]:
    a = _int(rng, 2, 97)
    lo = _int(rng, -50, 50)
    slots = dict(v=v, k=k, a=a, b=_int(rng, 1, 99), r=int(rng.random() * a), lo=lo, hi=lo + _int(rng, 5, 200))
    code, desc, _ = _pick(rng, templates)
    code = code.format(**slots)
    return (code.replace("&&", "and") if python else code), desc.format(**slots)


def _sub(template: str, slots: dict[str, Any]) -> str:
    """`{name}` -> slots[name], every other brace left alone (the templates are C-like code)."""
    return _SLOT.sub(lambda m: str(slots[m.group(1)]) if m.group(1) in slots else m.group(0), template)


def _py_function(rng: Rng, fn: str) -> tuple[str, str, str, set[str]]:
    """One runnable Python function: (code, description, example call, imports)."""
    k = _snake(rng, ADJ, ["limit", "factor", "width", "cap", "size", "count", "step"])
    v, K = _pick(rng, LOOP), _int(rng, 2, 12)
    slots: dict[str, Any] = dict(v=v, w=_pick(rng, ["word", "token", "part", "chunk"]), i=_pick(rng, "ijp"), k=k)
    slots["sep"] = _pick(rng, [", ", "-", "|", " ", ";"])
    if rng.random() < 0.3:
        text = _snake(rng, ADJ, ["text", "line", "note", "message", "title", "comment"])
        params, call = f"{text}: str, {k}: int = {K}", f'"{" ".join(rng.sample(NOUN + ADJ, _int(rng, 3, 7)))}", {K}'
        steps, terminals, src = WORD_STEPS, WORD_TERMINALS, _snake(rng, ADJ, ["words", "tokens", "parts"])
        code, desc, imp = _pick(rng, WORDS_IN)
        lines, descs, imports = [code.format(dst=src, text=text, **slots)], [desc.format(text=text, **slots)], {imp}
    else:
        xs = _snake(rng, ADJ, PLURALS)
        params, call = f"{xs}: list[int], {k}: int = {K}", f"[{_nums(rng)}], {_int(rng, 2, 12)}"
        steps, terminals, src, lines, imports = PY_STEPS, PY_TERMINALS, xs, [], set()
        descs = [f"takes a list of integers `{xs}` and an integer `{k}` (default {K})"]
        if rng.random() < 0.2:
            rows, field = _snake(rng, ADJ, NOUN) + "_rows", _pick(rng, NOUN)
            params, call = f'{rows}: list[dict[str, int]], {k}: int = {K}, key: str = "{field}"', f'[{{"{field}": 4}}]'
            lines, descs = [f"{xs} = [row.get(key, 0) for row in {rows}]"], [f"reads the `{field}` field of each row"]
    for _ in range(rng.choices((1, 2, 3, 4), (3, 4, 2, 1))[0]):
        slots["e"], slots["ed"] = _fill(EXPRS, rng, v, k)
        slots["c"], slots["cd"] = _fill(CONDS, rng, v, k)
        lo, rev, op, cmp = _int(rng, -30, 30), rng.random() < 0.5, _pick(rng, "+-*"), _pick(rng, ("<", ">="))
        slots.update(a=_int(rng, 2, 9), b=_int(rng, 0, 50), lo=lo, hi=lo + _int(rng, 9, 99), rev=rev, op=op, cmp=cmp)
        slots.update(meth=_pick(rng, ["upper", "lower", "title", "strip"]), ch=_pick(rng, "aeiou"), w3=_int(rng, 3, 7))
        slots.update(ch2=_pick(rng, "xyz_"), p=_int(rng, 1, 4), order="descending" if rev else "ascending")
        slots.update(opname={"+": "sum", "-": "difference", "*": "product"}[op], cmpd="under" if cmp == "<" else "of")
        dst = _snake(rng, ADJ, PLURALS) if steps is PY_STEPS else _snake(rng, ADJ, ["words", "terms", "keys"])
        code, desc = _pick(rng, steps)
        desc = desc.format(**slots)
        if rng.random() < 0.35:
            lines.append(f"# {desc[0].upper()}{desc[1:]}")
        lines.append(code.format(**slots, src=src, dst=dst, seen="seen_" + v))
        descs.append(desc)
        src = dst
    code, desc, returns, empty, imp = _pick(rng, terminals)
    lines.append(code.format(**slots, src=src, tot=_snake(rng, ADJ, ["total", "sum", "acc"]), cnt="buckets"))
    descs.append(desc.format(**slots))
    first = params.split(":")[0]
    if rng.random() < 0.35:
        lines.insert(0, f"if not {first}:\n    return {empty.format(**slots)}")
    doc = f"{fn.replace('_', ' ').capitalize()}: {descs[-1]}."
    if rng.random() < 0.4:
        doc += f"\n\n    Args:\n        {first}: the input.\n        {k}: a tuning value.\n\n    Returns:\n"
        doc += f"        {returns}.\n    "
    body = "\n".join("    " + line for chunk in lines for line in chunk.split("\n"))
    code = f'def {fn}({params}) -> {returns}:\n    """{doc}"""\n{body}\n'
    return code, ", ".join(descs[:-1]) + ", and " + descs[-1], f"{fn}({call})", imports | {imp}


def _c_function(rng: Rng, language: str, fn: str) -> tuple[str, str, str]:
    """One loop (filter, transform, collect) in a C-like language: (code, description, example call)."""
    xs, k, acc = _snake(rng, ADJ, PLURALS), _snake(rng, ADJ, ["limit", "factor", "cap", "step"]), _snake(rng, NOUN)
    if language not in ("cpp", "rust"):
        xs, k, acc = _camel(xs), _camel(k), _camel(acc + "_list")
    v = _pick(rng, LOOP)
    e, ed = _fill(C_EXPRS, rng, v, k, python=False)
    c, cd = _fill(C_CONDS, rng, v, k, python=False)
    signature, declare, loop, push, ret, _, literal = C_LANGS[language]
    t = {"go": "\t", "javascript": "  ", "typescript": "  "}.get(language, "    ")
    c = c if language in ("go", "rust") else f"({c})"
    desc = f"takes a list of integers `{xs}` and an integer `{k}`, keeps the values that {cd}, {ed}, and returns them"
    comment = "///" if language in ("csharp", "rust") else "//"
    template = f"{comment} {{doc}}\n{signature} {{\n{t}{declare}\n{t}{loop} {{\n{t}{t}if {c} {{\n{t}{t}{t}{push}\n"
    template += f"{t}{t}}}\n{t}}}\n{t}{ret}\n}}\n"  # _sub fills {name} slots only: the code's braces stay
    code = _sub(template, dict(fn=fn, xs=xs, k=k, acc=acc, v=v, e=e, K=_int(rng, 2, 9), doc=desc[0].upper() + desc[1:]))
    if language in ("java", "csharp"):  # methods of the program's class
        code = "".join(line if line == "\n" else "    " + line for line in code.splitlines(keepends=True))
    return code, desc, f"{fn}({_sub(literal, {'n': _nums(rng)})}, {_int(rng, 2, 12)})"


def _sql(rng: Rng) -> tuple[str, str]:
    one, t2, (c1, c2, c3) = int(rng.random() * len(NOUN)), _snake(rng, ADJ, PLURALS), rng.sample(NOUN, 3)
    t1 = PLURALS[one]
    n, limit = _int(rng, 2, 500), _int(rng, 5, 100)
    code = (
        f"SELECT a.{c1}, COUNT(*) AS {c1}_count, AVG(a.{c2}) AS avg_{c2}\nFROM {t1} a\nJOIN {t2} b ON b.{NOUN[one]}_id"
        f" = a.id\nWHERE a.{c2} > {n} AND b.{c3} IS NOT NULL\nGROUP BY a.{c1}\nHAVING COUNT(*) >= {_int(rng, 2, 9)}"
        f"\nORDER BY {c1}_count DESC\nLIMIT {limit};\n"
    )
    if rng.random() < 0.5:
        code = (
            f"CREATE TABLE {t1} (\n    id INTEGER PRIMARY KEY,\n    {c1} VARCHAR({_int(rng, 8, 255)}) NOT NULL,\n"
            f"    {c2} INTEGER DEFAULT {_int(rng, 0, 9)}\n);\n\n{code}"
        )
    return code, _pick(
        rng,
        [
            f"lists, for each `{c1}` of `{t1}` with a matching row in `{t2}`, how many rows have a `{c2}` above {n}",
            f"counts the `{t1}` rows per `{c1}` whose `{c2}` exceeds {n} and that have a `{t2}` row with a `{c3}`",
            f"returns the {limit} `{c1}` groups of `{t1}` with most rows joined to `{t2}`, with their mean `{c2}`",
        ],
    )


def _bash(rng: Rng, fn: str) -> tuple[str, str, str]:
    folder, ext, n = _snake(rng, ADJ, NOUN) + "_dir", _pick(rng, ["log", "csv", "txt", "json"]), _int(rng, 5, 900)
    count, test, more = _snake(rng, ADJ, ["count", "lines", "size"]), *_pick(rng, [("-gt", "more"), ("-lt", "fewer")])
    default = _pick(rng, PLURALS)
    code = (
        f'{fn}() {{\n    local {folder}="${{1:-./{default}}}"\n    for f in "${folder}"/*.{ext}; do\n'
        f'        [ -e "$f" ] || continue\n        local {count}\n        {count}=$(wc -l < "$f")\n        if [ '
        f'"${count}" {test} {n} ]; then\n            echo "$f: ${count} lines"\n        fi\n    done\n}}\n'
    )
    return code, f"prints every .{ext} file of a folder (`./{default}` by default) with {more} than {n} lines", fn


def _row(rng: Rng) -> tuple[list[str], list[str], dict[str, str]]:
    """An ordinary row: (instruction sentences, response parts, template slots); parts[1] is the code block
    when there is a fence (parts[0] the whole response when there is none)."""
    lang = rng.choices(list(LANGUAGES), [share for share, _ in LANGUAGES.values()])[0]
    L = LANGUAGE_NAMES.get(lang, lang.title())
    fn = _snake(rng, VERB, ADJ, NOUN)
    camel = lang in ("javascript", "typescript", "java", "csharp", "go")
    style = (lambda name: _camel(name)[0].upper() + _camel(name)[1:]) if lang == "csharp" else _camel if camel else str
    base = dict(L=L, fn=style(fn))
    target, shape = RESPONSE_MEDIAN * math.exp(rng.gauss(0.0, RESPONSE_SIGMA)), rng.random()
    if shape < 0.06:  # a conceptual question answered in prose
        c1, c2 = rng.sample(SLOT_POOLS["c"], 2)
        pair = base | dict(c=c1, c2=c2)
        parts = [_sentence(rng, ANSWERS, pair)]
        while sum(map(len, parts)) < target * 0.8:
            parts.append(_pick(rng, ("\n\n", " ", " ")) + _sentence(rng, ANSWERS, pair))
        return _instruction(rng, [_pick(rng, QUESTIONS).format(**pair)], base), ["".join(parts)], base
    pieces: list[str] = []
    descs: list[str] = []
    calls: list[str] = []
    imports: set[str] = set()
    code_target = target * rng.uniform(0.5, 0.8)
    while not pieces or sum(map(len, pieces)) < code_target:
        name = base["fn"] if not pieces else style(_snake(rng, VERB, NOUN))
        if lang == "python":
            code, desc, call, imp = _py_function(rng, name)
            imports |= imp
        elif lang == "sql":
            (code, desc), call = _sql(rng), ""
        elif lang == "bash":
            code, desc, call = _bash(rng, name)
        else:
            code, desc, call = _c_function(rng, lang, name)
        pieces.append(code)
        descs.append(desc)
        calls.append(call)
    if lang == "python":
        program = "".join(sorted(i + "\n" for i in imports if i)) + ("\n\n" if imports - {""} else "")
        program += "\n\n".join(pieces)
        if rng.random() < 0.6:
            program += '\n\nif __name__ == "__main__":\n' + "".join(f"    print({c})\n" for c in calls)
    elif lang in C_LANGS:
        cls = "".join(part.title() for part in _snake(rng, ADJ, NOUN).split("_"))
        program = _sub(C_LANGS[lang][5], dict(fns="\n".join(pieces), call=calls[0], cls=cls))
    elif lang == "bash":
        program = "#!/usr/bin/env bash\nset -euo pipefail\n\n" + "\n".join(pieces) + f'\n{calls[0]} "$@"\n'
    else:
        program = "\n".join(pieces)
    tag = rng.choices(list(LANGUAGES[lang][1]), list(LANGUAGES[lang][1].values()))[0]
    head, _, last = descs[0].rpartition(", and ")
    if ", " in head and rng.random() < 0.5:  # a short request names the input and the result only
        descs[0] = head.split(", ")[0] + ", and " + last
    sentences = [_pick(rng, OPENERS).format(d=descs[0], **base)]
    if len(calls) > 1 and calls[1] and rng.random() < 0.4:
        sentences.append(f"Also add `{calls[1].split('(')[0]}`, which {descs[1]}.")
    if rng.random() < 0.12:  # a flawed attempt quoted in the instruction
        flawed = _FLAW.sub(lambda m: FLAWS[m.group()], pieces[0].rstrip(), count=1)
        edge = _pick(rng, SLOT_POOLS["e"])
        sentences.append(f"Here is my attempt, which fails on {edge}:\n```{tag}\n{flawed}\n```\nWhat is wrong with it?")
    sentences = _instruction(rng, sentences, base)
    if shape < 0.075 and lang == "python":  # the bare program: no fence, no prose
        return sentences, [program.rstrip()], base
    parts = [_sentence(rng, INTROS, base) + "\n\n", f"```{tag}\n{program.rstrip()}\n```"]
    for _ in range(rng.choices((0, 1, 2), (71, 16, 6))[0]):
        if rng.random() < 0.5 and any(calls):
            usage = "\n".join(f"print({c})" if lang == "python" else c for c in calls if c)
            parts.append(f"\n\nExample usage:\n\n```{tag}\n{usage}\n```")
        else:
            parts.append("\n\nOutput:\n\n```\n" + "\n".join(f"[{_nums(rng)}]" for _ in calls) + "\n```")
    base |= dict(d=descs[0])
    while sum(map(len, parts)) < target:
        parts.append("\n\n" + _sentence(rng, EXPLAIN, base))
    if rng.random() < 0.75:
        parts.append("\n\n" + _sentence(rng, OUTROS, base))
    return sentences, parts, base


def _instruction(rng: Rng, sentences: list[str], base: dict[str, str]) -> list[str]:
    target = INSTRUCTION_MEDIAN * math.exp(rng.gauss(0.0, INSTRUCTION_SIGMA))
    while sum(map(len, sentences)) < target:
        sentences.append(_sentence(rng, CONTEXT, base))
    return sentences


def _join(sentences: list[str]) -> str:
    return " ".join(sentences).replace("\n ", "\n").strip()


def _variant(rng: Rng, sentences: list[str], parts: list[str], base: dict[str, str], exact: bool) -> tuple[str, str]:
    """A copy of an ordinary row: `exact`, equal after dedup's normalization (case, punctuation, prose around
    the code), or near: a context sentence added or dropped, 1-4 constants of the code changed."""
    if exact:
        text = _join(sentences)
        text = (text[0].swapcase() + text[1:]).rstrip(".?!") + _pick(rng, ["!", " ...", "  "])
        return text, "".join(parts) + ("\n\nThanks for the clear question!" if len(parts) > 1 else "")
    sentences, parts = list(sentences), list(parts)
    if len(sentences) > 2 and rng.random() < 0.5:
        del sentences[_int(rng, 1, len(sentences) - 1)]
    else:
        sentences.insert(_int(rng, 1, len(sentences)), _sentence(rng, CONTEXT, base))
    code = 1 if len(parts) > 1 else 0
    numbers = list(_NUMBER.finditer(parts[code]))
    for _ in range(8):  # until a number the dedup stage sees changes (not one in a comment or a docstring)
        text = parts[code]
        for match in sorted(rng.sample(numbers, min(len(numbers), _int(rng, 1, 4))), key=lambda m: -m.start()):
            text = text[: match.start()] + str(int(match.group()) + _int(rng, 1, 9)) + text[match.end() :]
        if code_units(text) != code_units(parts[code]):
            return _join(sentences), "".join([*parts[:code], text, *parts[code + 1 :]])
    return _join(sentences), parts[0] + " " + _sentence(rng, ANSWERS, base)  # a prose answer without numbers


def _benchmark_rows(count: int, rng: Rng) -> list[tuple[str, str, str, str]]:
    """`count` contaminated rows (task_id, kind, instruction, response), HumanEval+ and MBPP+ in turn: the
    statement and the canonical solution, or (every third) the solution alone."""
    tasks = []
    for name, file in (("humaneval", "HumanEvalPlus-v0.1.10.jsonl.gz"), ("mbpp", "MbppPlus-v0.2.0.jsonl.gz")):
        with gzip.open(BENCHMARKS_DIR / file, "rt", encoding="utf-8") as handle:
            problems = [json.loads(line) for line in handle]
        rng.shuffle(problems)
        pairs = [(problem, benchmark_task(name, problem)) for problem in problems]
        tasks.append([(p, t) for p, t in pairs if len(t.description.split()) >= 12 and len(t.solution.split()) >= 12])
    out = []
    for index in range(count):
        problem, task = tasks[index % 2][index // 2]
        solution = problem["prompt"] + problem["canonical_solution"] if task.benchmark == "humaneval" else task.solution
        if index % 3 == 2:
            kind, instruction = "solution", f"Write a Python function `{problem['entry_point']}` and explain it."
        else:
            statement = " ".join(task.description.split())
            kind, instruction = "statement+solution", f"{statement} Please write it in Python and explain it."
        response = f"Here is a solution:\n\n```python\n{solution.strip()}\n```\n\nIt passes the examples you gave."
        out.append((task.task_id, kind, instruction, response))
    return out


def write_corpus(path: Path, rows: int = 110_000, seed: int = 0) -> dict[str, Any]:
    """Write `rows` JSONL rows ({"instruction", "response"}) to `path`, one at a time, deterministically from
    `seed` (an ordinary row from the seed and its number only); returns the stats: sizes, length quantiles,
    fences, fence tags and the planted rows (exact and near copies as [row, copied row], contaminated rows
    with their task)."""
    plan = Rng(f"{seed}:plan")
    n_contaminated, n_exact = min(MAX_CONTAMINATED, rows // 200), round(rows * EXACT_RATE)
    positions = plan.sample(range(rows), n_contaminated + n_exact + round(rows * NEAR_RATE))
    special, kinds = set(positions), ["contaminated"] * n_contaminated + ["exact"] * n_exact
    kind_of: dict[int, tuple[str, int]] = {}  # row -> (kind, its contaminated row's number or the row it copies)
    for order, position in enumerate(positions):
        kind = kinds[order] if order < len(kinds) else "near"
        earlier = [plan.randrange(position) for _ in range(8)] if position else []
        source = order if kind == "contaminated" else next((j for j in earlier if j not in special), -1)
        kind_of[position] = (kind, source) if source >= 0 else ("ordinary", -1)
    contaminated = _benchmark_rows(n_contaminated, plan) if n_contaminated else []
    lengths: dict[str, list[int]] = {"instruction": [], "response": []}
    fences: Counter[str] = Counter()
    tags: Counter[str] = Counter()
    planted: dict[str, list] = {"exact": [], "near": [], "contaminated": []}
    with path.open("w", encoding="utf-8") as handle:
        for i in range(rows):
            kind, other = kind_of.get(i, ("ordinary", -1))
            if kind == "contaminated":
                task_id, how, instruction, response = contaminated[other]
                planted["contaminated"].append({"row": i, "task_id": task_id, "kind": how})
            elif kind in ("exact", "near"):
                instruction, response = _variant(Rng(f"{seed}:{i}"), *_row(Rng(f"{seed}:{other}")), kind == "exact")
                planted[kind].append([i, other])
            else:
                sentences, parts, _ = _row(Rng(f"{seed}:{i}"))
                instruction, response = _join(sentences), "".join(parts)
            handle.write(json.dumps({"instruction": instruction, "response": response}, ensure_ascii=False) + "\n")
            lengths["instruction"].append(len(instruction))
            lengths["response"].append(len(response))
            fences[str(min(response.count("```") // 2, 3)).replace("3", "3+")] += 1
            tag = _FIRST_FENCE.search(response)
            tags[(tag.group(1) or "(bare fence)") if tag else "(none)"] += 1
    stats: dict[str, Any] = {"rows": rows, "bytes": path.stat().st_size, "seed": seed}
    for field, values in lengths.items():
        values.sort()
        quantiles = {f"p{q}": values[min(rows - 1, rows * q // 100)] for q in (5, 10, 25, 50, 75, 90, 95, 99)}
        stats[f"{field}_chars"] = quantiles | {"mean": round(sum(values) / max(rows, 1))}
    stats |= {"fenced_blocks": dict(sorted(fences.items())), "fence_tags": dict(tags.most_common())}
    return stats | {"planted": planted}


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a synthetic Evol-Instruct-like corpus (JSONL).")
    parser.add_argument("out", type=Path, help="the .jsonl file to write")
    parser.add_argument("--rows", type=int, default=110_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    stats = write_corpus(args.out, args.rows, args.seed)
    stats["seconds"] = round(time.perf_counter() - start, 1)
    stats["planted"] |= {kind: len(stats["planted"][kind]) for kind in ("exact", "near")}  # counts: pairs are many
    print(json.dumps(stats, indent=1))


if __name__ == "__main__":
    main()
