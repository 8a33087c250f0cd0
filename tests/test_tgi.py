"""The `tgi` backend against TGI-protocol test servers that serve the real tiny model (tests/tgi_server.py).

One module (over 500 lines) because every test shares one pool of server processes, started once per module.

Every test uses real components: real HTTP on 127.0.0.1, real server processes (killed with SIGKILL),
the backend's aiohttp client, the embedded backend as the reference for scores, and the
OpenAPI document for the shape of every body both ways. HF_HUB_OFFLINE=1 (conftest) stays set.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import pytest
import yaml
from conftest import SAMPLE
from tgi_server import SPEC, OpenAPISchemas, TGIServers, http_json

from inversecoder.builders.stages import candidate_seed
from inversecoder.core import prompts
from inversecoder.core.backends.base import CachedModel, GenerationRequest, SamplingParams
from inversecoder.core.backends.tgi import TGIBackend
from inversecoder.core.backends.tgi_check import check_endpoints, format_endpoint_report
from inversecoder.core.cache import ResultCache
from inversecoder.core.config import GeneratorConfig
from inversecoder.core.errors import ConfigError

if TYPE_CHECKING:
    from typing_extensions import Unpack

pytestmark = pytest.mark.timeout(120)


class Options(TypedDict, total=False):
    """TGIBackend's keyword settings, so a test can pass a set of them with **."""

    concurrency: int
    request_timeout: float
    max_retries: int
    retry_backoff: float
    retry_backoff_max: float
    health_interval: float
    health_timeout: float
    top_n_tokens: int
    requests_per_batch: int | None
    progress: bool


#: Fast retries and health checks, so faults are survived in seconds.
FAST: Options = {
    "concurrency": 3,
    "request_timeout": 20.0,
    "max_retries": 5,
    "retry_backoff": 0.02,
    "retry_backoff_max": 0.2,
    "health_interval": 0.2,
    "health_timeout": 2.0,
    "progress": False,
}


def fast_with(**changes: Unpack[Options]) -> Options:
    """FAST with some settings changed."""
    return {**FAST, **changes}


SNIPPETS = [f"```python\ndef f{i}(x):\n    return x * {i} + {i % 3}\n```" for i in range(16)]
GENERATE = [
    GenerationRequest(prompts.summarize_prompt(code, "Write a python"), candidate_seed(7, f"row{i}", 0))
    for i, code in enumerate(SNIPPETS)
]
SAMPLED = SamplingParams(temperature=0.8, top_p=0.95, repetition_penalty=1.1, max_new_tokens=8, stop=("```",))
SCORE = [
    prompts.score_prompt(f"Write a function that returns x times {i}.", code) for i, code in enumerate(SNIPPETS[:8])
]


@pytest.fixture(scope="module")
def pool(request):
    with TGIServers() as servers:  # imports torch while the tiny model is built
        servers.load(request.getfixturevalue("tiny_model_dir"))
        yield servers


@pytest.fixture
def servers(pool):
    """The server pool, emptied after each test; no body seen or sent may break TGI's OpenAPI schemas."""
    yield pool
    violations = []
    for server in pool.servers:
        with contextlib.suppress(OSError):  # a killed server
            violations += server.stats()["violations"]
    pool.stop_all()
    assert violations == []


@pytest.fixture(scope="module")
def schemas():
    return OpenAPISchemas.load(SPEC)


@pytest.fixture(scope="module")
def embedded(tiny_model_dir):
    from inversecoder.core.backends.transformers_backend import TransformersBackend

    return TransformersBackend(str(tiny_model_dir), device="cpu")


@pytest.fixture(scope="module")
def reference(pool, tiny_model_dir):
    """Fault-free results from two endpoints: what every faulty run must reproduce exactly."""
    a, b = pool.start(), pool.start()
    backend = TGIBackend([a.url, b.url], str(tiny_model_dir), **FAST)
    results = backend.generate(GENERATE, SAMPLED), backend.score_yes_no(SCORE)
    a.kill(), b.kill()
    pool.servers.clear()
    assert all(c.error is None for c in results[0]) and all(s.error is None for s in results[1])
    return results


def kill_and_restart_when(server, served: int, pause: float = 0.5) -> threading.Thread:
    """SIGKILL `server` once it has generated `served` answers, start it again `pause` s later."""

    def run():
        deadline = time.monotonic() + 60
        while server.stats()["counts"].get("generated", 0) < served and time.monotonic() < deadline:
            time.sleep(0.02)
        server.kill()
        time.sleep(pause)
        server.restart()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


# -- the double is faithful ----------------------------------------------------------------------
def test_openapi_validator_catches_malformed_bodies(schemas):
    good: dict[str, Any] = {
        "generated_text": "x",
        "details": {
            "finish_reason": "length",
            "generated_tokens": 1,
            "seed": None,
            "prefill": [],
            "tokens": [{"id": 1, "text": "x", "logprob": -0.5, "special": False}],
        },
    }
    assert schemas.errors(good, "GenerateResponse") == []
    assert schemas.errors({"details": None}, "GenerateResponse") == [
        "GenerateResponse: missing required field 'generated_text'"
    ]
    bad = {
        **good,
        "details": {
            **good["details"],
            "finish_reason": "done",
            "tokens": [{"id": "1", "text": "x", "logprob": None, "special": False}],
        },
    }
    problems = schemas.errors(bad, "GenerateResponse")
    assert any("finish_reason" in p and "not one of" in p for p in problems)
    assert any("tokens[0].id: expected integer" in p for p in problems)
    assert schemas.errors({"error": "x"}, "ErrorResponse") == ["ErrorResponse: missing required field 'error_type'"]
    request = {"inputs": "x", "parameters": {"stop": ["a"] * 5, "top_n_tokens": 0, "temperature": None, "seed": 2**63}}
    problems = schemas.errors(request, "GenerateRequest")
    assert len(problems) == 3 and any("maxItems" in p or "at most 4" in p for p in problems)
    assert any("top_n_tokens: 0 violates exclusiveMinimum" in p for p in problems)


