"""HumanEval+ / MBPP+ through evalplus's own loaders, offline when a local copy is given.

evalplus reads HUMANEVAL_OVERRIDE_PATH / MBPP_OVERRIDE_PATH once, at import. The files come from
`benchmarks_dir`, by default the copies the project ships (`data/benchmarks`, with their checksums);
they are decompressed into the run's cache (so evalplus records the standard md5 of the .jsonl) and
handed to evalplus's loaders that way. Only `benchmarks_dir: download` lets evalplus use its
environment overrides or its downloader (network).
"""

from __future__ import annotations

import gzip
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inversecoder.core.data import BENCHMARKS_DIR, DOWNLOAD
from inversecoder.core.errors import ConfigError
from inversecoder.core.files import atomic_path

BENCHMARK_FILES = {
    "humaneval": "HumanEvalPlus-v0.1.10.jsonl",
    "mbpp": "MbppPlus-v0.2.0.jsonl",
}
BENCHMARK_VERSIONS = {"humaneval": "v0.1.10", "mbpp": "v0.2.0"}
BENCHMARK_NAMES = {"humaneval": "HumanEval+", "mbpp": "MBPP+"}


@dataclass
class Benchmark:
    name: str  # humaneval | mbpp
    problems: dict[str, dict[str, Any]]  # task_id -> evalplus problem
    hash: str  # evalplus's dataset hash (md5 of the jsonl): the ground-truth cache key
    version: str
    path: str  # the file evalplus read


def _local_copy(name: str, benchmarks_dir: Path, cache_dir: Path) -> Path:
    filename = BENCHMARK_FILES[name]
    for candidate in (benchmarks_dir / filename, benchmarks_dir / (filename + ".gz")):
        if candidate.is_file():
            break
    else:
        raise ConfigError(f"benchmarks_dir {benchmarks_dir} has neither {filename} nor {filename}.gz")
    if candidate.suffix != ".gz":
        return candidate
    target = cache_dir / filename
    if not target.is_file():
        with atomic_path(target) as scratch, gzip.open(candidate, "rb") as source, scratch.open("wb") as sink:
            shutil.copyfileobj(source, sink)
    return target


def load_benchmark(name: str, benchmarks_dir: str | None, cache_dir: Path) -> Benchmark:
    """Load one benchmark (`humaneval` or `mbpp`) with evalplus's loader, from `benchmarks_dir` (None:
    the shipped copies; `download`: evalplus's downloader)."""
    if name not in BENCHMARK_FILES:
        raise ConfigError(f"unknown benchmark '{name}': choose from {', '.join(BENCHMARK_FILES)}")
    import evalplus.data.humaneval as humaneval
    import evalplus.data.mbpp as mbpp

    module, variable = (humaneval, "HUMANEVAL_OVERRIDE_PATH") if name == "humaneval" else (mbpp, "MBPP_OVERRIDE_PATH")
    if benchmarks_dir != DOWNLOAD:
        folder = Path(benchmarks_dir).expanduser() if benchmarks_dir is not None else BENCHMARKS_DIR
        if not folder.is_dir():
            raise ConfigError(f"benchmarks_dir not found: {benchmarks_dir}")
        setattr(module, variable, str(_local_copy(name, folder, cache_dir)))
    try:
        if name == "humaneval":
            problems, digest = humaneval.get_human_eval_plus(), humaneval.get_human_eval_plus_hash()
        else:
            problems, digest = mbpp.get_mbpp_plus(), mbpp.get_mbpp_plus_hash()
    except Exception as error:  # the downloader raises URLError, HTTPError, OSError, ...
        raise ConfigError(
            f"cannot load {BENCHMARK_NAMES[name]} ({type(error).__name__}): offline? leave benchmarks_dir unset "
            f"(the shipped copies) or set it to a folder with {BENCHMARK_FILES[name]}.gz"
        ) from None
    path = getattr(module, variable) or "evalplus cache"
    return Benchmark(name, problems, digest, BENCHMARK_VERSIONS[name], str(path))
