"""An OpenAI-compatible test double (vLLM's routes and extensions, SGLang's native /generate): the real tiny
model behind them, in-process on 127.0.0.1, faults on demand.

What it serves, shaped as vLLM 0.x and SGLang document them:
- `GET /v1/models` (`id` = the served model name, `max_model_len`), `GET /version`, `GET /health`,
  `POST /tokenize` (`{"tokens": [...]}`);
- `POST /v1/completions`: `prompt` as text or token ids, `max_tokens`, `temperature`, `top_p`, `seed`,
  `stop`, `repetition_penalty`, `logprobs` (top k per generated token, keyed `token_id:N` under
  `return_tokens_as_token_ids`), `prompt_logprobs` (per prompt position a dict keyed by token id string:
  the actual token and the top k), `usage`, `finish_reason` with vLLM's `stop_reason` (None at the eos);
- `POST /generate` (SGLang): `input_ids`, `sampling_params`, `return_logprob`, `token_ids_logprob` ->
  `meta_info.output_token_ids_logprobs` = [[[logprob, token_id, None], ...]].
Logprobs are log_softmax of the model's float32 logits at each position, one sequence at a time, so a
score depends only on its prompt. Faults (`OpenAIServer.faults`): the first N attempts of every distinct
request answered with a status (and Retry-After), answers delayed, connections dropped mid-request,
/health failing, another tokenizer on /tokenize.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from aiohttp import web


class TinyEngine:
    """The tiny model, as an engine computes with it (float32, one sequence at a time)."""

    def __init__(self, model_dir: str | Path):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.max_model_len = int(self.model.config.max_position_embeddings)
        self.lock = threading.Lock()

    def logprobs(self, ids: list[int]) -> Any:
        """log_softmax of the logits at every position of `ids` (position i predicts token i + 1)."""
        torch = self.torch
        with self.lock, torch.inference_mode():
            logits = self.model(input_ids=torch.tensor([ids])).logits[0].float()
        return torch.log_softmax(logits, dim=-1)

    def sample(self, ids: list[int], body: dict[str, Any]) -> tuple[list[int], list[Any], str | None]:
        """Generated ids, the logprob rows they were drawn from, and the stop string matched (or None)."""
        torch = self.torch
        params = body.get("sampling_params", body)
        temperature = float(params.get("temperature", 1.0) or 0.0)
        top_p = float(params.get("top_p", 1.0))
        penalty = float(params.get("repetition_penalty", 1.0))
        limit = int(params.get("max_tokens", params.get("max_new_tokens", 16)))
        stops = [s for s in (params.get("stop") or []) if s]
        generator = torch.Generator().manual_seed(int(body.get("seed", 0)))
        out: list[int] = []
        rows = []
        for _ in range(limit):
            with self.lock, torch.inference_mode():
                logits = self.model(input_ids=torch.tensor([ids + out])).logits[0, -1].float()
            logits = logits.clone()  # a normal tensor: the penalty edits it in place
            rows.append(torch.log_softmax(logits, dim=-1))
            if penalty != 1.0:
                seen = torch.tensor(sorted(set(ids + out)))
                picked = logits[seen]
                logits[seen] = torch.where(picked > 0, picked / penalty, picked * penalty)
            if temperature <= 0:
                token = int(torch.argmax(logits))
            else:
                probs = torch.softmax(logits / temperature, dim=-1)
                if top_p < 1.0:
                    ordered, order = torch.sort(probs, descending=True)
                    keep = torch.cumsum(ordered, 0) - ordered < top_p
                    probs = torch.zeros_like(probs).scatter(0, order[keep], ordered[keep])
                token = int(torch.multinomial(probs / probs.sum(), 1, generator=generator))
            out.append(token)
            if token == self.tokenizer.eos_token_id:
                return out, rows, None
            text = self.tokenizer.decode(out, skip_special_tokens=True)
            matched = next((s for s in stops if s in text), None)
            if matched:
                return out, rows, matched
        return out, rows, None


def _top(row: Any, k: int) -> list[tuple[int, float]]:
    values, ids = row.topk(k)
    return [(int(i), float(v)) for i, v in zip(ids, values, strict=True)]


class OpenAIServer:
    """One endpoint on 127.0.0.1 (its own thread and event loop); `stop()` and `start()` keep the port."""

    def __init__(self, engine: TinyEngine, served_name: str, dialect: str = "vllm", max_model_len: int | None = None):
        self.engine = engine
        self.served_name = served_name
        self.dialect = dialect
        self.max_model_len = max_model_len or engine.max_model_len
        self.faults: dict[str, Any] = {}
        self.attempts: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner: web.AppRunner | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    def start(self) -> None:
        async def up() -> None:
            app = web.Application()
            app.router.add_get("/v1/models", self.models)
            app.router.add_get("/version", self.version)
            app.router.add_get("/health", self.health)
            app.router.add_post("/tokenize", self.tokenize)
            app.router.add_post("/v1/completions", self.completions)
            if self.dialect == "sglang":
                app.router.add_post("/generate", self.generate)
            self.runner = web.AppRunner(app, access_log=None)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

        self._call(up())

    def stop(self) -> None:
        """The server goes away (connections refused) until `start()`."""
        if self.runner is not None:
            self._call(self.runner.cleanup())
            self.runner = None

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)

    # -- faults -------------------------------------------------------------------------------------
    async def _fault(self, request: web.Request, raw: bytes) -> web.StreamResponse | None:
        """The fault this attempt meets, if any: the first `fail_first` attempts of each distinct body fail."""
        route = request.path
        self.requests[route] += 1
        key = hashlib.sha256(route.encode() + raw).hexdigest()
        self.attempts[key] += 1
        faults = self.faults
        if route in faults.get("routes", [route]) and faults.get("delay"):
            await asyncio.sleep(faults["delay"])
        if route not in ("/v1/completions", "/generate") or self.attempts[key] > faults.get("fail_first", 0):
            return None
        if faults.get("drop"):
            assert request.transport is not None
            request.transport.close()  # dies mid-request: no answer at all
            return web.Response(status=500)
        status = faults.get("status", 500)
        headers = {"Retry-After": str(faults["retry_after"])} if "retry_after" in faults else {}
        return web.json_response({"error": {"message": "injected", "code": status}}, status=status, headers=headers)

    async def _read(self, request: web.Request) -> tuple[Any, web.StreamResponse | None]:
        """The request's JSON body, or the fault that answers it instead."""
        raw = await request.read()
        fault = await self._fault(request, raw)
        return (None, fault) if fault is not None else (json.loads(raw), None)

    # -- routes -------------------------------------------------------------------------------------
    async def models(self, request: web.Request) -> web.Response:
        entry = {"id": self.served_name, "object": "model", "owned_by": self.dialect, "root": self.served_name}
        return web.json_response({"object": "list", "data": [{**entry, "max_model_len": self.max_model_len}]})

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": "0.0-double"})

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=503 if self.faults.get("unhealthy") else 200)

    async def tokenize(self, request: web.Request) -> web.Response:
        body = await request.json()
        ids = self.engine.tokenizer(body["prompt"], add_special_tokens=body.get("add_special_tokens", True))
        tokens = [i + self.faults.get("token_shift", 0) for i in ids["input_ids"]]
        return web.json_response({"tokens": tokens, "count": len(tokens), "max_model_len": self.max_model_len})

    def _ids(self, prompt: Any) -> list[int]:
        if isinstance(prompt, list):
            return [int(i) for i in prompt]
        return list(self.engine.tokenizer(prompt, add_special_tokens=True)["input_ids"])

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body, fault = await self._read(request)
        if fault is not None:
            return fault
        if body.get("model") != self.served_name:
            return web.json_response({"error": {"message": f"model {body.get('model')} does not exist"}}, status=404)
        ids = self._ids(body["prompt"])
        if len(ids) + int(body.get("max_tokens", 16)) > self.max_model_len:
            return web.json_response({"error": {"message": "maximum context length exceeded"}}, status=400)
        by_id = bool(body.get("return_tokens_as_token_ids"))
        choice: dict[str, Any] = {"index": 0}
        if body.get("prompt_logprobs") is not None:
            rows = await asyncio.to_thread(self.engine.logprobs, ids)
            k = int(body["prompt_logprobs"])
            positions: list[Any] = [None]
            for position in range(1, len(ids)):
                row = rows[position - 1]
                entries = {ids[position]: float(row[ids[position]]), **dict(_top(row, k) if k else [])}
                positions.append({str(i): {"logprob": lp, "decoded_token": self._text(i)} for i, lp in entries.items()})
            choice["prompt_logprobs"] = positions
        out, rows, matched = await asyncio.to_thread(self.engine.sample, ids, body)
        text = str(self.engine.tokenizer.decode(out, skip_special_tokens=True))
        if matched:
            text = text[: text.find(matched)]
        eos = bool(out) and out[-1] == self.engine.tokenizer.eos_token_id
        choice.update(
            text=text,
            finish_reason="stop" if eos or matched else "length",
            stop_reason=matched,
        )
        if body.get("logprobs") is not None:
            key = (lambda i: f"token_id:{i}") if by_id else self._text
            choice["logprobs"] = {
                "tokens": [key(i) for i in out],
                "token_logprobs": [float(r[i]) for r, i in zip(rows, out, strict=True)],
                "top_logprobs": [{key(i): lp for i, lp in _top(r, int(body["logprobs"]))} for r in rows],
            }
        usage = {"prompt_tokens": len(ids), "completion_tokens": len(out), "total_tokens": len(ids) + len(out)}
        return web.json_response(
            {"object": "text_completion", "model": self.served_name, "choices": [choice], "usage": usage}
        )

    async def generate(self, request: web.Request) -> web.StreamResponse:
        """SGLang's native route, the part of it the `sglang` dialect uses for scores."""
        body, fault = await self._read(request)
        if fault is not None:
            return fault
        ids = [int(i) for i in body["input_ids"]]
        out, rows, _ = await asyncio.to_thread(self.engine.sample, ids, body)
        meta: dict[str, Any] = {"prompt_tokens": len(ids), "completion_tokens": len(out), "id": "double"}
        if body.get("return_logprob"):
            wanted = [int(i) for i in body.get("token_ids_logprob") or []]
            meta["output_token_logprobs"] = [[float(r[i]), i, None] for r, i in zip(rows, out, strict=True)]
            meta["output_token_ids_logprobs"] = [[[float(r[i]), i, None] for i in wanted] for r in rows]
        return web.json_response({"text": self.engine.tokenizer.decode(out), "output_ids": out, "meta_info": meta})

    def _text(self, token_id: int) -> str:
        return str(self.engine.tokenizer.decode([token_id]))
