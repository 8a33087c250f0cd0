"""Step 4: remove rows that overlap HumanEval(+) / MBPP(+).

Two layers, each match recorded with the benchmark task it hit:
- substring (bigcode-style): a benchmark problem text, solution or assertion, normalized to lowercase
  tokens, appears inside the row's normalized text. Strings shorter than `min_substring_words` are too
  generic to mean anything and are skipped;
- word n-gram overlap (13-grams by default) between the row and a benchmark problem description.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from inversecoder.config import DecontaminateConfig
from inversecoder.eval.benchmarks import load_benchmark

_TOKEN = re.compile(r"\w+|[^\w\s]")
_WORD = re.compile(r"\w+")
_ANCHOR = 5  # tokens: substring candidates are found through their first 5-gram


@dataclass(frozen=True)
class Match:
    task_id: str
    layer: str  # substring | ngram
    field: str  # which benchmark text matched (prompt, solution, assertion)
    text: str  # what matched, shortened

    def describe(self) -> str:
        return f"{self.layer} match with {self.task_id} ({self.field})"


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _docstring(prompt: str, entry_point: str) -> str:
    """The problem statement of a HumanEval prompt: the entry point's docstring without its examples
    (helper functions in the prompt have docstrings of their own)."""
    try:
        tree = ast.parse(prompt)
    except SyntaxError:
        return prompt
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    for node in sorted(functions, key=lambda n: n.name != entry_point):
        doc = ast.get_docstring(node)
        if doc:
            return doc.split(">>>")[0]
    return prompt


def benchmark_texts(name: str, problem: dict) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(field, text) pairs for the substring layer and for the n-gram layer of one benchmark task."""
    if name == "humaneval":
        description = _docstring(problem["prompt"], problem["entry_point"])
        return [("prompt", description), ("solution", problem["canonical_solution"])], [("prompt", description)]
    description = problem["prompt"].strip().strip('"').split("assert")[0]
    strings = [("prompt", description), ("solution", problem["canonical_solution"]), ("assertion", problem.get("assertion", ""))]
    return strings, [("prompt", description)]


class Decontaminator:
    """Indexes the benchmarks once; `check(text)` answers in time linear in the text."""

    def __init__(self, config: DecontaminateConfig, benchmarks_dir: str | None, cache_dir: Path):
        self.config = config
        self.task_count = 0
        self.versions: dict[str, str] = {}
        self._anchors: dict[tuple[str, ...], list[tuple[str, str, str]]] = defaultdict(list)
        self._ngrams: dict[tuple[str, ...], tuple[str, str]] = {}
        for name in config.benchmarks:
            benchmark = load_benchmark(name, benchmarks_dir, cache_dir)
            self.versions[name] = f"{benchmark.version} (md5 {benchmark.hash})"
            for task_id, problem in benchmark.problems.items():
                self.task_count += 1
                substrings, ngram_texts = benchmark_texts(name, problem)
                for field, text in substrings:
                    tokens = _tokens(text)
                    if len(_words(text)) >= config.min_substring_words and len(tokens) >= _ANCHOR:
                        self._anchors[tuple(tokens[:_ANCHOR])].append((" ".join(tokens), task_id, field))
                for field, text in ngram_texts:
                    words = _words(text)
                    for i in range(len(words) - config.ngram + 1):
                        self._ngrams.setdefault(tuple(words[i : i + config.ngram]), (task_id, field))

    def check(self, text: str) -> Match | None:
        """The first benchmark overlap in `text`, or None."""
        tokens = _tokens(text)
        normalized = f" {' '.join(tokens)} "
        for i in range(len(tokens) - _ANCHOR + 1):
            for needle, task_id, field in self._anchors.get(tuple(tokens[i : i + _ANCHOR]), ()):
                if f" {needle} " in normalized:
                    return Match(task_id, "substring", field, needle[:200])
        words = _words(text)
        n = self.config.ngram
        for i in range(len(words) - n + 1):
            gram = tuple(words[i : i + n])
            if gram in self._ngrams:
                task_id, field = self._ngrams[gram]
                return Match(task_id, "ngram", field, " ".join(gram))
        return None
