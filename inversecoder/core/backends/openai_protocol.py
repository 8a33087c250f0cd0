"""The wire format of OpenAI-compatible engines, per dialect: request bodies and how answers are read.

Dialects: `vllm` (and `openai`, which speaks vLLM's extensions when the server has them) and `sglang`,
whose logprobs differ. Prompts travel as token-id lists, so the server never re-tokenizes them: the
ids scored are exactly the ids the local tokenizer counted (a prompt ending in " " would otherwise
merge with "Yes" into one token on the server and shift the position read).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from inversecoder.core.backends.base import SamplingParams
from inversecoder.core.backends.serving import ItemError, MisconfiguredEndpoint

DIALECTS = ("openai", "vllm", "sglang")
#: Top logprobs asked for at the first response position (vLLM's default --max-logprobs is 20).
TOP_LOGPROBS = 20
NO_PROMPT_LOGPROBS = (
    "the endpoint returned no prompt logprobs (a vLLM extension), so P(Yes)/P(No) of an answer token "
    f"outside the top {TOP_LOGPROBS} cannot be read exactly: serve the model with vLLM "
    "(generator.backend: vllm) or SGLang (generator.backend: sglang)"
)


@dataclass(frozen=True)
class ServedModel:
    """What `/v1/models` (and `/version`) of one endpoint says it serves."""

    model_id: str
    max_model_len: int | None
    engine_version: str | None
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    model_sha = None  # OpenAI-compatible servers expose no revision

    @property
    def identity(self) -> tuple[str, int | None]:
        return (self.model_id, self.max_model_len)


def served_model(models: Any, wanted: set[str], version: Any) -> ServedModel:
    """The entry of a `/v1/models` answer named as one of `wanted`; ValueError (naming what is served) if none."""
    data = models.get("data") if isinstance(models, dict) else None
    if not isinstance(data, list):
        raise ValueError(f"/v1/models is not an OpenAI model list: {str(models)[:200]}")
    ids = [str(entry.get("id")) for entry in data if isinstance(entry, dict)]
    for entry in data:
        if isinstance(entry, dict) and str(entry.get("id")) in wanted:
            length = entry.get("max_model_len", entry.get("context_length"))
            found = version.get("version") if isinstance(version, dict) else None
            return ServedModel(str(entry["id"]), int(length) if length else None, found, dict(entry))
    raise ValueError(f"serves {ids}, not {sorted(wanted)[0]!r} (launch it with --served-model-name)")


def completion_body(model: str, ids: Sequence[int], params: SamplingParams, seed: int) -> dict[str, Any]:
    """A `/v1/completions` request for one sample: `seed` per request, so each sample reproduces alone."""
    body: dict[str, Any] = {"model": model, "prompt": list(ids), "max_tokens": params.max_new_tokens}
    body["temperature"] = params.temperature
    if params.temperature > 0:
        body["seed"] = seed
        if params.top_p < 1.0:
            body["top_p"] = params.top_p
    if params.repetition_penalty != 1.0:
        body["repetition_penalty"] = params.repetition_penalty  # a vLLM/SGLang extension
    stop = [s for s in params.stop if s]
    if stop:
        body["stop"] = stop
    return body


def read_completion(answer: Any, stop: tuple[str, ...]) -> tuple[str, str, int, int]:
    """(text, finish reason as the project names it, prompt tokens, generated tokens without the eos)."""
    try:
        choice = answer["choices"][0]
        text = str(choice["text"])
        reason = choice.get("finish_reason")
        usage = answer.get("usage") or {}
        generated = int(usage.get("completion_tokens", 0))
        prompt = int(usage.get("prompt_tokens", 0))
    except (KeyError, IndexError, TypeError, ValueError) as error:
        raise MisconfiguredEndpoint(f"/v1/completions answered no completion ({type(error).__name__})") from None
    if reason == "length":
        finish = "length"
    elif isinstance(choice.get("stop_reason", choice.get("matched_stop")), str):
        finish = "stop"  # vLLM's stop_reason (SGLang's matched_stop) is the stop string matched...
    else:
        finish = "eos"  # ...and None (vLLM) or the eos id (SGLang) at the eos token
        generated = max(0, generated - 1)  # the embedded backend does not count the eos token
    cut = min((text.find(s) for s in stop if s and s in text), default=-1)
    if cut >= 0:
        text, finish = text[:cut], "stop"
    return text, finish, prompt, generated


def top_logprobs_body(
    dialect: str, model: str, ids: Sequence[int], answer_ids: list[int]
) -> tuple[str, dict[str, Any]]:
    """(route, body) of the request reading logprobs at the first response position."""
    if dialect == "sglang":  # exact for every answer token in one request: token_ids_logprob
        return "/generate", {
            "input_ids": list(ids),
            "sampling_params": {"max_new_tokens": 1, "temperature": 0.0},
            "return_logprob": True,
            "logprob_start_len": -1,
            "token_ids_logprob": answer_ids,
        }
    body = {"model": model, "prompt": list(ids), "max_tokens": 1, "temperature": 0.0, "logprobs": TOP_LOGPROBS}
    body["return_tokens_as_token_ids"] = True  # keys "token_id:N": decoded strings collide
    return "/v1/completions", body


def read_top_logprobs(dialect: str, answer: Any, by_text: dict[str, int]) -> dict[int, float]:
    """Token id -> logprob at the first response position. `by_text` maps the decoded answer tokens back to
    ids for servers that key top logprobs by text."""
    try:
        if dialect == "sglang":
            meta = answer["meta_info"] if isinstance(answer, dict) else answer[0]["meta_info"]
            found = {int(i): float(lp) for lp, i, *_ in meta["output_token_ids_logprobs"][0]}
            top = meta.get("output_top_logprobs") or [[]]
            return {**{int(i): float(lp) for lp, i, *_ in (top[0] or [])}, **found}
        logprobs = answer["choices"][0]["logprobs"]
        top = logprobs["top_logprobs"][0] or {}
    except (KeyError, IndexError, TypeError, ValueError) as error:
        raise MisconfiguredEndpoint(f"the answer carries no logprobs ({type(error).__name__}: {error})") from None
    out: dict[int, float] = {}
    for key, value in top.items():
        if key.startswith("token_id:"):
            out[int(key.removeprefix("token_id:"))] = float(value)
        elif key in by_text:
            out[by_text[key]] = float(value)
    return out


def prompt_logprob_body(model: str, ids: Sequence[int], token_id: int) -> dict[str, Any]:
    """vLLM's `prompt_logprobs`: the prompt followed by `token_id`, whose logprob the last position gives."""
    return {"model": model, "prompt": [*ids, token_id], "max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 0}


def read_prompt_logprob(answer: Any, token_id: int) -> float:
    """log P(token_id | prompt) from the last prompt position of a `prompt_logprob_body` answer."""
    try:
        choice = answer["choices"][0]
    except (KeyError, IndexError, TypeError):
        raise MisconfiguredEndpoint("/v1/completions answered no choice") from None
    positions = choice.get("prompt_logprobs") or answer.get("prompt_logprobs")
    if not positions:
        raise MisconfiguredEndpoint(NO_PROMPT_LOGPROBS)
    last = positions[-1] or {}
    entry = last.get(str(token_id), last.get(token_id))
    if entry is None:
        raise ItemError(f"the last prompt position has no logprob for token {token_id}", final=True)
    return float(entry["logprob"] if isinstance(entry, dict) else entry)
