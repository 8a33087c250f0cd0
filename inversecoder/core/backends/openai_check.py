"""`inversecoder check-endpoints` for the `vllm`, `sglang` and `openai` backends: per endpoint, health,
the model it serves, its context length, the engine's version, and whether its /tokenize agrees with
the model's tokenizer (what a build would refuse, said before the build)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from inversecoder.core.backends import openai_protocol as wire
from inversecoder.core.backends.http import JsonClient, classify_http
from inversecoder.core.backends.openai_backend import TOKENIZER_PROBES, folder_names
from inversecoder.core.backends.serving import format_report, local_tokenizer, normalize_url, run_check
from inversecoder.core.errors import ConfigError

if TYPE_CHECKING:
    from inversecoder.core.config import GeneratorConfig

REPORT_FIELDS = ("model_id", "max_model_len", "engine_version", "tokenizer")


def check_endpoints(config: GeneratorConfig, timeout: float | None = None) -> list[dict[str, Any]]:
    """One row per configured endpoint (see `format_endpoint_report`)."""
    urls = [normalize_url(url) for url in config.endpoints]
    if not urls:
        raise ConfigError("generator.endpoints is empty: nothing to check")
    timeout = timeout or config.health_timeout
    wanted = folder_names(config.model or "")
    tokenizer = local_tokenizer(config.model, config.model or "", config.revision) if config.model else None
    health = "/v1/models" if config.backend == "openai" else "/health"

    async def one(client: JsonClient, url: str) -> dict[str, Any]:
        row: dict[str, Any] = {"url": url}
        started = time.monotonic()
        try:
            await client.get(url + health, timeout)
            row.update(healthy=True, health_ms=round((time.monotonic() - started) * 1000))
            models = await client.get(url + "/v1/models", timeout)
        except Exception as error:
            row.update(healthy="health_ms" in row, error=classify_http(error).message)
            return row
        try:
            version = await client.get(url + "/version", timeout)
        except Exception:
            version = None
        try:
            served = wire.served_model(models, wanted, version)
        except ValueError as error:
            row["model_id"] = f"{config.model}? {error}"
            return row
        row.update(model_id=served.model_id, max_model_len=served.max_model_len, engine_version=served.engine_version)
        row["tokenizer"] = await _tokenizer_check(client, url, served.model_id, tokenizer, timeout)
        return row

    async def run() -> list[dict[str, Any]]:
        client = JsonClient(len(urls))
        try:
            return list(await asyncio.gather(*(one(client, url) for url in urls)))
        finally:
            await client.aclose()

    return run_check(run, ("model_id", "max_model_len"))


async def _tokenizer_check(client: JsonClient, url: str, model_id: str, tokenizer: Any, timeout: float) -> str:
    if tokenizer is None:
        return "? (no local tokenizer)"
    for probe in TOKENIZER_PROBES:
        try:
            answer = await client.post(
                url + "/tokenize", {"model": model_id, "prompt": probe, "add_special_tokens": True}, timeout
            )
        except Exception as error:
            return f"? ({classify_http(error).message})"
        if list(answer.get("tokens", [])) != list(tokenizer(probe, add_special_tokens=True)["input_ids"]):
            return f"MISMATCH on {probe!r}"
    return "ok"


def format_endpoint_report(rows: list[dict[str, Any]]) -> str:
    """A table (one row per endpoint) and a verdict line."""
    lines = format_report(rows, REPORT_FIELDS, info_route="/v1/models")
    if any(str(r.get("tokenizer", "")).startswith("MISMATCH") for r in rows):
        lines.append("note: a MISMATCH endpoint tokenizes unlike the model's tokenizer: a build refuses it")
    return "\n".join(lines)
