"""The `vllm` / `sglang` / `openai` backends against an OpenAI-compatible double serving the real tiny model
(tests/openai_server.py): exact scores equal to the embedded backend's, seeds, faults, refusals, a build."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import yaml
from conftest import SAMPLE
from openai_server import OpenAIServer, TinyEngine

from inversecoder.core.backends import openai_protocol
from inversecoder.core.backends.base import GenerationRequest, SamplingParams
from inversecoder.core.backends.openai_backend import OpenAIBackend
from inversecoder.core.errors import ConfigError

FAST = {"retry_backoff": 0.01, "retry_backoff_max": 0.05, "health_interval": 0.2, "health_timeout": 2.0}
PROMPTS = [
    "Does this instruction match the code? def add(a, b): return a + b\nAnswer:",
    "Is the sky green? Answer: ",  # ends with the space that " Yes" would take
    "x = 1\nQuestion: is x one?\n",
    "Yes or No?",
]


@pytest.fixture(scope="module")
def engine(tiny_model_dir) -> TinyEngine:
    return TinyEngine(tiny_model_dir)


@pytest.fixture
def serve(engine, tiny_model_dir) -> Iterator:
    started: list[OpenAIServer] = []

    def start(dialect: str = "vllm", name: str | None = None, **kwargs) -> OpenAIServer:
        server = OpenAIServer(engine, name or str(tiny_model_dir), dialect, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture(scope="module")
def embedded(tiny_model_dir):
    from inversecoder.core.backends.transformers_backend import TransformersBackend

    return TransformersBackend(str(tiny_model_dir), device="cpu", dtype="float32")


def backend(servers, model, dialect="vllm", **settings) -> OpenAIBackend:
    urls = [getattr(s, "url", s) for s in servers]
    settings = {**FAST, "concurrency": 4, **settings}
    return OpenAIBackend(urls, str(model), dialect=dialect, progress=False, **settings)


def test_single_answer_tokens_score_like_the_embedded_backend(serve, tiny_model_dir):
    """`generator.answer_tokens: single` (`fidelity: paper`) reaches the served backend: one id per word."""
    from inversecoder.core.backends.transformers_backend import TransformersBackend

    embedded = TransformersBackend(str(tiny_model_dir), device="cpu", dtype="float32", answer_tokens="single")
    served = backend([serve("vllm")], tiny_model_dir, "vllm", answer_tokens="single")
    try:
        assert served.answer_token_ids() == embedded.answer_token_ids()
        assert all(len(ids) == 1 for ids in served.answer_token_ids().values())
        got, want = served.score_yes_no(PROMPTS), embedded.score_yes_no(PROMPTS)
        assert [g.score for g in got] == pytest.approx([w.score for w in want], abs=1e-4)
    finally:
        served.close()


@pytest.mark.parametrize("dialect", ["vllm", "sglang"])
def test_scores_equal_the_embedded_backend(serve, tiny_model_dir, embedded, dialect):
    served = backend([serve(dialect)], tiny_model_dir, dialect)
    try:
        expected = embedded.score_yes_no(PROMPTS)
        got = served.score_yes_no(PROMPTS)
        assert served.answer_token_ids() == embedded.answer_token_ids()
        for mine, theirs in zip(got, expected, strict=True):
            assert mine.error is None and mine.prompt_tokens == theirs.prompt_tokens
            assert mine.score == pytest.approx(theirs.score, abs=1e-4)
            assert mine.yes_no_mass == pytest.approx(theirs.yes_no_mass, abs=1e-4)
        info = served.info()
        assert info.backend == dialect and info.details["revision_verified"] is False
        assert info.details["engine_version"] == "0.0-double" and info.revision != "unknown"  # the folder's hash
    finally:
        served.close()


def test_answer_tokens_outside_the_top_k_are_read_from_prompt_logprobs(serve, tiny_model_dir, embedded, monkeypatch):
    monkeypatch.setattr(openai_protocol, "TOP_LOGPROBS", 1)  # no answer token is ever in the top 1 here
    served = backend([serve()], tiny_model_dir)
    try:
        got = served.score_yes_no(PROMPTS)
        assert served.totals["logprob_requests"] >= len(PROMPTS)
        for mine, theirs in zip(got, embedded.score_yes_no(PROMPTS), strict=True):
            assert mine.score == pytest.approx(theirs.score, abs=1e-4)
            assert mine.yes_no_mass == pytest.approx(theirs.yes_no_mass, abs=1e-4)
    finally:
        served.close()


def test_samples_reproduce_by_seed_and_greedy_equals_the_embedded_backend(serve, tiny_model_dir, embedded):
    served = backend([serve(), serve()], tiny_model_dir)
    try:
        sampled = SamplingParams(temperature=0.8, top_p=0.95, max_new_tokens=8)
        requests = [GenerationRequest(PROMPTS[0], seed=s) for s in (1, 2, 1, 2)]
        first, again = served.generate(requests, sampled), served.generate(requests[::-1], sampled)[::-1]
        assert [c.text for c in first] == [c.text for c in again]
        assert first[0].text == first[2].text and all(c.error is None for c in first)
        greedy = SamplingParams(temperature=0.0, max_new_tokens=8)
        plain = [GenerationRequest(p) for p in PROMPTS]
        got, expected = served.generate(plain, greedy), embedded.generate(plain, greedy)
        assert [(c.text, c.finish_reason, c.generated_tokens) for c in got] == [
            (c.text, c.finish_reason, c.generated_tokens) for c in expected
        ]
        assert served.totals["generated_tokens"] > 0 and sum(e["requests"] > 0 for e in served.endpoint_stats()) == 2
    finally:
        served.close()


def test_429_500_and_dropped_connections_are_retried_and_a_hang_fails_retryable(serve, tiny_model_dir, embedded):
    a, b = serve(), serve()
    served = backend([a, b], tiny_model_dir, max_retries=4)
    try:
        clean = served.score_yes_no(PROMPTS)
        a.faults = {"fail_first": 2, "status": 429, "retry_after": 0.05}
        b.faults = {"fail_first": 1, "status": 500}
        assert [s.score for s in served.score_yes_no(PROMPTS[::-1])][::-1] == [s.score for s in clean]
        retries = served.totals["retries"]
        assert retries > 0
        a.faults = b.faults = {"fail_first": 1, "drop": True}
        params = SamplingParams(temperature=0.7, max_new_tokens=4)
        assert all(c.error is None for c in served.generate([GenerationRequest(p, 3) for p in PROMPTS], params))
        assert served.totals["retries"] > retries
    finally:
        served.close()


def test_a_hung_endpoint_gives_retryable_failures_that_are_not_cached(serve, tiny_model_dir, tmp_path):
    from inversecoder.core.backends.base import CachedModel
    from inversecoder.core.cache import ResultCache

    server = serve()
    served = backend([server], tiny_model_dir, max_retries=0, request_timeout=0.3)
    model = CachedModel(served, ResultCache(tmp_path / "calls.sqlite"), progress=False)
    try:
        server.faults = {"delay": 2.0, "routes": ["/v1/completions"]}
        started = time.monotonic()
        scores = model.score_yes_no(PROMPTS[:2])
        assert time.monotonic() - started < 10
        assert all(s.score is None and s.retryable and "timed out" in str(s.error) for s in scores), scores
        server.faults = {}
        time.sleep(0.5)  # the health check brings the endpoint back
        assert all(s.score is not None for s in model.score_yes_no(PROMPTS[:2]))
        assert model.computed == 4 and model.reused == 0  # the failures were not stored
    finally:
        served.close()


def test_endpoints_serving_another_model_or_tokenizing_differently_are_refused(serve, tiny_model_dir):
    with pytest.raises(ConfigError, match="different models"):
        backend([serve(), serve(name="org/other-model")], tiny_model_dir)
    with pytest.raises(ConfigError, match=r"but the vLLM endpoints serve 'org/other-model'"):
        backend([serve(name="org/other-model")], tiny_model_dir)
    odd = serve()
    odd.faults = {"token_shift": 1}
    with pytest.raises(ConfigError, match="tokenizes unlike"):
        backend([odd], tiny_model_dir)
    with pytest.raises(ConfigError, match="no vLLM endpoint answered /v1/models"):
        backend(["http://127.0.0.1:9"], tiny_model_dir)


def test_prompts_too_long_for_the_servers_are_rejected_locally_and_final(serve, tiny_model_dir):
    server = serve(max_model_len=24)
    served = backend([server], tiny_model_dir)
    try:
        long = "word " * 40
        params = SamplingParams(max_new_tokens=4)
        done = served.generate([GenerationRequest("hi"), GenerationRequest(long)], params)
        assert done[0].error is None and "max_model_len (24)" in str(done[1].error) and not done[1].retryable
        scores = served.score_yes_no([long])
        assert scores[0].score is None and not scores[0].retryable
        assert server.requests["/v1/completions"] == 1  # only the short prompt was sent
    finally:
        served.close()


def test_config_requires_endpoints_for_served_backends():
    from inversecoder.core.config import load_config

    with pytest.raises(ConfigError, match="backend 'vllm' needs at least one URL"):
        load_config(None, ["generator.backend=vllm", "generator.model=org/m"])
    config = load_config(
        None, ["generator.backend=sglang", "generator.model=org/m", "generator.endpoints=[http://h:1]"]
    )
    assert config.generator.backend == "sglang"


def test_check_endpoints_reports_health_model_and_tokenizer(serve, tiny_model_dir):
    from inversecoder.core.backends.openai_check import check_endpoints, format_endpoint_report
    from inversecoder.core.config import load_config

    up, down = serve(), serve()
    down.stop()
    config = load_config(
        None,
        ["generator.backend=vllm", f"generator.model={tiny_model_dir}", f"generator.endpoints=[{up.url},{down.url}]"],
    )
    rows = check_endpoints(config.generator, timeout=2)
    assert rows[0]["healthy"] and rows[0]["tokenizer"] == "ok" and rows[0]["engine_version"] == "0.0-double"
    assert not rows[1]["healthy"] and "cannot connect" in rows[1]["error"]
    report = format_endpoint_report(rows)
    assert "1/2 endpoints healthy" in report and "DOWN: cannot connect" in report


def test_a_build_through_the_served_backend_and_its_rerun_without_model_calls(serve, tiny_model_dir, tmp_path):
    from inversecoder.builders.pipeline import build_dataset
    from inversecoder.core.config import load_config
    from inversecoder.hub_cards.dataset_card import write_dataset_card

    a, b = serve(), serve()
    recipe = {
        "seed": 5,
        "source": {"path": str(SAMPLE), "limit": 6},
        "generator": {"backend": "vllm", "model": str(tiny_model_dir), "endpoints": [a.url, b.url], **FAST},
        "summarize": {"num_samples": 2, "max_new_tokens": 8},
        "decontaminate": {"enabled": False},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    config = load_config(tmp_path / "r.yaml", output_dir=str(tmp_path / "out"))
    a.faults = {"fail_first": 1, "status": 503, "retry_after": 0}
    first = build_dataset(config, progress=False, write_card=write_dataset_card)
    assert first.model_calls > 0
    card = (first.dataset_dir / "README.md").read_text()
    assert "vLLM 0.0-double" in card and "not verified" in card and "on 2 endpoint(s)" in card
    again = build_dataset(config, progress=False, write_card=write_dataset_card)
    assert again.model_calls == 0 and again.reused_calls == first.model_calls