def test_the_double_answers_as_tgis_openapi_document_says(servers, schemas):
    server = servers.start(faults={"fail_first": 1, "statuses": [429], "retry_after": 1})
    status, _, info = http_json(server.url + "/info")
    assert status == 200 and schemas.errors(info, "Info") == []
    assert http_json(server.url + "/health")[0] == 200
    body: dict[str, Any] = {
        "inputs": SCORE[0],
        "parameters": {
            "details": True,
            "decoder_input_details": True,
            "top_n_tokens": 3,
            "do_sample": True,
            "temperature": 0.7,
            "seed": 5,
            "max_new_tokens": 3,
        },
    }
    status, headers, error = http_json(server.url + "/generate", body)
    assert (status, headers["Retry-After"], error["error_type"]) == (429, "1", "overloaded")
    server.set_faults(fail_first=0)
    status, _, answer = http_json(server.url + "/generate", body)
    assert status == 200 and schemas.errors(answer, "GenerateResponse") == []
    details = answer["details"]
    assert details["seed"] == 5 and len(details["tokens"]) == len(details["top_tokens"]) == details["generated_tokens"]
    assert details["prefill"][0]["logprob"] is None and all(t["logprob"] < 0 for t in details["prefill"][1:])
    assert http_json(server.url + "/generate", body)[2] == answer  # same seed, same answer
    status, _, tokens = http_json(server.url + "/tokenize", {"inputs": "Yes No"})
    assert (
        status == 200
        and schemas.errors(tokens, "TokenizeResponse") == []
        and "".join(t["text"] for t in tokens) == "Yes No"
    )
    body["parameters"]["top_n_tokens"] = 9
    status, _, error = http_json(server.url + "/generate", body)
    assert status == 422 and error["error_type"] == "validation" and "<= 5" in error["error"]


# -- exact scores, reproducible generation -------------------------------------------------------
def answer_ranks(embedded, prompt: str) -> dict[int, int]:
    """Rank (0 = most likely) of every Yes/No token at the first response position, by the embedded model."""
    import torch

    model = embedded._load()
    ids = torch.tensor([embedded.tokenizer.encode(prompt)])
    with torch.inference_mode():
        order = model(input_ids=ids).logits[0, -1].argsort(descending=True).tolist()
    answers = embedded.answer_token_ids()
    return {i: order.index(i) for i in answers["yes"] + answers["no"]}


@pytest.mark.parametrize("where", ["outside top_n", "one inside top_n", "all inside top_n"])
def test_scores_equal_the_embedded_backend(servers, embedded, tiny_model_dir, where):
    ranks = answer_ranks(embedded, SCORE[0])
    top_n = {
        "outside top_n": 1,
        "one inside top_n": min(ranks.values()) + 1,
        "all inside top_n": len(embedded.tokenizer),
    }[where]
    if where == "outside top_n":
        assert min(ranks.values()) >= 1  # the tiny model never prefers Yes/No: every answer token is outside
    server = servers.start(max_top_n_tokens=len(embedded.tokenizer))
    backend = TGIBackend([server.url], str(tiny_model_dir), **fast_with(top_n_tokens=top_n))
    got = backend.score_yes_no(
        {"outside top_n": SCORE, "one inside top_n": SCORE[:1], "all inside top_n": SCORE[:3]}[where]
    )
    want = embedded.score_yes_no(SCORE[: len(got)])
    for g, w in zip(got, want, strict=True):
        assert g.error is None and g.prompt_tokens == w.prompt_tokens
        assert g.score == pytest.approx(w.score, abs=1e-4) and g.yes_no_mass == pytest.approx(w.yes_no_mass, rel=1e-3)
    answers = len(ranks)
    extra = {"outside top_n": answers * len(got), "one inside top_n": answers - 1, "all inside top_n": 0}[where]
    assert backend.totals["logprob_requests"] == extra
    assert backend.answer_token_ids() == embedded.answer_token_ids()


def test_a_lower_top_n_limit_on_the_servers_is_adopted_not_stormed(servers, tiny_model_dir, reference):
    server = servers.start(max_top_n_tokens=2)  # /info does not report it, as in TGI 3.x
    backend = TGIBackend([server.url], str(tiny_model_dir), **fast_with(concurrency=1))
    assert backend.score_yes_no(SCORE) == reference[1] and backend.top_n_tokens == 2
    assert server.stats()["counts"]["status 422"] == 1


def test_sampling_is_reproducible_per_seed_and_greedy_matches_embedded(servers, embedded, tiny_model_dir, reference):
    a, b = servers.start(), servers.start()
    alone = TGIBackend([a.url], str(tiny_model_dir), **fast_with(concurrency=1))
    assert alone.generate(GENERATE, SAMPLED) == reference[0]  # one slot or six: the same completions
    both = TGIBackend([a.url, b.url], str(tiny_model_dir), **FAST)
    reseeded = [GenerationRequest(r.prompt, r.seed + 1) for r in GENERATE]
    assert (
        sum(x.text != y.text for x, y in zip(both.generate(reseeded, SAMPLED), reference[0], strict=True))
        >= len(GENERATE) // 2
    )
    greedy = SamplingParams(repetition_penalty=1.1, max_new_tokens=10, stop=("(",))
    got, want = both.generate(GENERATE[:6], greedy), embedded.generate(GENERATE[:6], greedy)
    assert [(c.text, c.finish_reason, c.generated_tokens) for c in got] == [
        (c.text, c.finish_reason, c.generated_tokens) for c in want
    ]
    info = both.info()
    assert (info.backend, info.model, info.details["tgi_version"]) == ("tgi", str(tiny_model_dir), "3.3.6-dev0")
    assert info.revision == embedded.revision  # a local model: the same content hash
    assert info.details["totals"]["generated_tokens"] > 0


