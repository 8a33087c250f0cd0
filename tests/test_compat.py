"""An output folder and cache written before the re-layering (issue #14) resume with zero new model calls.

`tests/data/compat-f1ce952` was built by inversecoder at commit f1ce952 from its `config.yaml` (run in that
folder, with the tiny model at `tiny-model` and the first 12 rows of the demo sample as `sample.jsonl`):
the model-call cache, steps.json and the dataset folder as that code wrote them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import BENCHMARKS_DIR, SAMPLE

FIXTURE = Path(__file__).parent / "data" / "compat-f1ce952"
SEMANTIC_FIXTURE = Path(__file__).parent / "data" / "compat-f1ce952-semantic"  # the same, semantic layer on


def lay_out(fixture: Path, tiny_model_dir: Path, folder: Path) -> Path:
    shutil.copytree(fixture, folder)
    shutil.copytree(tiny_model_dir, folder / "tiny-model")  # built deterministically: same content revision
    (folder / "benchmarks").symlink_to(BENCHMARKS_DIR)
    lines = SAMPLE.read_text(encoding="utf-8").splitlines(keepends=True)[:12]
    (folder / "sample.jsonl").write_text("".join(lines), encoding="utf-8")
    return folder


@pytest.fixture
def old_run(tiny_model_dir, tmp_path) -> Path:
    return lay_out(FIXTURE, tiny_model_dir, tmp_path / "old-run")


def inversecoder(folder: Path, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "inversecoder.cli", *args], cwd=folder, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


def rows(dataset: Path, config: str) -> list[dict]:
    files = sorted((dataset / config).glob("*.parquet"))
    assert files, f"no parquet files in {dataset / config}"
    return [row for path in files for row in pq.read_table(path).to_pylist()]


def test_the_old_runs_dataset_step_reruns_for_the_cascade_from_the_old_cache(old_run):
    """The decontamination changed (issue #16: the cascade's settings are part of the step's fingerprint), so the
    old run's dataset step reruns; everything it computed before comes from its cache."""
    output = inversecoder(old_run, "run", "config.yaml")
    assert "[dataset] up to date" not in output and "[dataset] running" in output, output
    assert re.search(r"model calls: 0 computed, \d+ from the cache", output), output


def test_the_old_cache_rebuilds_the_same_dataset_with_zero_model_calls(old_run):
    before = {name: rows(old_run / "out" / "dataset", name) for name in ("data", "candidates", "original")}
    output = inversecoder(old_run, "build-dataset", "config.yaml")
    assert re.search(r"model calls: 0 computed, 72 from the cache", output), output  # its 12 rows are clean
    for name, expected in before.items():
        assert rows(old_run / "out" / "dataset", name) == expected, name


def test_the_old_embedding_cache_is_reused(tiny_model_dir, tmp_path):
    folder = lay_out(SEMANTIC_FIXTURE, tiny_model_dir, tmp_path / "old-semantic-run")
    before = rows(folder / "out" / "dataset", "data")
    # the cascade computes what the old code never did (code embeddings, executions, the judge's calls): off here
    output = inversecoder(folder, "build-dataset", "config.yaml", "decontaminate.retrieval_top_k=0")
    assert re.search(r"model calls: 0 computed, \d+ from the cache", output), output
    assert re.search(r"; 0 embeddings computed", output), output
    assert rows(folder / "out" / "dataset", "data") == before
