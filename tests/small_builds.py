"""Small dataset builds for comparing generator backends: the same recipe on another backend, and its tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml
from conftest import SAMPLE

from inversecoder.core.dataset_files import DATA_DIRS, config_files


def write_recipe(tmp_path: Path, name: str, model_dir: Path, generator: dict[str, Any]) -> Path:
    """24 sample rows, 3 greedy candidates each (greedy: every backend writes the same text), no decontamination."""
    recipe = {
        "seed": 5,
        "source": {"path": str(SAMPLE), "limit": 24},
        "generator": {"model": str(model_dir), **generator},
        "summarize": {"num_samples": 3, "max_new_tokens": 12, "temperature": 0.0},
        "decontaminate": {"enabled": False},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def build(recipe: Path, output: Path):
    from inversecoder.builders.pipeline import build_dataset
    from inversecoder.core.config import load_config
    from inversecoder.hub_cards.dataset_card import write_dataset_card

    return build_dataset(load_config(recipe, output_dir=str(output)), progress=False, write_card=write_dataset_card)


def tables(folder: Path, digits: int | None = None) -> dict[str, list[dict]]:
    """Every config's rows; floats rounded to `digits` places when given (scores agree to 1e-4 across backends)."""
    found = {}
    for name in DATA_DIRS:
        rows = [r for f in config_files(folder, name) for r in pq.read_table(f).to_pylist()]
        if digits is not None:
            rows = [{k: round(v, digits) if isinstance(v, float) else v for k, v in r.items()} for r in rows]
        found[name] = rows
    return found
