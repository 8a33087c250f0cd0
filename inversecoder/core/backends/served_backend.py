"""The engine-agnostic half of a served backend: requests routed to the least-loaded healthy endpoint,
retried with capped jittered backoff (Retry-After honoured), batches streamed back as they complete,
health checks taking endpoints out of and back into the rotation, progress with tokens/s.

An engine (TGI, OpenAI-compatible) supplies its clients, how it reads an endpoint's model description,
how it classifies a failure, and the items themselves; see tgi.py and openai_backend.py.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import queue
import random
import time
import weakref
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self, TypeVar

from inversecoder.core.backends.base import (
    Backend,
    Completion,
    GenerationRequest,
    SamplingParams,
    YesNoScore,
)
from inversecoder.core.backends.serving import (
    STRIKES_OUT,
    Endpoint,
    ItemError,
    LoopRunner,
    MisconfiguredEndpoint,
    Router,
    Verdict,
    normalize_url,
    origin,
)
from inversecoder.core.errors import ConfigError

if TYPE_CHECKING:
    from inversecoder.core.config import GeneratorConfig

log = logging.getLogger(__name__)
T = TypeVar("T")
_Result = TypeVar("_Result", Completion, YesNoScore)


@dataclass
class Call:
    """The state of one protocol call: its clients, slots, progress bar."""

    client: Any
    http: Any
    router: Router
    bar: Any
    started: float
    tokens: tuple[int, int] = (0, 0)  # the totals' prompt and generated tokens when the call started
    shown: float = 0.0


class ServedBackend(Backend):
    """Several endpoints serving one model, behind the backend protocol (subclassed per engine)."""

    ENGINE = "served"  # in messages: "<ENGINE> endpoint http://... leaves the rotation"
    INFO_ROUTE = "/info"

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        backend_name: str,
        concurrency: int,
        request_timeout: float,
        max_retries: int,
        retry_backoff: float,
        retry_backoff_max: float,
        health_interval: float,
        health_timeout: float,
        requests_per_batch: int | None,
        progress: bool,
        token: str | None,
    ):
        urls = [normalize_url(url) for url in endpoints]
        if not urls:
            raise ConfigError(
                f"generator.endpoints is empty: backend '{backend_name}' needs at least one URL, e.g. [http://h1:8080]"
            )
        if len(set(urls)) != len(urls):
            raise ConfigError(f"generator.endpoints lists an endpoint twice: {urls}")
        for name, value, least in (("concurrency", concurrency, 1), ("max_retries", max_retries, 0)):
            if value < least:
                raise ConfigError(f"generator.{name} must be >= {least}, got {value}")
        for name, seconds in (
            ("request_timeout", request_timeout),
            ("health_interval", health_interval),
            ("health_timeout", health_timeout),
        ):
            if not seconds > 0:
                raise ConfigError(f"generator.{name} must be > 0 seconds, got {seconds}")
        if requests_per_batch is not None and requests_per_batch < 1:
            raise ConfigError(f"generator.requests_per_batch must be >= 1 (or null), got {requests_per_batch}")
        self.endpoints = [Endpoint(url, concurrency) for url in urls]
        self.concurrency = concurrency
        self.request_timeout = request_timeout
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self.retry_backoff_max = retry_backoff_max
        self.health_interval = health_interval
        self.health_timeout = health_timeout
        self.requests_per_batch = requests_per_batch
        self.progress = progress
        self.totals = {
            "requests": 0,
            "retries": 0,
            "failed_items": 0,
            "rejected_items": 0,
            "prompt_tokens": 0,
            "generated_tokens": 0,
            "logprob_requests": 0,
        }
        self._origins = frozenset(origin(url) for url in urls)
        self._jitter = random.Random()
        self._warned_setup = False
        self._runner = LoopRunner(token)
        self._finalizer = weakref.finalize(self, self._runner.close)

    @classmethod
    def from_config(cls, config: GeneratorConfig, progress: bool = True) -> Self:
        if not config.model:
            raise ConfigError("generator.model is required: a Hub model id or a local model folder")
        settings = {**served_settings(config), **cls.engine_settings(config)}
        engine: Any = cls  # each engine's constructor takes (endpoints, model, revision, ..., its own settings)
        return engine(config.endpoints, config.model, config.revision, progress=progress, **settings)

    @classmethod
    def engine_settings(cls, config: GeneratorConfig) -> dict[str, Any]:
        """The engine's own settings from the config (beyond `served_settings`)."""
        return {}

    # -- what an engine supplies ------------------------------------------------------------------
    @abc.abstractmethod
    async def _open_clients(self) -> tuple[Any, Any]:
        """(client, http) for this call, made once per loop and kept on the runner."""

    @abc.abstractmethod
    def _classify(self, error: BaseException) -> Verdict: ...

    @abc.abstractmethod
    async def _healthy(self, call: Call, endpoint: Endpoint) -> bool: ...

    @abc.abstractmethod
    async def _read_info(self, call: Call, endpoint: Endpoint) -> Any:
        """The endpoint's description of what it serves (with `.identity`, `.model_id`, `.model_sha`)."""

    @abc.abstractmethod
    def _refusal(self, info: Any) -> str:
        """Why an endpoint joining mid-run cannot serve this run ('' if it can)."""

    @abc.abstractmethod
    def _admit(self, endpoint: Endpoint, info: Any) -> None:
        """Adopt `info` for `endpoint` (its limits) as it joins the rotation."""

    # -- protocol ---------------------------------------------------------------------------------
    def plan_batches(self, prompts: Sequence[str], new_tokens: int) -> list[list[int]]:
        """Consecutive chunks, each one cache transaction: by default 8 x the slots of all endpoints, so
        every endpoint stays full for most of a chunk (the servers batch what is in flight on their own)."""
        size = self.requests_per_batch or 8 * sum(e.limit for e in self.endpoints if not e.refused)
        return [list(range(start, min(start + size, len(prompts)))) for start in range(0, len(prompts), size)]

    def generate(self, requests: Sequence[GenerationRequest], params: SamplingParams) -> list[Completion]:
        return dict(self.generate_batches(requests, [list(range(len(requests)))], params))[0]

    def score_yes_no(self, prompts: Sequence[str]) -> list[YesNoScore]:
        return dict(self.score_batches(prompts, [list(range(len(prompts)))]))[0]

    def close(self) -> None:
        """Close the connections and the event loop (also done when the backend is garbage-collected)."""
        self._finalizer()

    def endpoint_stats(self) -> list[dict[str, Any]]:
        """Per endpoint: requests, errors, times out of / back in the rotation, state, last error."""
        return [
            {
                "url": e.url,
                "up": e.up,
                "refused": e.refused,
                "requests": e.requests,
                "errors": e.errors,
                "went_down": e.went_down,
                "came_back": e.came_back,
                "last_error": e.last_error,
            }
            for e in self.endpoints
        ]

    # -- calls and streams ------------------------------------------------------------------------
    async def _in_session(self, work: Callable[[Call], Awaitable[T]], total: int, desc: str, health: bool = True) -> T:
        """Run `work` with the clients, health checks and a progress bar."""
        from tqdm.auto import tqdm

        client, http = await self._open_clients()
        # Shown on a terminal (under CachedModel's bar, which has the overall ETA); a log file gets none.
        bar = tqdm(
            total=total,
            desc=f"{self.ENGINE.lower()} {desc}",
            unit="item",
            leave=False,
            dynamic_ncols=True,
            disable=True if not self.progress or total == 0 else None,
        )
        call = Call(
            client,
            http,
            Router(self.endpoints),
            bar,
            time.monotonic(),
            (self.totals["prompt_tokens"], self.totals["generated_tokens"]),
        )
        checks = asyncio.create_task(self._health_loop(call)) if health else None
        try:
            return await work(call)
        finally:
            if checks is not None:
                checks.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await checks
            bar.close()

    def _stream(
        self, batches: Sequence[Sequence[int]], jobs: Callable[[Call, Sequence[int]], Awaitable[list]], desc: str
    ) -> Generator[tuple[int, list], None, None]:
        """Start the items of all batches in order, at most 2 x the endpoints' slots at a time (the rest
        wait here, not on a slot with a deadline), and yield each batch when complete: requests flow
        without a pause at batch ends, so no slot idles behind a batch's slowest item."""

        async def work(out: queue.Queue[tuple[int, list]]) -> None:
            async def session(call: Call) -> None:
                window = asyncio.Semaphore(2 * max(1, sum(e.limit for e in self.endpoints if not e.refused)))
                running: set[asyncio.Task] = set()
                failed: list[BaseException] = []

                async def item(
                    k: int, position: int, job: Callable[[], Awaitable[Any]], results: list, left: list[int]
                ) -> None:
                    try:
                        results[position] = await job()
                    finally:
                        window.release()
                    left[0] -= 1
                    if left[0] == 0:
                        out.put((k, results))

                def finished(task: asyncio.Task) -> None:
                    running.discard(task)
                    if not task.cancelled() and (error := task.exception()) is not None:
                        failed.append(error)

                # The next batch's jobs (its prompts tokenized in a worker thread: ~10 s for 16K score
                # prompts) are made while this batch's items start: awaited only then, the in-flight
                # items drained and the slots idled for most of it (the rehearsal's score phase).
                upcoming = asyncio.ensure_future(jobs(call, batches[0])) if batches else None
                try:
                    for k in range(len(batches)):
                        assert upcoming is not None
                        batch_jobs = await upcoming
                        upcoming = asyncio.ensure_future(jobs(call, batches[k + 1])) if k + 1 < len(batches) else None
                        results: list = [None] * len(batch_jobs)
                        left = [len(batch_jobs)]
                        if not batch_jobs:
                            out.put((k, results))
                        for position, job in enumerate(batch_jobs):
                            await window.acquire()
                            if failed:
                                raise failed[0]
                            task = asyncio.create_task(item(k, position, job, results, left))
                            running.add(task)
                            task.add_done_callback(finished)
                    while running and not failed:
                        await asyncio.wait(set(running), return_when=asyncio.FIRST_EXCEPTION)
                    if failed:
                        raise failed[0]
                finally:
                    leftover = [*running, *([upcoming] if upcoming is not None else [])]
                    for task in leftover:
                        task.cancel()
                    await asyncio.gather(*leftover, return_exceptions=True)

            await self._in_session(session, sum(len(b) for b in batches), desc)

        return self._runner.stream(work)

    @staticmethod
    def _no_room(n: int, top: int, limit: str) -> ItemError:
        """The final error of a prompt with no room for one more token: its answer tokens outside the top
        `top` cannot be read from prompt logprobs."""
        return ItemError(
            f"prompt has {n} tokens: no room to read the exact logprob of an answer token outside the top {top} "
            f"({limit})",
            final=True,
        )

    def _done(self, call: Call, result: _Result) -> _Result:
        """Count an item's outcome and refresh the progress bar (tokens/s in and out, retries, endpoints up)."""
        if result.error is not None:
            self.totals["failed_items" if result.retryable else "rejected_items"] += 1
        call.bar.update(1)
        now = time.monotonic()
        if now - call.shown > 0.5 and not call.bar.disable:
            call.shown = now
            elapsed = max(now - call.started, 1e-9)
            call.bar.set_postfix(
                tok_in_s=f"{(self.totals['prompt_tokens'] - call.tokens[0]) / elapsed:.0f}",
                tok_out_s=f"{(self.totals['generated_tokens'] - call.tokens[1]) / elapsed:.0f}",
                retries=self.totals["retries"],
                failed=self.totals["failed_items"],
                up=f"{sum(e.up for e in self.endpoints)}/{len(self.endpoints)}",
                refresh=False,
            )
        return result

    # -- one request: route, deadline, retry ----------------------------------------------------
    async def _request(self, call: Call, send: Callable[[Any, str], Awaitable[T]]) -> T:
        """One HTTP request (`send(client, url)`), routed and retried; raises ItemError once it cannot
        succeed in this run."""
        avoid: Endpoint | None = None
        last = "no endpoint was tried"
        delay = 0.0  # set by each failed attempt for the next one
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.totals["retries"] += 1
                await asyncio.sleep(delay)
            endpoint = await call.router.acquire(avoid, self.request_timeout)
            if endpoint is None:
                last = f"no healthy endpoint had room within {self.request_timeout:g}s"
                delay = self._backoff(attempt + 1, None)
                continue
            self.totals["requests"] += 1
            endpoint.requests += 1
            try:
                # asyncio.timeout, not wait_for: no extra task per request, so no extra loop iteration
                # between an answer arriving and its slot going to the next request.
                async with asyncio.timeout(self.request_timeout):
                    result = await send(call.client, endpoint.url)
            except asyncio.CancelledError:
                call.router.release(endpoint)
                raise
            except MisconfiguredEndpoint as error:
                call.router.release(endpoint)
                if not self._warned_setup:
                    self._warned_setup = True
                    log.warning("%s endpoint %s: %s", self.ENGINE, endpoint.url, error)
                raise ItemError(f"{endpoint.url}: {error}") from None
            except ItemError:
                call.router.release(endpoint)
                raise
            except Exception as error:
                verdict = self._classify(error)
                endpoint.errors += 1
                endpoint.last_error = verdict.message
                call.router.release(endpoint)
                self._judge(call, endpoint, verdict)
                last = f"{endpoint.url}: {verdict.message}"
                if not verdict.retry:
                    raise ItemError(last, final=verdict.final) from None
                avoid = endpoint
                delay = self._backoff(attempt + 1, verdict.retry_after)
                continue
            endpoint.strikes = 0
            call.router.release(endpoint)
            return result
        raise ItemError(f"failed after {self.max_retries + 1} attempts; last error: {last}")

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Capped exponential, jittered (so retries of many items spread out); Retry-After, up to the request
        timeout, when the server gave one."""
        delay = min(self.retry_backoff_max, self.retry_backoff * 2 ** (attempt - 1)) * self._jitter.uniform(0.5, 1.0)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.request_timeout))
        return delay

    def _judge(self, call: Call, endpoint: Endpoint, verdict: Verdict) -> None:
        if verdict.endpoint == "ok":
            return
        endpoint.strikes += 1
        if verdict.endpoint == "down" or endpoint.strikes >= STRIKES_OUT:
            self._set_up(call, endpoint, False, verdict.message)

    def _set_up(self, call: Call, endpoint: Endpoint, up: bool, reason: str = "") -> None:
        if endpoint.up == up:
            return
        endpoint.up = up
        if up:
            endpoint.came_back += 1
            endpoint.strikes = 0
            log.warning("%s endpoint %s is back in the rotation", self.ENGINE, endpoint.url)
            call.router.wake()
        else:
            endpoint.went_down += 1
            log.warning("%s endpoint %s leaves the rotation: %s", self.ENGINE, endpoint.url, reason)

    # -- health and discovery ----------------------------------------------------------------------
    async def _health_loop(self, call: Call) -> None:
        while True:
            await asyncio.gather(*(self._check(call, e) for e in self.endpoints if not e.refused))
            await asyncio.sleep(self.health_interval)

    async def _check(self, call: Call, endpoint: Endpoint) -> None:
        """/health within `health_timeout` (and, for a returning endpoint, the same model) or out."""
        try:
            healthy = await asyncio.wait_for(self._healthy(call, endpoint), self.health_timeout)
            reason = "" if healthy else "/health did not answer 200"
            if healthy and not endpoint.up:
                info = await asyncio.wait_for(self._read_info(call, endpoint), self.health_timeout)
                endpoint.refused = self._refusal(info) or None
                if endpoint.refused:
                    log.warning("%s endpoint %s is refused: it %s", self.ENGINE, endpoint.url, endpoint.refused)
                    healthy, reason = False, endpoint.refused
                else:
                    self._admit(endpoint, info)
        except Exception as error:
            healthy, reason = False, self._classify(error).message
        self._set_up(call, endpoint, healthy, reason)

    async def _discover(self) -> Any:
        """Read the model description of every endpoint; refuse a mixed fleet; admit the ones that answered."""

        async def read_all(call: Call):
            return await asyncio.gather(
                *(asyncio.wait_for(self._read_info(call, e), self.health_timeout) for e in self.endpoints),
                return_exceptions=True,
            )

        answers = await self._in_session(read_all, 0, "info", health=False)
        reachable = [(e, a) for e, a in zip(self.endpoints, answers, strict=True) if not isinstance(a, BaseException)]
        if not reachable:
            reasons = "; ".join(
                f"{e.url}: {self._classify(a).message if isinstance(a, Exception) else a}"
                for e, a in zip(self.endpoints, answers, strict=True)
            )
            raise ConfigError(f"no {self.ENGINE} endpoint answered {self.INFO_ROUTE} ({reasons})")
        identities = {a.identity for _, a in reachable}
        if len(identities) > 1:
            served = ", ".join(f"{e.url} serves {a.model_id}@{a.model_sha or 'no sha'}" for e, a in reachable)
            raise ConfigError(f"the {self.ENGINE} endpoints serve different models or revisions: {served}")
        for endpoint, answer in zip(self.endpoints, answers, strict=True):
            if not isinstance(answer, BaseException):
                endpoint.up = True
                self._admit(endpoint, answer)
            else:
                endpoint.last_error = self._classify(answer).message
                log.warning(
                    "%s endpoint %s did not answer %s (%s): it joins when /health passes",
                    self.ENGINE,
                    endpoint.url,
                    self.INFO_ROUTE,
                    endpoint.last_error,
                )
        return reachable[0][1]


def served_settings(config: Any) -> dict[str, Any]:
    """The `generator` settings every served backend takes (routing, deadlines, retries, health)."""
    # the URLs, vllm-local's engine arguments, the embedded backend's replicas, what a build does with failures
    others = ("endpoints", "vllm_args", "replicas", "max_failed_fraction", "retry_rounds")
    return {name: getattr(config, name) for name in config.TRANSPORT_FIELDS if name not in others}
