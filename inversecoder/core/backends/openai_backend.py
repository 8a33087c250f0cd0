"""The `vllm`, `sglang` and `openai` backends: OpenAI-compatible servers, several at once, exact scores.

Everything the `tgi` backend guarantees (least-loaded routing, health checks, Retry-After, capped
backoff, failed items returned retryable so they are not cached, prompts too long for the servers
rejected locally as final answers, progress with tokens/s) comes from served_backend.py; this module
speaks the engines' protocol (openai_protocol.py) over aiohttp (http.py).

- `/v1/models` of every endpoint must name the configured model (vLLM reports `--served-model-name`,
  else the path it loaded). These servers expose no revision: the card records `generator.revision`,
  or the content hash of a local model folder, marked `revision_verified: False`.
- The model's tokenizer is loaded here: prompts are counted locally and sent as token ids, and each
  endpoint's `/tokenize` must agree with it on probe prompts (one whose end merges with "Yes").
- Samples carry their own `seed`, so a rerun (or a retry on another endpoint) reproduces them.
- The Yes/No score reads the logprob of every Yes/No variant at the first response position: vLLM's top
  20 keyed by token id, else `prompt_logprobs` of the prompt followed by that token; SGLang's
  `token_ids_logprob` on its native `/generate`. Same distribution as the embedded backend, to float error.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from array import array
from collections.abc import Awaitable, Callable, Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inversecoder.core.backends import openai_protocol as wire
from inversecoder.core.backends.base import BackendInfo, Completion, GenerationRequest, SamplingParams, YesNoScore
from inversecoder.core.backends.http import JsonClient, StatusError, classify_http
from inversecoder.core.backends.prompt_ids import prompt_token_ids
from inversecoder.core.backends.served_backend import Call, ServedBackend
from inversecoder.core.backends.serving import (
    Endpoint,
    ItemError,
    Verdict,
    hf_token,
    local_revision,
    local_tokenizer,
    yes_no_score,
)
from inversecoder.core.errors import ConfigError, UserError

if TYPE_CHECKING:
    from inversecoder.core.config import GeneratorConfig

log = logging.getLogger(__name__)
ENGINES = {"vllm": "vLLM", "sglang": "SGLang", "openai": "OpenAI-compatible"}
#: `/v1/models` entries' `owned_by` of the engines that set it: names the engine behind a generic `openai` fleet
OWNERS = {"vllm": "vLLM", "sglang": "SGLang"}
#: Prompts whose tokens the endpoints' /tokenize must give as the local tokenizer does; the last ends with
#: a space that merges with "Yes" when the text is tokenized whole.
TOKENIZER_PROBES = ("def add(a, b):\n    return a + b\n", "Is the instruction right? Answer: Yes", "Answer:Yes")


def folder_names(model: str) -> set[str]:
    """The ids a server may report for `model`: itself, and for a local folder its absolute path."""
    names = {model}
    if Path(model).expanduser().is_dir():
        names.add(str(Path(model).expanduser().resolve()))
    return names


class OpenAIBackend(ServedBackend):
    """Several OpenAI-compatible endpoints (vLLM, SGLang, ...) serving one model, behind the backend protocol."""

    INFO_ROUTE = "/v1/models"

    def __init__(
        self,
        endpoints: Sequence[str],
        model: str,
        revision: str | None = None,
        *,
        dialect: str = "vllm",
        tokenizer: Any = None,
        progress: bool = True,
        answer_tokens: str = "variants",
        **settings: Any,
    ):
        if dialect not in wire.DIALECTS:
            raise ConfigError(f"generator.backend must be one of {', '.join(wire.DIALECTS)}, got '{dialect}'")
        defaults = {"concurrency": 64, "request_timeout": 600.0, "max_retries": 5, "retry_backoff": 1.0}
        defaults |= {"retry_backoff_max": 60.0, "health_interval": 10.0, "health_timeout": 10.0}
        super().__init__(
            endpoints,
            backend_name=dialect,
            progress=progress,
            token=hf_token(),
            **{"requests_per_batch": None, **defaults, **settings},
        )
        self.ENGINE = ENGINES[dialect]
        self.dialect = dialect
        self.configured_model = model
        self._wanted = folder_names(model)
        self._tokenizer = tokenizer if tokenizer is not None else local_tokenizer(model, model, revision)
        if self._tokenizer is None:
            raise UserError(
                f"no tokenizer for {model} here: backend '{dialect}' counts and scores prompts as token ids with "
                "the model's own tokenizer; download it first (hf download MODEL --include 'tokenizer*')"
            )
        self.reference: wire.ServedModel = self._runner.run(self._discover)
        if self.reference.model_id not in self._wanted:
            raise ConfigError(
                f"generator.model is '{model}' but the {self.ENGINE} endpoints serve '{self.reference.model_id}' "
                f"(launch them with --served-model-name {model})"
            )
        for endpoint in self.endpoints:
            problem = self._tokenizer_problem(endpoint.info) if endpoint.info else None
            if problem:
                raise ConfigError(
                    f"{self.ENGINE} endpoint {endpoint.url} tokenizes unlike {model}'s tokenizer: {problem}"
                )
        self.model_id = self.reference.model_id
        if dialect == "openai" and self.reference.raw.get("owned_by") in OWNERS:  # the engine says which it is
            self.ENGINE = OWNERS[self.reference.raw["owned_by"]]
        lengths = [e.info.max_model_len for e in self.endpoints if e.info and e.info.max_model_len]
        self.max_model_len: int | None = min(lengths) if lengths else None
        self.revision = revision or local_revision(model) or "unknown"
        self.revision_source = "config" if revision else "local folder" if self.revision != "unknown" else "none"
        from inversecoder.core.backends.transformers_backend import resolve_answer_token_ids

        self.answer_tokens = answer_tokens
        self._answers = {
            word.lower(): resolve_answer_token_ids(self._tokenizer, word, answer_tokens) for word in ("Yes", "No")
        }
        self._by_text = {self._tokenizer.decode([i]): i for ids in self._answers.values() for i in ids}

    @classmethod
    def engine_settings(cls, config: GeneratorConfig) -> dict[str, Any]:
        return {"dialect": config.backend, "answer_tokens": config.answer_tokens}

    # -- protocol -------------------------------------------------------------------------------
    def info(self) -> BackendInfo:
        versions = sorted({e.info.engine_version or "unknown" for e in self.endpoints if e.info})
        return BackendInfo(
            backend=self.dialect,
            model=self.configured_model,
            revision=self.revision,
            max_context=self.max_model_len or 0,
            details={
                "endpoints": [e.url for e in self.endpoints],
                "engine": self.ENGINE,
                "engine_version": ", ".join(versions),
                "served_model_id": self.model_id,
                "revision_verified": False,  # the servers do not say which revision they loaded
                "revision_source": self.revision_source,
                "max_model_len": self.max_model_len,
                "totals": dict(self.totals),
            },
        )

    def answer_token_ids(self) -> dict[str, list[int]]:
        return self._answers

    def generate_batches(
        self, requests: Sequence[GenerationRequest], batches: Sequence[Sequence[int]], params: SamplingParams
    ) -> Generator[tuple[int, list[Completion]], None, None]:
        """`generate` over each batch of request indices, the batches overlapping (see `ServedBackend._stream`)."""

        async def jobs(call: Call, batch: Sequence[int]) -> list[Callable[[], Awaitable[Completion]]]:
            chosen = [requests[i] for i in batch]
            tokens = await asyncio.to_thread(self._count, [r.prompt for r in chosen])  # off the request loop
            pairs = zip(chosen, tokens, strict=True)
            return [functools.partial(self._generate_one, call, r, n, params) for r, n in pairs]

        return self._stream(batches, jobs, "generate")

    def score_batches(
        self, prompts: Sequence[str], batches: Sequence[Sequence[int]]
    ) -> Generator[tuple[int, list[YesNoScore]], None, None]:
        """`score_yes_no` over each batch of prompt indices, overlapping as in `generate_batches`."""

        async def jobs(call: Call, batch: Sequence[int]) -> list[Callable[[], Awaitable[YesNoScore]]]:
            ids = await asyncio.to_thread(self._count, [prompts[i] for i in batch])  # off the request loop
            return [functools.partial(self._score_one, call, one) for one in ids]

        return self._stream(batches, jobs, "score")

    # -- one item -------------------------------------------------------------------------------
    async def _generate_one(
        self, call: Call, request: GenerationRequest, ids: Sequence[int], params: SamplingParams
    ) -> Completion:
        n = len(ids)
        too_long = self._too_long(n, params.max_new_tokens)
        if too_long:
            return self._done(call, Completion(None, "error", n, 0, error=too_long))
        body = wire.completion_body(self.model_id, ids, params, request.seed % (2**63 - 1))

        async def send(client: JsonClient, url: str) -> tuple[str, str, int, int]:
            return wire.read_completion(await client.post(url + "/v1/completions", body), params.stop)

        try:
            text, finish, _, count = await self._request(call, send)
        except ItemError as error:
            return self._done(call, Completion(None, "error", n, 0, error=error.message, retryable=not error.final))
        self.totals["prompt_tokens"] += n
        self.totals["generated_tokens"] += count
        return self._done(call, Completion(text, finish, n, count))

    async def _score_one(self, call: Call, ids: Sequence[int]) -> YesNoScore:
        n = len(ids)
        too_long = self._too_long(n, 1)
        if too_long:
            return self._done(call, YesNoScore(None, None, n, error=too_long))
        answer_ids = self._answers["yes"] + self._answers["no"]
        route, body = wire.top_logprobs_body(self.dialect, self.model_id, ids, answer_ids)

        async def send(client: JsonClient, url: str) -> dict[int, float]:
            return wire.read_top_logprobs(self.dialect, await client.post(url + route, body), self._by_text)

        try:
            logprobs = await self._request(call, send)
            missing = [i for i in answer_ids if i not in logprobs]
            if missing:
                if self._too_long(n + 1, 1):
                    raise self._no_room(n, wire.TOP_LOGPROBS, f"max_model_len {self.max_model_len}")
                found = await asyncio.gather(*(self._appended_logprob(call, ids, i) for i in missing))
                logprobs.update(zip(missing, found, strict=True))
        except ItemError as error:
            return self._done(call, YesNoScore(None, None, n, error=error.message, retryable=not error.final))
        score, mass = yes_no_score(logprobs, self._answers)
        self.totals["prompt_tokens"] += n
        return self._done(call, YesNoScore(score, mass, n))

    async def _appended_logprob(self, call: Call, ids: Sequence[int], token_id: int) -> float:
        """log P(token | prompt) from vLLM's prompt logprobs of the prompt followed by the token."""
        if self.dialect == "sglang":  # token_ids_logprob names every answer token: none can be missing
            raise ItemError(f"SGLang returned no logprob for token {token_id} asked for in token_ids_logprob")
        self.totals["logprob_requests"] += 1
        body = wire.prompt_logprob_body(self.model_id, ids, token_id)

        async def send(client: JsonClient, url: str) -> float:
            return wire.read_prompt_logprob(await client.post(url + "/v1/completions", body), token_id)

        return await self._request(call, send)

    def _count(self, prompts: list[str]) -> list[array]:
        return prompt_token_ids(self._tokenizer, prompts)

    def _too_long(self, n: int, new_tokens: int) -> str | None:
        if self.max_model_len is not None and n + new_tokens > self.max_model_len:
            return (
                f"prompt has {n} tokens; with max_new_tokens={new_tokens} it exceeds the endpoints' "
                f"max_model_len ({self.max_model_len})"
            )
        return None

    # -- endpoints ------------------------------------------------------------------------------
    async def _open_clients(self) -> tuple[JsonClient, JsonClient]:
        if self._runner.http is None:
            self._runner.http = JsonClient(self.concurrency, self._runner.token)
        return self._runner.http, self._runner.http

    def _classify(self, error: BaseException) -> Verdict:
        return classify_http(error)

    async def _healthy(self, call: Call, endpoint: Endpoint) -> bool:
        # A plain OpenAI server has no /health: its model list stands in.
        await call.http.get(endpoint.url + ("/v1/models" if self.dialect == "openai" else "/health"))
        return True

    async def _read_info(self, call: Call, endpoint: Endpoint) -> wire.ServedModel:
        """`/v1/models` (the configured model, or what is served instead), `/version`, and the tokenizer probes."""
        models = await call.http.get(endpoint.url + "/v1/models")
        try:
            version = await call.http.get(endpoint.url + "/version")
        except StatusError:
            version = None  # not every engine has it
        try:
            served = wire.served_model(models, self._wanted, version)
        except ValueError as error:  # another model: an identity that differs from the configured one's
            ids = [str(m.get("id")) for m in models.get("data", []) if isinstance(m, dict)]
            log.warning("%s endpoint %s %s", self.ENGINE, endpoint.url, error)
            return wire.ServedModel(", ".join(ids) or "nothing", None, None, {"error": str(error)})
        tokens = {}
        for probe in TOKENIZER_PROBES:
            try:
                answer = await call.http.post(
                    endpoint.url + "/tokenize", {"model": served.model_id, "prompt": probe, "add_special_tokens": True}
                )
            except StatusError as error:
                if error.status in (404, 405):  # no /tokenize (a plain OpenAI server): nothing to compare
                    break
                raise
            tokens[probe] = list(answer.get("tokens", [])) if isinstance(answer, dict) else None
        served.raw["tokenize"] = tokens
        return served

    def _tokenizer_problem(self, info: wire.ServedModel) -> str | None:
        for probe, ids in info.raw.get("tokenize", {}).items():
            mine = list(self._tokenizer(probe, add_special_tokens=True)["input_ids"])
            if ids != mine:
                return f"/tokenize of {probe!r} gives {ids}, the local tokenizer {mine}"
        return None

    def _refusal(self, info: wire.ServedModel) -> str:
        if info.identity != self.reference.identity:
            return f"serves {info.model_id} (max_model_len {info.max_model_len}), not {self.model_id}"
        return self._tokenizer_problem(info) or ""

    def _admit(self, endpoint: Endpoint, info: wire.ServedModel) -> None:
        endpoint.info = info
        endpoint.limit = self.concurrency
