"""Shared fixtures: the tiny offline model (built once per session), one real vLLM server on it, and the benchmark
files the project ships."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import tempfile
import threading
from pathlib import Path

import pytest

from inversecoder.core import data

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS_DIR = data.BENCHMARKS_DIR
SAMPLE = data.DEMO_SAMPLE

# tests/vllm_local/ needs vLLM importable: tests/test_vllm_local.py runs it in the vLLM venv (`.venv-vllm`).
collect_ignore = [] if importlib.util.find_spec("vllm") else ["vllm_local"]

# Nothing in the suite may reach the network; the Hub client must not even try.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from inversecoder.tiny_model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def vllm_server(tiny_model_dir, tmp_path_factory):
    """One real vLLM OpenAI-compatible server on the tiny model for the whole session (`tests/vllm_server.py`):
    `.url` ("http://127.0.0.1:PORT"), `.model` (the id to send: the model folder's path, as a user's
    `--model DIR` serves it), `.proc` (the process), `.log_path`. Started on first use (~20-30 s), stopped at
    the session's end. Without the vLLM venv (`make vllm`) every test using it errors with the reason; never a
    skip. A test that kills or restarts a server starts its own `VLLMServer` rather than touching this one."""
    from vllm_server import VLLMServer

    server = VLLMServer(tiny_model_dir, tmp_path_factory.mktemp("vllm-logs"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def benchmarks_dir() -> Path:
    """The shipped EvalPlus files; a missing one fails the tests that need it (never a skip)."""
    for name in ("HumanEvalPlus-v0.1.10.jsonl.gz", "MbppPlus-v0.2.0.jsonl.gz"):
        data.require(BENCHMARKS_DIR / name)
    return BENCHMARKS_DIR


@pytest.fixture(scope="module")
def one_torch_thread():
    """The tiny model gains nothing from torch's intra-op threads, and on a busy 2-core machine their
    spin-waits made training tests 5x slower (120 s vs 24 s): one thread, for a module."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def benchmarks(benchmarks_dir, tmp_path_factory):
    """HumanEval+ and MBPP+ loaded through evalplus's loaders, from the shipped files."""
    from inversecoder.core.benchmarks import load_benchmark

    cache = tmp_path_factory.mktemp("bench-cache")
    return {name: load_benchmark(name, str(benchmarks_dir), cache) for name in ("humaneval", "mbpp")}


@pytest.fixture(scope="module")
def sandbox():
    """A two-worker sandbox at the strongest level the kernel allows."""
    from inversecoder.eval import scoring

    with scoring.open_sandbox(parallel=2) as box:
        yield box


@pytest.fixture(autouse=True)
def _evalplus_cache(tmp_path_factory, monkeypatch):
    """Keep evalplus's ground-truth cache out of the user's home, shared across the session."""
    import evalplus.data.utils as evalplus_utils
    import evalplus.evaluate as evalplus_evaluate

    cache = tmp_path_factory.getbasetemp() / "evalplus-cache"
    monkeypatch.setattr(evalplus_utils, "CACHE_DIR", str(cache))
    monkeypatch.setattr(evalplus_evaluate, "CACHE_DIR", str(cache))


@pytest.fixture
def canary():
    """A world-writable directory with a world-writable file, outside /tmp (the sandbox has its own
    /tmp, so a canary there would be out of its sight): only the sandbox protects them."""
    base = next((d for d in ("/var/tmp", "/dev/shm") if os.path.isdir(d) and os.access(d, os.W_OK)), None)
    if base is None:
        pytest.skip("no writable /var/tmp or /dev/shm for the canary")
    folder = Path(tempfile.mkdtemp(prefix="inversecoder-canary-", dir=base))
    (folder / "keep.txt").write_text("precious")
    folder.chmod(0o777)
    (folder / "keep.txt").chmod(0o666)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def listener():
    """A TCP listener on 127.0.0.1 that counts the connections it accepts."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    accepted: list[object] = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            with contextlib.suppress(OSError):
                accepted.append(server.accept())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join()
    server.close()
