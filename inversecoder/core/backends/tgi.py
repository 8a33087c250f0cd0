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
- `HF_HUB_OFFLINE=1` makes huggingface_hub's own HTTP client refuse every URL, 127.0.0.1 included (the
  check sits in the request hook of its default async client factory, `utils/_http.py`). The documented
  way around it is `set_async_client_factory`: inside this backend's calls only (a ContextVar), the
  factory hands `AsyncInferenceClient` a client that reaches the configured endpoints and still
  applies huggingface_hub's hook, offline block included, to any other URL. Elsewhere the process
  keeps huggingface_hub's usual client, so the Hub stays blocked.

The engine-agnostic half (routing, retries, health, batch streams, the loop runner) lives in
served_backend.py and serving.py, shared with the OpenAI-compatible backends; the old private names stay
importable from here. This module keeps TGI's own parts: its lean httpx2 transport (the tests and
benchmarks/tgi_client.py patch `_Http11Transport` and `_without_token_details` on this module), the
huggingface_hub client factory, `/info`, the failure rules of its status codes, and `check-endpoints`.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import logging
import re
import threading
import time
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx2

from inversecoder.core.backends.base import (
    BackendInfo,
    Completion,
    GenerationRequest,
    SamplingParams,
    YesNoScore,
)
from inversecoder.core.backends.served_backend import Call as _Call
from inversecoder.core.backends.served_backend import ServedBackend
from inversecoder.core.backends.serving import (
    HUB_TOKEN_HOSTS,
    STRIKES_OUT,
    format_report,
    may_carry_hub_token,
    retry_after_seconds,
    run_check,
    yes_no_score,
)
from inversecoder.core.backends.serving import Endpoint as _Endpoint
from inversecoder.core.backends.serving import ItemError as _ItemError
from inversecoder.core.backends.serving import LoopRunner as _LoopRunner
from inversecoder.core.backends.serving import MisconfiguredEndpoint as _MisconfiguredEndpoint
from inversecoder.core.backends.serving import Router as _Router
from inversecoder.core.backends.serving import Verdict as _Verdict
from inversecoder.core.backends.serving import cached_ref as _cached_ref
from inversecoder.core.backends.serving import hf_token as _hf_token
from inversecoder.core.backends.serving import local_revision as _local_revision
from inversecoder.core.backends.serving import local_tokenizer as _local_tokenizer
from inversecoder.core.backends.serving import logsumexp as _logsumexp
from inversecoder.core.backends.serving import normalize_url as _normalize_url
from inversecoder.core.backends.serving import origin as _origin
from inversecoder.core.backends.serving import sigmoid as _sigmoid
from inversecoder.core.errors import ConfigError, UserError

if TYPE_CHECKING:
    from huggingface_hub import AsyncInferenceClient

    from inversecoder.core.config import GeneratorConfig

__all__ = [  # the names moved to serving.py that callers and tests still import from here
    "HUB_TOKEN_HOSTS",
    "STRIKES_OUT",
    "_Endpoint",
    "_ItemError",
    "_LoopRunner",
    "_MisconfiguredEndpoint",
    "_Router",
    "_Verdict",
    "_logsumexp",
    "_sigmoid",
    "check_endpoints",
    "classify",
    "endpoint_http_client",
    "format_endpoint_report",
    "may_carry_hub_token",
]

log = logging.getLogger(__name__)
T = TypeVar("T")
_Result = TypeVar("_Result", Completion, YesNoScore)

#: TGI's own default for `--max-top-n-tokens`; `/info` does not report the server's value.
TGI_DEFAULT_MAX_TOP_N_TOKENS = 5
_INPUT_TOO_LONG = re.compile(r"`inputs` (must have less than|tokens \+ `max_new_tokens` must be)")
_TOP_N_LIMIT = re.compile(r"`top_n_tokens` must be >= 0 and <= (\d+)")