def test_every_request_body_matches_tgis_openapi_document(schemas):
    """What the backend and check-endpoints send, built for every kind of request, against `GenerateRequest`
    (the servers check what they receive too: the `servers` fixture)."""
    from inversecoder.core.backends import tgi_protocol as wire

    bodies = [
        wire.generate_body("x", SAMPLED, 0, 4),
        wire.generate_body("x", SamplingParams(stop=("a", "b", "c", "d", "e")), 2**64 - 1, 4),
        wire.top_tokens_body("x", 0),
        wire.top_tokens_body("x", 5),
        wire.prefill_body("x Yes"),
    ]
    for body in bodies:
        assert schemas.errors(body, "GenerateRequest") == [], body
    assert wire.generate_body("x", SAMPLED, 0, 4)["parameters"]["seed"] == 1  # TGI wants seed > 0
    assert len(wire.generate_body("x", SamplingParams(stop=tuple("abcde")), 0, 2)["parameters"]["stop"]) == 2


def test_answers_are_read_as_tgis_openapi_document_shapes_them(schemas):
    """Generation reads the text, finish reason and count (not the per-token list); scoring reads the first
    token, the top tokens and the prefill; a malformed answer is a retryable bad answer, not a crash."""
    from inversecoder.core.backends import tgi_protocol as wire
    from inversecoder.core.backends.http import BadAnswer
    from inversecoder.core.backends.serving import MisconfiguredEndpoint

    def token(i: int, logprob: float | None) -> dict[str, Any]:
        return {"id": i, "text": f"t{i}", "logprob": logprob, "special": False}

    answer: dict[str, Any] = {
        "generated_text": "ab",
        "details": {
            "finish_reason": "eos_token",
            "generated_tokens": 2,
            "seed": 1,
            "prefill": [token(1, None), token(7, -0.25)],
            "tokens": [token(5, -0.1), token(6, -0.2)],
            "top_tokens": [[token(5, -0.1), token(9, -3.5)], [token(6, -0.2)]],
        },
    }
    assert schemas.errors(answer, "GenerateResponse") == []
    assert wire.read_generation(answer) == ("ab", "eos_token", 2)
    assert wire.read_top_tokens(answer) == {5: -0.1, 9: -3.5}
    assert wire.read_top_tokens({**answer, "details": {**answer["details"], "top_tokens": None}}) == {5: -0.1}
    assert wire.read_prefill(answer) == ([1, 7], -0.25)
    with pytest.raises(MisconfiguredEndpoint, match="--enable-prefill-logprobs"):
        wire.read_prefill({**answer, "details": {**answer["details"], "prefill": []}})
    for broken in ({"generated_text": "x"}, {"details": {"finish_reason": "length"}}, ["x"], None):
        with pytest.raises(BadAnswer):
            wire.read_generation(broken)
    with pytest.raises(BadAnswer):
        wire.read_top_tokens({"details": {"tokens": [{"id": "x"}]}})


def test_a_compressed_answer_is_decoded_by_the_client():
    """A server (or a proxy in front of TGI) that gzips its answers: aiohttp decodes them, so generation reads
    the same fields (the old transport had to strip the encoding itself)."""
    import gzip
    import json

    from aiohttp import web

    from inversecoder.core.backends.http import JsonClient

    answer = {"generated_text": "a", "details": {"finish_reason": "length", "generated_tokens": 1, "tokens": []}}

    async def generate(request: web.Request) -> web.Response:
        body = gzip.compress(json.dumps(answer).encode())
        return web.Response(body=body, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})

    async def run() -> tuple[str, str, int]:
        from inversecoder.core.backends import tgi_protocol as wire

        app = web.Application()
        app.router.add_post("/generate", generate)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        client = JsonClient(1)
        try:
            return wire.read_generation(await client.post(f"http://127.0.0.1:{port}/generate", {"inputs": "x"}))
        finally:
            await client.aclose()
            await runner.cleanup()

    assert asyncio.run(run()) == ("a", "length", 1)


# -- faults --------------------------------------------------------------------------------------
def test_batches_overlap_so_a_slow_item_holds_back_only_its_own_batch(servers, tiny_model_dir, reference):
    """What CachedModel runs: the next batch's requests take the slots a slow item leaves idle, and each
    batch comes back whole as soon as it is done, here the later batch first; results are unchanged."""
    server = servers.start(faults={"slow": {"def f0(": 3.0}})
    backend = TGIBackend([server.url], str(tiny_model_dir), **fast_with(concurrency=2))
    batches = [[0, 1], [2, 3, 4, 5]]
    done = list(backend.generate_batches(GENERATE, batches, SAMPLED))
    assert [k for k, _ in done] == [1, 0]
    assert {k: results for k, results in done} == {
        k: [reference[0][i] for i in batch] for k, batch in enumerate(batches)
    }


def test_leaving_the_batch_stream_early_cancels_its_requests(servers, tiny_model_dir, reference):
    """A caller that stops reading (its own error, Ctrl-C) gets control back at once, the requests still
    queued are never sent, and the backend keeps working."""
    server = servers.start(faults={"latency": 0.3})
    backend = TGIBackend([server.url], str(tiny_model_dir), **fast_with(concurrency=2))
    stream = backend.generate_batches(GENERATE, [[i] for i in range(len(GENERATE))], SAMPLED)
    next(stream)
    with pytest.raises(RuntimeError, match="finish or close that stream first"):  # not a deadlock
        backend.generate(GENERATE[:1], SAMPLED)
    stream.close()
    time.sleep(0.2)  # requests written just before the cancel reach the server's count
    sent = server.stats()["counts"].get("POST /generate", 0)
    time.sleep(1.0)
    assert sent < len(GENERATE) and server.stats()["counts"].get("POST /generate", 0) == sent
    assert backend.generate(GENERATE[:3], SAMPLED) == reference[0][:3]


