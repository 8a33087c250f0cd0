"""TGI client throughput: how close the `tgi` backend gets to what its endpoints could serve.

Local canned servers (no model, one process each) answer every `/generate` after a fixed latency, so
the ideal rate is endpoints x concurrency / latency. The backend runs the way the pipeline runs it
(`plan_batches`, then `generate_batches`: the batches overlap) and the script prints the rate it reaches
as a share of the ideal, and the client's CPU time per request; side by side with one batch at a time
(a `generate` call per batch, each batch's slowest requests leaving slots idle) and with httpx2's stock
transport. Target: >= 90% of the ideal with
2 endpoints x 64 concurrent at 50 ms. Then the same with realistic 300-token answers, with and without
the backend dropping the per-token `details` list that generation never reads (huggingface_hub makes a
dataclass of every listed token). Two reference rows bound what any backend built on
`AsyncInferenceClient` can reach here: a bare asyncio HTTP/1.1 client (no huggingface_hub: what these
servers and this CPU allow) and `AsyncInferenceClient.text_generation` answered in memory (no network
at all: the client library's own CPU per request).

    python benchmarks/tgi_client.py                                  # 2 x 64 at 50 ms, ~1 minute
    python benchmarks/tgi_client.py --endpoints 4 --concurrency 128 --latency 0.2 --requests 40000
    python benchmarks/tgi_client.py --latency 0.5 --spread 0.8 --requests 3000   # answers of varied length

The client process is single-threaded (one event loop): when its CPU time per request exceeds
latency / (endpoints x concurrency), the client, not the servers, sets the rate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import subprocess
import sys
import time
from typing import Any
from unittest import mock

MODEL_ID = "benchmark/canned"
_ANSWERS: dict[int, bytes] = {}


def answer(tokens: int) -> bytes:
    """A `/generate` answer with details for `tokens` generated tokens (what TGI sends for details=True)."""
    if tokens not in _ANSWERS:
        listed: list[dict[str, Any]] = [
            {"id": 100 + i, "text": f" w{i}", "logprob": -0.5, "special": False} for i in range(tokens)
        ]
        _ANSWERS[tokens] = json.dumps(
            {
                "generated_text": "".join(t["text"] for t in listed),
                "details": {
                    "finish_reason": "length",
                    "generated_tokens": tokens,
                    "seed": 1,
                    "prefill": [],
                    "tokens": listed,
                },
            }
        ).encode()
    return _ANSWERS[tokens]


INFO = json.dumps(
    {
        "model_id": MODEL_ID,
        "model_sha": "0" * 40,
        "max_concurrent_requests": 1024,
        "max_best_of": 2,
        "max_stop_sequences": 4,
        "max_input_tokens": 4096,
        "max_total_tokens": 8192,
        "validation_workers": 2,
        "max_client_batch_size": 4,
        "router": "text-generation-router",
        "version": "canned",
    }
).encode()


# -- the canned server (a subprocess: `--serve LATENCY`) -------------------------------------------
class CannedTGI(asyncio.Protocol):
    """HTTP/1.1 keep-alive; /generate answers after `latency` seconds (times a factor drawn uniformly in
    1 +- `spread`: answers of different lengths), /info and /health at once."""

    latency = 0.05
    spread = 0.0
    draw = random.Random(0)

    def connection_made(self, transport):
        self.transport, self.buffer = transport, b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end].decode("latin-1").split("\r\n")
            length = next(
                (int(line.split(":", 1)[1]) for line in head[1:] if line.lower().startswith("content-length:")), 0
            )
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            path = head[0].split(" ")[1]
            if path == "/generate":
                tokens = re.search(rb'"max_new_tokens": ?(\d+)', body)
                reply = answer(int(tokens.group(1)) if tokens else 8)
                delay = self.latency * (1 + self.spread * (2 * self.draw.random() - 1))
                asyncio.get_running_loop().call_later(delay, self.reply, reply)
            else:
                self.reply(INFO if path == "/info" else b"")

    def reply(self, body: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
            )


async def serve(latency: float, spread: float) -> None:
    CannedTGI.latency, CannedTGI.spread = latency, spread
    server = await asyncio.get_running_loop().create_server(CannedTGI, "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes stdin


# -- the client ----------------------------------------------------------------------------------
class WordCounter:
    """Stands in for the model's tokenizer (only counts are needed; the canned model has none)."""

    def __call__(self, texts, add_special_tokens=True):
        return {"input_ids": [[0] * len(t.split()) for t in (texts if isinstance(texts, list) else [texts])]}


