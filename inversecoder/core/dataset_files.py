"""The files of a dataset folder (Hub layout): each config's schema, folder and parquet files.

Shared by the builder that writes the folder, the card that describes it and the trainer that reads
it. A config is one or more parquet files `DIR/train-00000-of-000NN.parquet`, in row order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from inversecoder.core.files import read_json
from inversecoder.core.layout import BUILD_INFO

SCHEMAS: dict[str, pa.Schema] = {
    "default": pa.schema(
        [
            ("instruction", pa.string()),
            ("response", pa.string()),
            ("score", pa.float64()),
            ("language", pa.string()),
            ("row_id", pa.string()),
            ("source_index", pa.int64()),
            ("candidate_id", pa.string()),
        ]
    ),
    "candidates": pa.schema(
        [
            ("row_id", pa.string()),
            ("candidate_id", pa.string()),
            ("k", pa.int64()),
            ("seed", pa.int64()),
            ("prefix", pa.string()),
            ("instruction", pa.string()),
            ("finish_reason", pa.string()),
            ("score", pa.float64()),
            ("yes_no_mass", pa.float64()),
            ("selected", pa.bool_()),
        ]
    ),
    "rejected": pa.schema(
        [
            ("source_index", pa.int64()),
            ("row_id", pa.string()),
            ("stage", pa.string()),
            ("reason", pa.string()),
            ("detail", pa.string()),
        ]
    ),
    "original": pa.schema(
        [
            ("instruction", pa.string()),
            ("response", pa.string()),
            ("row_id", pa.string()),
            ("source_index", pa.int64()),
        ]
    ),
    # DPO pairs for the code -> instruction summarizer, in TRL's standard preference form: `prompt` is the
    # summarization request as M was given it (up to "@@ Response\n"), `chosen` / `rejected` two of its
    # candidate instructions (each starting with its seeded prefix), with their self-evaluation scores.
    "preferences": pa.schema(
        [
            ("prompt", pa.string()),
            ("chosen", pa.string()),
            ("rejected", pa.string()),
            ("score_chosen", pa.float64()),
            ("score_rejected", pa.float64()),
            ("language", pa.string()),
            ("row_id", pa.string()),
            ("source_index", pa.int64()),
            ("chosen_id", pa.string()),
            ("rejected_id", pa.string()),
        ]
    ),
    # One row per (removed row, benchmark task it matched): where it was (generated / original), the
    # strongest layer that matched that task, its score and the benchmark text that matched.
    "contamination": pa.schema(
        [
            ("where", pa.string()),
            ("row_id", pa.string()),
            ("source_index", pa.int64()),
            ("candidate_id", pa.string()),
            ("task_id", pa.string()),
            ("benchmark", pa.string()),
            ("tier", pa.string()),
            ("layer", pa.string()),
            ("field", pa.string()),
            ("score", pa.float64()),
            ("rank", pa.int64()),
            ("similarity", pa.float64()),
            ("tests_passed", pa.int64()),
            ("tests_total", pa.int64()),
            ("p_yes", pa.float64()),
            ("evidence", pa.string()),
        ]
    ),
}
DATA_DIRS = {
    "default": "data",
    "candidates": "candidates",
    "rejected": "rejected",
    "original": "original",
    "contamination": "contamination",
    "preferences": "preferences",
}
HISTOGRAM = "assets/score_histogram.png"


def shard_name(config_name: str, index: int, count: int) -> str:
    """The path, relative to the folder, of file `index` of `count` of a config."""
    return f"{DATA_DIRS[config_name]}/train-{index:05d}-of-{count:05d}.parquet"


def config_files(dataset_dir: Path, config_name: str) -> list[Path]:
    """A config's parquet files, in row order."""
    return sorted((Path(dataset_dir) / DATA_DIRS[config_name]).glob("*.parquet"))


def hub_configs(files: dict[str, list[str]]) -> list[dict[str, Any]]:
    """The `configs:` metadata that tells `load_dataset` which files (relative paths, in row order) make
    each config; the first config is the default one."""
    configs = []
    for name, paths in files.items():
        path: str | list[str] = paths[0] if len(paths) == 1 else list(paths)
        entry: dict[str, Any] = {"config_name": name, "data_files": [{"split": "train", "path": path}]}
        if name == "default":
            entry["default"] = True
        configs.append(entry)
    return configs


def load_config_rows(dataset_dir: Path, config_name: str):
    """One config of a dataset folder as a `datasets.Dataset`, read straight from its parquet files
    (cached by the files' paths and mtimes, so a rebuilt folder is never served from a stale cache).
    A config the build left out for being empty comes back as an empty dataset with its schema;
    one the build never made is a `FileNotFoundError`."""
    from datasets import Dataset, load_dataset

    dataset_dir = Path(dataset_dir)
    files = [str(p) for p in config_files(dataset_dir, config_name)]
    if files:
        return load_dataset("parquet", data_files={"train": files}, split="train")
    info = read_json(dataset_dir / BUILD_INFO) or {}
    if config_name in info.get("empty_configs", []):
        return Dataset(SCHEMAS[config_name].empty_table())
    raise FileNotFoundError(f"{dataset_dir} has no '{config_name}' config")
