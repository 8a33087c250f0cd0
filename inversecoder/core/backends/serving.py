"""What every served-engine backend (TGI, vLLM, SGLang, OpenAI-compatible) shares, whatever its protocol:
the event loop the synchronous protocol runs on, the endpoints and the least-loaded router, the failure
verdicts and Retry-After, and small helpers (URLs, the Hub token rule, the local tokenizer and revision).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import inspect
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from inversecoder.core.errors import ConfigError

log = logging.getLogger(__name__)
T = TypeVar("T")

#: 5xx answers in a row that take an endpoint out of the rotation (a refused connection or a timeout
#: takes it out at once; an isolated 500 or a dropped connection does not).
STRIKES_OUT = 3
#: Hosts of Hugging Face's Inference Endpoints and Spaces: servers there check the Hub token.
HUB_TOKEN_HOSTS = ("huggingface.co", ".huggingface.co", ".huggingface.cloud", ".hf.space")


class LoopRunner:
    """One event loop per backend, run to completion by each protocol call (the protocol is synchronous).

    The loop sleeps between calls but is not thrown away, so the keep-alive connections and clients
    survive from one planned batch to the next: reconnecting 128 sockets per batch cost ~15% of the
    client's CPU in benchmarks/tgi_client.py."""

    def __init__(self, token: str | None):
        self.loop = asyncio.new_event_loop()
        self.token = token
        self.client: Any = None  # created inside the loop, on first use; closed by close()
        self.http: Any = None
        self._lock = threading.Lock()
        self._streaming: int | None = None  # the thread holding the lock for an open stream

    def _check_not_streaming_here(self) -> None:
        if self._streaming == threading.get_ident():  # it would wait for itself
            raise RuntimeError("the backend is streaming batches in this thread: finish or close that stream first")

    def run(self, make: Callable[[], Awaitable[T]]) -> T:
        self._check_not_streaming_here()
        with self._lock:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return self.loop.run_until_complete(make())
            # Called from inside a running loop (a notebook): drive ours from a helper thread.
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                return pool.submit(lambda: self.loop.run_until_complete(make())).result()

    def stream(self, work: Callable[[queue.Queue[T]], Awaitable[None]]) -> Generator[T, None, None]:
        """Run `work(out)` on this loop in a helper thread and yield what it puts in `out` while it runs,
        so the caller handles results (stores them) while requests keep flowing. The work's error is
        raised here; closing the iterator early (the caller failed, Ctrl-C) cancels the work."""
        out: queue.Queue[T] = queue.Queue()
        main: list[asyncio.Task] = []

        async def run() -> None:
            task = asyncio.current_task()
            assert task is not None  # run() runs as the loop's task
            main.append(task)
            await work(out)

        future: concurrent.futures.Future[None] = concurrent.futures.Future()

        def drive() -> None:
            try:
                self.loop.run_until_complete(run())
                future.set_result(None)
            except BaseException as error:  # handed to the caller's thread
                future.set_exception(error)

        self._check_not_streaming_here()
        with self._lock:
            self._streaming = threading.get_ident()
            # A daemon thread: if the cancelled work ever failed to stop, neither this call nor the
            # interpreter's exit would wait for it forever.
            thread = threading.Thread(target=drive, name="backend-loop", daemon=True)
            thread.start()
            try:
                while True:
                    try:
                        found = out.get(timeout=0.1)
                    except queue.Empty:
                        if future.done() and out.empty():
                            future.result()
                            return
                        continue
                    yield found
            finally:
                if not future.done():
                    while not main and not future.done():
                        time.sleep(0.01)
                    if main:
                        self.loop.call_soon_threadsafe(main[0].cancel)
                thread.join(timeout=60)
                self._streaming = None
                if thread.is_alive():
                    log.error("the request loop did not stop within 60 s of being cancelled; abandoning it")

    def close(self) -> None:
        """Close the clients (their connections) and the loop; safe to call twice, or at exit."""
        if self.loop.is_closed():
            return

        async def shut() -> None:
            for resource in (self.client, self.http):
                if resource is not None:
                    closing = resource.aclose() if hasattr(resource, "aclose") else resource.close()
                    if inspect.isawaitable(closing):
                        await closing
            await self.loop.shutdown_default_executor()

        closing = shut()
        try:
            self.loop.run_until_complete(closing)
        except RuntimeError:  # e.g. garbage-collected while another loop runs here: the connections just drop
            closing.close()
        self.loop.close()