# -- HTTP: a lean keep-alive transport, reachable under HF_HUB_OFFLINE ---------------------------------
class _Http11Transport(httpx2.AsyncBaseTransport):
    """Plain-http HTTP/1.1 with keep-alive, for the TGI endpoints (https goes to httpx2's own transport).

    httpcore's pool costs milliseconds of CPU per request at 64+ requests in flight (it scans every
    connection on each request and writes headers and body separately): with short scoring requests
    one client process would saturate before a few TGI servers do. This writes a request in one call
    and reads the answer with asyncio streams, ~4x less CPU (benchmarks/tgi_client.py).
    """

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = {}
        self._fallback: httpx2.AsyncBaseTransport | None = None

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        url = request.url
        if url.scheme != "http":
            if self._fallback is None:
                self._fallback = httpx2.AsyncHTTPTransport()
            response = await self._fallback.handle_async_request(request)
            if response.status_code != 200 or _TOKEN_DETAILS.get() or not _is_generate(request):
                return response
            content = await response.aread()  # decoded: content-encoding no longer applies
            await response.aclose()
            return _summary_response(response.headers.raw, content, request)
        timeouts = request.extensions.get("timeout") or {}
        key = (url.host, url.port or 80)
        try:
            body = request.content
        except httpx2.RequestNotRead:
            body = await request.aread()
        payload = _serialize(request, body)
        idle = self._idle.get(key)
        while idle:  # a keep-alive connection the server has not closed meanwhile
            connection = idle.pop()
            if not connection[0].at_eof() and not connection[1].is_closing():
                try:
                    return await self._exchange(connection, key, payload, request, timeouts)
                except _StaleConnection:
                    # Closed before any answer (an idle timeout, a restart, a dropped request): /generate
                    # is a pure function of its body, so sending it again on a fresh connection is safe.
                    continue
            connection[1].close()
        try:
            reader, writer = await _deadline(
                asyncio.open_connection(*key), timeouts.get("connect"), httpx2.ConnectTimeout, request
            )
        except OSError as error:
            raise httpx2.ConnectError(str(error), request=request) from None
        try:
            return await self._exchange((reader, writer), key, payload, request, timeouts)
        except _StaleConnection:
            raise httpx2.RemoteProtocolError(
                "server disconnected without sending a response", request=request
            ) from None

    async def _exchange(self, connection, key, payload: bytes, request: httpx2.Request, timeouts) -> httpx2.Response:
        reader, writer = connection
        received = False
        try:
            writer.write(payload)
            await writer.drain()
            head = await _deadline(reader.readuntil(b"\r\n\r\n"), timeouts.get("read"), httpx2.ReadTimeout, request)
            received = True
            status, headers, keep_alive, length, chunked = _parse_head(head)
            if request.method == "HEAD" or status in (204, 304) or status < 200:
                content = b""
            elif chunked:
                content = await _deadline(_read_chunked(reader), timeouts.get("read"), httpx2.ReadTimeout, request)
            elif length is not None:
                content = await _deadline(reader.readexactly(length), timeouts.get("read"), httpx2.ReadTimeout, request)
            else:
                content, keep_alive = (
                    await _deadline(reader.read(), timeouts.get("read"), httpx2.ReadTimeout, request),
                    False,
                )
        except BaseException as error:
            writer.close()  # never reuse a connection with an answer in flight
            if isinstance(error, asyncio.IncompleteReadError) and not error.partial and not received:
                raise _StaleConnection from None
            if isinstance(error, (ConnectionResetError, BrokenPipeError)) and not received:
                raise _StaleConnection from None
            if isinstance(error, (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError)):
                raise httpx2.RemoteProtocolError(
                    f"malformed or truncated response: {type(error).__name__}", request=request
                ) from None
            if isinstance(error, OSError):
                raise httpx2.ReadError(f"connection lost: {error}", request=request) from None
            raise
        if keep_alive:
            self._idle.setdefault(key, []).append(connection)
        else:
            writer.close()
        if status == 200 and not _TOKEN_DETAILS.get() and _is_generate(request) and not _encoded(headers):
            return _summary_response(headers, content, request)
        return httpx2.Response(status, headers=headers, stream=httpx2.ByteStream(content), request=request)

    async def aclose(self) -> None:
        for connections in self._idle.values():
            for _reader, writer in connections:
                writer.close()
        self._idle.clear()
        if self._fallback is not None:
            await self._fallback.aclose()


_TOKEN_DETAILS: contextvars.ContextVar[bool] = contextvars.ContextVar("inversecoder_tgi_token_details", default=True)
"""False while a caller needs only the summary of `details` (finish reason, token count). TGI has no flag
for that: `details=True` always lists every generated token, and huggingface_hub turns each into a
dataclass (~50 us a token here: 16 ms of CPU for a 300-token answer, far more than the HTTP exchange).
The transport then drops the list before huggingface_hub parses the answer."""


