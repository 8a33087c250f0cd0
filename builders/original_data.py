"""Step 0's data: the source corpus's usable, decontaminated pairs, as a one-config dataset folder.

The paper's generator M is the base model fine-tuned on the original corpus; when a run names no
generator, this folder is what M trains on (the same pairs the InverseCoder build calls `original`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from huggingface_hub import DatasetCard, DatasetCardData

from inversecoder.builders.dataset import SCHEMAS, content_fingerprint, dataset_infos, hub_configs
from inversecoder.builders.dataset import _parquet_path as parquet_path
from inversecoder.builders.pipeline import _decontaminate
from inversecoder.builders.sources import load_source
from inversecoder.core.config import RunConfig


def build_original_data(config: RunConfig, target: Path, log=print) -> Path:
    """Write `target` (Hub layout, config `original`); rewritten atomically on every call (cheap)."""
    source = load_source(config.source)
    _, clean, _, _, _ = _decontaminate(config, [], source.rows, log)
    removed = len(source.rows) - len(clean)
    rows = [{"instruction": r.instruction, "response": r.response, "row_id": r.row_id, "source_index": r.source_index}
            for r in clean]
    table = pa.Table.from_pylist(rows, schema=SCHEMAS["original"])
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / parquet_path("original")).parent.mkdir(parents=True)
    pq.write_table(table, partial / parquet_path("original"))
    card = DatasetCard(
        "---\n" + DatasetCardData(license=config.dataset.license, configs=hub_configs(["original"]),
                                  dataset_info=dataset_infos({"original": table})).to_yaml() + "\n---\n\n"
        f"# Training data of the generator M\n\n{len(rows)} pairs of `{config.source.path}` that are usable and "
        f"clean ({removed} removed by decontamination): the base model is fine-tuned on them to make M.\n"
    )
    card.save(partial / "README.md")
    info = {"source": config.source.path, "rows": len(rows), "decontaminated": removed,
            "fingerprint": content_fingerprint({"original": rows})}
    (partial / "build_info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    log(f"generator data: {len(rows)} original pairs written to {target}")
    return target
