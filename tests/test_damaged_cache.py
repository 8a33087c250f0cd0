"""A damaged result cache never stops a build: the file is set aside (or the bad rows recomputed), with a warning."""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_pipeline import write_recipe


def build(recipe: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "inversecoder.cli", "build-dataset", str(recipe), "--output-dir", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def clean(tiny_model_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("cache")
    recipe = write_recipe(base / "r.yaml", tiny_model_dir, None, source={"limit": 6}, summarize={"num_samples": 2})
    result = build(recipe, base / "clean")
    assert result.returncode == 0, result.stderr[-2000:]
    assert tables(base / "clean" / "dataset")["data/train-00000-of-00001.parquet"]
    return recipe, base / "clean"


def tables(dataset: Path) -> dict[str, list[dict]]:
    return {str(p.relative_to(dataset)): pq.read_table(p).to_pylist() for p in sorted(dataset.rglob("*.parquet"))}


def _rows(path: Path, sql: str) -> None:
    with sqlite3.connect(path) as db:
        db.execute(sql)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


def garbage(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * (path.stat().st_size // 256))


def bad_json(path: Path) -> None:
    _rows(path, "UPDATE results SET value = '{\"text\": ' WHERE rowid IN (SELECT rowid FROM results LIMIT 3)")


def json_null(path: Path) -> None:
    _rows(path, "UPDATE results SET value = 'null' WHERE rowid IN (SELECT rowid FROM results LIMIT 3)")


def wrong_shape(path: Path) -> None:  # a list, a field of the wrong type, an unknown field
    _rows(path, "UPDATE results SET value = '[1, 2]' WHERE rowid = (SELECT MIN(rowid) FROM results)")
    _rows(path, "UPDATE results SET value = '{\"text\": 5}' WHERE rowid = (SELECT MAX(rowid) FROM results)")
    _rows(path, "UPDATE results SET value = '{\"colour\": 1}' WHERE rowid = (SELECT MIN(rowid) + 1 FROM results)")


@pytest.mark.parametrize("damage", [truncate, garbage])
def test_a_damaged_cache_file_is_set_aside_and_the_build_redone(clean, tmp_path, damage):
    recipe, clean_out = clean
    out = tmp_path / "out"
    shutil.copytree(clean_out, out)
    shutil.rmtree(out / "dataset")
    cache = out / ".cache" / "model_calls.sqlite"
    damage(cache)
    damaged = cache.read_bytes()

    result = build(recipe, out)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    warning = re.search(
        r"warning: the result cache \S+ is damaged .*: kept it as (\S+) and started a new one", result.stdout
    )
    assert warning, result.stdout[-2000:]
    kept = Path(warning.group(1))
    assert kept.parent == cache.parent and kept.name.startswith("model_calls.sqlite.damaged-")
    assert kept.read_bytes() == damaged  # kept as it was, for whoever wants to look at it
    assert re.search(r"model calls: [1-9]\d* computed, 0 from the cache", result.stdout)
    assert tables(out / "dataset") == tables(clean_out / "dataset")


@pytest.mark.parametrize("damage, count", [(bad_json, 3), (json_null, 3), (wrong_shape, 3)])
def test_unreadable_cached_rows_are_computed_again(clean, tmp_path, damage, count):
    recipe, clean_out = clean
    out = tmp_path / "out"
    shutil.copytree(clean_out, out)
    shutil.rmtree(out / "dataset")
    damage(out / ".cache" / "model_calls.sqlite")

    result = build(recipe, out)
    assert result.returncode == 0, result.stderr[-2000:]
    cache = re.escape(str(out / ".cache" / "model_calls.sqlite"))
    warned = re.findall(rf"warning: (\d+) stored results? in {cache} could not be read back", result.stdout)
    assert sum(map(int, warned)) == count, result.stdout[-2000:]  # one warning per lookup that met some
    calls = re.search(r"model calls: (\d+) computed", result.stdout)
    assert calls and int(calls.group(1)) >= count  # the unreadable ones, with the rest of their batches
    assert tables(out / "dataset") == tables(clean_out / "dataset")
    assert not list((out / ".cache").glob("*.damaged-*"))  # the file itself is fine: kept in use
    again = build(recipe, out)  # the recomputed results replaced the bad rows
    assert again.returncode == 0 and "could not be read" not in again.stdout
    assert "model calls: 0 computed" in again.stdout
