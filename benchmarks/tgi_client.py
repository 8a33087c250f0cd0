"""TGI client throughput: how close the `tgi` backend gets to what its endpoints could serve.

Local canned servers (no model, one process each) answer every `/generate` after a fixed latency, so
the ideal rate is endpoints x concurrency / latency. The backend runs the way the pipeline runs it
(`plan_batches`, then `generate_batches`: the batches overlap) over its aiohttp client (http.py), and the
script prints the rate it reaches, as a share of the ideal and of a bare asyncio HTTP/1.1 client's rate
measured in the same run (no library, no retries: what these servers and this CPU allow), and the client's
CPU time per request. Target: the backend at >= 90% of the bare client's rate with 2 endpoints x 64
concurrent at 50 ms. Reference rows: one batch at a time (a `generate` call per batch, each batch's
slowest requests leaving slots idle), aiohttp alone (`JsonClient` behind a semaphore: no routing, retries
or batches, so the gap to the backend row is the backend's own CPU), and realistic 300-token answers
(TGI lists every generated token in `details`; generation reads only the summary).

    python benchmarks/tgi_client.py                                  # 2 x 64 at 50 ms, ~1 minute
    python benchmarks/tgi_client.py --quick                          # fewer requests, ~20 s
    python benchmarks/tgi_client.py --profile                        # + where the backend's CPU goes
    python benchmarks/tgi_client.py --endpoints 4 --concurrency 128 --latency 0.2 --requests 40000
    python benchmarks/tgi_client.py --latency 0.5 --spread 0.8 --requests 3000   # answers of varied length

The client process is single-threaded (one event loop): when its CPU time per request exceeds
latency / (endpoints x concurrency), the client, not the servers, sets the rate. The servers run on the
same machine, so on a small box they compete with the client for the cores (the bare client's share of
the ideal shows how much).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import random
import re
import subprocess
import sys
import time
from typing import Any

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


# -- the clients ---------------------------------------------------------------------------------
class WordCounter:
    """Stands in for the model's tokenizer (only counts are needed; the canned model has none)."""

    def __call__(self, texts, add_special_tokens=True):
        return {"input_ids": [[0] * len(t.split()) for t in (texts if isinstance(texts, list) else [texts])]}


def _prompt(i: int) -> str:
    return f"Write a function number {i} that adds two numbers."


def measure(
    urls: list[str],
    concurrency: int,
    requests: int,
    tokens: int,
    overlap: bool = True,
    profile: cProfile.Profile | None = None,
) -> dict[str, float]:
    """Rate and client CPU per request for `requests` generations of `tokens` tokens through the backend,
    the batches overlapping as CachedModel runs them (`overlap`) or one `generate` call per batch."""
    from inversecoder.core.backends.base import GenerationRequest, SamplingParams
    from inversecoder.core.backends.tgi import TGIBackend

    backend = TGIBackend(
        urls, MODEL_ID, concurrency=concurrency, tokenizer=WordCounter(), progress=False, health_interval=60
    )
    params = SamplingParams(temperature=0.8, max_new_tokens=tokens)
    work = [GenerationRequest(_prompt(i), seed=i) for i in range(requests)]
    try:
        backend.generate(work[: len(urls) * concurrency], params)  # warm up: connections, imports
        batches = backend.plan_batches([r.prompt for r in work], params.max_new_tokens)
        done = 0
        if profile is not None:  # the requests run on the backend's loop, in a helper thread: profile there
            _profile_loop(backend._runner.loop, profile)
        cpu, wall = time.process_time(), time.perf_counter()
        if overlap:
            for _, results in backend.generate_batches(work, batches, params):
                done += sum(c.error is None for c in results)
        else:
            for batch in batches:
                done += sum(c.error is None for c in backend.generate([work[i] for i in batch], params))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        backend.close()
    assert done == requests, f"{requests - done} requests failed"
    return {"seconds": wall, "rate": requests / wall, "cpu_us": cpu / requests * 1e6}


def _profile_loop(loop: asyncio.AbstractEventLoop, profile: cProfile.Profile) -> None:
    """Profile whatever `loop` runs from now on, in the thread that runs it."""
    run = loop.run_until_complete

    def profiled(future: Any) -> Any:
        profile.enable()
        try:
            return run(future)
        finally:
            profile.disable()

    loop.run_until_complete = profiled  # type: ignore[method-assign]


