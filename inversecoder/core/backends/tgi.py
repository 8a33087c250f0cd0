"""The `tgi` backend: text-generation-inference servers, several at once, exact scores, faults survived.

How it works, and why:
- The protocol is synchronous, so each call runs one event loop. Inside, every item is a task and
  every HTTP request an attempt: it takes a free slot on the least-loaded healthy endpoint, runs under
  a deadline, and on a fault backs off (capped exponential, jittered; Retry-After honoured) and tries
  again, preferably elsewhere. An item that still fails comes back with `retryable=True`, so
  `CachedModel` does not store it and the next run asks again; nothing is dropped silently.
- A prompt the servers can never take (longer than `max_input_tokens`) is counted locally and
  rejected without a request (no storm of 422s); that answer is final, so it is cached.
- `/info` of every endpoint is read first: endpoints serving different models or revisions are
  refused (the cache keys and the dataset card name one model). Their limits bound what is sent.
- Health checks take a dead, failing or slow endpoint out of the rotation and bring it back once
  `/health` answers again and `/info` still names the same model.
- The Yes/No score is exact: the logprobs of every Yes/No variant at the first response position,
  read from `top_n_tokens` when they are there, else from the prefill logprob of that token appended
  to the prompt (`decoder_input_details`): the same distribution the embedded backend reads.

The requests are plain JSON over the aiohttp client every served backend shares (http.py): `POST /generate`,
`GET /info`, `GET /health`, `POST /tokenize`, shaped as TGI's OpenAPI document says (tgi_protocol.py). No
huggingface_hub client is involved, so `HF_HUB_OFFLINE=1` keeps blocking the Hub while the endpoints stay
reachable. The engine-agnostic half (routing, retries, health, batch streams, the loop runner) lives in
served_backend.py and serving.py; `check-endpoints` in tgi_check.py.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Awaitable, Callable, Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inversecoder.core.backends import tgi_protocol as wire
from inversecoder.core.backends.base import BackendInfo, Completion, GenerationRequest, SamplingParams, YesNoScore
from inversecoder.core.backends.http import BadAnswer, JsonClient, StatusError
from inversecoder.core.backends.prompt_ids import prompt_token_ids
from inversecoder.core.backends.served_backend import Call, ServedBackend
from inversecoder.core.backends.serving import (
    Endpoint,
    ItemError,
    Verdict,
    cached_ref,
    hf_token,
    local_revision,
    local_tokenizer,
    yes_no_score,
)
from inversecoder.core.backends.tgi_protocol import TGI_DEFAULT_MAX_TOP_N_TOKENS, EndpointInfo
from inversecoder.core.errors import ConfigError, UserError

if TYPE_CHECKING:
    from inversecoder.core.config import GeneratorConfig

log = logging.getLogger(__name__)


class TGIBackend(ServedBackend):
    """Several TGI endpoints serving one model, behind the backend protocol."""

    ENGINE = "TGI"

    def __init__(
        self,
        endpoints: Sequence[str],
        model: str | None = None,
        revision: str | None = None,
        *,
        concurrency: int = 64,
        request_timeout: float = 600.0,
        max_retries: int = 5,
        retry_backoff: float = 1.0,
        retry_backoff_max: float = 60.0,
        health_interval: float = 10.0,
        health_timeout: float = 10.0,
        top_n_tokens: int = TGI_DEFAULT_MAX_TOP_N_TOKENS,
        requests_per_batch: int | None = None,
        tokenizer: Any = None,
        progress: bool = True,
        answer_tokens: str = "variants",
    ):
        if top_n_tokens < 0:
            raise ConfigError(f"generator.top_n_tokens must be >= 0, got {top_n_tokens}")
        super().__init__(
            endpoints,
            backend_name="tgi",
            concurrency=concurrency,
            request_timeout=request_timeout,
            max_retries=max_retries,
            retry_backoff=retry_backoff,
            retry_backoff_max=retry_backoff_max,
            health_interval=health_interval,
            health_timeout=health_timeout,
            requests_per_batch=requests_per_batch,
            progress=progress,
            token=hf_token(),
        )
        self.configured_model = model
        self.answer_tokens = answer_tokens
        self._answers: dict[str, list[int]] | None = None
        self._answer_text: dict[int, str] = {}

        self.reference = self._runner.run(self._discover)
        self._check_configured_model(model, revision)
        self.model_id = self.reference.model_id
        self.revision = self.reference.model_sha or local_revision(model) or revision or "unknown"
        self.max_input_tokens = min(e.info.max_input_tokens for e in self.endpoints if e.info)
        self.max_total_tokens = min(e.info.max_total_tokens for e in self.endpoints if e.info)
        self.max_stop_sequences = min(e.info.max_stop_sequences for e in self.endpoints if e.info)
        reported = [e.info.max_top_n_tokens for e in self.endpoints if e.info and e.info.max_top_n_tokens is not None]
        self.top_n_tokens = min([top_n_tokens, *reported])
        self._tokenizer = (
            tokenizer if tokenizer is not None else local_tokenizer(model, self.model_id, self.reference.model_sha)
        )

    @classmethod
    def engine_settings(cls, config: GeneratorConfig) -> dict[str, Any]:
        return {"top_n_tokens": config.top_n_tokens, "answer_tokens": config.answer_tokens}

    # -- protocol -------------------------------------------------------------------------------
    def info(self) -> BackendInfo:
        infos = [e.info for e in self.endpoints if e.info]
        return BackendInfo(
            backend="tgi",
            model=self.model_id,
            revision=self.revision,
            max_context=self.max_total_tokens,
            details={
                "endpoints": [e.url for e in self.endpoints],
                "model_sha": self.reference.model_sha,
                "tgi_version": ", ".join(sorted({i.version for i in infos})),
                "tgi_sha": ", ".join(sorted({i.sha or "unknown" for i in infos})),
                "max_input_tokens": self.max_input_tokens,
                "max_total_tokens": self.max_total_tokens,
                "top_n_tokens": self.top_n_tokens,
                "totals": dict(self.totals),
            },
        )

    def generate_batches(
        self, requests: Sequence[GenerationRequest], batches: Sequence[Sequence[int]], params: SamplingParams
    ) -> Generator[tuple[int, list[Completion]], None, None]:
        """`generate` over each batch of request indices, the batches overlapping: requests flow to the
        endpoints in order without a pause at batch ends, and each batch comes back whole (its position,
        its results) as soon as its last item is done. A batch-at-a-time caller would leave the slots of a
        batch's slowest items idle: one latency lost per batch."""

        async def jobs(call: Call, batch: Sequence[int]) -> list[Callable[[], Awaitable[Completion]]]:
            chosen = [requests[i] for i in batch]
            tokens = await self._count(call, [r.prompt for r in chosen])
            return [
                functools.partial(self._generate_one, call, r, n, params) for r, n in zip(chosen, tokens, strict=True)
            ]

        return self._stream(batches, jobs, "generate")

    def score_batches(
        self, prompts: Sequence[str], batches: Sequence[Sequence[int]]
    ) -> Generator[tuple[int, list[YesNoScore]], None, None]:
        """`score_yes_no` over each batch of prompt indices, overlapping as in `generate_batches`."""

        async def jobs(call: Call, batch: Sequence[int]) -> list[Callable[[], Awaitable[YesNoScore]]]:
            await self._resolve_answers(call)
            chosen = [prompts[i] for i in batch]
            tokens = await self._count(call, chosen)
            return [functools.partial(self._score_one, call, p, n) for p, n in zip(chosen, tokens, strict=True)]

        return self._stream(batches, jobs, "score")

    def answer_token_ids(self) -> dict[str, list[int]]:
        """The token ids whose logprobs make the Yes/No score (the embedded backend's, when the tokenizer is local)."""
        if self._answers is None:
            self._runner.run(lambda: self._in_session(self._resolve_answers, 0, "answers"))
        assert self._answers is not None  # set by _resolve_answers
        return self._answers

    # -- one item -------------------------------------------------------------------------------
    async def _generate_one(self, call: Call, request: GenerationRequest, ids, params: SamplingParams) -> Completion:
        if isinstance(ids, ItemError):
            return self._done(call, Completion(None, "error", error=ids.message, retryable=not ids.final))
        n = len(ids)
        too_long = self._too_long(n, params.max_new_tokens)
        if too_long:
            return self._done(call, Completion(None, "error", n, 0, error=too_long))
        stop = [s for s in params.stop if s]
        body = wire.generate_body(request.prompt, params, request.seed, self.max_stop_sequences)

        async def send(client: JsonClient, url: str) -> tuple[str, str, int]:
            return wire.read_generation(await client.post(url + "/generate", body))

        try:
            text, reason, count = await self._request(call, send)
        except ItemError as error:
            return self._done(call, Completion(None, "error", n, 0, error=error.message, retryable=not error.final))
        finish = wire.FINISH.get(reason, "length")
        cut = min((text.find(s) for s in stop if s in text), default=-1)
        if cut >= 0:
            text, finish = text[:cut], "stop"
        self.totals["prompt_tokens"] += n
        self.totals["generated_tokens"] += count
        # The embedded backend does not count the eos token.
        return self._done(call, Completion(text, finish, n, count - (reason == "eos_token")))

    async def _score_one(self, call: Call, prompt: str, ids) -> YesNoScore:
        if isinstance(ids, ItemError):
            return self._done(call, YesNoScore(None, error=ids.message, retryable=not ids.final))
        n = len(ids)
        too_long = self._too_long(n, 1)
        if too_long:
            return self._done(call, YesNoScore(None, None, n, error=too_long))
        try:
            logprobs = await self._first_token_logprobs(call, prompt)
            answers = self._answers or {}
            missing = [i for i in answers["yes"] + answers["no"] if i not in logprobs]
            if missing:
                if self._too_long(n + 1, 1):
                    raise self._no_room(n, self.top_n_tokens, f"max_input_tokens {self.max_input_tokens}")
                found = await asyncio.gather(
                    *(self._appended_logprob(call, prompt, ids, i) for i in missing), return_exceptions=True
                )
                for token_id, value in zip(missing, found, strict=True):
                    if isinstance(value, BaseException):
                        raise value
                    logprobs[token_id] = value
        except ItemError as error:
            return self._done(call, YesNoScore(None, None, n, error=error.message, retryable=not error.final))
        score, mass = yes_no_score(logprobs, answers)
        self.totals["prompt_tokens"] += n
        return self._done(call, YesNoScore(score, mass, n))

    async def _first_token_logprobs(self, call: Call, prompt: str) -> dict[int, float]:
        """Logprobs at the first response position: the greedy token's and the top `top_n_tokens`."""
        while True:
            sent = self.top_n_tokens

            async def send(client: JsonClient, url: str) -> dict[int, float]:
                nonlocal sent
                sent = self.top_n_tokens  # read at send time: a limit adopted meanwhile applies at once
                return wire.read_top_tokens(await client.post(url + "/generate", wire.top_tokens_body(prompt, sent)))

            try:
                return await self._request(call, send)
            except ItemError as error:
                limit = wire.TOP_N_LIMIT.search(error.message)
                if limit is None or int(limit.group(1)) >= sent:
                    raise
                # The servers' --max-top-n-tokens is below the configured value (TGI's /info does not
                # say): adopt it and ask again; each round lowers it, so this ends.
                if int(limit.group(1)) < self.top_n_tokens:
                    self.top_n_tokens = int(limit.group(1))
                    log.warning("TGI endpoints accept top_n_tokens <= %d; using that", self.top_n_tokens)

    async def _appended_logprob(self, call: Call, prompt: str, ids: Sequence[int], token_id: int) -> float:
        """log P(token | prompt): the prefill logprob of `token` appended to the prompt."""
        text = self._appended_text(prompt, ids, token_id)
        self.totals["logprob_requests"] += 1

        body = wire.prefill_body(prompt + text)

        async def send(client: JsonClient, url: str) -> tuple[list[int], float | None]:
            return wire.read_prefill(await client.post(url + "/generate", body))

        prefill_ids, logprob = await self._request(call, send)
        if prefill_ids != [*ids, token_id] or logprob is None:
            raise ItemError(
                f"the prompt followed by {text!r} does not tokenize as the prompt plus token {token_id}: "
                "its exact logprob cannot be read",
                final=True,
            )
        return float(logprob)

    def _appended_text(self, prompt: str, ids: Sequence[int], token_id: int) -> str:
        """The text that, appended to the prompt, adds exactly `token_id` (checked locally when possible)."""
        base = self._answer_text[token_id]
        if self._tokenizer is None:
            return base
        for text in dict.fromkeys([base, " " + base.lstrip(), base.strip()]):
            if _encode(self._tokenizer, prompt + text) == [*ids, token_id]:
                return text
        return base  # the server's prefill is checked anyway

    def _too_long(self, n: int, new_tokens: int) -> str | None:
        if n > self.max_input_tokens:
            return f"prompt has {n} tokens; the endpoints accept at most {self.max_input_tokens} input tokens"
        if n + new_tokens > self.max_total_tokens:
            return (
                f"prompt has {n} tokens; with max_new_tokens={new_tokens} it exceeds the endpoints' "
                f"max_total_tokens ({self.max_total_tokens})"
            )
        return None

    def _refusal(self, info: EndpointInfo) -> str:
        """Why an endpoint joining mid-run cannot serve this run ('' if it can): another model, or lower
        limits than the prompts were checked against (its 422s would reject items the others accept)."""
        if info.identity != self.reference.identity:
            return f"serves {info.model_id}@{info.model_sha}, not {self.reference.model_id}@{self.reference.model_sha}"
        lower = [
            f"{name} {mine} < {ours}"
            for name, mine, ours in (
                ("max_input_tokens", info.max_input_tokens, self.max_input_tokens),
                ("max_total_tokens", info.max_total_tokens, self.max_total_tokens),
                ("max_stop_sequences", info.max_stop_sequences, self.max_stop_sequences),
            )
            if mine < ours
        ]
        return f"has lower limits than the run uses ({', '.join(lower)})" if lower else ""

    async def _read_info(self, call: Call, endpoint: Endpoint) -> EndpointInfo:
        return EndpointInfo.from_json(await call.http.get(endpoint.url + "/info"))

    async def _healthy(self, call: Call, endpoint: Endpoint) -> bool:
        try:
            await call.http.get(endpoint.url + "/health")
        except StatusError:
            return False  # it answers, but not 200
        return True

    def _admit(self, endpoint: Endpoint, info: EndpointInfo) -> None:
        endpoint.info = info
        endpoint.limit = min(self.concurrency, info.max_concurrent_requests or self.concurrency)

    def _classify(self, error: BaseException) -> Verdict:
        return wire.classify(error)

    async def _open_clients(self) -> tuple[JsonClient, JsonClient]:
        """The aiohttp client of this backend's loop (its keep-alive connections survive between calls)."""
        if self._runner.http is None:
            self._runner.http = JsonClient(self.concurrency, self._runner.token)
        return self._runner.http, self._runner.http

    def _check_configured_model(self, model: str | None, revision: str | None) -> None:
        served = self.reference
        if model and not Path(model).expanduser().is_dir() and model != served.model_id:
            raise ConfigError(f"generator.model is '{model}' but the TGI endpoints serve '{served.model_id}'")
        if not (revision and served.model_sha):
            return
        wanted = revision if re.fullmatch(r"[0-9a-f]{7,40}", revision) else cached_ref(served.model_id, revision)
        if wanted is None:  # a branch or tag this machine cannot resolve offline: the served sha is what counts
            log.warning(
                "generator.revision '%s' is not a commit sha and is not in the local Hub cache; the endpoints "
                "serve %s at %s, which the dataset card records",
                revision,
                served.model_id,
                served.model_sha,
            )
        elif not served.model_sha.startswith(wanted):
            raise ConfigError(
                f"generator.revision is '{revision}'"
                + (f" ({wanted})" if wanted != revision else "")
                + f" but the TGI endpoints serve revision {served.model_sha}"
            )

    # -- sessions, tokens -------------------------------------------------------------------------
    async def _count(self, call: Call, prompts: list[str]) -> list:
        """Token ids of each prompt as the servers count them: the local tokenizer, else /tokenize."""
        if not prompts:
            return []
        if self._tokenizer is not None:  # in a worker thread: a batch of 16K prompts would stall every request
            return await asyncio.to_thread(prompt_token_ids, self._tokenizer, prompts)
        found = await asyncio.gather(*(self._tokenize(call, p) for p in prompts), return_exceptions=True)
        return [
            [t["id"] for t in f] if isinstance(f, list) else f if isinstance(f, ItemError) else ItemError(str(f))
            for f in found
        ]

    async def _tokenize(self, call: Call, text: str) -> list[dict[str, Any]]:
        async def send(client: JsonClient, url: str) -> list[dict[str, Any]]:
            answer = await client.post(url + "/tokenize", {"inputs": text})
            if not isinstance(answer, list):
                raise BadAnswer(f"/tokenize answered {str(answer)[:200]}")
            return answer

        return await self._request(call, send)

    async def _resolve_answers(self, call: Call) -> None:
        if self._answers is not None:
            return
        from inversecoder.core.backends.transformers_backend import resolve_answer_token_ids

        if self._tokenizer is not None:
            answers = {
                "yes": resolve_answer_token_ids(self._tokenizer, "Yes", self.answer_tokens),
                "no": resolve_answer_token_ids(self._tokenizer, "No", self.answer_tokens),
            }
            texts = {i: self._tokenizer.decode([i]) for ids in answers.values() for i in ids}
        else:  # no local tokenizer: the ids of "Yes" and " Yes" alone (`single`: "Yes"), as the servers tokenize them
            answers, texts = {}, {}
            for word in ("Yes", "No"):
                ids = []
                for variant in (word,) if self.answer_tokens == "single" else (word, " " + word):
                    try:
                        pieces = [t for t in await self._tokenize(call, variant) if t["start"] < t["stop"]]
                    except ItemError as error:
                        raise UserError(f"cannot tokenize {variant!r} on the TGI endpoints: {error.message}") from None
                    if len(pieces) == 1 and pieces[0]["id"] not in ids:
                        ids.append(pieces[0]["id"])
                        texts[pieces[0]["id"]] = variant
                if not ids:
                    raise UserError(
                        f"the served model has no single token for {word!r}: the Yes/No score would be meaningless"
                    )
                answers[word.lower()] = sorted(ids)
        self._answer_text = texts
        self._answers = answers


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])
