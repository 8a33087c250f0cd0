"""The stage shape and the streamed build.

The tiny model checks that a streamed build equals a one-shard build on real generations and scores; a
fault-injecting backend (failed generations and scores, instructions repeated across shards, instant) checks
the rejected rows and the duplicate removal across shard boundaries, which the tiny model rarely produces.
"""

from __future__ import annotations

import copy
import dataclasses
import zlib
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import SAMPLE
from datasets import load_dataset

from inversecoder.builders import dataset as dataset_module
from inversecoder.builders import pipeline
from inversecoder.builders.decontaminate import SOURCE_ROW
from inversecoder.builders.stage import StageContext, StageResult
from inversecoder.core.backends import (
    Backend,
    BackendInfo,
    CachedModel,
    Completion,
    GenerationRequest,
    SamplingParams,
    YesNoScore,
)
from inversecoder.core.cache import ResultCache
from inversecoder.core.config import load_config
from inversecoder.core.dataset_files import DATA_DIRS, SCHEMAS, config_files
from inversecoder.core.layout import Layout
from inversecoder.hub_cards.dataset_card import write_dataset_card


class StandInBackend(Backend):
    """A backend whose instructions repeat across snippets (so dedup has work across shards), one candidate
    in 23 fails to generate and one in 31 to score."""

    def info(self) -> BackendInfo:
        return BackendInfo("stand-in", "stand-in-model", "r1", 2048)

    def plan_batches(self, prompts: Sequence[str], new_tokens: int) -> list[list[int]]:
        return [list(range(len(prompts)))] if prompts else []

    def generate(self, requests: Sequence[GenerationRequest], params: SamplingParams) -> list[Completion]:
        out = []
        for request in requests:
            h = zlib.crc32(request.prompt.encode() + str(request.seed).encode())
            out.append(
                Completion(None, "error", error="boom")
                if h % 23 == 0
                else Completion(f" function that handles case {h % 6}", "stop")
            )
        return out

    def score_yes_no(self, prompts: Sequence[str]) -> list[YesNoScore]:
        return [
            YesNoScore(None, error="no score")
            if zlib.crc32(p.encode()) % 31 == 0
            else YesNoScore((zlib.crc32(p.encode()) % 997) / 997, 0.9)
            for p in prompts
        ]


def stand_in_model(cache_dir: Path) -> CachedModel:
    """The stand-in backend behind a result cache in `cache_dir` (instant, deterministic)."""
    return CachedModel(StandInBackend(), ResultCache(cache_dir / "model_calls.sqlite"), progress=False)


def _config(tmp_path: Path, name: str, benchmarks_dir, decontaminate: dict | None = None, **source):
    recipe = {
        "seed": 3,
        "benchmarks_dir": str(benchmarks_dir),
        "source": {"path": str(SAMPLE), **source},
        "generator": {"model": "stand-in"},
        "summarize": {"num_samples": 3},
        "decontaminate": {"semantic": False, **(decontaminate or {})},
    }
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(recipe))
    return load_config(tmp_path / f"{name}.yaml", output_dir=str(tmp_path / name))


def _build(monkeypatch, config, shard: int, file_rows: int = 200_000):
    monkeypatch.setattr(pipeline, "open_model", lambda config, *a, **k: stand_in_model(config.layout.cache))
    monkeypatch.setattr(pipeline, "SHARD_SNIPPETS", shard)
    monkeypatch.setattr(dataset_module, "FILE_ROWS", file_rows)
    return pipeline.build_dataset(config, progress=False, write_card=write_dataset_card)


def _tables(folder: Path) -> dict[str, list[dict]]:
    return {
        name: [row for f in config_files(folder, name) for row in pq.read_table(f).to_pylist()] for name in DATA_DIRS
    }


def _card(folder: Path) -> list[str]:
    """The card without its build time and file lists (which differ with the number of files)."""
    return [
        line
        for line in (folder / "README.md").read_text().splitlines()
        if "Built:" not in line and "parquet" not in line and line.strip() not in ("path:",)
    ]


@pytest.fixture(scope="module")
def builds(benchmarks_dir, tmp_path_factory):
    monkeypatch = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("stages")
    try:
        one = _build(monkeypatch, _config(tmp, "one", benchmarks_dir), shard=10_000)
        many = _build(monkeypatch, _config(tmp, "many", benchmarks_dir), shard=7, file_rows=40)
    finally:
        monkeypatch.undo()
    return one, many


