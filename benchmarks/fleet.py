"""A simulated fleet of vLLM servers on 127.0.0.1: N OpenAI-compatible endpoints that fabricate their answers.

One module (over 500 lines): the host processes, their endpoints and the controlling `Fleet` share one wire
format and one shared-memory counter layout.

Good enough for the project's real `generator.backend: vllm` client to run a whole build against it unchanged:
- `GET /v1/models` (`id` = the served name, `max_model_len`, `owned_by: vllm`), `GET /version`, `GET /health`,
  `POST /tokenize` (the model's real tokenizer: the client's tokenizer check passes);
- `POST /v1/completions`, the prompt as token ids (counted and hashed as text, never decoded):
  - a generation: words of the instructions of `data/evol_instruct_sample.jsonl`, drawn by frequency, up to a
    token length drawn from a lognormal fitted to those instructions, then "." and the eos (or, for
    `stop_share` of them, the request's first stop string); `completion_tokens` counts the model's tokens;
  - a one-token answer (`max_tokens: 1`) with the top `logprobs` (keyed `token_id:N` under
    `return_tokens_as_token_ids`) and/or `prompt_logprobs` (exact at the last position): a made-up distribution
    over the Yes/No tokens and 20 fillers, so the client's P(Yes) is exact. For `miss_rate` of the prompts
    the minor Yes/No variants fall outside the top 20, and the client reads them through `prompt_logprobs`.
- Answers depend only on the request (prompt ids, seed, max_tokens) and the fleet's seed: every endpoint, run
  and restart gives the same answer to the same request.
- Each endpoint admits `concurrency` requests at once (more wait in its queue, as past vLLM's max_num_seqs; the
  client cannot learn the limit: it is `generator.concurrency` there) and holds each for a lognormal latency
  (mean `mean_latency`, shape `sigma`, optionally scaled by the answer's tokens) rounded to a `tick`, so a host
  wakes once for all the answers due in it; `error_rate` of the attempts get an HTTP 500 part of the way through
  (the slot held until then), decided by (request, endpoint, attempt there): a retry elsewhere succeeds.
- Endpoints live in `processes` host processes (one serves ~5,000 requests/s here). `Fleet.kill(i)` closes one's
  listening socket and resets its connections with their requests in flight, what a SIGKILL of vLLM does to its
  clients, while the others, in the same process too, go on; `restart(i)` reopens it on the same port.
- Counters per endpoint in a file (they survive a kill): requests, errors, slot-seconds, queue seconds, peak
  slots and queue, and the hosts' CPU time (`Fleet.stats`, `Fleet.totals`).

Not simulated: batching (latency does not grow with load), KV-cache pressure and preemption, streaming, chat
completions, SGLang's `/generate`, `n > 1`, stop strings inside the text, logprobs of answers longer than one
token and text prompts on `/v1/completions` (both a 400), meaningful text or scores (P(Yes) ~ Beta(2, 1.2),
the decontamination judge's too).

    python benchmarks/fleet.py --endpoints 16 --concurrency 128     # serve until Ctrl-C (the tiny model's tokenizer)
    python benchmarks/fleet.py --self-test --seconds 20              # rate and CPU per request under a bare client
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import mmap
import random
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Self

from aiohttp import web

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "evol_instruct_sample.jsonl"
VERSION = "0.0-fleet"
STATS = (
    "requests", "completions", "scores", "prompt_logprobs", "errors", "tokenize", "prompt_tokens",
    "completion_tokens", "busy_seconds", "queue_seconds", "in_flight_max", "waiting_max", "starts",
)  # fmt: skip
S = {name: k for k, name in enumerate(STATS)}
FILLERS = 20


def make_spec(model_dir: str | Path, served_name: str | None = None, max_model_len: int | None = None) -> dict:
    """What every endpoint needs from the model's tokenizer, computed once: the words (with their token counts),
    the instruction-length fit, the Yes/No and filler token ids, the client's tokenizer probes."""
    from transformers import AutoTokenizer

    from inversecoder.core.backends.openai_backend import TOKENIZER_PROBES
    from inversecoder.core.backends.transformers_backend import resolve_answer_token_ids

    folder = Path(model_dir).expanduser().resolve()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    instructions = [json.loads(line)["instruction"] for line in SAMPLE.read_text(encoding="utf-8").splitlines()]
    instructions = [text for text in instructions if text.strip()]
    logs = [math.log(len(tokenizer.encode(text, add_special_tokens=False))) for text in instructions]
    mu = sum(logs) / len(logs)
    words = [" " + w for w in re.findall(r"[A-Za-z]+", " ".join(instructions))]  # repeated: drawn by frequency
    counts = {w: len(tokenizer.encode(w, add_special_tokens=False)) for w in set(words)}
    answers = {}
    for word in ("Yes", "No"):
        ids = resolve_answer_token_ids(tokenizer, word)
        answers[word] = sorted(ids, key=lambda i: tokenizer.decode([i]) != word)  # the bare word first
    taken = set(answers["Yes"] + answers["No"])
    fillers = [i for w in dict.fromkeys(words) if counts[w] == 1 for i in tokenizer.encode(w) if i not in taken]
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").exists() else {}
    return {
        "model_dir": str(folder),
        "served_name": served_name or str(folder),  # what `vllm serve DIR` reports
        "max_model_len": max_model_len or int(config.get("max_position_embeddings", 4096)),
        "words": words,
        "counts": [counts[w] for w in words],
        "singles": [w for w in counts if counts[w] == 1],
        "length_mu": mu,
        "length_sigma": math.sqrt(sum((x - mu) ** 2 for x in logs) / (len(logs) - 1)),
        "yes": answers["Yes"],
        "no": answers["No"],
        "fillers": fillers[:FILLERS],
        "texts": {str(i): tokenizer.decode([i]) for i in [*taken, *fillers[:FILLERS]]},
        "probes": {p: list(tokenizer(p, add_special_tokens=True)["input_ids"]) for p in TOKENIZER_PROBES},
    }