def _is_generate(request: httpx2.Request) -> bool:
    return request.url.path.endswith("/generate")


def _encoded(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the body is compressed (left as it is: httpx2 decodes it)."""
    return any(
        name.lower() == b"content-encoding" and value.strip().lower() not in (b"", b"identity")
        for name, value in headers
    )


def _summary_response(headers: list[tuple[bytes, bytes]], content: bytes, request: httpx2.Request) -> httpx2.Response:
    """A 200 `/generate` answer without its token list; length and encoding headers no longer apply."""
    kept = [(name, value) for name, value in headers if name.lower() not in (b"content-length", b"content-encoding")]
    return httpx2.Response(
        200, headers=kept, stream=httpx2.ByteStream(_without_token_details(content)), request=request
    )


def _without_token_details(content: bytes) -> bytes:
    """The `/generate` answer without `details.tokens` (unchanged when it is not the JSON expected)."""
    try:
        data = json.loads(content)
    except ValueError:
        return content
    for answer in data if isinstance(data, list) else [data]:
        details = answer.get("details") if isinstance(answer, dict) else None
        if isinstance(details, dict) and details.get("tokens"):
            details["tokens"] = []
    return json.dumps(data).encode()


class _StaleConnection(Exception):
    """A reused keep-alive connection was already closed by the server: the request never arrived."""


def _serialize(request: httpx2.Request, body: bytes) -> bytes:
    lines = [b"%s %s HTTP/1.1\r\n" % (request.method.encode(), request.url.raw_path)]
    lines.extend(name + b": " + value + b"\r\n" for name, value in request.headers.raw)
    lines.append(b"\r\n")
    lines.append(body)
    return b"".join(lines)


def _parse_head(head: bytes) -> tuple[int, list[tuple[bytes, bytes]], bool, int | None, bool]:
    lines = head[:-4].split(b"\r\n")
    version, status = lines[0].split(b" ", 2)[:2]
    keep_alive = version == b"HTTP/1.1"
    headers, length, chunked = [], None, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip(), value.strip()
        headers.append((name, value))
        lower = name.lower()
        if lower == b"content-length":
            length = int(value)
        elif lower == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif lower == b"connection":
            keep_alive = b"close" not in value.lower() and (keep_alive or b"keep-alive" in value.lower())
    return int(status), headers, keep_alive, length, chunked


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


async def _deadline(awaitable: Awaitable[T], seconds: float | None, error: type[httpx2.TimeoutException], request) -> T:
    if seconds is None:
        return await awaitable
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except TimeoutError:
        raise error(f"no answer within {seconds:g}s", request=request) from None


#: The origins (scheme://host:port) the current backend call may reach; None outside backend calls.
_ENDPOINT_ORIGINS: contextvars.ContextVar[frozenset[str] | None] = contextvars.ContextVar(
    "inversecoder_tgi_origins", default=None
)
_factory_lock = threading.Lock()
_factory_installed = False


def endpoint_http_client(origins: frozenset[str]) -> httpx2.AsyncClient:
    """An httpx2 client for the TGI endpoints (the lean transport); under HF_HUB_OFFLINE it refuses,
    as huggingface_hub's own client does, every URL that is not one of `origins`."""
    from huggingface_hub import constants
    from huggingface_hub.errors import OfflineModeIsEnabled

    async def hook(request: httpx2.Request) -> None:
        if _origin(request.url) not in origins and constants.is_offline_mode():
            raise OfflineModeIsEnabled(
                f"Cannot reach {request.url}: offline mode is enabled (HF_HUB_OFFLINE) "
                "and it is not a configured TGI endpoint"
            )
        if "authorization" in request.headers and not may_carry_hub_token(request.url):
            del request.headers["authorization"]  # huggingface_hub adds the user's token to every request

    return httpx2.AsyncClient(transport=_Http11Transport(), event_hooks={"request": [hook]}, timeout=None)


def _install_client_factory() -> None:
    """Once per process: huggingface_hub's async sessions created inside a backend call (the
    ContextVar is set) are endpoint clients; anywhere else, whatever factory was there before."""
    global _factory_installed
    with _factory_lock:
        if _factory_installed:
            return
        from huggingface_hub.utils import _http as hf_http
        from huggingface_hub.utils import set_async_client_factory

        previous = getattr(hf_http, "_GLOBAL_ASYNC_CLIENT_FACTORY", hf_http.default_async_client_factory)

        def factory() -> httpx2.AsyncClient:
            origins = _ENDPOINT_ORIGINS.get()
            return previous() if origins is None else endpoint_http_client(origins)

        set_async_client_factory(factory)
        _factory_installed = True


# -- endpoints -------------------------------------------------------------------------------------
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


NO_PREFILL_LOGPROBS = (
    "the endpoint returned no prompt logprobs (TGI >= 3.0 computes them only when launched with "
    "--enable-prefill-logprobs), so P(Yes)/P(No) of an answer token outside the top n cannot be read "
    "exactly: relaunch TGI with --enable-prefill-logprobs, or raise its --max-top-n-tokens and "
    "generator.top_n_tokens so that every answer token is inside the top n"
)


def _http_response(error: BaseException | None) -> httpx2.Response | None:
    seen = 0
    while error is not None and seen < 5:
        response = getattr(error, "response", None)
        if isinstance(response, httpx2.Response):
            return response
        error = error.__cause__ or error.__context__
        seen += 1
    return None


def _retry_after(response: httpx2.Response) -> float | None:
    return retry_after_seconds(response.headers.get("retry-after"))


def classify(error: BaseException) -> _Verdict:
    """TGI's status codes and transport failures, mapped to what to do next."""
    response = _http_response(error)
    if response is not None:
        status = response.status_code
        try:
            body = response.json()
            detail = f"{body.get('error_type', 'error')}: {body.get('error', '')}"
        except Exception:
            detail = response.text[:200]
        message = f"HTTP {status} {detail}"
        if status == 429:  # overloaded: alive, just busy
            return _Verdict(message, retry=True, retry_after=_retry_after(response), endpoint="ok")
        if status == 422:  # validation: repeating the same request cannot help
            return _Verdict(message, retry=False, final=bool(_INPUT_TOO_LONG.search(detail)), endpoint="ok")
        if status >= 500 or status in (408, 424):
            return _Verdict(message, retry=True, retry_after=_retry_after(response))
        return _Verdict(message, retry=False, endpoint="ok")  # 400/401/404...: the next run may succeed
    if isinstance(error, (httpx2.ConnectError, httpx2.ConnectTimeout)):
        return _Verdict(f"cannot connect ({error})", retry=True, endpoint="down")
    if isinstance(error, (TimeoutError, asyncio.TimeoutError, httpx2.TimeoutException)):
        return _Verdict(f"timed out ({type(error).__name__})", retry=True, endpoint="down")
    if isinstance(error, (httpx2.TransportError, OSError)):
        return _Verdict(f"connection failed ({type(error).__name__}: {error})", retry=True)
    return _Verdict(f"{type(error).__name__}: {str(error)[:200]}", retry=True)


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
            token=_hf_token(),
        )
        self.configured_model = model
        self._answers: dict[str, list[int]] | None = None
        self._answer_text: dict[int, str] = {}

        self.reference = self._runner.run(self._discover)
        self._check_configured_model(model, revision)
        self.model_id = self.reference.model_id
        self.revision = self.reference.model_sha or _local_revision(model) or revision or "unknown"
        self.max_input_tokens = min(e.info.max_input_tokens for e in self.endpoints if e.info)
        self.max_total_tokens = min(e.info.max_total_tokens for e in self.endpoints if e.info)
        self.max_stop_sequences = min(e.info.max_stop_sequences for e in self.endpoints if e.info)
        reported = [e.info.max_top_n_tokens for e in self.endpoints if e.info and e.info.max_top_n_tokens is not None]
        self.top_n_tokens = min([top_n_tokens, *reported])
        self._tokenizer = (
            tokenizer if tokenizer is not None else _local_tokenizer(model, self.model_id, self.reference.model_sha)
        )

    @classmethod
    def engine_settings(cls, config: GeneratorConfig) -> dict[str, Any]:
        return {"top_n_tokens": config.top_n_tokens}

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

        async def jobs(call: _Call, batch: Sequence[int]) -> list[Callable[[], Awaitable[Completion]]]:
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

        async def jobs(call: _Call, batch: Sequence[int]) -> list[Callable[[], Awaitable[YesNoScore]]]:
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
    async def _generate_one(self, call: _Call, request: GenerationRequest, ids, params: SamplingParams) -> Completion:
        if isinstance(ids, _ItemError):
            return self._done(call, Completion(None, "error", error=ids.message, retryable=not ids.final))
        n = len(ids)
        too_long = self._too_long(n, params.max_new_tokens)
        if too_long:
            return self._done(call, Completion(None, "error", n, 0, error=too_long))
        stop = [s for s in params.stop if s]
        options: dict[str, Any] = {"details": True, "max_new_tokens": params.max_new_tokens}
        if stop:
            options["stop"] = stop[: self.max_stop_sequences]  # any others are cut below, as the embedded backend does
        if params.repetition_penalty != 1.0:
            options["repetition_penalty"] = params.repetition_penalty
        if params.temperature > 0:
            options.update(do_sample=True, temperature=params.temperature, seed=_server_seed(request.seed))
            if params.top_p < 1.0:
                options["top_p"] = params.top_p
        else:
            options["do_sample"] = False

        async def send(client: AsyncInferenceClient, url: str) -> tuple[str, str, int]:
            summary_only = _TOKEN_DETAILS.set(False)  # finish reason and count: the per-token list is dropped
            try:
                output = await client.text_generation(request.prompt, model=url + "/generate", **options)
            finally:
                _TOKEN_DETAILS.reset(summary_only)
            return output.generated_text, str(output.details.finish_reason), int(output.details.generated_tokens)

        try:
            text, reason, count = await self._request(call, send)
        except _ItemError as error:
            return self._done(call, Completion(None, "error", n, 0, error=error.message, retryable=not error.final))
        finish = {"eos_token": "eos", "stop_sequence": "stop"}.get(reason, "length")
        cut = min((text.find(s) for s in stop if s in text), default=-1)
        if cut >= 0:
            text, finish = text[:cut], "stop"
        self.totals["prompt_tokens"] += n
        self.totals["generated_tokens"] += count
        # The embedded backend does not count the eos token.
        return self._done(call, Completion(text, finish, n, count - (reason == "eos_token")))

    async def _score_one(self, call: _Call, prompt: str, ids) -> YesNoScore:
        if isinstance(ids, _ItemError):
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
        except _ItemError as error:
            return self._done(call, YesNoScore(None, None, n, error=error.message, retryable=not error.final))
        score, mass = yes_no_score(logprobs, answers)
        self.totals["prompt_tokens"] += n
        return self._done(call, YesNoScore(score, mass, n))

    async def _first_token_logprobs(self, call: _Call, prompt: str) -> dict[int, float]:
        """Logprobs at the first response position: the greedy token's and the top `top_n_tokens`."""
        while True:
            sent = self.top_n_tokens

            async def send(client: AsyncInferenceClient, url: str) -> dict[int, float]:
                nonlocal sent
                sent = self.top_n_tokens  # read at send time: a limit adopted meanwhile applies at once
                options: dict[str, Any] = {"details": True, "max_new_tokens": 1, "do_sample": False}
                if sent > 0:
                    options["top_n_tokens"] = sent
                details = (await client.text_generation(prompt, model=url + "/generate", **options)).details
                tokens = [*details.tokens[:1], *(details.top_tokens or [[]])[0]]
                return {int(_get(t, "id")): float(_get(t, "logprob")) for t in tokens}

            try:
                return await self._request(call, send)
            except _ItemError as error:
                limit = _TOP_N_LIMIT.search(error.message)
                if limit is None or int(limit.group(1)) >= sent:
                    raise
                # The servers' --max-top-n-tokens is below the configured value (TGI's /info does not
                # say): adopt it and ask again; each round lowers it, so this ends.
                if int(limit.group(1)) < self.top_n_tokens:
                    self.top_n_tokens = int(limit.group(1))
                    log.warning("TGI endpoints accept top_n_tokens <= %d; using that", self.top_n_tokens)

    async def _appended_logprob(self, call: _Call, prompt: str, ids: list[int], token_id: int) -> float:
        """log P(token | prompt): the prefill logprob of `token` appended to the prompt."""
        text = self._appended_text(prompt, ids, token_id)
        self.totals["logprob_requests"] += 1

        async def send(client: AsyncInferenceClient, url: str) -> tuple[list[int], float | None]:
            output = await client.text_generation(
                prompt + text,
                model=url + "/generate",
                details=True,
                decoder_input_details=True,
                max_new_tokens=1,
                do_sample=False,
            )
            assert output.details is not None  # asked for with details=True
            prefill = output.details.prefill
            if not prefill:
                raise _MisconfiguredEndpoint(NO_PREFILL_LOGPROBS)
            return [int(_get(t, "id")) for t in prefill], _get(prefill[-1], "logprob")

        prefill_ids, logprob = await self._request(call, send)
        if prefill_ids != [*ids, token_id] or logprob is None:
            raise _ItemError(
                f"the prompt followed by {text!r} does not tokenize as the prompt plus token {token_id}: "
                "its exact logprob cannot be read",
                final=True,
            )
        return float(logprob)

    def _appended_text(self, prompt: str, ids: list[int], token_id: int) -> str:
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

    async def _read_info(self, call: _Call, endpoint: _Endpoint) -> EndpointInfo:
        return EndpointInfo.from_json(await call.client.get_endpoint_info(model=endpoint.url))

    async def _healthy(self, call: _Call, endpoint: _Endpoint) -> bool:
        return await call.client.health_check(endpoint.url)

    def _admit(self, endpoint: _Endpoint, info: EndpointInfo) -> None:
        endpoint.info = info
        endpoint.limit = min(self.concurrency, info.max_concurrent_requests or self.concurrency)

    def _classify(self, error: BaseException) -> _Verdict:
        return classify(error)

    async def _open_clients(self) -> tuple[AsyncInferenceClient, httpx2.AsyncClient]:
        """huggingface_hub's client (reachable under HF_HUB_OFFLINE) and an httpx2 one for /tokenize."""
        from huggingface_hub import AsyncInferenceClient

        _install_client_factory()
        _ENDPOINT_ORIGINS.set(self._origins)  # the client's httpx2 session is made in this context
        runner = self._runner
        if runner.client is None:
            runner.client = AsyncInferenceClient(provider="hf-inference", token=runner.token)
            runner.http = endpoint_http_client(self._origins)
        return runner.client, runner.http

    def _check_configured_model(self, model: str | None, revision: str | None) -> None:
        served = self.reference
        if model and not Path(model).expanduser().is_dir() and model != served.model_id:
            raise ConfigError(f"generator.model is '{model}' but the TGI endpoints serve '{served.model_id}'")
        if not (revision and served.model_sha):
            return
        wanted = revision if re.fullmatch(r"[0-9a-f]{7,40}", revision) else _cached_ref(served.model_id, revision)
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
    async def _count(self, call: _Call, prompts: list[str]) -> list:
        """Token ids of each prompt as the servers count them: the local tokenizer, else /tokenize."""
        if not prompts:
            return []
        if self._tokenizer is not None:
            return [list(ids) for ids in self._tokenizer(prompts, add_special_tokens=True)["input_ids"]]
        found = await asyncio.gather(*(self._tokenize(call, p) for p in prompts), return_exceptions=True)
        return [
            [t["id"] for t in f] if isinstance(f, list) else f if isinstance(f, _ItemError) else _ItemError(str(f))
            for f in found
        ]

    async def _tokenize(self, call: _Call, text: str) -> list[dict[str, Any]]:
        async def send(_client, url: str):
            response = await call.http.post(url + "/tokenize", json={"inputs": text})
            response.raise_for_status()
            return response.json()

        return await self._request(call, send)

    async def _resolve_answers(self, call: _Call) -> None:
        if self._answers is not None:
            return
        from inversecoder.core.backends.transformers_backend import resolve_answer_token_ids

        if self._tokenizer is not None:
            answers = {
                "yes": resolve_answer_token_ids(self._tokenizer, "Yes"),
                "no": resolve_answer_token_ids(self._tokenizer, "No"),
            }
            texts = {i: self._tokenizer.decode([i]) for ids in answers.values() for i in ids}
        else:  # no local tokenizer: the ids of "Yes" and " Yes" alone, as the servers tokenize them
            answers, texts = {}, {}
            for word in ("Yes", "No"):
                ids = []
                for variant in (word, " " + word):
                    try:
                        pieces = [t for t in await self._tokenize(call, variant) if t["start"] < t["stop"]]
                    except _ItemError as error:
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


