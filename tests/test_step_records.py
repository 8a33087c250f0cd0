"""A finished step is skipped only when its files are still what it wrote (OUTPUT/steps.json's manifests);
a damaged output or an unreadable steps.json makes the step rerun, with one line saying why."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import SAMPLE


def inversecoder(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "inversecoder.cli", *args], capture_output=True, text=True, timeout=600
    )


def rows(dataset: Path) -> dict[str, list[dict]]:
    return {
        sub: [row for path in sorted((dataset / sub).glob("*.parquet")) for row in pq.read_table(path).to_pylist()]
        for sub in ("data", "candidates", "original")
    }


@pytest.fixture(scope="module")
def finished(tiny_model_dir, tmp_path_factory) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("records")
    recipe = {
        "source": {"path": str(SAMPLE), "limit": 8},
        "generator": {"model": str(tiny_model_dir)},
        "summarize": {"num_samples": 2, "max_new_tokens": 8},
        "decontaminate": {"enabled": False},
        "train": {"enabled": False},
        "evaluate": {"enabled": False},
    }
    (root / "r.yaml").write_text(yaml.safe_dump(recipe))
    result = inversecoder("run", str(root / "r.yaml"), "--output-dir", str(root / "out"))
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "r.yaml", root / "out", rows(root / "out" / "dataset")


@pytest.fixture
def out(finished, tmp_path) -> tuple[Path, Path, dict]:
    recipe, folder, expected = finished
    return recipe, Path(shutil.copytree(folder, tmp_path / "out")), expected


def test_the_record_lists_every_file_with_its_sha256(out):
    _, folder, _ = out
    record = json.loads((folder / "steps.json").read_text())["dataset"]
    assert set(record) == {"fingerprint", "files"}
    assert "dataset/data/train-00000-of-00001.parquet" in record["files"]
    assert "dataset/build_info.json" in record["files"]
    manifest = json.loads((folder / "dataset" / "manifest.json").read_text())["files"]
    assert {f"dataset/{path}": entry for path, entry in manifest.items()} == record["files"]


@pytest.mark.parametrize("damage", ["deleted", "truncated", "added"])
def test_a_damaged_dataset_is_rebuilt_not_trusted(out, damage):
    recipe, folder, expected = out
    dataset = folder / "dataset"
    if damage == "deleted":
        shutil.rmtree(dataset / "data")
        shutil.rmtree(dataset / "candidates")
    elif damage == "truncated":
        path = dataset / "data" / "train-00000-of-00001.parquet"
        path.write_bytes(path.read_bytes()[:100])
    else:
        (dataset / "notes.txt").write_text("not from the build")
    result = inversecoder("run", str(recipe), "--output-dir", str(folder))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning: [dataset]")]
    assert len(warnings) == 1 and "differs from what the step wrote" in warnings[0], result.stdout
    what = {
        "deleted": "data/train-00000-of-00001.parquet missing",
        "truncated": "data/train-00000-of-00001.parquet changed",
        "added": "notes.txt not written by the step",
    }[damage]
    assert what in warnings[0]
    assert "[dataset] running" in result.stdout and "model calls: 0 computed" in result.stdout
    assert rows(dataset) == expected
    again = inversecoder("run", str(recipe), "--output-dir", str(folder))
    assert "[dataset] up to date" in again.stdout, again.stdout


@pytest.mark.parametrize(
    "content",
    ['{"dataset": {"fingerprint": "ab', "not json at all", "[1, 2]", '{"dataset": 3}'],
    ids=["truncated", "not-json", "a-list", "wrong-type"],
)
def test_an_unreadable_steps_json_means_nothing_recorded(out, content):
    recipe, folder, expected = out
    (folder / "steps.json").write_text(content)
    result = inversecoder("run", str(recipe), "--output-dir", str(folder))
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "steps.json cannot be read" in warnings[0], result.stdout
    assert "[dataset] running" in result.stdout and "model calls: 0 computed" in result.stdout
    assert rows(folder / "dataset") == expected
    assert json.loads((folder / "steps.json").read_text())["dataset"]["files"]