class Endpoint:
    """One simulated vLLM server: its slots, its error memory, its row of counters (made inside the host's loop)."""

    def __init__(self, spec: dict, settings: dict, index: int, stats: memoryview[float]):
        self.spec, self.index, self.stats = spec, index, stats
        self.name, self.max_model_len = spec["served_name"], spec["max_model_len"]
        self.words, self.counts, self.singles = spec["words"], spec["counts"], spec["singles"]
        self.name_json = json.dumps(self.name)
        self.text_keys = {int(k): json.dumps(v) for k, v in spec["texts"].items()}
        self.id_keys = {int(k): f'"token_id:{k}"' for k in spec["texts"]}
        self.fillers = [(token, k * math.log(0.6)) for k, token in enumerate(spec["fillers"])]
        self.concurrency = int(settings["concurrency"])
        self.seed, self.error_rate = int(settings["seed"]), float(settings["error_rate"])
        self.miss_rate, self.stop_share = float(settings["miss_rate"]), float(settings["stop_share"])
        self.sigma, self.by_tokens = float(settings["sigma"]), bool(settings["by_tokens"])
        self.tick = float(settings["tick"]) or 1e-9
        mean = float(settings["mean_latency"])
        self.latency_mu = math.log(mean) - self.sigma**2 / 2 if mean > 0 else None
        self.mean_tokens = math.exp(spec["length_mu"] + spec["length_sigma"] ** 2 / 2) + 1
        self.failed: dict[int, int] = {}  # attempts that failed here, per request key (1% of them: small)
        self.in_flight = self.waiting = 0
        self.slots = asyncio.Semaphore(self.concurrency)
        self.loop = asyncio.get_running_loop()
        self._tokenizer: Any = None
        stats[S["starts"]] += 1
        models = {"id": self.name, "object": "model", "created": 0, "owned_by": "vllm", "root": spec["model_dir"]}
        self.static = {
            "/v1/models": json.dumps({"object": "list", "data": [{**models, "max_model_len": self.max_model_len}]}),
            "/version": json.dumps({"version": VERSION}),
            "/health": "",
        }

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        if request.method == "GET" and path in self.static:
            return web.Response(text=self.static[path], content_type="application/json")
        if request.method == "POST" and path == "/v1/completions":
            return await self.completions(await request.read())
        if request.method == "POST" and path == "/tokenize":
            return self.tokenize(json.loads(await request.read()))
        return error(404, "NotFoundError", f"no route {request.method} {path}")

    def tokenize(self, body: dict) -> web.Response:
        self.stats[S["tokenize"]] += 1
        prompt, special = str(body.get("prompt", "")), bool(body.get("add_special_tokens", True))
        ids = self.spec["probes"].get(prompt) if special else None
        if ids is None:  # not one of the client's probes: the real tokenizer, loaded on first use
            if self._tokenizer is None:
                from tokenizers import Tokenizer

                self._tokenizer = Tokenizer.from_file(str(Path(self.spec["model_dir"]) / "tokenizer.json"))
            ids = self._tokenizer.encode(prompt, add_special_tokens=special).ids
        answer = json.dumps({"count": len(ids), "max_model_len": self.max_model_len, "tokens": ids})
        return web.Response(text=answer, content_type="application/json")

    async def completions(self, raw: bytes) -> web.Response:
        arrived = self.loop.time()
        stats = self.stats
        stats[S["requests"]] += 1
        ids, body = split_prompt(raw)
        max_tokens = int(body.get("max_tokens") or 16)
        if body.get("model") != self.name:
            return error(404, "NotFoundError", f"The model `{body.get('model')}` does not exist.")
        if not ids:
            return error(400, "BadRequestError", "the simulated fleet takes one prompt, as token ids")
        n = ids.count(b",") + 1
        if n + max_tokens > self.max_model_len:
            return error(400, "BadRequestError", f"maximum context length is {self.max_model_len} tokens")
        one = max_tokens == 1 or body.get("logprobs") is not None or body.get("prompt_logprobs") is not None
        if one and max_tokens != 1:
            return error(400, "BadRequestError", "the simulated fleet gives logprobs of one-token answers only")
        prompt = digest(ids)
        key = hash((self.seed, one, int(body.get("seed") or 0), max_tokens, prompt))
        attempt = self.failed.get(key, 0)
        dice = hash((key, self.index, attempt)) & 0xFFFFFFFFFFFF
        failed = (dice & 0xFFFFFF) < self.error_rate * 2**24
        choice, rng, tokens = self.one_token(ids, prompt, body) if one else self.generation(key, body, max_tokens)
        latency = rng.lognormvariate(self.latency_mu, self.sigma) if self.latency_mu is not None else 0.0
        if self.by_tokens and not one:
            latency *= tokens / self.mean_tokens
        if failed:  # the engine fails part of the way through: the slot was held until then
            self.failed[key] = attempt + 1
            latency *= (dice >> 24) / 2**24
        slots, queued = self.slots, self.slots.locked()  # every slot taken: wait in the queue
        self.waiting += queued
        stats[S["waiting_max"]] = max(stats[S["waiting_max"]], self.waiting)
        try:
            await slots.acquire()
        finally:
            self.waiting -= queued
        self.in_flight += 1
        stats[S["in_flight_max"]] = max(stats[S["in_flight_max"]], self.in_flight)
        started = self.loop.time()
        try:  # to the nearest tick: the host wakes once for all the answers due in it
            await asyncio.sleep(round((started + latency) / self.tick) * self.tick - started)
        finally:
            self.in_flight -= 1
            slots.release()
        done = self.loop.time()
        stats[S["busy_seconds"]] += done - started
        stats[S["queue_seconds"]] += started - arrived
        if failed:
            stats[S["errors"]] += 1
            return error(500, "InternalServerError", "simulated engine error")
        stats[S["scores" if one else "completions"]] += 1
        stats[S["prompt_tokens"]] += n
        stats[S["completion_tokens"]] += tokens
        # The answer as text: 2-3x cheaper than json.dumps of the same dicts.
        head = f'{{"id":"cmpl-{key & 0xFFFFFFFFFFFF:x}","object":"text_completion","created":{int(time.time())},'
        usage = f'"usage":{{"prompt_tokens":{n},"total_tokens":{n + tokens},"completion_tokens":{tokens}}}}}'
        text = f'{head}"model":{self.name_json},"choices":[{{"index":0,{choice}}}],{usage}'
        return web.Response(text=text, content_type="application/json")

    def generation(self, key: int, body: dict, max_tokens: int) -> tuple[str, random.Random, int]:
        """Words up to a drawn token length, then the eos or a stop string (or cut at `max_tokens`)."""
        rng = random.Random(key)
        length = max(1, round(rng.lognormvariate(self.spec["length_mu"], self.spec["length_sigma"])))
        words, counts, size = self.words, self.counts, len(self.words)
        picked: list[int] = []
        tokens = 0
        while tokens < length:
            i = int(rng.random() * size)
            picked.append(i)
            tokens += counts[i]
        stops = [s for s in body.get("stop") or [] if s]
        stop = stops[0] if stops and rng.random() < self.stop_share else None
        if tokens + 2 <= max_tokens:  # the words, "." and the eos (or the stop string's token)
            text, finish, tokens = (
                "".join([words[i] for i in picked]) + ".",
                f'"stop","stop_reason":{json.dumps(stop)}',
                tokens + 2,
            )
        else:  # cut at max_tokens: whole words, then one-token words to fill up
            while tokens > max_tokens:
                tokens -= counts[picked.pop()]
            fill = [self.singles[int(rng.random() * len(self.singles))] for _ in range(max_tokens - tokens)]
            text, finish, tokens = "".join([words[i] for i in picked] + fill), '"length","stop_reason":null', max_tokens
        return f'"text":{json.dumps(text)},"logprobs":null,"finish_reason":{finish}', rng, tokens

    def distribution(self, prompt: int) -> tuple[list[tuple[float, int]], random.Random]:
        """(log P(token), token) at the first response position after the prompt (`digest`), most likely first,
        for the Yes/No tokens and the fillers."""
        rng = random.Random(hash((self.seed, 7, prompt)))
        p = min(max(rng.betavariate(2.0, 1.2), 1e-6), 1 - 1e-6)  # P(Yes | Yes or No)
        mass = rng.uniform(0.55, 0.98)  # Yes + No
        scale = math.log((1 - mass) * 0.5)  # the fillers: half of the rest, 0.6 times less each
        out = [(scale + step, token) for token, step in self.fillers]
        least = math.exp(out[-1][0])
        miss = rng.random() < self.miss_rate
        for group, share in ((self.spec["yes"], p), (self.spec["no"], 1 - p)):
            main, *minor = group
            if miss:  # below every filler: outside the top 20
                small = [least * 0.5 / (j + 1) * share for j in range(len(minor))]
            else:
                small = [0.1 * mass * share / len(minor)] * len(minor)
            out.append((math.log(mass * share - sum(small)), main))
            out += [(math.log(q), token) for q, token in zip(small, minor, strict=True)]
        out.sort(reverse=True)
        return out, rng

    def one_token(self, ids: bytes, prompt: int, body: dict) -> tuple[str, random.Random, int]:
        """The greedy one-token answer, with the top `logprobs` and/or the last position's `prompt_logprobs`."""
        k, wanted = body.get("logprobs"), body.get("prompt_logprobs")
        ranked, rng = self.distribution(prompt)
        top_lp, top = ranked[0]
        keys = self.id_keys if body.get("return_tokens_as_token_ids") else self.text_keys
        logprobs = "null"
        if k is not None:
            best = ",".join([f"{keys[i]}:{lp!r}" for lp, i in ranked[: max(int(k), 1)]])
            logprobs = f'{{"text_offset":[0],"token_logprobs":[{top_lp!r}],"tokens":[{keys[top]}],'
            logprobs += f'"top_logprobs":[{{{best}}}]}}'
        choice = f'"text":{self.text_keys[top]},"logprobs":{logprobs},"finish_reason":"length","stop_reason":null'
        if wanted is not None:
            self.stats[S["prompt_logprobs"]] += 1
            head, _, tail = ids.rpartition(b",")  # the prompt is a scored prompt plus one answer token
            scored = {token: lp for lp, token in self.distribution(digest(head))[0]}
            entry = {"logprob": scored.get(int(tail), -30.0), "rank": 1, "decoded_token": ""}
            filler = {"logprob": -2.0, "rank": 1, "decoded_token": ""}
            positions = [None, *({i.decode(): filler} for i in head.split(b",")[1:]), {tail.decode(): entry}]
            choice += f',"prompt_logprobs":{json.dumps(positions)}'
        return choice, rng, 1


