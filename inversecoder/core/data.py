"""The files the project ships (`data/`, installed as `inversecoder.data`): nothing is fetched at run time."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

DATA_DIR = Path(str(importlib.resources.files("inversecoder.data")))
BENCHMARKS_DIR = DATA_DIR / "benchmarks"
TGI_OPENAPI = DATA_DIR / "tgi" / "openapi.json"
DEMO_SAMPLE = DATA_DIR / "evol_instruct_sample.jsonl"
CALIBRATION_SET = DATA_DIR / "decontamination_calibration.jsonl"
#: held-out rephrased-benchmark rows (recall per family of rephrasing), from benchmarks/make_rephrased.py
REPHRASED_SET = DATA_DIR / "decontamination_rephrased.jsonl"
TINY_MODEL_CORPUS = DATA_DIR / "tiny_model_corpus.jsonl.gz"
#: `benchmarks_dir` value that asks for evalplus's own downloader (network) instead of the shipped files.
DOWNLOAD = "download"


def require(path: Path) -> Path:
    """`path`, or a FileNotFoundError naming the shipped file that is missing (a broken checkout)."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the project ships it in data/ (see data/README.md); restore it with git"
        )
    return path