def test_a_failed_cache_write_stops_the_requests_at_once(servers, tiny_model_dir, tmp_path, reference):
    """CachedModel closes the stream when storing a batch fails: nothing more is sent, no thread is left
    running, and the batches stored before the failure are kept."""

    class FullDisk(ResultCache):
        writes = 0

        def put_many(self, items):
            FullDisk.writes += 1
            if FullDisk.writes == 2:
                raise OSError(28, "No space left on device")
            super().put_many(items)

    server = servers.start(faults={"latency": 0.2})
    backend = TGIBackend([server.url], str(tiny_model_dir), **fast_with(concurrency=2, requests_per_batch=2))
    cache = FullDisk(tmp_path / "calls.sqlite")
    with pytest.raises(OSError, match="No space left"):
        CachedModel(backend, cache, progress=False).generate(GENERATE, SAMPLED)
    time.sleep(0.2)  # requests written just before the cancel reach the server's count
    sent = server.stats()["counts"].get("POST /generate", 0)
    time.sleep(1.0)
    assert sent < len(GENERATE) and server.stats()["counts"].get("POST /generate", 0) == sent
    assert not [t for t in threading.enumerate() if t.name.startswith("tgi-loop")]
    assert len(cache) == 2
    assert backend.generate(GENERATE[:2], SAMPLED) == reference[0][:2]


def test_an_endpoint_killed_mid_run_and_restarted(servers, tiny_model_dir, reference):
    a, b = servers.start(), servers.start()
    backend = TGIBackend([a.url, b.url], str(tiny_model_dir), **fast_with(concurrency=2))
    killer = kill_and_restart_when(a, served=3)
    assert backend.generate(GENERATE, SAMPLED) == reference[0]
    killer.join(timeout=30)
    assert backend.score_yes_no(SCORE) == reference[1]
    stats = {s["url"]: s for s in backend.endpoint_stats()}
    assert stats[a.url]["went_down"] >= 1 and stats[a.url]["came_back"] >= 1 and stats[a.url]["up"]
    assert a.stats()["counts"].get("generated", 0) > 0  # the restarted process served again
    assert backend.totals["failed_items"] == 0


def test_twenty_percent_errors_and_dropped_connections(servers, tiny_model_dir, reference):
    faults = {"error_rate": 0.2, "statuses": [500, 503, 429, 424], "retry_after": 0, "drop_rate": 0.05, "seed": 1}
    a, b = servers.start(faults=faults), servers.start(faults={**faults, "seed": 2})
    backend = TGIBackend([a.url, b.url], str(tiny_model_dir), **FAST)
    assert backend.generate(GENERATE, SAMPLED) == reference[0]
    assert backend.score_yes_no(SCORE) == reference[1]
    injected = sum(s.stats()["counts"].get("injected", 0) for s in (a, b))
    assert injected > 5 and backend.totals["retries"] >= injected and backend.totals["failed_items"] == 0


def test_retry_after_is_honoured(servers, tiny_model_dir, reference):
    server = servers.start(faults={"fail_first": 1, "statuses": [429], "retry_after": 1})
    backend = TGIBackend([server.url], str(tiny_model_dir), **FAST)
    started = time.monotonic()
    assert backend.generate(GENERATE[:3], SAMPLED) == reference[0][:3]
    assert time.monotonic() - started >= 1.0 and backend.totals["retries"] == 3


def test_retry_after_as_seconds_or_http_date_and_capped_jittered_backoff(tiny_model_dir, servers):
    import email.utils

    from inversecoder.core.backends.http import StatusError
    from inversecoder.core.backends.serving import retry_after_seconds
    from inversecoder.core.backends.tgi_protocol import classify

    in_30s = email.utils.formatdate(time.time() + 30, usegmt=True)
    for status, header, expected in ((503, "7", 7.0), (503, in_30s, 30.0), (429, "0.5", 0.5), (503, "soon", None)):
        error = StatusError(status, "healthcheck: unhealthy", retry_after_seconds(header))
        verdict = classify(error)
        assert verdict.retry and (
            verdict.retry_after == pytest.approx(expected, abs=1.5) if expected else verdict.retry_after is None
        )
    backend = TGIBackend(
        [servers.start().url],
        str(tiny_model_dir),
        **fast_with(retry_backoff=1.0, retry_backoff_max=8.0, request_timeout=20.0),
    )
    for attempt, ceiling in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)):  # doubling, capped
        delays = [backend._backoff(attempt, None) for _ in range(200)]
        assert ceiling / 2 <= min(delays) < max(delays) <= ceiling  # jittered in [cap/2, cap]
    assert (
        backend._backoff(1, 12.0) == 12.0 and backend._backoff(1, 600.0) == 20.0
    )  # Retry-After, within the request timeout


def test_a_request_past_its_timeout_fails_alone_and_the_rest_complete(servers, tiny_model_dir, reference):
    server = servers.start(faults={"slow": {"def f3(": 3.0}})  # every attempt of one prompt hangs for 3 s
    backend = TGIBackend([server.url], str(tiny_model_dir), **fast_with(request_timeout=0.5, max_retries=1))
    results = backend.generate(GENERATE[:6], SAMPLED)
    error = results[3].error
    assert (
        results[3].text is None
        and results[3].retryable
        and error is not None
        and "timed out" in error
        and "2 attempts" in error
    )
    assert [r for i, r in enumerate(results) if i != 3] == [r for i, r in enumerate(reference[0][:6]) if i != 3]
    assert backend.endpoint_stats()[0]["went_down"] >= 1  # a timeout takes the endpoint out until /health passes


def test_a_failing_endpoint_records_failures_and_the_next_run_completes_them(
    servers, tiny_model_dir, reference, tmp_path
):
    server = servers.start(faults={"error_rate": 1.0, "statuses": [500]})
    backend = TGIBackend([server.url], str(tiny_model_dir), **fast_with(max_retries=2))
    cache = ResultCache(tmp_path / "calls.sqlite")
    model = CachedModel(backend, cache, progress=False)
    failed = model.generate(GENERATE, SAMPLED)
    assert all(c.error and c.retryable and "HTTP 500" in c.error and "3 attempts" in c.error for c in failed)
    assert len(cache) == 0 and backend.totals["failed_items"] == len(GENERATE)
    server.set_faults(error_rate=0.0)
    assert model.generate(GENERATE, SAMPLED) == reference[0]
    assert len(cache) == len(GENERATE)