def split_prompt(raw: bytes) -> tuple[bytes, dict]:
    """(the prompt's token ids as b"1,2,3", the rest of the JSON body): the ids, most of a body, are never decoded.
    b"" when the prompt is not one list of ids."""
    at = raw.find(b'"prompt"')
    start, end = raw.find(b"[", at), raw.find(b"]", at)
    if at < 0 or start < 0 or end < 0 or raw[at + 8 : start].strip() != b":":
        return b"", json.loads(raw)
    ids = raw[start + 1 : end].translate(None, b" \t\r\n")
    if ids.translate(None, b"0123456789,"):
        return b"", json.loads(raw)
    return ids, json.loads(raw[:at] + b'"prompt":0' + raw[end + 1 :])


def digest(ids: bytes) -> int:
    """64 bits of a prompt's ids (as "1,2,3"): the same in every process, unlike `hash` of bytes."""
    return int.from_bytes(hashlib.blake2b(ids, digest_size=8).digest(), "little")


def error(status: int, kind: str, message: str) -> web.Response:
    """vLLM's error body."""
    body = {"object": "error", "message": message, "type": kind, "param": None, "code": status}
    return web.Response(text=json.dumps(body), status=status, content_type="application/json")


def host(spec_path: str, indexes: list[int], slot: int) -> None:
    """Serve the fleet's endpoints `indexes` in this process until stdin closes (the fleet stopped or died).
    Commands on stdin, each answered by one line: `start I PORT` (listen; prints the port), `kill I` (stop
    listening, reset its connections: what a SIGKILL does to its clients), `account` (write this CPU time)."""
    spec = json.loads(Path(spec_path).read_text())
    with open(spec["stats"], "r+b") as file:
        mapped = mmap.mmap(file.fileno(), 0)
    rows = memoryview(mapped).cast("d")
    width, cpu_at = len(STATS), len(STATS) * spec["n"] + slot
    cpu_base = rows[cpu_at]
    live: dict[int, tuple[asyncio.Server, web.Server]] = {}

    async def start(i: int, port: int) -> int:
        endpoint = Endpoint(spec["model"], spec["settings"], i, rows[i * width : (i + 1) * width])
        handler = web.Server(endpoint.handle, access_log=None, handler_cancellation=True)
        loop = asyncio.get_running_loop()
        listener = await loop.create_server(handler, "127.0.0.1", port, reuse_address=True, backlog=4096)
        live[i] = (listener, handler)
        return int(listener.sockets[0].getsockname()[1])

    def kill(i: int) -> None:
        listener, handler = live.pop(i)
        listener.close()
        for connection in handler.connections:
            if connection.transport is not None:
                connection.transport.abort()

    async def main() -> None:
        ports = [await start(i, 0) for i in indexes]
        print(" ".join(map(str, ports)), flush=True)
        reader = asyncio.StreamReader()
        await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := (await reader.readline()).split():
            answer = "ok"
            try:
                if line[0] == b"start":
                    answer = f"ok {await start(int(line[1]), int(line[2]))}"
                elif line[0] == b"kill":
                    kill(int(line[1]))
            except (OSError, KeyError, ValueError) as failure:
                answer = f"error {failure!r}"
            rows[cpu_at] = cpu_base + time.process_time()
            print(answer, flush=True)
        rows[cpu_at] = cpu_base + time.process_time()

    asyncio.run(main())


