"""The files the project ships (`data/`, installed as `inversecoder.data`): nothing is fetched at run time."""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path
from typing import Any

DATA_DIR = Path(str(importlib.resources.files("inversecoder.data")))
BENCHMARKS_DIR = DATA_DIR / "benchmarks"
TGI_OPENAPI = DATA_DIR / "tgi" / "openapi.json"
DEMO_SAMPLE = DATA_DIR / "evol_instruct_sample.jsonl"
CALIBRATION_SET = DATA_DIR / "decontamination_calibration.jsonl"
#: held-out rephrased-benchmark rows (recall per family of rephrasing), from benchmarks/make_rephrased.py
REPHRASED_SET = DATA_DIR / "decontamination_rephrased.jsonl"
#: The decontamination's measured recall and precision (written by benchmarks/decontamination_quality.py).
DECONTAMINATION_QUALITY = DATA_DIR / "decontamination_quality.json"
TINY_MODEL_CORPUS = DATA_DIR / "tiny_model_corpus.jsonl.gz"
#: The paper's settings, verbatim (paper/SOURCES.md): what tests check configs/paper-*.yaml against (a checkout only).
PAPER_SETTINGS = DATA_DIR / "paper" / "inverse-instruct-settings.md"
#: `benchmarks_dir` value that asks for evalplus's own downloader (network) instead of the shipped files.
DOWNLOAD = "download"


def require(path: Path) -> Path:
    """`path`, or a FileNotFoundError naming the shipped file that is missing (a broken checkout)."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the project ships it in data/ (see data/README.md); restore it with git"
        )
    return path


def read_quality(path: Path) -> dict[str, Any] | None:
    """The measured quality figures the dataset card quotes; None when the file is missing or unreadable."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