def test_a_streamed_build_writes_what_one_shard_writes(builds):
    one, many = builds
    assert one.counts == many.counts and one.fingerprint == many.fingerprint
    assert _tables(one.dataset_dir) == _tables(many.dataset_dir)
    assert _card(one.dataset_dir) == _card(many.dataset_dir)  # same counts, rates, sizes, reasons
    assert one.counts["generated pairs removed as duplicates"] > 0  # dedup worked across shards
    assert {r["stage"] for r in _tables(many.dataset_dir)["rejected"]} >= {"summarize", "score", "dedup-generated"}


def test_a_streamed_build_with_the_tiny_model_writes_what_one_shard_writes(
    tiny_model_dir, benchmarks_dir, tmp_path, monkeypatch
):
    built = {}
    for name, shard in (("one", 10_000), ("many", 4)):
        recipe = {
            "seed": 5,
            "benchmarks_dir": str(benchmarks_dir),
            "source": {"path": str(SAMPLE), "limit": 14},
            "generator": {"model": str(tiny_model_dir), "device": "cpu"},
            "summarize": {"num_samples": 2, "max_new_tokens": 12},
            "decontaminate": {"semantic": False},
        }
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(recipe))
        config = load_config(tmp_path / f"{name}.yaml", output_dir=str(tmp_path / name))
        monkeypatch.setattr(pipeline, "SHARD_SNIPPETS", shard)
        built[name] = pipeline.build_dataset(config, progress=False, write_card=write_dataset_card)
    assert built["one"].model_calls == built["many"].model_calls > 0
    assert built["one"].counts == built["many"].counts
    # Model calls are batched per shard: another batch composition moves fp32 scores in the 7th digit (as any
    # change of batch does); everything else is identical. A rerun or a resumed build uses the same shards.
    assert _rounded(_tables(built["one"].dataset_dir)) == _rounded(_tables(built["many"].dataset_dir))


def _rounded(tables: dict[str, list[dict]]) -> dict[str, list[dict]]:
    return {
        name: [{k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()} for row in rows]
        for name, rows in tables.items()
    }


def test_a_multi_file_folder_loads_every_config(builds):
    _, many = builds
    tables = _tables(many.dataset_dir)
    assert len(config_files(many.dataset_dir, "candidates")) > 1 and len(config_files(many.dataset_dir, "default")) > 1
    for name, rows in tables.items():
        if rows:
            loaded = load_dataset(str(many.dataset_dir), name, split="train").to_list()
            assert loaded == rows, name


def test_pairs_of_contaminated_source_rows_are_removed_when_streamed(builds):
    _, many = builds
    tables = _tables(many.dataset_dir)
    flagged = {r["row_id"] for r in tables["contamination"] if r["where"] == "original"}
    assert flagged
    assert not flagged & {r["row_id"] for r in tables["default"]}
    assert not flagged & {r["row_id"] for r in tables["original"]}
    # nothing was generated from them: no candidate, no pair, so no `source row` match either
    assert not flagged & {r["row_id"] for r in tables["candidates"]}
    assert not [r for r in tables["contamination"] if r["layer"] == SOURCE_ROW]
    wheres = [r["where"] for r in tables["contamination"]]
    assert wheres == sorted(wheres, key=lambda w: w != "original")  # the source rows' matches come first


def test_action_report_keeps_the_contaminated_rows_and_lists_them(builds, benchmarks_dir, tmp_path, monkeypatch):
    removed, _ = builds
    reported = _build(monkeypatch, _config(tmp_path, "report", benchmarks_dir, {"action": "report"}), shard=10_000)
    kept, cleaned = _tables(reported.dataset_dir), _tables(removed.dataset_dir)
    flagged = {r["row_id"] for r in kept["contamination"] if r["where"] == "original"}
    assert flagged == {r["row_id"] for r in cleaned["contamination"] if r["where"] == "original"}
    assert flagged <= {r["row_id"] for r in kept["original"]}
    published = flagged & {r["row_id"] for r in kept["default"]}
    assert published and published <= {r["row_id"] for r in kept["candidates"]}
    # their pairs are listed as contaminated through their source row; nothing is rejected for contamination
    inherited = {r["row_id"] for r in kept["contamination"] if r["layer"] == SOURCE_ROW}
    assert published <= inherited <= flagged
    assert not [r for r in kept["rejected"] if r["stage"].startswith("decontaminate")]
    assert reported.counts["source pairs removed by decontamination"] == 0
    assert reported.counts["source pairs flagged by decontamination"] == len(flagged)
    card = (reported.dataset_dir / "README.md").read_text()
    assert "**This dataset is not decontaminated** (`decontaminate.action: report`)" in card