# -- helpers ---------------------------------------------------------------------------------------
def _server_seed(seed: int) -> int:
    """TGI's schema wants a positive seed: shift by one (a bijection, so seeds stay distinct)."""
    return seed % (2**63 - 1) + 1


def _get(obj: Any, name: str) -> Any:
    """huggingface_hub parses tokens/prefill into dataclasses but leaves top_tokens as plain dicts."""
    return obj[name] if isinstance(obj, dict) else getattr(obj, name)


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])


# -- check-endpoints -------------------------------------------------------------------------------
REPORT_FIELDS = (
    "model_id",
    "model_sha",
    "max_input_tokens",
    "max_total_tokens",
    "max_top_n_tokens",
    "max_best_of",
    "max_stop_sequences",
    "max_concurrent_requests",
    "version",
    "sha",
)


def check_endpoints(config: GeneratorConfig, timeout: float | None = None) -> list[dict[str, Any]]:
    """Per configured endpoint: health (and how long it took) plus the /info fields that matter here.
    `max_top_n_tokens` is probed (one 1-token request) because TGI's /info does not report it."""
    urls = [_normalize_url(url) for url in config.endpoints]
    if not urls:
        raise ConfigError("generator.endpoints is empty: nothing to check")
    timeout = timeout or config.health_timeout
    origins = frozenset(_origin(url) for url in urls)

    async def one(client: AsyncInferenceClient, url: str) -> dict[str, Any]:
        row: dict[str, Any] = {"url": url}
        started = time.monotonic()
        try:
            row["healthy"] = await asyncio.wait_for(client.health_check(url), timeout)
            row["health_ms"] = round((time.monotonic() - started) * 1000)
        except Exception as error:
            row.update(healthy=False, error=classify(error).message)
            return row
        try:
            info = EndpointInfo.from_json(await asyncio.wait_for(client.get_endpoint_info(model=url), timeout))
        except Exception as error:
            row["error"] = classify(error).message if not isinstance(error, ValueError) else str(error)
            return row
        row.update({name: info.raw.get(name) for name in REPORT_FIELDS})
        row["max_input_tokens"] = info.max_input_tokens
        if info.max_top_n_tokens is None:
            row["max_top_n_tokens"] = await _probe_top_n(client, url, config.top_n_tokens, timeout)
        row["prefill_logprobs"] = await _probe_prefill_logprobs(client, url, timeout)
        return row

    async def run() -> list[dict[str, Any]]:
        from huggingface_hub import AsyncInferenceClient

        _install_client_factory()
        _ENDPOINT_ORIGINS.set(origins)
        async with AsyncInferenceClient(provider="hf-inference", token=_hf_token()) as client:
            return list(await asyncio.gather(*(one(client, url) for url in urls)))

    return run_check(run, ("model_id", "model_sha"))