def measure(
    urls: list[str], concurrency: int, requests: int, transport: str, tokens: int, overlap: bool = True
) -> dict[str, float]:
    """Rate and client CPU per request for `requests` generations of `tokens` tokens. `transport`: `lean`
    (the backend's), `lean, token list kept` (the backend's, parsing every token as huggingface_hub does
    by default) or `httpx2 stock`."""
    import httpx2

    from inversecoder.core.backends import tgi
    from inversecoder.core.backends.base import GenerationRequest, SamplingParams

    def stock() -> httpx2.AsyncHTTPTransport:
        return httpx2.AsyncHTTPTransport(limits=httpx2.Limits(max_connections=None, max_keepalive_connections=None))

    def keep(content: bytes) -> bytes:
        return content

    with contextlib.ExitStack() as patched:
        if transport == "httpx2 stock":
            patched.enter_context(mock.patch.object(tgi, "_Http11Transport", stock))
        if transport == "lean, token list kept":
            patched.enter_context(mock.patch.object(tgi, "_without_token_details", keep))
        backend = tgi.TGIBackend(
            urls, MODEL_ID, concurrency=concurrency, tokenizer=WordCounter(), progress=False, health_interval=60
        )
        params = SamplingParams(temperature=0.8, max_new_tokens=tokens)
        work = [
            GenerationRequest(f"Write a function number {i} that adds two numbers.", seed=i) for i in range(requests)
        ]
        backend.generate(work[: len(urls) * concurrency], params)  # warm up: connections, imports
        cpu, wall = time.process_time(), time.perf_counter()
        done = 0
        batches = backend.plan_batches([r.prompt for r in work], params.max_new_tokens)
        if overlap:  # as the pipeline runs it (CachedModel): the batches overlap
            for _, results in backend.generate_batches(work, batches, params):
                done += sum(c.error is None for c in results)
        else:  # one batch at a time: each batch's slowest requests leave slots idle
            for batch in batches:
                done += sum(c.error is None for c in backend.generate([work[i] for i in batch], params))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert done == requests, f"{requests - done} requests failed"
    return {"seconds": wall, "rate": requests / wall, "cpu_us": cpu / requests * 1e6}