def test_without_original_the_corpus_stays_and_the_pairs_are_screened(builds, benchmarks_dir, tmp_path, monkeypatch):
    removed, _ = builds
    # (a lower code threshold: with the semantic layer off here, the code layer is what sees a pair's code)
    settings = {"original": False, "code_threshold": 0.3}
    corpus = _build(monkeypatch, _config(tmp_path, "corpus", benchmarks_dir, settings), shard=10_000)
    tables, cleaned = _tables(corpus.dataset_dir), _tables(removed.dataset_dir)
    dirty = {r["row_id"] for r in cleaned["contamination"] if r["where"] == "original"}
    assert dirty <= {r["row_id"] for r in tables["original"]}  # the corpus as it is
    assert not [r for r in tables["contamination"] if r["where"] == "original"]
    # the pairs made from those rows are caught on their own (their code is the row's) and take their candidates
    caught = {r["row_id"] for r in tables["contamination"] if r["where"] == "generated"}
    assert caught & dirty
    assert not caught & ({r["row_id"] for r in tables["default"]} | {r["row_id"] for r in tables["candidates"]})
    card = (corpus.dataset_dir / "README.md").read_text()
    assert "The source corpus itself was not cleaned (`decontaminate.original: false`" in card


def test_every_stage_returns_a_stage_result_and_leaves_its_input_alone(benchmarks_dir, tmp_path):
    config = _config(tmp_path, "shape", benchmarks_dir, limit=30)
    context = StageContext(stand_in_model(tmp_path / ".cache"), Layout(tmp_path), progress=False)
    rows = list(pipeline.SourceStream(config.source))
    for stage in pipeline.STAGES:
        before = copy.deepcopy(rows)
        result = stage.run(rows, config, context)
        assert isinstance(result, StageResult), stage.name
        assert rows == before, f"{stage.name} changed its input"
        kept = list(result.kept)
        # typeshed's DataclassInstance does not declare __dataclass_params__ (the only record of `frozen`)
        assert all(dataclasses.is_dataclass(r) and r.__dataclass_params__.frozen for r in kept), stage.name  # type: ignore[union-attr]
        assert all(isinstance(v, int) for v in result.report.values()), stage.name
        rows = kept
    assert rows  # pairs came out of the last stage


def test_sizes_in_the_card_do_not_depend_on_sharding():
    rows = [
        {
            "row_id": f"r{i}",
            "candidate_id": None if i % 3 else f"c{i}",
            "k": i,
            "seed": i * 7,
            "prefix": "Write a" * (i % 4),
            "instruction": None if i % 5 == 0 else "x" * i,
            "finish_reason": "stop",
            "score": None if i % 2 else 0.5,
            "yes_no_mass": 0.9,
            "selected": i % 4 == 0,
        }
        for i in range(50)
    ]
    whole = pa.Table.from_pylist(rows, schema=SCHEMAS["candidates"]).nbytes
    for split in (1, 7, 50):
        sizes: dict = {}
        for start in range(0, len(rows), split):
            table = pa.Table.from_pylist(rows[start : start + split], schema=SCHEMAS["candidates"])
            for column in table.schema:
                size = sizes.setdefault(column.name, dataset_module._ColumnSize())
                values = table.column(column.name)
                size.rows += len(values)
                size.nulls += values.null_count
                if pa.types.is_string(column.type):
                    size.data += sum(len(v.encode()) for v in values.to_pylist() if v is not None)
        assert dataset_module.table_nbytes(SCHEMAS["candidates"], sizes) == whole, split


def test_served_fleets_get_shards_whose_calls_outlast_their_tails(tmp_path, benchmarks_dir):
    embedded = _config(tmp_path, "embedded", benchmarks_dir)
    assert pipeline.shard_snippets(embedded) == pipeline.SHARD_SNIPPETS  # its batches shape the fp32 scores
    served = embedded.model_copy(deep=True)
    served.generator.endpoints = [f"http://h{i}:8000" for i in range(16)]
    served.generator.backend = "vllm"
    assert pipeline.shard_snippets(served) == pipeline.SERVED_SHARD_SNIPPETS == 20_480
    served.generator.endpoints = served.generator.endpoints[:1]  # transport: the shards (and so the embedding
    served.generator.concurrency = 8  # batches of the semantic layer) do not follow the fleet
    assert pipeline.shard_snippets(served) == pipeline.SERVED_SHARD_SNIPPETS