def test_every_endpoint_is_kept_full_and_never_overloaded(servers, tiny_model_dir, reference):
    # Each server takes 2 requests at once (/info's max_concurrent_requests), below the 3 slots asked for.
    a, b = servers.start(max_concurrent_requests=2), servers.start(max_concurrent_requests=2, faults={"latency": 0.3})
    backend = TGIBackend([a.url, b.url], str(tiny_model_dir), **FAST)
    assert backend.generate(GENERATE, SAMPLED) == reference[0]
    fast, slow = a.stats()["counts"], b.stats()["counts"]
    assert fast["max in flight"] == slow["max in flight"] == 2  # full, and never more than the server takes
    # Least-loaded routing: the endpoint that frees its slots sooner serves more (round robin would split 8/8).
    assert fast["POST /generate"] > slow["POST /generate"] >= 1
    assert fast["POST /generate"] + slow["POST /generate"] == len(GENERATE)


def test_stop_sequences_beyond_the_servers_limit_are_cut_locally(servers, embedded, tiny_model_dir):
    server = servers.start(max_stop_sequences=1)
    backend = TGIBackend([server.url], str(tiny_model_dir), **FAST)
    greedy = SamplingParams(
        repetition_penalty=1.1, max_new_tokens=10, stop=("never seen", "nth")
    )  # the 2nd is cut here
    got, want = backend.generate(GENERATE[:6], greedy), embedded.generate(GENERATE[:6], greedy)
    assert [(c.text, c.finish_reason) for c in got] == [(c.text, c.finish_reason) for c in want]
    assert any(c.finish_reason == "stop" for c in got) and "status 422" not in server.stats()["counts"]


def test_the_hub_token_goes_only_to_hugging_face_https_hosts(servers, tiny_model_dir, monkeypatch):
    from inversecoder.core.backends.serving import may_carry_hub_token

    monkeypatch.setenv("HF_TOKEN", "hf_" + "x" * 34)  # what a logged-in user has
    server = servers.start()
    backend = TGIBackend([server.url], str(tiny_model_dir), **FAST)
    assert all(c.error is None for c in backend.generate(GENERATE[:2], SAMPLED) + backend.score_yes_no(SCORE[:2]))
    check_endpoints(GeneratorConfig(backend="tgi", endpoints=[server.url], health_timeout=2.0))
    counts = server.stats()["counts"]
    assert counts["POST /generate"] >= 4 and "with authorization" not in counts  # a self-hosted TGI over http: never
    assert may_carry_hub_token("https://abc123.us-east-1.aws.endpoints.huggingface.cloud")
    assert may_carry_hub_token("https://org-space.hf.space/generate")
    for url in (
        "http://abc.endpoints.huggingface.cloud",
        "https://tgi.example.com",
        "https://huggingface.cloud.evil.com",
        "http://127.0.0.1:8080",
        "https://nothuggingface.co",
    ):
        assert not may_carry_hub_token(url), url


def test_endpoint_urls_with_credentials_are_refused():
    with pytest.raises(ConfigError, match="carries credentials"):
        GeneratorConfig(backend="tgi", endpoints=["http://user:secret@h1:8080"])


