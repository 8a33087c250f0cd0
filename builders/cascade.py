"""The decontamination cascade: direct evidence, then retrieval, execution and a judge for what it misses.

Rewrites of a benchmark problem (renamed functions, reworded statements, loops rewritten, filler added)
escape the direct layers (`builders/decontaminate.py`), yet their most similar benchmark task is
almost always among the first few: the similarity ranking is good where a single global threshold is
not. So, for each row the direct layers did not flag:
1. retrieval: its `retrieval_top_k` most similar tasks by three rankings (the better rank counts): its
   instruction against the problem statements and its code against the canonical solutions, by
   embedding (cosine >= `retrieval_floor`; on a CPU the int8 screen's similarities), and its code's
   shape, the share of a solution's identifier-normalized 3-token shingles it holds (>=
   `retrieval_code_floor`: embeddings of code miss renamed one-liners). Two kinds of task are never
   candidates, since passing their tests or sharing their statement proves nothing: those whose
   canonical solution is shorter than `execution_min_tokens`, and those a generic program solves
   (`sorted(xs)`, `a + b`: `core/generic_programs.py`); the direct layers still see them;
2. execution: the row's Python code runs in the sandbox on each candidate's tests, every top-level
   function (and class method) whose parameters fit tried as the entry point, arguments permuted,
   merged or passed to a constructor (`core/execution_match.py`). A function of at least
   `execution_min_tokens` tokens that passes every base input of the task, and 80% of the plus inputs
   that top them up to 20, solves the task: contaminated, whatever its wording. All base inputs: they
   are what evalplus's base score asks of a solution. Not only them: MBPP has 3, and utilities written
   for other problems passed them by chance (5 of 108 negatives); 80% of the others, so that a copy
   that misses an edge case still counts. The verdict is reached in this process from the outputs the
   program returned, never inside it; a row's run is capped at ROW_SECONDS;
3. judge: candidates execution cannot decide (no Python code, no function whose parameters fit, code
   that fails to load or is too long to run) are put to the judge model (default: the generator M) as
   "same problem?", scored by the exact P(Yes) of the self-evaluation; P(Yes) >= `judge_threshold`, with
   Yes + No holding at least `judge_min_mass` of the first token's probability, removes the row. A call
   that fails (a prompt longer than the model's context) decides nothing; the card counts them.

A row's run is the unit of the execution cache (`OUTPUT/.cache/executions.sqlite`: by code, candidate tasks
in order, benchmark versions and every setting of the run: its tasks share its time limit), and judge calls
are model calls (cached too), so a rerun executes nothing and calls no model.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inversecoder.builders.decontaminate import Decontaminator, Match, canonical_tokens, code_of
from inversecoder.core import execution_match, prompts
from inversecoder.core.backends import CachedModel, YesNoScore
from inversecoder.core.benchmarks import Benchmark, load_benchmark
from inversecoder.core.cache import ResultCache, cache_key
from inversecoder.core.config import DecontaminateConfig
from inversecoder.core.generic_programs import generic_program
from inversecoder.core.layout import Layout

logger = logging.getLogger(__name__)

#: Characters of a row shown to the judge (its instruction, then its response): problems are stated early.
JUDGE_ROW_CHARS = 3000
#: Tokens per shingle of the retrieval by code shape (3: short solutions have a few; 5, the code layer's, misses them)
SHAPE_SHINGLE = 3
#: The most a row's sandboxed run may take (evaluation's per-input limits still apply): a solution of a benchmark
#: task runs in milliseconds, exponential code on its inputs would otherwise hold a worker for 30 s.
ROW_SECONDS = 10.0
#: Longer Python code is not run (its parsing and loading would cost more than a row is worth): it is judged.
MAX_CODE_CHARS = 50_000
#: Statuses of a verdict on which no code ran (nothing fit, or the sandbox failed)
NOT_RUN = ("no-function", "error")
#: Statuses of an execution that decide nothing (the row's code never ran a fitting function): judge them.
UNDECIDED = ("no-function", "load-failed", "error")


@dataclass(frozen=True)
class Candidate:
    """A retrieved benchmark task for a row."""

    task: int  # index into the checker's tasks
    rank: int  # 1: the row's most similar task (the better of its instruction's and its code's rank)
    similarity: float  # the score behind that rank: a cosine similarity, or the share of a solution's shingles


@dataclass
class CascadeCounts:
    """What the cascade did in this build (for the log and the card)."""

    rows_retrieved: int = 0  # rows the direct layers left, that retrieval looked at
    candidates: int = 0  # (row, task) candidates retrieved
    executed: int = 0  # (row, task) candidates decided by running code now
    executions_cached: int = 0  # ... decided by a verdict from an earlier run
    sandbox_runs: int = 0  # sandboxed processes started (one per row)
    undecided: int = 0  # (row, task) candidates execution could not decide (put to the judge when there is one)
    judged: int = 0  # (row, task) candidates put to the judge
    judge_errors: int = 0  # ... whose call failed (decided nothing)
    seconds: dict[str, float] = field(default_factory=lambda: {"retrieval": 0.0, "execution": 0.0, "judge": 0.0})
    removed: dict[str, int] = field(default_factory=lambda: {"execution": 0, "judge": 0})


class Cascade:
    """Tiers 2-4 for one build: `check_rows` gives every row's matches, direct and verified."""

    def __init__(
        self,
        checker: Decontaminator,
        config: DecontaminateConfig,
        layout: Layout,
        judge: CachedModel | None,
        progress: bool = False,
        benchmark_source: tuple[str | None, Path] | None = None,
        sandbox_hidden: Sequence[str] = (),
    ):
        self.checker = checker
        self.config = config
        self.layout = layout
        self.judge = judge if config.judge else None
        self.progress = progress
        self.sandbox_hidden = list(sandbox_hidden)
        self.counts = CascadeCounts()
        self.owned: list[CachedModel | None] = []  # models opened for this cascade (a separate judge)
        self.enabled = checker.embedder is not None and config.retrieval_top_k > 0
        self.execution_off_reason = "" if config.execution else "decontaminate.execution is false"
        self._sandbox: Any = None
        self._suites: dict[str, execution_match.TaskSuite | None] = {}
        self._generic: dict[str, str | None] = {}
        self._cache: ResultCache | None = None
        self._benchmark_source = benchmark_source
        self._benchmarks: dict[str, Benchmark] = {}
        tasks = checker.tasks
        #: tasks too short to prove anything by execution or by a judge (left to the direct layers)
        self.eligible = np.array([len(canonical_tokens(t.solution)) >= config.execution_min_tokens for t in tasks])
        self._solution_embeddings: np.ndarray | None = None
        self._postings: dict[str, np.ndarray] = {}
        self._shingle_totals = np.zeros(len(tasks), dtype=np.int64)
        if self.enabled:
            self._index_solutions()

    # -- retrieval --------------------------------------------------------------------------------------
    def _index_solutions(self) -> None:
        """Every canonical solution's embedding and its identifier-normalized 3-token shingles (all of them,
        short solutions too: a renamed one-liner keeps its token shape, which embeddings of code miss)."""
        assert self.checker.embedder is not None
        tasks = self.checker.tasks
        self._solution_embeddings = self.checker.embedder.encode([t.solution for t in tasks])
        postings: dict[str, list[int]] = {}
        for index, task in enumerate(tasks):
            shingles = _shingles(task.solution)
            self._shingle_totals[index] = len(shingles)
            for shingle in shingles:
                postings.setdefault(shingle, []).append(index)
        self._postings = {key: np.asarray(value, dtype=np.int64) for key, value in postings.items()}

    def code_containment(self, code: str) -> np.ndarray:
        """Per task: the share of its canonical solution's 3-token shingles found in `code`."""
        hits = [self._postings[s] for s in _shingles(code) if s in self._postings]
        if not hits:
            return np.zeros(len(self.checker.tasks))
        counts = np.bincount(np.concatenate(hits), minlength=len(self.checker.tasks))
        return counts / np.maximum(self._shingle_totals, 1)

    def retrieve(self, rows: Sequence[tuple[str, str]], similarity: np.ndarray) -> list[list[Candidate]]:
        """Each row's candidate tasks, best first (`similarity`: its instruction against the statements): the
        top k by instruction embedding, by code embedding (both >= `retrieval_floor`) and by code shingles
        (>= `retrieval_code_floor`); a task's rank is the best of its ranks."""
        assert self.checker.embedder is not None and self._solution_embeddings is not None
        codes = [code_of(response) if response.strip() else "" for _, response in rows]
        with_code = [i for i, code in enumerate(codes) if code.strip()]
        code_similarity = np.full(similarity.shape, -1.0, dtype=np.float32)
        containment = np.zeros(similarity.shape)
        if with_code:
            embedded = self.checker.embedder.encode([codes[i] for i in with_code], progress=self.progress)
            code_similarity[with_code] = embedded @ self._solution_embeddings.T
            containment[with_code] = np.stack([self.code_containment(codes[i]) for i in with_code])
        k = self.config.retrieval_top_k
        floors = (self.config.retrieval_floor, self.config.retrieval_floor, self.config.retrieval_code_floor)
        found = []
        for by_text, by_code, by_shape in zip(similarity, code_similarity, containment, strict=True):
            best: dict[int, tuple[int, float]] = {}
            for scores, floor in zip((by_text, by_code, by_shape), floors, strict=True):
                masked = np.where(self.eligible, scores, -np.inf)
                rank = 0
                for index in np.argsort(-masked, kind="stable"):
                    score, task = float(masked[index]), int(index)
                    if score < floor or rank == k:
                        break
                    if self.generic(task) is not None:  # generic code passes its tests: nothing to verify
                        continue
                    rank += 1
                    if task not in best or rank < best[task][0]:
                        best[task] = (rank, round(score, 4))
            ordered = sorted(best.items(), key=lambda item: (item[1][0], -item[1][1]))
            found.append([Candidate(task, rank, score) for task, (rank, score) in ordered])
        self.counts.rows_retrieved += len(rows)
        self.counts.candidates += sum(len(c) for c in found)
        return found

    # -- execution --------------------------------------------------------------------------------------
    def _open_sandbox(self) -> Any:
        """The sandbox, opened on first use; None (with the reason kept for the card) where it may not run."""
        if self._sandbox is None and not self.execution_off_reason:
            from inversecoder.core.groundtruth import open_sandbox
            from inversecoder.core.sandbox import NAMESPACE_LEVELS

            try:
                sandbox = open_sandbox(
                    self.config.execution_workers,
                    isolation=self.config.sandbox,
                    allow_weak_sandbox=True,
                    hidden=self.sandbox_hidden,
                    setting="decontaminate.allow_weak_sandbox",
                )
            except Exception as error:  # no sandbox here: the candidates go to the judge, the card says why
                self.execution_off_reason = f"the sandbox could not start ({str(error).splitlines()[0][:200]})"
                logger.warning(f"decontaminate: execution tier off: {self.execution_off_reason}")
                return None
            if sandbox.level not in NAMESPACE_LEVELS and not self.config.allow_weak_sandbox:
                self.execution_off_reason = (
                    f"the sandbox reached only level '{sandbox.level}' (no namespaces): corpus programs are not run "
                    "(decontaminate.allow_weak_sandbox: true runs them anyway)"
                )
                logger.warning(f"decontaminate: execution tier off: {self.execution_off_reason}")
                sandbox.close()
            else:
                self._sandbox = sandbox
        return self._sandbox

    def sandbox_level(self) -> str | None:
        return self._sandbox.level if self._sandbox is not None else None

    def _suite(self, index: int) -> execution_match.TaskSuite | None:
        """The task's tests with their expected outputs (the canonical solution run here, once); None for a
        task no adapter can call (inputs of several arities)."""
        task = self.checker.tasks[index]
        if task.task_id not in self._suites:
            if task.benchmark not in self._benchmarks:
                benchmarks_dir, cache_dir = self._benchmark_source or (None, self.layout.benchmark_cache)
                self._benchmarks[task.benchmark] = load_benchmark(task.benchmark, benchmarks_dir, cache_dir)
            self._suites[task.task_id] = execution_match.verification_suite(
                self._benchmarks[task.benchmark], task.task_id
            )
        return self._suites[task.task_id]

    def generic(self, index: int) -> str | None:
        """The generic program (`core/generic_programs.py`) that passes the task's tests, if one does: running a
        row on them proves nothing then, nor does a judge's "same problem" (a generic request is one), and the
        task is left to the direct layers."""
        task_id = self.checker.tasks[index].task_id
        if task_id not in self._generic:
            suite = self._suite(index)
            self._generic[task_id] = (
                None if suite is None else generic_program(suite.inputs, suite.expected, suite.atol, suite.solved_by)
            )
        return self._generic[task_id]

    def _known_suite(self, index: int) -> execution_match.TaskSuite:
        suite = self._suite(index)
        assert suite is not None  # only tasks with a suite are run
        return suite

    def _run_key(self, code_hash: str, tasks: list[int]) -> str:
        """A row's run is one unit (its tasks share its time and the definitions found too slow): its verdicts
        are cached under the code, the tasks in order, the benchmarks' versions and every setting of the run."""
        return cache_key(
            kind="execution",
            version=execution_match.VERSION,
            settings=execution_match.settings() | {"row_seconds": ROW_SECONDS},
            code=code_hash,
            tasks=[self.checker.tasks[task].task_id for task in tasks],
            benchmarks=self.checker.versions,
        )

    def execute(self, rows: Sequence[tuple[str, str]], candidates: list[list[Candidate]]) -> list[dict[int, Any]]:
        """Per row: candidate task -> its execution verdict (a dict), for rows with Python code (up to
        MAX_CODE_CHARS of it: a longer row goes to the judge)."""
        verdicts: list[dict[int, Any]] = [{} for _ in rows]
        if self.execution_off_reason or not any(candidates):
            return verdicts
        if self._cache is None:
            self._cache = ResultCache(self.layout.cache / "executions.sqlite")
        runs: list[tuple[int, str, list[int], str]] = []  # row, code, its tasks, the run's key
        for i, ((_, response), found) in enumerate(zip(rows, candidates, strict=True)):
            code = execution_match.python_code(response) if found else None
            tasks = [c.task for c in found if self._suite(c.task) is not None]
            if code is None or len(code) > MAX_CODE_CHARS or not tasks:
                continue
            code_hash = hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest()
            runs.append((i, code, tasks, self._run_key(code_hash, tasks)))
        stored = self._cache.get_many([key for *_, key in runs])
        pending = []
        for i, code, tasks, key in runs:
            if key in stored and len(stored[key]) == len(tasks):
                verdicts[i].update(zip(tasks, stored[key], strict=True))
                self.counts.executions_cached += sum(v["status"] not in NOT_RUN for v in stored[key])
            else:
                pending.append((i, code, tasks, key))
        if not pending or self._open_sandbox() is None:
            return verdicts
        jobs = [(code, [self._known_suite(task) for task in tasks]) for _, code, tasks, _ in pending]
        results = execution_match.verify_many(self._sandbox, jobs, progress=self.progress, max_seconds=ROW_SECONDS)
        fresh: dict[str, Any] = {}
        for (i, _, tasks, key), row_verdicts in zip(pending, results, strict=True):
            values = [asdict(verdict) for verdict in row_verdicts]
            verdicts[i].update(zip(tasks, values, strict=True))
            ran = sum(v["status"] not in NOT_RUN for v in values)
            self.counts.executed += ran
            self.counts.sandbox_runs += ran > 0
            if not any(v["status"] == "error" for v in values):  # the sandbox failed, not the program: next run
                fresh[key] = values
        self._cache.put_many(fresh)
        return verdicts

    # -- the judge --------------------------------------------------------------------------------------
    def judge_candidates(self, rows: Sequence[tuple[str, str]], asks: list[tuple[int, Candidate]]) -> list[Any]:
        """The judge's YesNoScore for each (row, candidate)."""
        if not asks or self.judge is None:
            return []
        prompt_list = []
        for i, candidate in asks:
            instruction, response = rows[i]
            row_text = (instruction.strip() + "\n" + response.strip()).strip()[:JUDGE_ROW_CHARS]
            prompt_list.append(prompts.same_problem_prompt(row_text, self.checker.tasks[candidate.task].description))
        self.counts.judged += len(prompt_list)
        return self.judge.score_yes_no(prompt_list, desc="decontaminate: judge")

    @staticmethod
    def judged_same(result: YesNoScore, config: DecontaminateConfig) -> bool:
        """The judge's decision: P(Yes) at or above the threshold, from a model that answered Yes or No."""
        return (
            result.score is not None
            and result.score >= config.judge_threshold
            and (result.yes_no_mass or 0.0) >= config.judge_min_mass
        )

    # -- all tiers --------------------------------------------------------------------------------------
    def check_rows(self, rows: Sequence[tuple[str, str]]) -> list[list[Match]]:
        """Every row's matches: direct ones first; rows with none go through retrieval, execution, judge."""
        checker = self.checker
        similarity = None
        if checker.embedder is not None and rows:
            similarity = checker.instruction_similarity([instruction for instruction, _ in rows], self.progress)
        matches = checker.check_rows(rows, progress=self.progress, similarity=similarity)
        if not self.enabled or similarity is None:
            return matches
        open_rows = [i for i, direct in enumerate(matches) if not direct]
        for i, verified in zip(
            open_rows, self.verify([rows[i] for i in open_rows], similarity[open_rows]), strict=True
        ):
            matches[i] = verified
        return matches

    def verify(self, rows: Sequence[tuple[str, str]], similarity: np.ndarray) -> list[list[Match]]:
        """Tiers 2-4 for rows without direct evidence: each row's execution and judge matches."""
        started = time.perf_counter()
        candidates = self.retrieve(rows, similarity)
        self.counts.seconds["retrieval"] += time.perf_counter() - started
        started = time.perf_counter()
        verdicts = self.execute(rows, candidates)
        self.counts.seconds["execution"] += time.perf_counter() - started
        matches: list[list[Match]] = []
        asks: list[tuple[int, Candidate]] = []
        for j, found in enumerate(candidates):
            solved = []
            for candidate in found:
                verdict = verdicts[j].get(candidate.task)
                if verdict is None or verdict["status"] in UNDECIDED:
                    self.counts.undecided += 1
                    if self.judge is not None:
                        asks.append((j, candidate))
                elif verdict["status"] == "solved" and verdict["function_tokens"] >= self.config.execution_min_tokens:
                    solved.append(self._execution_match(candidate, verdict))
            matches.append(solved)
        started = time.perf_counter()
        scores = self.judge_candidates(rows, asks)
        self.counts.seconds["judge"] += time.perf_counter() - started
        for (j, candidate), result in zip(asks, scores, strict=True):
            self.counts.judge_errors += result.error is not None
            if self.judged_same(result, self.config):
                assert result.score is not None  # a Yes has a score
                matches[j].append(self._judge_match(candidate, result.score))
        for found_now in matches:
            if found_now:
                found_now.sort(key=lambda m: (m.layer != "execution", m.rank or 0, m.task_id))
                self.counts.removed[found_now[0].layer] += 1
        return matches

    def _execution_match(self, candidate: Candidate, verdict: dict[str, Any]) -> Match:
        task = self.checker.tasks[candidate.task]
        return Match(
            task.task_id,
            "execution",
            "tests",
            round(verdict["passed"] / max(verdict["total"], 1), 4),
            f"{verdict['adapter']} passed {verdict['passed']}/{verdict['total']} tests",
            rank=candidate.rank,
            similarity=candidate.similarity,
            tests_passed=verdict["passed"],
            tests_total=verdict["total"],
        )

    def _judge_match(self, candidate: Candidate, p_yes: float) -> Match:
        task = self.checker.tasks[candidate.task]
        return Match(
            task.task_id,
            "judge",
            "prompt",
            round(p_yes, 4),
            task.description[:200],
            rank=candidate.rank,
            similarity=candidate.similarity,
            p_yes=round(p_yes, 6),
        )

    def summary(self) -> dict[str, Any]:
        """What the card says of tiers 2-4: their settings, and what they did in this build."""
        config, done = self.config, self.counts
        if not self.enabled:
            why = (
                "decontaminate.retrieval_top_k is 0"
                if config.retrieval_top_k == 0
                else "decontaminate.semantic is false"
            )
            return {"enabled": False, "why": why}
        judge = None
        if self.judge is not None:
            judge = {
                "model": self.judge.backend.info().model,
                "threshold": config.judge_threshold,
                "min_mass": config.judge_min_mass,
            }
        return {
            "enabled": True,
            "top_k": config.retrieval_top_k,
            "floor": config.retrieval_floor,
            "code_floor": config.retrieval_code_floor,
            "min_tokens": config.execution_min_tokens,
            "tasks": len(self.eligible),
            "eligible_tasks": int(self.eligible.sum()),
            "execution": None
            if self.execution_off_reason
            else {"sandbox": self.sandbox_level() or "not needed (every verdict cached or no candidate)"},
            "execution_off": self.execution_off_reason,
            "judge": judge,
            "judge_off": ""
            if judge
            else "decontaminate.judge is false"
            if not config.judge
            else "no judge model yet (step 0: M is not trained)",
            "candidates": done.candidates,
            "executed": done.executed,
            "executions_cached": done.executions_cached,
            "sandbox_runs": done.sandbox_runs,
            "judged": done.judged,
            "judge_errors": done.judge_errors,
        }

    def close(self) -> None:
        for model in self.owned:
            if model is not None:
                model.backend.close()
        self.owned.clear()
        if self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None


def _shingles(code: str) -> set[str]:
    """The code's shingles as strings (not `hash()`es: those change with PYTHONHASHSEED, and so would collisions)."""
    tokens = canonical_tokens(code)
    return {" ".join(tokens[i : i + SHAPE_SHINGLE]) for i in range(len(tokens) - SHAPE_SHINGLE + 1)}