async def _probe_top_n(client: AsyncInferenceClient, url: str, wanted: int, timeout: float) -> str:
    """'>= N' when a request with top_n_tokens=N passes; the server's limit when it says so; else '?'."""
    try:
        await asyncio.wait_for(
            client.text_generation(
                "Yes", model=url + "/generate", details=True, max_new_tokens=1, top_n_tokens=max(wanted, 1)
            ),
            timeout,
        )
        return f">= {max(wanted, 1)}"
    except Exception as error:
        limit = _TOP_N_LIMIT.search(classify(error).message)
        return limit.group(1) if limit else "?"


async def _probe_prefill_logprobs(client: AsyncInferenceClient, url: str, timeout: float) -> str:
    """'yes' when the endpoint returns prompt logprobs (exact scores of answer tokens outside the top n
    need them); TGI >= 3.0 answers an empty list unless launched with --enable-prefill-logprobs."""
    try:
        output = await asyncio.wait_for(
            client.text_generation(
                "Yes No", model=url + "/generate", details=True, decoder_input_details=True, max_new_tokens=1
            ),
            timeout,
        )
    except Exception as error:
        return f"? ({classify(error).message})"
    assert output.details is not None  # asked for with details=True
    return "yes" if output.details.prefill else "no (--enable-prefill-logprobs)"


def format_endpoint_report(rows: list[dict[str, Any]]) -> str:
    """A table (one row per endpoint) and a verdict line for `inversecoder check-endpoints`."""
    lines = format_report(rows, (*REPORT_FIELDS, "prefill_logprobs"))
    if any(str(r.get("prefill_logprobs", "")).startswith("no") for r in rows):
        lines.append(
            "note: endpoints marked 'no' return no prompt logprobs: a score whose Yes/No token is outside "
            "the top n fails there; launch TGI with --enable-prefill-logprobs"
        )
    return "\n".join(lines)