def test_endpoints_serving_different_models_are_refused(servers, tiny_model_dir, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    a, b = servers.start(model_sha="a" * 40), servers.start(model_sha="b" * 40)
    with pytest.raises(ConfigError, match="different models or revisions"):
        TGIBackend([a.url, b.url], str(tiny_model_dir), **FAST)
    c = servers.start(model_id="org/other-model", model_sha="a" * 40)
    with pytest.raises(ConfigError, match="different models"):
        TGIBackend([a.url, c.url], str(tiny_model_dir), **FAST)
    with pytest.raises(
        ConfigError, match=r"generator.model is 'org/tiny' but the TGI endpoints serve 'org/other-model'"
    ):
        TGIBackend([c.url], "org/tiny", **FAST)
    with pytest.raises(ConfigError, match=r"generator.revision"):
        TGIBackend([a.url], str(tiny_model_dir), "c" * 40, **FAST)
    assert TGIBackend([a.url], str(tiny_model_dir), "a" * 40, **FAST).info().revision == "a" * 40
    assert TGIBackend([a.url], str(tiny_model_dir), "aaaaaaa", **FAST).info().revision == "a" * 40  # a short sha
    # A branch name: resolved through the local Hub cache when it is there, else the served sha counts.
    assert TGIBackend([a.url], str(tiny_model_dir), "main", **FAST).info().revision == "a" * 40
    refs = Path(constants.HF_HUB_CACHE) / f"models--{str(tiny_model_dir).replace('/', '--')}" / "refs"
    refs.mkdir(parents=True)
    (refs / "release").write_text("c" * 40)
    with pytest.raises(
        ConfigError, match=r"generator.revision is 'release' \(c{40}\) but the TGI endpoints serve revision a{40}"
    ):
        TGIBackend([a.url], str(tiny_model_dir), "release", **FAST)


def test_overlong_prompts_are_rejected_without_a_request(servers, tiny_model_dir, tmp_path):
    server = servers.start(max_input_tokens=40, max_total_tokens=60)
    backend = TGIBackend([server.url], str(tiny_model_dir), **FAST)

    def count(text: str) -> int:
        assert backend._tokenizer is not None
        return len(backend._tokenizer(text)["input_ids"])

    words = " ".join(["word"] * 100)
    medium = next(
        t for t in (" ".join(["word"] * k) for k in range(5, 100)) if count(t) > 31
    )  # fits 40, not 40 + 30 > 60
    assert count(words) > 40 and 31 < count(medium) <= 40 and count("def f(x):") + 30 <= 60
    requests = [GenerationRequest("def f(x):", 1), GenerationRequest(words, 2), GenerationRequest(medium, 3)]
    model = CachedModel(backend, ResultCache(tmp_path / "calls.sqlite"), progress=False)
    results = model.generate(requests, SamplingParams(max_new_tokens=30))
    assert results[0].error is None
    assert "accept at most 40 input tokens" in str(results[1].error) and not results[1].retryable
    assert "max_total_tokens (60)" in str(results[2].error) and not results[2].retryable
    scores = backend.score_yes_no([words])
    assert scores[0].score is None and "at most 40" in str(scores[0].error) and not scores[0].retryable
    counts = server.stats()["counts"]
    assert counts["POST /generate"] == 1 and "status 422" not in counts
    assert (
        model.generate(requests, SamplingParams(max_new_tokens=30)) == results and model.computed == 3
    )  # rejections are cached


def test_dead_and_slow_endpoints_leave_the_rotation_and_return(servers, tiny_model_dir, reference):
    with pytest.raises(ConfigError, match="no TGI endpoint answered /info"):
        TGIBackend(["http://127.0.0.1:9"], str(tiny_model_dir), **FAST)
    slow, fast = servers.start(faults={"latency": 1.0}), servers.start()
    backend = TGIBackend([slow.url, fast.url], str(tiny_model_dir), **fast_with(health_timeout=0.3))
    assert [s["up"] for s in backend.endpoint_stats()] == [False, True]
    assert backend.generate(GENERATE[:4], SAMPLED) == reference[0][:4]
    slow.set_faults(latency=0.0)
    assert backend.generate(GENERATE[4:8], SAMPLED) == reference[0][4:8]
    stats = backend.endpoint_stats()
    assert stats[0]["up"] and stats[0]["came_back"] == 1


def test_an_endpoint_that_turns_slow_mid_run_leaves_the_rotation_and_returns(servers, tiny_model_dir, reference):
    a, b = servers.start(), servers.start()
    backend = TGIBackend([a.url, b.url], str(tiny_model_dir), **fast_with(health_timeout=0.3))
    assert backend.generate(GENERATE[:4], SAMPLED) == reference[0][:4]
    b.set_faults(latency=1.0)  # every answer, /health included, now takes longer than health_timeout
    assert backend.generate(GENERATE[4:12], SAMPLED) == reference[0][4:12]
    stats = backend.endpoint_stats()[1]
    assert stats["went_down"] == 1 and not stats["up"]
    b.set_faults(latency=0.0)
    deadline = time.monotonic() + 20
    while not backend.endpoint_stats()[1]["up"] and time.monotonic() < deadline:  # back at a health check
        assert backend.generate(GENERATE[12:], SAMPLED) == reference[0][12:]
    assert backend.endpoint_stats()[1]["came_back"] == 1


def test_an_endpoint_joining_with_lower_limits_is_refused(servers, tiny_model_dir, reference):
    a, b = servers.start(), servers.start()
    b.kill()
    backend = TGIBackend([a.url, b.url], str(tiny_model_dir), **FAST)  # b joins when its /health passes
    b.settings["max_input_tokens"] = 10
    b.restart()
    assert backend.generate(GENERATE[:6], SAMPLED) == reference[0][:6]
    assert backend.generate(GENERATE[6:8], SAMPLED) == reference[0][6:8]
    stats = backend.endpoint_stats()[1]
    assert not stats["up"] and "max_input_tokens 10 < 3000" in stats["refused"] and stats["requests"] == 0


def test_check_endpoints_reports_health_info_and_limits(servers, tiny_model_dir):
    a, b = servers.start(), servers.start(max_top_n_tokens=3)
    config = GeneratorConfig(
        backend="tgi", model=str(tiny_model_dir), endpoints=[a.url, b.url, "http://127.0.0.1:9"], health_timeout=2.0
    )
    rows = check_endpoints(config)
    assert [r["healthy"] for r in rows] == [True, True, False]
    assert (
        rows[0]["model_id"] == str(tiny_model_dir)
        and rows[0]["max_input_tokens"] == 3000
        and rows[0]["version"] == "3.3.6-dev0"
    )
    assert (rows[0]["max_top_n_tokens"], rows[1]["max_top_n_tokens"]) == (">= 5", "3")
    report = format_endpoint_report(rows)
    assert "DOWN: cannot connect" in report and f"2/3 endpoints healthy, serving {tiny_model_dir}@no sha" in report
    assert rows[0]["prefill_logprobs"] == "yes" and "--enable-prefill-logprobs" not in report
    c = servers.start(model_sha="f" * 40, prefill_logprobs=False)
    report = format_endpoint_report(check_endpoints(GeneratorConfig(backend="tgi", endpoints=[a.url, c.url])))
    assert (
        "REFUSED" in report and "no (--enable-prefill-logprobs)" in report and "note: endpoints marked 'no'" in report
    )


def test_an_endpoint_without_prompt_logprobs_fails_those_scores_clearly_and_stays_up(
    servers, tiny_model_dir, reference
):
    server = servers.start(prefill_logprobs=False)  # TGI >= 3.0 launched without --enable-prefill-logprobs
    backend = TGIBackend([server.url], str(tiny_model_dir), **fast_with(top_n_tokens=1))  # Yes/No outside the top 1
    scores = backend.score_yes_no(SCORE[:4])
    assert all(s.score is None and s.retryable and "--enable-prefill-logprobs" in str(s.error) for s in scores), scores
    assert (
        backend.totals["retries"] == 0 and backend.endpoint_stats()[0]["up"]
    )  # not a fault of the server: no retry, no strike
    assert backend.generate(GENERATE[:2], SAMPLED) == reference[0][:2]  # and it goes on serving


def test_without_a_local_tokenizer_the_servers_count_tokens(servers, embedded):
    server = servers.start(model_id="org/tiny-remote", max_input_tokens=200, max_total_tokens=220)
    backend = TGIBackend([server.url], "org/tiny-remote", **FAST)  # not a folder, not in the Hub cache
    assert backend._tokenizer is None and backend.revision == "unknown"
    got = backend.score_yes_no([*SCORE[:3], " ".join(["word"] * 250)])
    want = embedded.score_yes_no(SCORE[:3])
    assert [g.score for g in got[:3]] == pytest.approx([w.score for w in want], abs=1e-4)
    assert all(g.error is None for g in got[:3]), got
    assert "at most 200 input tokens" in str(got[3].error) and not got[3].retryable
    assert backend.answer_token_ids() == embedded.answer_token_ids()


def test_single_answer_tokens_without_a_local_tokenizer(servers, tiny_model_dir):
    """`answer_tokens: single` where only the servers tokenize: the one id of "Yes" (and "No") as they tokenize it,
    the embedded backend's `single` ids and scores."""
    from inversecoder.core.backends.transformers_backend import TransformersBackend

    server = servers.start(model_id="org/tiny-remote")
    backend = TGIBackend([server.url], "org/tiny-remote", answer_tokens="single", **FAST)
    embedded = TransformersBackend(str(tiny_model_dir), device="cpu", answer_tokens="single")
    assert backend._tokenizer is None
    assert backend.answer_token_ids() == embedded.answer_token_ids()
    assert all(len(ids) == 1 for ids in backend.answer_token_ids().values())
    got, want = backend.score_yes_no(SCORE[:3]), embedded.score_yes_no(SCORE[:3])
    assert [g.score for g in got] == pytest.approx([w.score for w in want], abs=1e-4)


def test_hf_hub_offline_still_blocks_everything_but_the_endpoints(servers, tiny_model_dir):
    """The backend reaches its endpoints under HF_HUB_OFFLINE (it does not go through huggingface_hub's
    client), and huggingface_hub's own client, during a backend call and after it, still refuses them:
    nothing of the Hub's offline block is patched."""
    from huggingface_hub import constants
    from huggingface_hub.errors import OfflineModeIsEnabled
    from huggingface_hub.utils import get_async_session

    server = servers.start()
    assert constants.is_offline_mode()

    async def hub_refuses() -> None:
        async with get_async_session() as default:
            with pytest.raises(OfflineModeIsEnabled):
                await default.get(server.url + "/health")

    backend = TGIBackend([server.url], str(tiny_model_dir), **FAST)
    stream = backend.generate_batches(GENERATE, [[0], [1]], SAMPLED)
    assert next(stream)[1][0].error is None
    asyncio.run(hub_refuses())  # while the backend's loop holds its connections
    assert all(c.error is None for _, batch in stream for c in batch)
    asyncio.run(hub_refuses())
    assert check_endpoints(GeneratorConfig(backend="tgi", endpoints=[server.url], health_timeout=2.0))[0]["healthy"]


# -- the whole build -----------------------------------------------------------------------------
def test_build_dataset_on_two_endpoints_survives_a_kill_and_errors(servers, tiny_model_dir, tmp_path):
    import pyarrow.parquet as pq

    from inversecoder.builders.pipeline import build_dataset
    from inversecoder.core.config import load_config
    from inversecoder.hub_cards.dataset_card import write_dataset_card

    a, b = servers.start(), servers.start()
    generator = {
        "backend": "tgi",
        "model": str(tiny_model_dir),
        "endpoints": [a.url, b.url],
        **{k: v for k, v in FAST.items() if k != "progress"},
        "concurrency": 2,
    }
    recipe = {
        "seed": 5,
        "source": {"path": str(SAMPLE), "limit": 10},
        "generator": generator,
        "summarize": {"num_samples": 2, "max_new_tokens": 8},
        "decontaminate": {"enabled": False},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))

    def build(name):
        result = build_dataset(
            load_config(tmp_path / "r.yaml", output_dir=str(tmp_path / name)),
            progress=False,
            write_card=write_dataset_card,
        )
        return {
            folder.name: pq.read_table(next(folder.glob("*.parquet"))).to_pylist()
            for folder in sorted(result.dataset_dir.iterdir())
            if folder.is_dir() and folder.name != "assets"
        }

    clean = build("clean")
    assert len(clean["data"]) >= 5 and len(clean["candidates"]) == 2 * len(clean["data"])
    assert all(c["score"] is not None for c in clean["candidates"])
    for server, seed in ((a, 1), (b, 2)):
        server.set_faults(error_rate=0.2, statuses=[500, 503, 429], retry_after=0, seed=seed)
    first_pid = a.pid
    killer = kill_and_restart_when(a, served=4)
    faulty = build("faulty")
    killer.join(timeout=30)
    assert not killer.is_alive() and a.pid != first_pid  # it was killed (after its 4th answer) and restarted
    assert faulty == clean
    card = (tmp_path / "faulty" / "dataset" / "README.md").read_text()
    assert "tgi backend" in card and "text-generation-inference 3.3.6-dev0" in card and "on 2 endpoint(s)" in card
    found = re.search(r"retries (\d+)", card)
    assert found, card
    retries = int(found.group(1))
    assert retries > 0  # the injected faults were retried, and the card says how often