class Fleet:
    """`n` simulated vLLM endpoints on 127.0.0.1, spread over `processes` host processes (one serves ~5,000 requests/s
    on a 2-core VM, and fewer processes wake less often: cheaper). Use as a context manager, or `start` and `stop`."""

    def __init__(
        self,
        n: int = 16,
        concurrency: int = 128,
        mean_latency: float = 2.0,
        error_rate: float = 0.01,
        model_dir: str | Path | None = None,
        *,
        sigma: float = 0.5,
        seed: int = 0,
        served_name: str | None = None,
        max_model_len: int | None = None,
        miss_rate: float = 0.0,
        stop_share: float = 0.2,
        by_tokens: bool = False,
        tick: float = 0.01,
        processes: int = 1,
        workdir: str | Path | None = None,
    ):
        self.n, self.concurrency, self.mean_latency = n, concurrency, mean_latency
        self.processes = max(1, min(n, processes))
        self.own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="fleet-"))
        self.model_dir = Path(model_dir) if model_dir else None
        self.served_name, self.max_model_len = served_name, max_model_len
        self.settings = {"concurrency": concurrency, "mean_latency": mean_latency, "sigma": sigma, "seed": seed}
        self.settings |= {"error_rate": error_rate, "miss_rate": miss_rate, "stop_share": stop_share}
        self.settings |= {"by_tokens": by_tokens, "tick": tick}
        self.hosts: list[subprocess.Popen[bytes]] = []
        self.ports = [0] * n
        self.up = [False] * n
        self.spec: dict = {}
        self._lock = threading.Lock()

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    @property
    def capacity(self) -> float:
        """Requests per second the fleet serves at most: slots / mean latency."""
        return self.n * self.concurrency / self.mean_latency if self.mean_latency > 0 else math.inf

    def start(self) -> Self:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.model_dir is None:
            from inversecoder.tiny_model import make_tiny_model

            self.model_dir = make_tiny_model(self.workdir / "tiny-model")
        stats = self.workdir / "stats.bin"
        stats.write_bytes(bytes((len(STATS) * self.n + self.processes) * 8))
        model = make_spec(self.model_dir, self.served_name, self.max_model_len)
        self.spec = {"model": model, "settings": self.settings, "stats": str(stats), "n": self.n}
        (self.workdir / "spec.json").write_text(json.dumps(self.spec))
        for k in range(self.processes):
            indexes = ",".join(map(str, range(k, self.n, self.processes)))
            command = [sys.executable, __file__, "--host", str(self.workdir / "spec.json"), indexes, str(k)]
            # Its own session: a Ctrl-C meant for the fleet's owner does not reach the hosts first; unbuffered pipes,
            # so select() sees every line; a host leaves when its stdin closes (the fleet stopped, or its process died).
            with open(self.workdir / f"host-{k}.log", "ab") as log:
                pipe = subprocess.PIPE
                self.hosts.append(
                    subprocess.Popen(command, 0, stdin=pipe, stdout=pipe, stderr=log, start_new_session=True)
                )
        for k in range(self.processes):
            for i, port in zip(range(k, self.n, self.processes), self._read(k).split(), strict=True):
                self.ports[i], self.up[i] = int(port), True
        return self

    def _read(self, k: int, timeout: float = 60.0) -> str:
        out = self.hosts[k].stdout
        assert out is not None
        line = out.readline() if select.select([out], [], [], timeout)[0] else b""
        if not line.strip():
            log = (self.workdir / f"host-{k}.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"fleet host {k} did not answer:\n{log}")
        return line.decode()

    def _command(self, k: int, line: str) -> str:
        with self._lock:
            stdin = self.hosts[k].stdin
            assert stdin is not None
            stdin.write(line.encode() + b"\n")
            answer = self._read(k)
        if not answer.startswith("ok"):
            raise RuntimeError(f"fleet host {k}: {line}: {answer}")
        return answer.removeprefix("ok").strip()

    def kill(self, i: int) -> None:
        """Endpoint `i` dies: its listening socket closes (connections refused) and its open connections are reset
        with its requests in flight, as when vLLM is SIGKILLed; the others, in its process too, go on."""
        if self.up[i]:
            self._command(i % self.processes, f"kill {i}")
            self.up[i] = False

    def restart(self, i: int) -> None:
        """Endpoint `i` again, on the same port, with empty slots (killed first if it runs)."""
        self.kill(i)
        self._command(i % self.processes, f"start {i} {self.ports[i]}")
        self.up[i] = True

    def stats(self) -> list[dict[str, float]]:
        """Per endpoint, its counters (see STATS) since the fleet started, across restarts."""
        values = struct.unpack(
            f"{len(STATS) * self.n}d", (self.workdir / "stats.bin").read_bytes()[: len(STATS) * self.n * 8]
        )
        return [dict(zip(STATS, values[i * len(STATS) : (i + 1) * len(STATS)], strict=True)) for i in range(self.n)]

    def totals(self) -> dict[str, float]:
        """The counters summed over the endpoints (peaks: the largest), and the CPU seconds of the hosts."""
        for k in range(self.processes):
            self._command(k, "account")
        cpu = struct.unpack(f"{self.processes}d", (self.workdir / "stats.bin").read_bytes()[len(STATS) * self.n * 8 :])
        rows = self.stats()
        return {k: (max if k.endswith("_max") else sum)(r[k] for r in rows) for k in STATS} | {"cpu_seconds": sum(cpu)}

    def utilization(self, wall: float, before: dict[str, float] | None = None) -> float:
        """Slot-seconds served / (slots x `wall`): the share of the fleet's capacity used over `wall` seconds
        (counted from the `before` totals when given)."""
        busy = self.totals()["busy_seconds"] - (before or {}).get("busy_seconds", 0.0)
        return busy / (self.n * self.concurrency * wall)

    def stop(self) -> None:
        for proc in self.hosts:
            if proc.stdin is not None:
                proc.stdin.close()  # the host's signal to leave
        for proc in self.hosts:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        self.hosts = []
        self.up = [False] * self.n
        if self.own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def load(fleet: Fleet, seconds: float, workers: int, warmup: float | None = None) -> dict[str, float]:
    """A minimal aiohttp client: `workers` per endpoint posting generations and one-token scores (half each, ~500
    token ids), each 500 sent again. After `warmup` (default: 2 latencies + 1 s) it measures `seconds` of steady
    state: the rate, the share of the fleet's slot-seconds used, CPU per request of the endpoints and this client."""
    import aiohttp

    rng = random.Random(0)
    vocab = [int(i) for i in fleet.spec["model"]["texts"]]
    room = fleet.spec["model"]["max_model_len"] - 2048
    bodies = []
    for k in range(512):
        prompt = [rng.choice(vocab) for _ in range(min(room, max(8, int(rng.lognormvariate(6.1, 0.5)))))]
        body: dict[str, Any] = {"model": fleet.spec["model"]["served_name"], "prompt": prompt}
        if k % 2:
            body |= {"max_tokens": 1, "temperature": 0.0, "logprobs": 20, "return_tokens_as_token_ids": True}
        else:
            body |= {"max_tokens": 2048, "temperature": 0.8, "seed": k, "stop": ["```"]}
        bodies.append(json.dumps(body).encode())
    counts = {"ok": 0, "errors": 0}
    marks: list[tuple[float, float, dict[str, float], dict[str, int]]] = []
    warmup = 2 * fleet.mean_latency + 1 if warmup is None else warmup

    async def worker(session: aiohttp.ClientSession, url: str, stop: float, k: int) -> None:
        while time.perf_counter() < stop:
            k += 1
            data = bodies[k % len(bodies)]
            async with session.post(url, data=data, headers={"Content-Type": "application/json"}) as response:
                await response.read()
            if response.status not in (200, 500):
                raise RuntimeError(f"{url} answered HTTP {response.status}")
            counts["ok" if response.status == 200 else "errors"] += 1

    async def mark() -> None:
        totals = await asyncio.to_thread(fleet.totals)
        marks.append((time.perf_counter(), time.process_time(), totals, dict(counts)))

    async def run() -> None:
        stop = time.perf_counter() + warmup + seconds
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            urls = [url + "/v1/completions" for url in fleet.urls]
            jobs = [worker(session, url, stop, n * 7919) for n, url in enumerate(urls * workers)]
            running = asyncio.gather(*jobs)
            await asyncio.sleep(warmup)
            await mark()
            await asyncio.sleep(stop - time.perf_counter())
            await mark()
            await running

    asyncio.run(run())
    (wall0, cpu0, before, done0), (wall1, cpu1, after, done1) = marks
    wall, served = wall1 - wall0, after["requests"] - before["requests"]
    return {
        "seconds": wall,
        "rate": (done1["ok"] - done0["ok"]) / wall,
        "capacity": fleet.capacity,
        "utilization": (after["busy_seconds"] - before["busy_seconds"]) / (fleet.n * fleet.concurrency * wall),
        "errors": done1["errors"] - done0["errors"],
        "server_us": (after["cpu_seconds"] - before["cpu_seconds"]) / served * 1e6,
        "client_us": (cpu1 - cpu0) / served * 1e6,
        "in_flight_max": after["in_flight_max"],
        "waiting_max": after["waiting_max"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", nargs=3, metavar=("SPEC", "INDEXES", "SLOT"), help=argparse.SUPPRESS)
    parser.add_argument("--endpoints", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=128, help="requests each endpoint runs at once")
    parser.add_argument("--latency", type=float, default=2.0, help="mean seconds per request (lognormal)")
    parser.add_argument("--sigma", type=float, default=0.5, help="the latency's lognormal shape")
    parser.add_argument("--by-tokens", action="store_true", help="generation latency scaled by its tokens")
    parser.add_argument("--error-rate", type=float, default=0.01, help="attempts answered with HTTP 500")
    parser.add_argument("--miss-rate", type=float, default=0.0, help="scores with Yes/No variants outside the top 20")
    parser.add_argument("--model-dir", help="the model folder whose tokenizer is served (default: the tiny model)")
    parser.add_argument("--served-name", help="the model id /v1/models reports (default: the folder's path)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--processes", type=int, default=1, help="host processes")
    parser.add_argument("--tick", type=float, default=0.01, help="answers are due on multiples of it (s)")
    parser.add_argument("--report", type=float, default=10.0, help="seconds between counter lines while serving")
    parser.add_argument("--self-test", action="store_true", help="load the fleet with a bare client, print its rate")
    parser.add_argument("--seconds", type=float, default=20.0, help="--self-test's measured steady state")
    parser.add_argument("--workers", type=int, help="--self-test's requests in flight per endpoint (default: slots)")
    args = parser.parse_args()
    if args.host:
        spec, indexes, slot = args.host
        host(spec, [int(i) for i in indexes.split(",")], int(slot))
        return
    names = ("sigma", "seed", "served_name", "miss_rate", "by_tokens", "processes", "tick")
    fleet = Fleet(args.endpoints, args.concurrency, args.latency, args.error_rate, args.model_dir,
                  **{name: getattr(args, name) for name in names})  # fmt: skip
    with fleet:
        print(f"{fleet.n} endpoints x {fleet.concurrency} slots, {fleet.mean_latency:g} s mean latency: at most "
              f"{fleet.capacity:.0f} requests/s; serving {fleet.spec['model']['served_name']}")  # fmt: skip
        if args.self_test:
            result = load(fleet, args.seconds, args.workers or args.concurrency)
            print(json.dumps({k: round(v, 3) for k, v in result.items()}))
            print(f"{result['rate']:.0f} req/s = {result['rate'] / fleet.capacity:.0%} of the ideal; "
                  f"{result['utilization']:.0%} of the slot-seconds used; CPU per request: endpoints "
                  f"{result['server_us']:.0f} us, this client {result['client_us']:.0f} us")  # fmt: skip
            return
        print("generator:\n  backend: vllm\n  endpoints:\n" + "".join(f"    - {url}\n" for url in fleet.urls))
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stopped like Ctrl-C: the hosts go, the files too
        started = time.monotonic()
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(args.report)
                t = fleet.totals()
                wall = time.monotonic() - started
                print(f"{wall:.0f}s: {t['requests']:.0f} requests ({t['errors']:.0f} errors), "
                      f"{fleet.utilization(wall):.0%} utilized, peak {t['in_flight_max']:.0f} in flight and "
                      f"{t['waiting_max']:.0f} queued on an endpoint", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
