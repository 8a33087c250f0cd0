"""The dataset folder, laid out exactly like a Hub dataset repo (README.md card + parquet per config).

`load_dataset(DIR)` gives the selected pairs, `load_dataset(DIR, "candidates")` every candidate,
`load_dataset(DIR, "rejected")` what was dropped and why. The folder is written next to its final
place and renamed into it, so a crash never leaves a half-written dataset behind.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

SCHEMAS: dict[str, pa.Schema] = {
    "default": pa.schema([
        ("instruction", pa.string()), ("response", pa.string()), ("score", pa.float64()),
        ("language", pa.string()), ("row_id", pa.string()), ("source_index", pa.int64()),
        ("candidate_id", pa.string()),
    ]),
    "candidates": pa.schema([
        ("row_id", pa.string()), ("candidate_id", pa.string()), ("k", pa.int64()), ("seed", pa.int64()),
        ("prefix", pa.string()), ("instruction", pa.string()), ("finish_reason", pa.string()),
        ("score", pa.float64()), ("yes_no_mass", pa.float64()), ("selected", pa.bool_()),
    ]),
    "rejected": pa.schema([
        ("source_index", pa.int64()), ("row_id", pa.string()), ("stage", pa.string()),
        ("reason", pa.string()), ("detail", pa.string()),
    ]),
    "original": pa.schema([
        ("instruction", pa.string()), ("response", pa.string()), ("row_id", pa.string()), ("source_index", pa.int64()),
    ]),
    # One row per (removed row, benchmark task it matched): where it was (generated / original), the
    # strongest layer that matched that task, its score and the benchmark text that matched.
    "contamination": pa.schema([
        ("where", pa.string()), ("row_id", pa.string()), ("source_index", pa.int64()), ("candidate_id", pa.string()),
        ("task_id", pa.string()), ("benchmark", pa.string()), ("layer", pa.string()), ("field", pa.string()),
        ("score", pa.float64()), ("evidence", pa.string()),
    ]),
}
DATA_DIRS = {"default": "data", "candidates": "candidates", "rejected": "rejected", "original": "original",
             "contamination": "contamination"}
HISTOGRAM = "assets/score_histogram.png"


def _parquet_path(config_name: str) -> str:
    return f"{DATA_DIRS[config_name]}/train-00000-of-00001.parquet"


def hub_configs(names: list[str]) -> list[dict[str, Any]]:
    """The `configs:` metadata that tells `load_dataset` which files make each config."""
    configs = []
    for name in names:
        entry: dict[str, Any] = {"config_name": name, "data_files": [{"split": "train", "path": _parquet_path(name)}]}
        if name == "default":
            entry["default"] = True
        configs.append(entry)
    return configs


def dataset_infos(tables: dict[str, "pa.Table"]) -> list[dict[str, Any]]:
    """The `dataset_info:` metadata (features, split sizes) that `push_to_hub` writes too.

    Beyond documenting the schema, it matters for correctness: `datasets` keys its cache of a local
    folder by the card's metadata, not by the files' contents, so without split sizes in the card a
    rebuilt folder at a path seen before could load the previous build's rows.
    """
    from datasets import DatasetInfo, Features, SplitDict, SplitInfo

    infos = []
    for name, table in tables.items():
        splits = SplitDict()
        splits.add(SplitInfo(name="train", num_bytes=table.nbytes, num_examples=table.num_rows))
        info = DatasetInfo(features=Features.from_arrow_schema(table.schema), splits=splits, dataset_size=table.nbytes)
        infos.append({"config_name": name, **info._to_yaml_dict()})
    return infos


def load_config_rows(dataset_dir: Path, config_name: str):
    """One config of a dataset folder as a `datasets.Dataset`, read straight from its parquet files
    (cached by the files' paths and mtimes, so a rebuilt folder is never served from a stale cache).
    A config the build left out for being empty comes back as an empty dataset with its schema;
    one the build never made is a `FileNotFoundError`."""
    from datasets import Dataset, load_dataset

    dataset_dir = Path(dataset_dir)
    files = sorted(str(p) for p in (dataset_dir / DATA_DIRS[config_name]).glob("*.parquet"))
    if files:
        return load_dataset("parquet", data_files={"train": files}, split="train")
    info_path = dataset_dir / "build_info.json"
    if info_path.is_file() and config_name in json.loads(info_path.read_text(encoding="utf-8")).get("empty_configs", []):
        return Dataset(SCHEMAS[config_name].empty_table())
    raise FileNotFoundError(f"{dataset_dir} has no '{config_name}' config")


def content_fingerprint(tables: dict[str, list[dict]]) -> str:
    """sha256 of the rows of every config, canonical JSON: equal data, equal fingerprint."""
    digest = hashlib.sha256()
    for name in sorted(tables):
        digest.update(name.encode())
        for row in tables[name]:
            digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode())
    return digest.hexdigest()[:16]


def write_histogram(scores: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axis = plt.subplots(figsize=(6, 3.2), dpi=100)
    axis.hist(scores, bins=20, range=(0.0, 1.0), color="#3b7dd8", edgecolor="white")
    axis.set_xlabel("self-evaluation score P(Yes)")
    axis.set_ylabel("selected pairs")
    axis.set_title(f"Score distribution ({len(scores)} pairs)")
    figure.tight_layout()
    figure.savefig(path, metadata={"Software": None})
    plt.close(figure)


def score_summary(scores: list[float]) -> str:
    if not scores:
        return "No pairs were selected."
    ordered = sorted(scores)

    def quantile(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return (
        f"{len(scores)} pairs: min {ordered[0]:.3f}, 25% {quantile(0.25):.3f}, median {quantile(0.5):.3f}, "
        f"75% {quantile(0.75):.3f}, max {ordered[-1]:.3f}, mean {sum(scores) / len(scores):.3f}."
    )


def rejected_reason_counts(rejected: list[dict]) -> list[dict[str, Any]]:
    """Rejections grouped by (stage, reason); decontamination reasons are grouped by layer and
    duplicate reasons by kind (the matched task / the duplicated pair are in each row)."""
    counts = Counter((row["stage"], row["reason"].split(" with ")[0].split(" of pair ")[0].split(" (Jaccard")[0])
                     for row in rejected)
    return [{"stage": s, "reason": r, "count": n} for (s, r), n in sorted(counts.items())]


def write_dataset_folder(target: Path, tables: dict[str, list[dict]], card_context: dict[str, Any], extra_files: dict[str, Any]) -> str:
    """Write parquet configs, histogram, card and `extra_files` (name -> text, or a dict saved as JSON with
    the content fingerprint added); returns the fingerprint."""
    from inversecoder.hub_cards.dataset_card import render_dataset_card

    # `datasets` cannot load a parquet config without rows ("corresponds to no data"): empty configs are
    # left out of the folder and listed in the card and in build_info.json instead.
    empty = [name for name, rows in tables.items() if not rows]
    tables = {name: rows for name, rows in tables.items() if rows}
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    arrow_tables = {name: pa.Table.from_pylist(rows, schema=SCHEMAS[name]) for name, rows in tables.items()}
    for name, table in arrow_tables.items():
        path = partial / _parquet_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
    scores = [row["score"] for row in tables.get("default", [])]
    write_histogram(scores, partial / HISTOGRAM)
    fingerprint = content_fingerprint(tables)
    card = render_dataset_card(
        configs=hub_configs(list(tables)),
        dataset_info=dataset_infos(arrow_tables),
        rows=len(tables.get("default", [])),
        empty_configs=empty,
        content_fingerprint=fingerprint,
        tables={name: {"rows": len(rows), "columns": SCHEMAS[name].names} for name, rows in tables.items()},
        histogram=HISTOGRAM,
        score_summary=score_summary(scores),
        rejected_reasons=rejected_reason_counts(tables.get("rejected", [])),
        **card_context,
    )
    card.save(partial / "README.md")
    for name, content in extra_files.items():
        if isinstance(content, dict):
            content = json.dumps(content | {"fingerprint": fingerprint, "empty_configs": empty}, indent=2, ensure_ascii=False, default=str)
        (partial / name).write_text(content, encoding="utf-8")
    if target.exists():
        old = target.with_name(target.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
        partial.rename(target)
        shutil.rmtree(old)
    else:
        partial.rename(target)
    return fingerprint
