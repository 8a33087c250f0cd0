"""TGI's wire format: the `/generate` bodies the `tgi` backend sends, how it reads the answers, `/info`,
and what TGI's status codes mean.

The shapes follow TGI's OpenAPI document, shipped as `data/tgi/openapi.json` (`inversecoder.core.data.
TGI_OPENAPI`): `GenerateRequest` (`inputs`, `parameters`), `GenerateResponse` (`generated_text`, `details`:
`finish_reason`, `generated_tokens`, `prefill`, `tokens`, `top_tokens`), `Info`, `TokenizeResponse` and
`ErrorResponse` (`error`, `error_type`). The test double (tests/tgi_server.py) checks every body both ways
against those schemas. Answers are plain JSON read here: no client library parses them into objects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from inversecoder.core.backends.base import SamplingParams
from inversecoder.core.backends.http import BadAnswer, StatusError, classify_http
from inversecoder.core.backends.serving import MisconfiguredEndpoint, Verdict

#: TGI's own default for `--max-top-n-tokens`; `/info` does not report the server's value.
TGI_DEFAULT_MAX_TOP_N_TOKENS = 5
INPUT_TOO_LONG = re.compile(r"`inputs` (must have less than|tokens \+ `max_new_tokens` must be)")
TOP_N_LIMIT = re.compile(r"`top_n_tokens` must be >= 0 and <= (\d+)")
NO_PREFILL_LOGPROBS = (
    "the endpoint returned no prompt logprobs (TGI >= 3.0 computes them only when launched with "
    "--enable-prefill-logprobs), so P(Yes)/P(No) of an answer token outside the top n cannot be read "
    "exactly: relaunch TGI with --enable-prefill-logprobs, or raise its --max-top-n-tokens and "
    "generator.top_n_tokens so that every answer token is inside the top n"
)
#: TGI's finish reasons, as the backend protocol names them (`length` otherwise).
FINISH = {"eos_token": "eos", "stop_sequence": "stop"}


@dataclass(frozen=True)
class EndpointInfo:
    """The fields of TGI's `/info` this backend relies on (`raw` keeps the whole answer)."""

    model_id: str
    model_sha: str | None
    version: str
    sha: str | None
    max_input_tokens: int
    max_total_tokens: int
    max_best_of: int | None
    max_stop_sequences: int
    max_concurrent_requests: int
    max_top_n_tokens: int | None  # not in TGI 3.x's /info; read when a server reports it
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EndpointInfo:
        try:
            return cls(
                model_id=str(data["model_id"]),
                model_sha=data.get("model_sha"),
                version=str(data.get("version", "unknown")),
                sha=data.get("sha"),
                # TGI < 2 called it max_input_length
                max_input_tokens=int(
                    data["max_input_tokens"] if "max_input_tokens" in data else data["max_input_length"]
                ),
                max_total_tokens=int(data["max_total_tokens"]),
                max_best_of=data.get("max_best_of"),
                max_stop_sequences=int(data.get("max_stop_sequences", 4)),
                max_concurrent_requests=int(data.get("max_concurrent_requests", 128)),
                max_top_n_tokens=data.get("max_top_n_tokens"),
                raw=dict(data),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"/info is not TGI's: {type(error).__name__} {error}") from None

    @property
    def identity(self) -> tuple[str, str | None]:
        return (self.model_id, self.model_sha)


# -- requests ------------------------------------------------------------------------------------
def server_seed(seed: int) -> int:
    """TGI's schema wants a positive seed: shift by one (a bijection, so seeds stay distinct)."""
    return seed % (2**63 - 1) + 1


def generate_body(prompt: str, params: SamplingParams, seed: int, max_stop_sequences: int) -> dict[str, Any]:
    """One sample: `details` for the finish reason and the token count; the seed only when sampling."""
    parameters: dict[str, Any] = {"details": True, "max_new_tokens": params.max_new_tokens}
    stop = [s for s in params.stop if s]
    if stop:
        parameters["stop"] = stop[:max_stop_sequences]  # any others are cut locally, as the embedded backend does
    if params.repetition_penalty != 1.0:
        parameters["repetition_penalty"] = params.repetition_penalty
    if params.temperature > 0:
        parameters.update(do_sample=True, temperature=params.temperature, seed=server_seed(seed))
        if params.top_p < 1.0:
            parameters["top_p"] = params.top_p
    else:
        parameters["do_sample"] = False
    return {"inputs": prompt, "parameters": parameters}


def top_tokens_body(prompt: str, top_n: int) -> dict[str, Any]:
    """One greedy token with its logprob and (when `top_n` > 0) the top `top_n` at that position."""
    parameters: dict[str, Any] = {"details": True, "max_new_tokens": 1, "do_sample": False}
    if top_n > 0:
        parameters["top_n_tokens"] = top_n
    return {"inputs": prompt, "parameters": parameters}


def prefill_body(text: str) -> dict[str, Any]:
    """The prompt logprobs of `text` (`decoder_input_details`), one greedy token after it."""
    parameters = {"details": True, "decoder_input_details": True, "max_new_tokens": 1, "do_sample": False}
    return {"inputs": text, "parameters": parameters}


# -- answers -------------------------------------------------------------------------------------
def _details(answer: Any) -> dict[str, Any]:
    details = answer.get("details") if isinstance(answer, dict) else None
    if not isinstance(details, dict):
        raise BadAnswer(f"/generate answered without `details`: {str(answer)[:200]}")
    return details


def read_generation(answer: Any) -> tuple[str, str, int]:
    """(generated text, TGI's finish reason, generated tokens); the per-token list is not read."""
    details = _details(answer)
    try:
        return str(answer["generated_text"]), str(details["finish_reason"]), int(details["generated_tokens"])
    except (KeyError, TypeError, ValueError) as error:
        raise BadAnswer(f"/generate answer lacks {error}: {str(answer)[:200]}") from None


def read_top_tokens(answer: Any) -> dict[int, float]:
    """Logprobs at the first response position: the greedy token's and the top `top_n_tokens`."""
    details = _details(answer)
    top = details.get("top_tokens") or [[]]
    try:
        return {int(t["id"]): float(t["logprob"]) for t in [*details["tokens"][:1], *top[0]]}
    except (KeyError, TypeError, ValueError, IndexError) as error:
        raise BadAnswer(f"/generate answer has malformed tokens ({error}): {str(answer)[:200]}") from None


def read_prefill(answer: Any) -> tuple[list[int], float | None]:
    """(the prompt's token ids as the server read them, the last one's logprob)."""
    prefill = _details(answer).get("prefill")
    if not prefill:
        raise MisconfiguredEndpoint(NO_PREFILL_LOGPROBS)
    try:
        last = prefill[-1]["logprob"]
        return [int(t["id"]) for t in prefill], None if last is None else float(last)
    except (KeyError, TypeError, ValueError) as error:
        raise BadAnswer(f"/generate answer has a malformed prefill ({error})") from None


# -- failures ------------------------------------------------------------------------------------
def classify(error: BaseException) -> Verdict:
    """TGI's status codes and transport failures, mapped to what to do next: a 422 is never retried (final
    when the prompt is too long for the servers), a 424 (generation failed) is, as 5xx and 429 are."""
    if isinstance(error, StatusError):
        if error.status == 422:  # validation: repeating the same request cannot help
            return Verdict(str(error), retry=False, final=bool(INPUT_TOO_LONG.search(error.detail)), endpoint="ok")
        if error.status == 424:
            return Verdict(str(error), retry=True, retry_after=error.retry_after)
    return classify_http(error)
