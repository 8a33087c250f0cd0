"""TGI client throughput: how close the `tgi` backend gets to what its endpoints could serve.

Local canned servers (no model, one process each) answer every `/generate` after a fixed latency, so
the ideal rate is endpoints x concurrency / latency. The backend runs the way the pipeline runs it
(`plan_batches`, one `generate` call per planned batch) and the script prints the rate it reaches as a
share of the ideal, and the client's CPU time per request; once with the backend's own HTTP/1.1
transport and once with httpx2's stock transport, side by side. Target: >= 90% of the ideal with
2 endpoints x 64 concurrent at 50 ms.

    python benchmarks/tgi_client.py                                  # 2 x 64 at 50 ms, ~1 minute
    python benchmarks/tgi_client.py --endpoints 4 --concurrency 128 --latency 0.2 --requests 40000

The client process is single-threaded (one event loop): when its CPU time per request exceeds
latency / (endpoints x concurrency), the client, not the servers, sets the rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

MODEL_ID = "benchmark/canned"
TOKENS = [{"id": 100 + i, "text": f" w{i}", "logprob": -0.5, "special": False} for i in range(8)]
GENERATED = json.dumps({"generated_text": "".join(t["text"] for t in TOKENS), "details": {
    "finish_reason": "length", "generated_tokens": len(TOKENS), "seed": 1, "prefill": [], "tokens": TOKENS}}).encode()
INFO = json.dumps({"model_id": MODEL_ID, "model_sha": "0" * 40, "max_concurrent_requests": 1024, "max_best_of": 2,
                   "max_stop_sequences": 4, "max_input_tokens": 4096, "max_total_tokens": 8192, "validation_workers": 2,
                   "max_client_batch_size": 4, "router": "text-generation-router", "version": "canned"}).encode()


# -- the canned server (a subprocess: `--serve LATENCY`) -------------------------------------------
class CannedTGI(asyncio.Protocol):
    """HTTP/1.1 keep-alive; /generate answers after `latency` seconds, /info and /health at once."""

    latency = 0.05

    def connection_made(self, transport):
        self.transport, self.buffer = transport, b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end].decode("latin-1").split("\r\n")
            length = next((int(line.split(":", 1)[1]) for line in head[1:] if line.lower().startswith("content-length:")), 0)
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length:]
            path = head[0].split(" ")[1]
            if path == "/generate":
                asyncio.get_running_loop().call_later(self.latency, self.reply, GENERATED)
            else:
                self.reply(INFO if path == "/info" else b"")

    def reply(self, body: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))


async def serve(latency: float) -> None:
    CannedTGI.latency = latency
    server = await asyncio.get_running_loop().create_server(CannedTGI, "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes stdin


# -- the client ----------------------------------------------------------------------------------
class WordCounter:
    """Stands in for the model's tokenizer (only counts are needed; the canned model has none)."""

    def __call__(self, texts, add_special_tokens=True):
        return {"input_ids": [[0] * len(t.split()) for t in (texts if isinstance(texts, list) else [texts])]}


def measure(urls: list[str], concurrency: int, requests: int, transport: str) -> dict[str, float]:
    import httpx2

    from inversecoder.builders.backends import tgi
    from inversecoder.builders.backends.base import GenerationRequest, SamplingParams

    lean = tgi._Http11Transport
    if transport == "httpx2 stock":
        tgi._Http11Transport = lambda: httpx2.AsyncHTTPTransport(limits=httpx2.Limits(max_connections=None, max_keepalive_connections=None))
    try:
        backend = tgi.TGIBackend(urls, MODEL_ID, concurrency=concurrency, tokenizer=WordCounter(), progress=False, health_interval=60)
        params = SamplingParams(temperature=0.8, max_new_tokens=8)
        work = [GenerationRequest(f"Write a function number {i} that adds two numbers.", seed=i) for i in range(requests)]
        backend.generate(work[: len(urls) * concurrency], params)  # warm up: connections, imports
        cpu, wall = time.process_time(), time.perf_counter()
        done = 0
        for batch in backend.plan_batches([r.prompt for r in work], params.max_new_tokens):
            done += sum(c.error is None for c in backend.generate([work[i] for i in batch], params))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        tgi._Http11Transport = lean
    assert done == requests, f"{requests - done} requests failed"
    return {"seconds": wall, "rate": requests / wall, "cpu_us": cpu / requests * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoints", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight per endpoint")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds each /generate takes on the server")
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--stock-requests", type=int, default=2500, help="requests for the (slower) stock transport run")
    parser.add_argument("--serve", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        return asyncio.run(serve(args.serve))

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # as on an offline cluster: the endpoints must stay reachable
    servers = [subprocess.Popen([sys.executable, __file__, "--serve", str(args.latency)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
               for _ in range(args.endpoints)]
    try:
        urls = [f"http://127.0.0.1:{server.stdout.readline().strip()}" for server in servers]
        ideal = args.endpoints * args.concurrency / args.latency
        rows = [("backend transport", measure(urls, args.concurrency, args.requests, "lean")),
                ("httpx2 stock", measure(urls, args.concurrency, args.stock_requests, "httpx2 stock"))]
    finally:
        for server in servers:
            server.stdin.close()
            server.wait(timeout=10)
    print(f"{args.endpoints} endpoints x {args.concurrency} concurrent, {args.latency * 1000:g} ms per request: "
          f"ideal {ideal:.0f} req/s; {os.cpu_count()} CPU cores here")
    print(f"{'transport':<18} {'requests':>8} {'seconds':>8} {'req/s':>8} {'share of ideal':>15} {'client CPU/request':>19}")
    for (name, row), n in zip(rows, (args.requests, args.stock_requests)):
        print(f"{name:<18} {n:>8} {row['seconds']:>8.2f} {row['rate']:>8.0f} {row['rate'] / ideal:>14.0%} {row['cpu_us']:>16.0f} us")
    ours, stock = rows[0][1], rows[1][1]
    print(f"ratio: {ours['rate'] / ideal:.2f} of ideal (target >= 0.90); {ours['rate'] / stock['rate']:.1f}x the stock transport's rate, "
          f"{stock['cpu_us'] / ours['cpu_us']:.1f}x less CPU per request")


if __name__ == "__main__":
    main()