@dataclass
class Endpoint:
    """One server and what this process knows about it (kept across calls)."""

    url: str
    limit: int
    info: Any = None  # the engine's description of what it serves (has `.identity`)
    up: bool = False
    refused: str | None = None  # why it may not join this run (another model, lower limits)
    in_flight: int = 0
    strikes: int = 0
    requests: int = 0
    errors: int = 0
    went_down: int = 0
    came_back: int = 0
    last_error: str = ""


class Router:
    """Hands out request slots: the least-loaded healthy endpoint with room, FIFO for waiters."""

    def __init__(self, endpoints: list[Endpoint]):
        self.endpoints = endpoints
        self._waiters: deque[asyncio.Future] = deque()

    def _pick(self, avoid: Endpoint | None) -> Endpoint | None:
        best: Endpoint | None = None
        best_key: tuple[bool, float] | None = None
        for endpoint in self.endpoints:
            if endpoint.up and endpoint.in_flight < endpoint.limit:
                key = (endpoint is avoid, endpoint.in_flight / endpoint.limit)
                if best_key is None or key < best_key:
                    best, best_key = endpoint, key
        return best

    async def acquire(self, avoid: Endpoint | None, timeout: float) -> Endpoint | None:
        """A slot (the endpoint, its in-flight count taken), or None when none frees up in `timeout` s."""
        if not self._waiters:
            endpoint = self._pick(avoid)
            if endpoint is not None:
                endpoint.in_flight += 1
                return endpoint
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):  # wakes this task directly (wait_for + shield: two more hops)
                return await waiter
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                return waiter.result()  # handed over just as the wait ended
            waiter.cancel()
            return None
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(waiter.result())
            waiter.cancel()
            raise

    def release(self, endpoint: Endpoint) -> None:
        endpoint.in_flight -= 1
        self.wake()

    def wake(self) -> None:
        """Give free slots to queued waiters (after a release, or an endpoint coming back)."""
        while self._waiters:
            endpoint = self._pick(None)
            if endpoint is None:
                return
            waiter = self._waiters.popleft()
            if waiter.done():
                continue
            endpoint.in_flight += 1
            waiter.set_result(endpoint)


@dataclass(frozen=True)
class Verdict:
    """What a failed attempt means: retry now? is the answer final (cacheable)? what of the endpoint?"""

    message: str
    retry: bool
    final: bool = False  # the servers will never accept this item: a rejected (cached) result
    retry_after: float | None = None
    endpoint: str = "strike"  # ok | strike (out after STRIKES_OUT in a row) | down (out now)


class MisconfiguredEndpoint(Exception):
    """An answer the endpoint will give to every such request until it is relaunched differently:
    no retry and no strike (the endpoint works); the item fails for this run and is retried by the next."""


class ItemError(Exception):
    """An item that cannot be completed in this run (`final`: in no run)."""

    def __init__(self, message: str, final: bool = False):
        super().__init__(message)
        self.message = message
        self.final = final


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header in seconds: delay-seconds ("0.5" too) or an HTTP-date; None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


# -- helpers ---------------------------------------------------------------------------------------
def normalize_url(url: str) -> str:
    url = str(url).strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"generator.endpoints: '{url}' is not an http(s)://host:port URL")
    return url


def origin(url: Any) -> str:
    parts = urlsplit(str(url))
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{parts.hostname}:{port}"


def may_carry_hub_token(url: Any) -> bool:
    """Whether a request to `url` may carry the user's Hub token: only over https to Hugging Face's own
    hosts. A self-hosted server needs no token, and over plain http it would travel in clear text."""
    parts = urlsplit(str(url))
    host = (parts.hostname or "").lower()
    return parts.scheme == "https" and any(
        host == suffix or (suffix.startswith(".") and host.endswith(suffix)) for suffix in HUB_TOKEN_HOSTS
    )


