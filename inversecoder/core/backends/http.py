"""The JSON-over-HTTP transport of the served backends, on aiohttp (a maintained client, no parsing of ours).

One `JsonClient` per event loop (aiohttp sessions belong to the loop that made them), one connection
pool per endpoint sized to the concurrency. Failures come back as the typed errors below, which
`classify_http` turns into what to do next; the retry loop itself is the backend's (served_backend.py).
Proxies from the environment are ignored (the endpoints are the user's own servers), and the Hub token
travels only to Hugging Face's https hosts (`may_carry_hub_token`).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from inversecoder.core.backends.serving import Verdict, may_carry_hub_token, retry_after_seconds

#: Connections per endpoint beyond the request slots: health checks and /tokenize never queue behind
#: a full pool (a queued health check would time out and take a busy endpoint out of the rotation).
SPARE_CONNECTIONS = 4


class HttpError(Exception):
    """A request that got no usable answer."""


class ConnectFailed(HttpError):
    """The server could not be reached (refused, unresolvable, connect timeout)."""


class TimedOut(HttpError):
    """No complete answer within the deadline."""


class ConnectionLost(HttpError):
    """The connection dropped mid-request (a reset, a server that died, a truncated body)."""


class BadAnswer(HttpError):
    """A 2xx answer whose body is not the JSON expected."""


class StatusError(HttpError):
    """A non-2xx status; `detail` is the server's error text, `retry_after` its Retry-After in seconds."""

    def __init__(self, status: int, detail: str, retry_after: float | None):
        super().__init__(f"HTTP {status} {detail}")
        self.status = status
        self.detail = detail
        self.retry_after = retry_after


def _detail(text: str) -> str:
    """The error message of an OpenAI-style (`{"error": {"message"}}`), TGI (`{"error", "error_type"}`: "type:
    message"), FastAPI (`{"detail"}`) or plain body."""
    try:
        body = json.loads(text)
    except ValueError:
        return text[:300]
    if isinstance(body, dict):
        error = body.get("error", body.get("detail", body.get("message")))
        if isinstance(error, dict):
            error = error.get("message", error)
        if error is not None:
            kind = body.get("error_type")
            return (f"{kind}: {error}" if isinstance(kind, str) else str(error))[:300]
    return text[:300]


class JsonClient:
    """JSON requests to the endpoints of one backend, on the event loop that first uses it."""

    def __init__(self, limit_per_host: int, token: str | None = None):
        self.limit_per_host = limit_per_host + SPARE_CONNECTIONS
        self.token = token
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=self.limit_per_host)
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False)
        return self._session

    async def get(self, url: str, timeout: float | None = None) -> Any:
        return await self.request("GET", url, None, timeout)

    async def post(self, url: str, body: Any, timeout: float | None = None) -> Any:
        return await self.request("POST", url, body, timeout)

    async def request(self, method: str, url: str, body: Any, timeout: float | None) -> Any:
        """The decoded JSON answer; raises one of the errors above."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token and may_carry_hub_token(url) else {}
        try:
            async with self._open().request(
                method, url, json=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as response:
                text = await response.text()
                if response.status >= 300:
                    raise StatusError(
                        response.status, _detail(text), retry_after_seconds(response.headers.get("Retry-After"))
                    )
        except aiohttp.ClientConnectorError as error:
            raise ConnectFailed(str(error)) from None
        except TimeoutError:
            raise TimedOut(f"no answer within {timeout:g}s" if timeout else "timed out") from None
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as error:
            raise ConnectionLost(f"{type(error).__name__}: {error}") from None
        except aiohttp.ClientError as error:
            raise ConnectionLost(f"{type(error).__name__}: {error}") from None
        try:
            return json.loads(text) if text else None
        except ValueError:
            raise BadAnswer(f"{method} {url}: the answer is not JSON: {text[:200]!r}") from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def classify_http(error: BaseException) -> Verdict:
    """What a failed request means for the item and its endpoint (see `Verdict`)."""
    if isinstance(error, StatusError):
        status = error.status
        if status == 429:  # overloaded: alive, just busy
            return Verdict(str(error), retry=True, retry_after=error.retry_after, endpoint="ok")
        if status >= 500 or status == 408:
            return Verdict(str(error), retry=True, retry_after=error.retry_after)
        return Verdict(str(error), retry=False, endpoint="ok")  # 400/404/422: repeating it cannot help
    if isinstance(error, ConnectFailed):
        return Verdict(f"cannot connect ({error})", retry=True, endpoint="down")
    if isinstance(error, (TimedOut, TimeoutError, asyncio.TimeoutError)):
        return Verdict(f"timed out ({error or type(error).__name__})", retry=True, endpoint="down")
    if isinstance(error, (ConnectionLost, BadAnswer, OSError)):
        return Verdict(f"connection failed ({error})", retry=True)
    return Verdict(f"{type(error).__name__}: {str(error)[:200]}", retry=True)