def test_evaluate_runs_the_served_model_on_the_endpoints_and_matches_embedded(
    servers, tiny_model_dir, benchmarks_dir, tmp_path
):
    from inversecoder.core.config import load_config
    from inversecoder.workflow import evaluate

    server = servers.start()
    results = {}
    for backend in ("tgi", "transformers"):
        generator = {
            "backend": backend,
            "model": str(tiny_model_dir),
            "endpoints": [server.url],
            **{k: v for k, v in FAST.items() if k != "progress"},
        }
        recipe = {
            "benchmarks_dir": str(benchmarks_dir),
            "generator": generator,
            "evaluate": {"model": str(tiny_model_dir), "limit": 2, "max_new_tokens": 12},
        }
        (tmp_path / f"{backend}.yaml").write_text(yaml.safe_dump(recipe))
        results[backend] = evaluate(load_config(tmp_path / f"{backend}.yaml", output_dir=str(tmp_path / backend)))
    served = results["tgi"]["settings"]["backend"]
    assert served["backend"] == "tgi" and served["details"]["tgi_version"] == "3.3.6-dev0"
    assert server.stats()["counts"]["generated"] == 4  # 2 HumanEval+ and 2 MBPP+ tasks, greedy
    for name in ("humaneval", "mbpp"):
        samples = [
            (tmp_path / backend / "eval" / f"{name}_samples.jsonl").read_text() for backend in ("tgi", "transformers")
        ]
        assert samples[0] == samples[1]  # greedy: the endpoints write exactly what the embedded model writes
        assert results["tgi"]["benchmarks"][name]["pass@1"] == results["transformers"]["benchmarks"][name]["pass@1"]


