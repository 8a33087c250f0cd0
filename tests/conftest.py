"""Shared fixtures: the tiny offline model (built once per session) and the shared benchmark files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
BENCHMARKS_DIR = SHARED / "benchmarks"
SAMPLE = REPO / "data" / "evol_instruct_sample.jsonl"

# Nothing in the suite may reach the network; the Hub client must not even try.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from inversecoder.tiny_model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def benchmarks_dir() -> Path:
    if not (BENCHMARKS_DIR / "HumanEvalPlus-v0.1.10.jsonl.gz").is_file():
        pytest.skip(f"EvalPlus data not found at {BENCHMARKS_DIR} (the project's ../shared/benchmarks)")
    return BENCHMARKS_DIR


@pytest.fixture(autouse=True)
def _evalplus_cache(tmp_path_factory, monkeypatch):
    """Keep evalplus's ground-truth cache out of the user's home, shared across the session."""
    import evalplus.data.utils as evalplus_utils
    import evalplus.evaluate as evalplus_evaluate

    cache = tmp_path_factory.getbasetemp() / "evalplus-cache"
    monkeypatch.setattr(evalplus_utils, "CACHE_DIR", str(cache))
    monkeypatch.setattr(evalplus_evaluate, "CACHE_DIR", str(cache))
