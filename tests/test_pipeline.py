"""build-dataset end to end on the real tiny model: outputs, card, reruns, and a SIGKILL mid-run."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import SAMPLE
from datasets import load_dataset
from huggingface_hub import DatasetCard

from inversecoder.builders.decontaminate import LAYERS, SOURCE_ROW
from inversecoder.builders.pipeline import build_dataset
from inversecoder.core.config import load_config
from inversecoder.hub_cards.dataset_card import write_dataset_card


def write_recipe(path: Path, model: Path, benchmarks: Path | None, **extra) -> Path:
    recipe: dict[str, Any] = {
        "seed": 3,
        "benchmarks_dir": str(benchmarks) if benchmarks else None,
        "source": {"path": str(SAMPLE), "limit": 40},
        "generator": {"model": str(model), "batch_tokens": 6000},
        "summarize": {"num_samples": 3, "max_new_tokens": 12},
        "decontaminate": {"enabled": benchmarks is not None},
    }
    for key, value in extra.items():
        recipe.setdefault(key, {}).update(value)
    path.write_text(yaml.safe_dump(recipe))
    return path


def tables(dataset_dir: Path) -> dict[str, list[dict]]:
    return {
        name: pq.read_table(next((dataset_dir / name).glob("*.parquet"))).to_pylist()
        for name in ("data", "candidates", "rejected", "original")
    }


@pytest.fixture(scope="module")
def built(tiny_model_dir, benchmarks_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("build")
    # The semantic layer is tested in test_decontaminate.py and end to end in test_run.py; here it would
    # only add minutes of CPU embedding.
    recipe = write_recipe(
        out / "r.yaml",
        tiny_model_dir,
        benchmarks_dir,
        source={"limit": None},
        summarize={"num_samples": 2},
        decontaminate={"semantic": False},
    )
    config = load_config(recipe, output_dir=str(out / "run"))
    result = build_dataset(config, progress=False, write_card=write_dataset_card)
    return config, result


def test_dataset_folder_loads_like_a_hub_repo(built):
    _, result = built
    pairs = load_dataset(str(result.dataset_dir), split="train")
    candidates = load_dataset(str(result.dataset_dir), "candidates", split="train")
    rejected = load_dataset(str(result.dataset_dir), "rejected", split="train")
    assert len(pairs) == result.counts["final pairs (default config)"] > 0
    assert len(candidates) == 2 * result.counts["code snippets extracted"]
    assert set(pairs.column_names) >= {"instruction", "response", "score", "row_id", "source_index", "candidate_id"}
    by_id = {c["candidate_id"]: c for c in candidates}
    for pair in pairs:
        chosen = by_id[pair["candidate_id"]]
        assert chosen["selected"] and chosen["instruction"] == pair["instruction"] and chosen["score"] == pair["score"]
        siblings = [c for c in candidates if c["row_id"] == pair["row_id"]]
        best = max(siblings, key=lambda c: (c["score"], -c["k"]))
        assert best["candidate_id"] == pair["candidate_id"]  # best score, earliest on ties
        assert pair["response"].startswith("```") and pair["response"].endswith("```")
        assert chosen["instruction"].startswith(chosen["prefix"])
    reasons = {(r["stage"], r["reason"]) for r in rejected}
    assert ("source", "'response' is list, not a string") in reasons
    assert ("extract", "no code block and not Python code") in reasons


def test_source_rows_link_back_by_id(built):
    _, result = built
    source_lines = SAMPLE.read_text(encoding="utf-8").splitlines()
    import json

    from inversecoder.builders.extract import extract_code

    for pair in load_dataset(str(result.dataset_dir), split="train"):
        record = json.loads(source_lines[pair["source_index"]])
        assert extract_code(record["response"]).code_block == pair["response"]


def test_contaminated_source_rows_are_removed_with_their_task_and_their_pairs(built):
    _config, result = built
    rejected = load_dataset(str(result.dataset_dir), "rejected", split="train")
    decontaminated = [r for r in rejected if r["stage"].startswith("decontaminate")]
    assert any("HumanEval/0" in r["reason"] for r in decontaminated)  # the sample's has_close_elements row
    original_ids = set(load_dataset(str(result.dataset_dir), "original", split="train")["row_id"])
    assert not original_ids & {r["row_id"] for r in decontaminated if r["stage"] == "decontaminate-original"}
    # The contamination config: one row per (removed row, task), with the layer, field, score and evidence.
    report = load_dataset(str(result.dataset_dir), "contamination", split="train").to_list()
    original = [r for r in report if r["where"] == "original"]
    assert any(r["task_id"] == "HumanEval/0" and r["benchmark"] == "humaneval" for r in original)
    assert all(
        r["layer"] in LAYERS and 0 < r["score"] <= 1 and r["evidence"] and r["candidate_id"] is None for r in original
    )
    flagged = {r["row_id"] for r in original}
    # Nothing is generated from a contaminated source row: no pair, no candidate, so no `source row` match.
    published = set(load_dataset(str(result.dataset_dir), "default", split="train")["row_id"])
    candidates = set(load_dataset(str(result.dataset_dir), "candidates", split="train")["row_id"])
    assert not (published | candidates) & flagged
    assert not [r for r in report if r["layer"] == SOURCE_ROW]
    assert all(r["tier"] == "direct" for r in original)  # the semantic layer is off here: no cascade
    card = (result.dataset_dir / "README.md").read_text()
    removed = result.counts["generated pairs removed by decontamination"]
    assert re.search(rf"{removed} generated and {len(flagged)} original pairs were removed", card)
    assert "nothing was generated from a removed source row" in card
    assert re.search(rf"\| direct \| {removed} \| {len(flagged)} \|", card)
    assert "no cascade (decontaminate.semantic is false)" in card


def test_card_reports_duplicate_rates_of_the_published_pairs(built):
    _config, result = built
    card = (result.dataset_dir / "README.md").read_text()
    assert "| pairs | field | rows | exact | Jaccard >= 0.6 | Jaccard >= 0.7 | Jaccard >= 0.8 |" in card
    final = result.counts["final pairs (default config)"]
    for data, field in (("generated", "instruction"), ("generated", "code"), ("original", "instruction")):
        row = re.search(rf"\| {data} \| {field} \| (\d+) \| ([\d.]+)% \| ([\d.]+)% \| ([\d.]+)% \| ([\d.]+)% \|", card)
        assert row, (data, field)
        rates = [float(x) for x in row.groups()[2:]]
        assert rates == sorted(rates, reverse=True)  # a lower threshold counts at least as many rows
        if data == "generated":
            assert int(row.group(1)) == final


def test_card_has_metadata_counts_parameters_and_histogram(built):
    _, result = built
    card = DatasetCard.load(result.dataset_dir / "README.md")
    names = [c["config_name"] for c in card.data.configs]
    assert names == ["default", "candidates", "rejected", "original", "contamination"]
    # A local corpus file and a local M have no card: the license is unknown (test_cards.py: read from cards)
    assert card.data.license == "unknown" and card.data.size_categories == ["n<1K"]
    sizes = {info["config_name"]: info["splits"][0]["num_examples"] for info in card.data.dataset_info}
    assert sizes["default"] == result.counts["final pairs (default config)"]
    text = card.text
    assert f"| candidates generated | {result.counts['candidates generated']} |" in text
    assert "temperature 0.8" in text and "repetition penalty 1.1" in text and "K = 2" in text
    assert "local-" in text  # the generator's revision
    assert "| seed | 3 |" in text and "`transformers`" in text and "`torch`" in text
    assert "HumanEval/0" in text  # decontamination report
    assert (result.dataset_dir / "assets" / "score_histogram.png").read_bytes()[:4] == b"\x89PNG"
    assert result.fingerprint in text


def test_a_finished_build_reruns_without_model_calls_and_writes_the_same(built):
    config, result = built
    before = tables(result.dataset_dir)
    again = build_dataset(config, progress=False, write_card=write_dataset_card)
    assert again.model_calls == 0 and again.reused_calls == result.model_calls
    assert tables(again.dataset_dir) == before and again.fingerprint == result.fingerprint


def _run_cli(recipe: Path, out: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "inversecoder.cli", "build-dataset", str(recipe), "--output-dir", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def _stored_calls(out: Path) -> int:
    path = out / ".cache" / "model_calls.sqlite"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_sigkill_mid_run_then_rerun_equals_an_uninterrupted_build(tiny_model_dir, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_model_dir, None, generator={"batch_tokens": 1500})
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    killed_out, clean_out = tmp_path / "killed", tmp_path / "clean"

    victim = _run_cli(recipe, killed_out, env)
    deadline = time.monotonic() + 240
    while _stored_calls(killed_out) < 20:  # some batches are committed, most of the work is still ahead
        assert victim.poll() is None, "the build finished before it could be killed: make it longer"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    stored_at_kill = _stored_calls(killed_out)
    assert not (killed_out / "dataset").exists()  # nothing half-published

    resumed = _run_cli(recipe, killed_out, env)
    resumed_log = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, resumed_log
    fresh = _run_cli(recipe, clean_out, env)
    fresh_log = fresh.communicate(timeout=300)[0]
    assert fresh.returncode == 0, fresh_log

    resumed_calls = re.search(r"model calls: (\d+) computed, (\d+) from the cache", resumed_log)
    fresh_calls = re.search(r"model calls: (\d+) computed", fresh_log)
    assert resumed_calls is not None and fresh_calls is not None, resumed_log + fresh_log
    computed_after, reused_after = map(int, resumed_calls.groups())
    computed_fresh = int(fresh_calls.group(1))
    assert reused_after == stored_at_kill > 0
    assert stored_at_kill + computed_after == computed_fresh  # no call made twice, none missing
    assert tables(killed_out / "dataset") == tables(clean_out / "dataset")