def test_check_endpoints_command_prints_the_report_and_fails_on_a_dead_endpoint(servers, tiny_model_dir, tmp_path):
    import subprocess
    import sys

    a = servers.start()
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"generator: {{backend: tgi, model: {tiny_model_dir}, endpoints: [{a.url}], health_timeout: 2.0}}\n"
    )
    command = [sys.executable, "-m", "inversecoder.cli", "check-endpoints", str(recipe)]
    healthy = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert healthy.returncode == 0, healthy.stderr
    assert a.url in healthy.stdout and "1/1 endpoints healthy" in healthy.stdout
    broken = subprocess.run(
        [*command, "generator.endpoints=[" + a.url + ", http://127.0.0.1:9]"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert broken.returncode == 2 and "1 of 2 endpoints unreachable or unhealthy: http://127.0.0.1:9" in broken.stderr
    other = servers.start(model_sha="f" * 40)
    refused = subprocess.run(
        [*command, "generator.endpoints=[" + a.url + ", " + other.url + "]"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 2 and "REFUSED" in refused.stdout and "different models or revisions" in refused.stderr


def test_calls_that_keep_failing_stop_the_run_before_training_and_the_same_command_resumes(
    servers, tiny_model_dir, tmp_path, capsys, monkeypatch
):
    from inversecoder.cli import main

    server = servers.start(faults={"failing": ["def date_range"], "statuses": [500]})
    recipe = {
        "seed": 5,
        "output_dir": str(tmp_path / "out"),
        "source": {"path": str(SAMPLE), "limit": 6},
        "generator": {
            "backend": "tgi",
            "model": str(tiny_model_dir),
            "endpoints": [server.url],
            **{k: v for k, v in fast_with(max_retries=0).items() if k != "progress"},
            "retry_rounds": 1,
        },
        "summarize": {"num_samples": 2, "max_new_tokens": 8},
        "decontaminate": {"enabled": False},
        "train": {"base_model": str(tiny_model_dir), "global_batch_size": 4, "per_device_batch_size": 4},
        "evaluate": {"enabled": False},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    monkeypatch.setattr(sys, "argv", ["inversecoder", "run", str(tmp_path / "r.yaml")])
    capsys.readouterr()
    assert main(["run", str(tmp_path / "r.yaml")]) == 2
    out, err = capsys.readouterr()
    # Row 3's two candidates failed in the build and again in the retry round; then the run stopped.
    assert server.stats()["counts"]["injected"] == 4 and "retry round 1 of 1" in out
    (line,) = [line for line in err.splitlines() if line.startswith("inversecoder:")]  # (and progress bars)
    assert re.search(r"2 of \d+ model calls \(\d+\.\d+%\) failed, more than generator.max_failed_fraction", line)
    assert "HTTP 500" in line and f"`inversecoder run {tmp_path / 'r.yaml'}` resumes" in line
    out_dir = tmp_path / "out"
    assert not (out_dir / "dataset").exists() and not (out_dir / "model").exists()  # nothing trained, nothing written
    server.set_faults(failing=[])
    assert main(["run", str(tmp_path / "r.yaml")]) == 0
    assert (out_dir / "model" / "config.json").is_file() and (out_dir / "dataset" / "README.md").is_file()
    assert server.stats()["counts"]["generated"] > 0


def test_retry_rounds_complete_failed_calls_and_failures_under_the_share_are_listed_on_the_card(
    servers, tiny_model_dir, tmp_path
):
    import pyarrow.parquet as pq

    from inversecoder.core.config import load_config
    from inversecoder.workflow import build

    server = servers.start()

    def recipe(name: str, endpoint: str = server.url, **generator: Any) -> Any:
        settings = {
            "seed": 5,
            "output_dir": str(tmp_path / name),
            "source": {"path": str(SAMPLE), "limit": 6},
            "generator": {
                "backend": "tgi",
                "model": str(tiny_model_dir),
                "endpoints": [endpoint],
                **{k: v for k, v in fast_with(max_retries=0).items() if k != "progress"},
                **generator,
            },
            "summarize": {"num_samples": 2, "max_new_tokens": 8},
            "decontaminate": {"enabled": False},
        }
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(settings))
        return load_config(tmp_path / f"{name}.yaml")

    # The first attempt of every request fails: round 1 completes the instructions, rounds 2-3 their scores
    # (a score whose answer token is outside the top n takes a second request, whose first attempt fails too).
    clean = build(recipe("clean"))
    faulty = servers.start(faults={"fail_first": 1, "statuses": [500]})
    recovered = build(recipe("recovered", faulty.url, retry_rounds=3))
    assert faulty.stats()["counts"]["injected"] > 0
    card = (recovered / "README.md").read_text()
    assert "model calls still failed" not in card
    for name in ("data", "candidates"):  # nothing lost: the same rows as the fault-free build
        assert pq.read_table(recovered / name).to_pylist() == pq.read_table(clean / name).to_pylist()
    # Calls that keep failing, within max_failed_fraction: the dataset is written and its card says so.
    server.set_faults(error_rate=0.0, failing=["def date_range"])
    tolerated = build(recipe("tolerated", retry_rounds=0, max_failed_fraction=0.5))
    assert re.search(r"\*\*2 of \d+ model calls still failed\*\*", (tolerated / "README.md").read_text())
