"""The synthetic corpus of the paper-scale rehearsal (`benchmarks/synthetic_corpus.py`), at 2,000 rows: it must
flow through the real stages as a real corpus would (source, extraction, decontamination, dedup)."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest

from inversecoder.builders.decontaminate import Decontaminator, load_tasks
from inversecoder.builders.dedup import duplicate_rates
from inversecoder.builders.extract import extract_code
from inversecoder.builders.sources import load_source
from inversecoder.core.config import DecontaminateConfig, DedupConfig, SourceConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import synthetic_corpus

ROWS = 2000


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict, list[dict]]:
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    stats = synthetic_corpus.write_corpus(path, rows=ROWS, seed=0)
    return path, stats, [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_deterministic_by_seed_and_every_row_distinct(corpus, tmp_path):
    path, stats, rows = corpus
    again = synthetic_corpus.write_corpus(tmp_path / "again.jsonl", rows=ROWS, seed=0)
    assert (tmp_path / "again.jsonl").read_bytes() == path.read_bytes() and again == stats
    synthetic_corpus.write_corpus(tmp_path / "other.jsonl", rows=50, seed=1)
    assert (tmp_path / "other.jsonl").read_text().splitlines()[:50] != path.read_text().splitlines()[:50]
    assert len({(row["instruction"], row["response"]) for row in rows}) == ROWS == stats["rows"]
    assert stats["bytes"] == path.stat().st_size


def test_the_source_loader_takes_every_row(corpus):
    data = load_source(SourceConfig(path=str(corpus[0])))
    assert len(data.rows) == ROWS and data.rejected == []


def test_length_quantiles_are_those_the_module_states(corpus):
    _, stats, rows = corpus
    instruction, response = stats["instruction_chars"], stats["response_chars"]
    assert 400 <= instruction["p50"] <= 550 and 750 <= instruction["p90"] <= 1200 and instruction["p99"] >= 1300
    assert 1300 <= response["p50"] <= 1750 and 2300 <= response["p90"] <= 3100 and response["p99"] >= 3800
    assert instruction["p50"] == sorted(len(row["instruction"]) for row in rows)[ROWS // 2]


def test_most_rows_yield_code_and_python_blocks_parse(corpus):
    _, stats, rows = corpus
    found = [extract_code(row["response"]) for row in rows]
    assert sum(f.code_block is not None for f in found) >= 0.9 * ROWS
    python = [f.code for f in found if f.language == "python" and f.code is not None]
    assert len(python) >= 0.55 * ROWS
    for code in python:
        ast.parse(code)
    assert 0.04 * ROWS <= stats["fenced_blocks"]["0"] <= 0.1 * ROWS
    assert stats["fenced_blocks"]["2"] + stats["fenced_blocks"]["3+"] >= 0.15 * ROWS
    assert {"python", "javascript", "java", "cpp", "sql", "js", "c++"} <= set(stats["fence_tags"])


def test_planted_contamination_is_flagged_and_ordinary_rows_are_not(corpus, benchmarks_dir, tmp_path):
    """The direct layers but the semantic one (its model takes ~15 s to load on this CPU: it was measured on a
    sample of the 110K corpus instead), on every row: the planted ones only, each with its task."""
    _, stats, rows = corpus
    tasks, versions = load_tasks(["humaneval", "mbpp"], str(benchmarks_dir), tmp_path)
    checker = Decontaminator(DecontaminateConfig(semantic=False), None, tmp_path, tasks=tasks, versions=versions)
    planted = {entry["row"]: entry["task_id"] for entry in stats["planted"]["contaminated"]}
    assert len(planted) == 10 and {task[:5] for task in planted.values()} == {"Human", "Mbpp/"}
    found = checker.check_rows([(row["instruction"], row["response"]) for row in rows])  # 2,000 rows: ~1 s
    flagged = {i: {match.task_id for match in matches} for i, matches in enumerate(found) if matches}
    assert {i: planted[i] in task_ids for i, task_ids in flagged.items()} == dict.fromkeys(planted, True)


def test_duplicates_are_at_the_stated_rates(corpus):
    _, stats, rows = corpus
    exact, near = stats["planted"]["exact"], stats["planted"]["near"]
    assert len(exact) == round(ROWS * synthetic_corpus.EXACT_RATE) == 2
    assert len(near) == round(ROWS * synthetic_corpus.NEAR_RATE) == 50
    assert all(copy > original for copy, original in exact + near)
    rates = duplicate_rates([row["instruction"] for row in rows], [row["response"] for row in rows], DedupConfig())
    for field in ("instruction", "code"):
        assert rates[field]["exact"] == len(exact) / ROWS  # the planted copies and nothing else
        assert 0.01 <= rates[field]["0.8"] <= rates[field]["0.6"] <= 0.05  # the planted near copies, a few more