async def _bare_worker(port: int, pending: list[int], done: list[int], tokens: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    while pending:
        i = pending.pop()
        body = json.dumps(
            {
                "inputs": f"Write a function number {i} that adds two numbers.",
                "parameters": {"max_new_tokens": tokens, "details": True, "seed": i},
            }
        ).encode()
        writer.write(
            b"POST /generate HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
        head = await reader.readuntil(b"\r\n\r\n")
        found = re.search(rb"content-length: (\d+)", head)
        assert found, head
        length = int(found.group(1))
        json.loads(await reader.readexactly(length))
        done.append(i)
    writer.close()


def measure_bare(urls: list[str], concurrency: int, requests: int, tokens: int) -> dict[str, float]:
    """A bare asyncio client (one keep-alive connection per slot, no retries, no huggingface_hub): the
    rate these servers and this CPU allow."""
    ports = [int(url.rsplit(":", 1)[1]) for url in urls]
    pending = list(range(requests))
    done: list[int] = []

    async def run() -> None:
        await asyncio.gather(*(_bare_worker(port, pending, done, tokens) for port in ports for _ in range(concurrency)))

    cpu, wall = time.process_time(), time.perf_counter()
    asyncio.run(run())
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert len(done) == requests
    return {"seconds": wall, "rate": requests / wall, "cpu_us": cpu / requests * 1e6}


def measure_in_memory(requests: int, tokens: int) -> dict[str, float]:
    """`AsyncInferenceClient.text_generation` with every answer made in memory (httpx2's MockTransport):
    the CPU huggingface_hub and httpx2 spend per request before any byte reaches a socket. The answer has
    no token list, as the backend's transport hands it over."""
    import httpx2
    from huggingface_hub import AsyncInferenceClient
    from huggingface_hub.utils import _http as hf_http

    from inversecoder.core.backends.tgi import _without_token_details

    content = _without_token_details(answer(tokens))
    previous = hf_http._GLOBAL_ASYNC_CLIENT_FACTORY
    hf_http.set_async_client_factory(
        lambda: httpx2.AsyncClient(
            transport=httpx2.MockTransport(
                lambda request: httpx2.Response(200, content=content, headers={"content-type": "application/json"})
            )
        )
    )

    async def run(n: int) -> None:
        client = AsyncInferenceClient("http://127.0.0.1:9")
        for i in range(n):
            await client.text_generation(
                f"Write a function number {i} that adds two numbers.",
                max_new_tokens=tokens,
                details=True,
                seed=i,
                temperature=0.8,
                do_sample=True,
            )

    try:
        asyncio.run(run(200))  # warm up
        cpu, wall = time.process_time(), time.perf_counter()
        asyncio.run(run(requests))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        hf_http.set_async_client_factory(previous)
    return {"seconds": wall, "rate": requests / wall, "cpu_us": cpu / requests * 1e6}


def _port(server: subprocess.Popen[str]) -> str:
    """The port a canned server prints when it listens."""
    assert server.stdout is not None  # a pipe
    return server.stdout.readline().strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoints", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight per endpoint")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds each /generate takes on the server")
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument(
        "--stock-requests", type=int, default=2500, help="requests for the (slower) stock transport run"
    )
    parser.add_argument("--tokens", type=int, default=8, help="generated tokens per answer (details list them all)")
    parser.add_argument("--long-tokens", type=int, default=300, help="answer length of the realistic-answer runs")
    parser.add_argument("--long-requests", type=int, default=1000, help="requests per realistic-answer run (0: skip)")
    parser.add_argument(
        "--spread",
        type=float,
        default=0.0,
        help="each answer takes latency x U(1 - spread, 1 + spread): answers of different lengths",
    )
    parser.add_argument("--serve", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        return asyncio.run(serve(args.serve, args.spread))

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # as on an offline cluster: the endpoints must stay reachable
    servers = [
        subprocess.Popen(
            [sys.executable, __file__, "--serve", str(args.latency), "--spread", str(args.spread)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(args.endpoints)
    ]
    # (label, transport, batches overlapping as CachedModel runs them, requests, answer tokens)
    runs = [
        ("pipeline (overlapping)", "lean", True, args.requests, args.tokens),
        ("one batch at a time", "lean", False, args.requests, args.tokens),
        ("httpx2 stock transport", "httpx2 stock", True, args.stock_requests, args.tokens),
        ("pipeline (overlapping)", "lean", True, args.long_requests, args.long_tokens),
        ("token list kept", "lean, token list kept", True, args.long_requests, args.long_tokens),
    ]
    try:
        urls = [f"http://127.0.0.1:{_port(server)}" for server in servers]
        ideal = args.endpoints * args.concurrency / args.latency
        rows = [
            (name, n, tokens, measure(urls, args.concurrency, n, transport, tokens, overlap) if n else None)
            for name, transport, overlap, n, tokens in runs
        ]
        bare = measure_bare(urls, args.concurrency, args.requests, args.tokens)
        in_memory = measure_in_memory(min(args.requests, 3000), args.tokens)
    finally:
        for server in servers:
            assert server.stdin is not None  # a pipe
            server.stdin.close()
            server.wait(timeout=10)
    print(
        f"{args.endpoints} endpoints x {args.concurrency} concurrent, {args.latency * 1000:g} ms per request"
        f"{f' +- {args.spread:.0%}' if args.spread else ''}: ideal {ideal:.0f} req/s; {os.cpu_count()} CPU cores here"
    )
    print(
        f"{'client':<24} {'tokens':>6} {'requests':>8} {'seconds':>8} {'req/s':>8} "
        f"{'share of ideal':>15} {'client CPU/request':>19}"
    )
    for name, n, tokens, row in rows:
        if row is not None:
            print(
                f"{name:<24} {tokens:>6} {n:>8} {row['seconds']:>8.2f} {row['rate']:>8.0f} "
                f"{row['rate'] / ideal:>14.0%} {row['cpu_us']:>16.0f} us"
            )
    print(
        f"{'bare asyncio (no hf_hub)':<24} {args.tokens:>6} {args.requests:>8} "
        f"{bare['seconds']:>8.2f} {bare['rate']:>8.0f} {bare['rate'] / ideal:>14.0%} {bare['cpu_us']:>16.0f} us"
    )
    print(
        f"{'hf_hub, in memory':<24} {args.tokens:>6} {min(args.requests, 3000):>8} "
        f"{in_memory['seconds']:>8.2f} {'':>8} {'':>15} {in_memory['cpu_us']:>16.0f} us"
    )
    budget = args.latency / (0.9 * args.endpoints * args.concurrency) * 1e6  # us of CPU per request at 90% of ideal
    print(
        f"one client process reaches 90% of ideal only under {budget:.0f} us of CPU per request; "
        f"AsyncInferenceClient.text_generation alone takes {in_memory['cpu_us']:.0f} us with no network"
    )
    ours, serial, stock, long_ours, long_kept = (row for _, _, _, row in rows)
    assert ours is not None and serial is not None  # args.requests > 0
    print(
        f"ratio: {ours['rate'] / ideal:.2f} of ideal (target >= 0.90); "
        f"{ours['rate'] / serial['rate']:.2f}x one batch at a time; "
        + (
            f"{ours['rate'] / stock['rate']:.1f}x the stock transport's rate, "
            f"{stock['cpu_us'] / ours['cpu_us']:.1f}x less CPU per request"
            if stock
            else ""
        )
    )
    if long_ours and long_kept:
        print(
            f"{args.long_tokens}-token answers: dropping the per-token list saves "
            f"{(long_kept['cpu_us'] - long_ours['cpu_us']) / 1000:.1f} ms of client CPU per request "
            f"({long_kept['cpu_us'] / long_ours['cpu_us']:.1f}x)"
        )


if __name__ == "__main__":
    main()
