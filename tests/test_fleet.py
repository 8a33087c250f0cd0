"""The simulated vLLM fleet (benchmarks/fleet.py) against the project's real `vllm` client: generations and exact
scores, the same answers on every run and across a killed and restarted endpoint, injected errors retried."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import fleet as simulated

from inversecoder.core.backends.base import GenerationRequest, SamplingParams
from inversecoder.core.backends.openai_backend import OpenAIBackend
from inversecoder.core.backends.serving import yes_no_score
from inversecoder.core.prompts import score_prompt, summarize_prompt

FAST: dict[str, Any] = {"retry_backoff": 0.01, "retry_backoff_max": 0.05, "health_interval": 0.2, "health_timeout": 2.0}
PARAMS = SamplingParams(temperature=0.8, top_p=0.95, max_new_tokens=256, stop=("```",))
CODE = [f"```python\ndef f{i}(x):\n    return x + {i}\n```" for i in range(40)]
REQUESTS = [GenerationRequest(summarize_prompt(code, "Write a python"), seed=1000 + i) for i, code in enumerate(CODE)]
SCORED = [score_prompt(f"Write a function that adds {i}.", code) for i, code in enumerate(CODE)]


@pytest.fixture(scope="module")
def fleet(tiny_model_dir) -> Iterator[simulated.Fleet]:
    # 4 slots per endpoint, the client sends 8: the rest queue on the server, as past vLLM's max_num_seqs
    with simulated.Fleet(2, 4, 0.1, 0.05, tiny_model_dir, miss_rate=0.3, tick=0.005) as running:
        yield running


def backend(fleet: simulated.Fleet, model: Path) -> OpenAIBackend:
    return OpenAIBackend(fleet.urls, str(model), dialect="vllm", progress=False, concurrency=8, max_retries=8, **FAST)


def outcome(served: OpenAIBackend) -> tuple[list, list]:
    texts = [(c.text, c.finish_reason, c.generated_tokens, c.error) for c in served.generate(REQUESTS, PARAMS)]
    scores = [(s.score, s.yes_no_mass, s.error) for s in served.score_yes_no(SCORED)]
    return texts, scores


def test_the_vllm_client_builds_against_the_fleet_with_exact_scores_and_retried_errors(fleet, tiny_model_dir):
    served = backend(fleet, tiny_model_dir)
    try:
        texts, scores = outcome(served)
        short = served.generate(REQUESTS[:8], SamplingParams(temperature=0.8, max_new_tokens=5, stop=("```",)))
        info = served.info().details
    finally:
        served.close()
    assert info["engine_version"] == simulated.VERSION and info["max_model_len"] == 4096
    assert all(error is None and text for text, _, _, error in texts), texts
    assert {finish for _, finish, _, _ in texts} == {"eos", "stop"}  # the eos, or the stop string "```"
    assert len({text for text, _, _, _ in texts}) == len(texts)
    tokenizer = served._tokenizer
    for text, finish, count, _ in texts:
        if finish == "eos":  # completion_tokens is the tokenizer's count of the text (the eos not counted here)
            assert len(tokenizer(text, add_special_tokens=False)["input_ids"]) == count
    for cut in short:  # cut at max_tokens: exactly that many tokens
        assert cut.finish_reason == "length" and cut.generated_tokens == 5
        assert len(tokenizer(cut.text, add_special_tokens=False)["input_ids"]) == 5
    assert served.totals["retries"] > 0 and served.totals["logprob_requests"] > 0  # errors and misses read back

    async def expected() -> list[float]:  # the fleet's own P(Yes) of each prompt, as the client must find it
        endpoint = simulated.Endpoint(
            fleet.spec["model"], fleet.settings, 0, memoryview(bytearray(8 * len(simulated.STATS))).cast("d")
        )
        answers = served.answer_token_ids()
        out = []
        for prompt in SCORED:
            ids = ",".join(map(str, tokenizer(prompt)["input_ids"])).encode()
            ranked, _ = endpoint.distribution(simulated.digest(ids))
            out.append(yes_no_score({token: lp for lp, token in ranked}, answers)[0])
        return out

    for (score, mass, error), want in zip(scores, asyncio.run(expected()), strict=True):
        assert error is None and 0 <= score <= 1 and 0.5 < mass < 1
        assert score == pytest.approx(want, abs=1e-12)
    totals = fleet.totals()
    assert totals["errors"] > 0 and totals["prompt_logprobs"] > 0 and totals["waiting_max"] > 0
    assert totals["in_flight_max"] == 4 and totals["busy_seconds"] > 0 and totals["cpu_seconds"] > 0
    assert totals["requests"] == totals["completions"] + totals["scores"] + totals["errors"]


def test_the_same_answers_on_a_second_run_and_across_a_killed_endpoint(fleet, tiny_model_dir):
    first = backend(fleet, tiny_model_dir)
    try:
        clean = outcome(first)
    finally:
        first.close()
    second = backend(fleet, tiny_model_dir)
    starts = fleet.stats()[0]["starts"]
    try:
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(outcome, second)
            time.sleep(0.3)
            fleet.kill(0)  # mid-run: its requests in flight are reset, its port refuses
            time.sleep(0.5)
            fleet.restart(0)
            again = running.result(timeout=120)
        went_down = second.endpoint_stats()[0]["went_down"]
    finally:
        second.close()
    assert again == clean
    assert went_down >= 1 and fleet.stats()[0]["starts"] == starts + 1


def test_check_endpoints_finds_the_fleet_healthy(fleet, tiny_model_dir):
    from inversecoder.core.backends.openai_check import check_endpoints
    from inversecoder.core.config import load_config

    urls = ",".join(fleet.urls)
    config = load_config(
        None, ["generator.backend=vllm", f"generator.model={tiny_model_dir}", f"generator.endpoints=[{urls}]"]
    )
    rows = check_endpoints(config.generator, timeout=5)
    assert all(r["healthy"] and r["tokenizer"] == "ok" and r["consistent"] for r in rows), rows