def logsumexp(values: list[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return top
    return top + math.log(sum(math.exp(v - top) for v in values))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def yes_no_score(logprobs: dict[int, float], answers: dict[str, list[int]]) -> tuple[float, float]:
    """(P(Yes) / (P(Yes) + P(No)), the Yes+No share of all mass) from the answer tokens' logprobs."""
    log_yes = logsumexp([logprobs[i] for i in answers["yes"]])
    log_no = logsumexp([logprobs[i] for i in answers["no"]])
    return sigmoid(log_yes - log_no), math.exp(logsumexp([log_yes, log_no]))


def hf_token() -> str | None:
    """The user's Hub token, read once; sent only where `may_carry_hub_token` allows (Inference Endpoints)."""
    from huggingface_hub import get_token

    return get_token()


def cached_ref(model_id: str, ref: str) -> str | None:
    """The commit a branch or tag points to in the local Hub cache (what `from_pretrained` would load), if known."""
    from huggingface_hub import constants

    path = Path(constants.HF_HUB_CACHE) / f"models--{model_id.replace('/', '--')}" / "refs" / ref
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except (OSError, ValueError):
        return None


def local_revision(model: str | None) -> str | None:
    """Servers started from a local folder report no sha: a content hash of the same folder stands in."""
    if model and Path(model).expanduser().is_dir():
        from inversecoder.core.backends.transformers_backend import local_revision as folder_revision

        return folder_revision(Path(model).expanduser())
    return None


def local_tokenizer(model: str | None, model_id: str, sha: str | None) -> Any:
    """The served model's tokenizer if it is here (a local folder or the Hub cache); None: use /tokenize."""
    from transformers import AutoTokenizer

    folder = Path(model).expanduser() if model else None
    try:
        if folder is not None and folder.is_dir():
            return AutoTokenizer.from_pretrained(folder)
        return AutoTokenizer.from_pretrained(model_id, revision=sha)
    except Exception as error:  # not available here: the servers count tokens for us
        log.info(
            "no local tokenizer for %s (%s): counting tokens with the endpoints' /tokenize",
            model_id,
            type(error).__name__,
        )
        return None


def run_check(check: Callable[[], Awaitable[list[dict[str, Any]]]], identity: tuple[str, ...]) -> list[dict[str, Any]]:
    """The rows of `check()` (one per endpoint, run on a loop of its own), each marked `consistent` when every
    endpoint that answered reports the same `identity` fields (None for one that did not)."""
    runner = LoopRunner(None)
    try:
        rows = runner.run(check)
    finally:
        runner.close()
    identities = {tuple(r.get(name) for name in identity) for r in rows if r.get("model_id")}
    for row in rows:
        row["consistent"] = len(identities) <= 1 if row.get("model_id") else None
    return rows


def format_report(rows: list[dict[str, Any]], fields: tuple[str, ...], info_route: str = "/info") -> list[str]:
    """The `check-endpoints` table: one line per endpoint (url, health, then `fields`)."""
    columns = ["url", "health", *fields]
    table = []
    for row in rows:
        health = (
            f"ok ({row['health_ms']} ms)"
            if row.get("healthy")
            else f"DOWN: {row['error']}"
            if "health_ms" not in row
            else f"unhealthy ({row['health_ms']} ms)"
        )
        cells = {"url": row["url"], "health": health}
        for name in fields:
            value = row.get(name)
            cells[name] = "-" if value is None else str(value)
        if row.get("error") and "health_ms" in row:
            cells["model_id"] = f"no {info_route}: {row['error']}"
        table.append([cells[c] for c in columns])
    widths = [max(len(c), *(len(r[i]) for r in table)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in table]
    identities = sorted({f"{r['model_id']}@{r.get('model_sha') or 'no sha'}" for r in rows if r.get("model_id")})
    healthy = sum(bool(r.get("healthy")) and bool(r.get("model_id")) for r in rows)
    if len(identities) > 1:
        lines.append(f"REFUSED: the endpoints serve different models or revisions: {', '.join(identities)}")
    elif identities:
        lines.append(f"{healthy}/{len(rows)} endpoints healthy, serving {identities[0]}")
    else:
        lines.append(f"0/{len(rows)} endpoints reachable")
    return lines
