"""`inversecoder check-endpoints` for the `tgi` backend: per endpoint, health (and how long it took), the
`/info` fields that matter here, the `top_n_tokens` the server accepts (probed: TGI's /info does not say)
and whether it returns prompt logprobs (what exact scores of answer tokens outside the top n need)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from inversecoder.core.backends import tgi_protocol as wire
from inversecoder.core.backends.http import JsonClient, StatusError
from inversecoder.core.backends.serving import MisconfiguredEndpoint, format_report, hf_token, normalize_url, run_check
from inversecoder.core.errors import ConfigError

if TYPE_CHECKING:
    from inversecoder.core.config import GeneratorConfig

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
    urls = [normalize_url(url) for url in config.endpoints]
    if not urls:
        raise ConfigError("generator.endpoints is empty: nothing to check")
    timeout = timeout or config.health_timeout

    async def one(client: JsonClient, url: str) -> dict[str, Any]:
        row: dict[str, Any] = {"url": url}
        started = time.monotonic()
        try:
            await client.get(url + "/health", timeout)
            row["healthy"] = True
        except StatusError:  # it answers, but not 200
            row["healthy"] = False
        except Exception as error:
            row.update(healthy=False, error=wire.classify(error).message)
            return row
        row["health_ms"] = round((time.monotonic() - started) * 1000)
        try:
            info = wire.EndpointInfo.from_json(await client.get(url + "/info", timeout))
        except Exception as error:
            row["error"] = wire.classify(error).message if not isinstance(error, ValueError) else str(error)
            return row
        row.update({name: info.raw.get(name) for name in REPORT_FIELDS})
        row["max_input_tokens"] = info.max_input_tokens
        if info.max_top_n_tokens is None:
            row["max_top_n_tokens"] = await _probe_top_n(client, url, config.top_n_tokens, timeout)
        row["prefill_logprobs"] = await _probe_prefill_logprobs(client, url, timeout)
        return row

    async def run() -> list[dict[str, Any]]:
        client = JsonClient(len(urls), hf_token())  # the token goes to Inference Endpoints (https) only
        try:
            return list(await asyncio.gather(*(one(client, url) for url in urls)))
        finally:
            await client.aclose()

    return run_check(run, ("model_id", "model_sha"))


async def _probe_top_n(client: JsonClient, url: str, wanted: int, timeout: float) -> str:
    """'>= N' when a request with top_n_tokens=N passes; the server's limit when it says so; else '?'."""
    try:
        await client.post(url + "/generate", wire.top_tokens_body("Yes", max(wanted, 1)), timeout)
        return f">= {max(wanted, 1)}"
    except Exception as error:
        limit = wire.TOP_N_LIMIT.search(wire.classify(error).message)
        return limit.group(1) if limit else "?"


async def _probe_prefill_logprobs(client: JsonClient, url: str, timeout: float) -> str:
    """'yes' when the endpoint returns prompt logprobs (exact scores of answer tokens outside the top n
    need them); TGI >= 3.0 answers an empty list unless launched with --enable-prefill-logprobs."""
    try:
        wire.read_prefill(await client.post(url + "/generate", wire.prefill_body("Yes No"), timeout))
    except MisconfiguredEndpoint:
        return "no (--enable-prefill-logprobs)"
    except Exception as error:
        return f"? ({wire.classify(error).message})"
    return "yes"


def format_endpoint_report(rows: list[dict[str, Any]]) -> str:
    """A table (one row per endpoint) and a verdict line for `inversecoder check-endpoints`."""
    lines = format_report(rows, (*REPORT_FIELDS, "prefill_logprobs"))
    if any(str(r.get("prefill_logprobs", "")).startswith("no") for r in rows):
        lines.append(
            "note: endpoints marked 'no' return no prompt logprobs: a score whose Yes/No token is outside "
            "the top n fails there; launch TGI with --enable-prefill-logprobs"
        )
    return "\n".join(lines)