def measure_aiohttp(urls: list[str], concurrency: int, requests: int, tokens: int) -> dict[str, float]:
    """The backend's HTTP client alone: `JsonClient.post` of the same bodies, `concurrency` per endpoint
    behind a semaphore, answers read as the backend reads them."""
    from inversecoder.core.backends import tgi_protocol as wire
    from inversecoder.core.backends.base import SamplingParams
    from inversecoder.core.backends.http import JsonClient

    params = SamplingParams(temperature=0.8, max_new_tokens=tokens)

    async def run(n: int, client: JsonClient) -> None:
        async def worker(url: str, pending: list[int]) -> None:
            while pending:
                i = pending.pop()
                wire.read_generation(await client.post(url + "/generate", wire.generate_body(_prompt(i), params, i, 4)))

        pending = list(range(n))
        await asyncio.gather(*(worker(url, pending) for url in urls for _ in range(concurrency)))

    async def main() -> dict[str, float]:
        client = JsonClient(concurrency)
        try:
            await run(len(urls) * concurrency, client)  # warm up: connections
            cpu, wall = time.process_time(), time.perf_counter()
            await run(requests, client)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        finally:
            await client.aclose()
        return {"seconds": wall, "rate": requests / wall, "cpu_us": cpu / requests * 1e6}

    return asyncio.run(main())


async def _bare_worker(port: int, pending: list[int], done: list[int], tokens: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    while pending:
        i = pending.pop()
        body = json.dumps(
            {
                "inputs": _prompt(i),
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
    """A bare asyncio client (one keep-alive connection per slot, no library, no retries): the rate these
    servers and this CPU allow."""
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
    parser.add_argument("--tokens", type=int, default=8, help="generated tokens per answer (details list them all)")
    parser.add_argument("--long-tokens", type=int, default=300, help="answer length of the realistic-answer run")
    parser.add_argument(
        "--long-requests", type=int, default=2000, help="requests of the realistic-answer run (0: skip)"
    )
    parser.add_argument("--quick", action="store_true", help="a quarter of the requests")
    parser.add_argument("--profile", action="store_true", help="cProfile the backend's run: where its CPU goes")
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
    if args.quick:
        args.requests, args.long_requests = args.requests // 4, args.long_requests // 4

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
    profile = cProfile.Profile() if args.profile else None
    try:
        urls = [f"http://127.0.0.1:{_port(server)}" for server in servers]
        ideal = args.endpoints * args.concurrency / args.latency
        n, c = args.requests, args.concurrency
        # The backend and the bare client alternate, so a change in the machine's load meets both.
        bare = [measure_bare(urls, c, n, args.tokens)]
        ours = [measure(urls, c, n, args.tokens, profile=profile)]
        bare.append(measure_bare(urls, c, n, args.tokens))
        ours.append(measure(urls, c, n, args.tokens))
        rows = [
            ("tgi backend (pipeline)", n, args.tokens, max(ours, key=lambda r: r["rate"])),
            ("one batch at a time", n, args.tokens, measure(urls, c, n, args.tokens, overlap=False)),
            ("aiohttp JsonClient alone", n, args.tokens, measure_aiohttp(urls, c, n, args.tokens)),
            ("bare asyncio", n, args.tokens, max(bare, key=lambda r: r["rate"])),
        ]
        if args.long_requests:
            long_n, long_t = args.long_requests, args.long_tokens
            rows.append(("tgi backend (pipeline)", long_n, long_t, measure(urls, c, long_n, long_t)))
            rows.append(("bare asyncio", long_n, long_t, measure_bare(urls, c, long_n, long_t)))
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
        f"{'client':<26} {'tokens':>6} {'requests':>8} {'seconds':>8} {'req/s':>8} "
        f"{'share of ideal':>15} {'client CPU/request':>19}"
    )
    for name, count, tokens, row in rows:
        print(
            f"{name:<26} {tokens:>6} {count:>8} {row['seconds']:>8.2f} {row['rate']:>8.0f} "
            f"{row['rate'] / ideal:>14.0%} {row['cpu_us']:>16.0f} us"
        )
    budget = args.latency / (0.9 * args.endpoints * args.concurrency) * 1e6  # us of CPU per request at 90% of ideal
    backend, serial, alone, baseline = (row for _, _, _, row in rows[:4])
    print(f"one client process reaches 90% of ideal only under {budget:.0f} us of CPU per request")
    each = ", ".join(f"{o['rate'] / b['rate']:.2f}" for o, b in zip(ours, bare, strict=True))
    print(
        f"ratio: the backend reaches {backend['rate'] / baseline['rate']:.2f} of the bare asyncio client's rate "
        f"(target >= 0.90; each pair of runs: {each}), "
        f"{backend['rate'] / ideal:.2f} of ideal, {backend['cpu_us']:.0f} us of client CPU per request "
        f"({alone['cpu_us']:.0f} us of it aiohttp's, bare asyncio {baseline['cpu_us']:.0f} us); "
        f"{backend['rate'] / serial['rate']:.2f}x one batch at a time"
    )
    if args.long_requests:
        long_ours, long_bare = rows[4][3], rows[5][3]
        print(
            f"{args.long_tokens}-token answers: {long_ours['rate'] / long_bare['rate']:.2f} of the bare client's rate, "
            f"{long_ours['cpu_us']:.0f} us of client CPU per request (bare {long_bare['cpu_us']:.0f} us)"
        )
    if profile is not None:
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(25)
        print("\nwhere the backend's CPU goes (its loop's thread, first pipeline run, with cProfile's overhead)")
        print(out.getvalue())


if __name__ == "__main__":
    main()
