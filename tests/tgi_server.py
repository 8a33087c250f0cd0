"""A text-generation-inference test double: the real tiny model behind TGI's HTTP protocol, faults on demand.

One module (over 500 lines): the server, its forked children and the client helpers share one wire protocol.

TGI cannot be installed where the tests run, so this serves the routes the `tgi` backend uses, shaped
as TGI's OpenAPI document says (`data/tgi/openapi.json`): `POST /generate` (details, top_n_tokens,
decoder_input_details, seed, stop, do_sample, temperature, top_p, repetition_penalty, max_new_tokens),
`GET /info`, `GET /health`, `POST /tokenize`, and TGI's error body `{"error", "error_type"}` with its
status codes (422 validation, 424 generation, 429 overloaded, 500 incomplete generation, 503).

- Each server is a real process: one "zygote" process imports torch and loads the model once, then
  forks a server per port, so a test can SIGKILL one and start it again on the same port in
  milliseconds instead of re-importing transformers.
- Generation follows TGI's order (repetition penalty, temperature, top-p; logprobs of the processed
  scores; a seeded generator per request; stop sequences matched at the end of the text, which TGI
  keeps in `generated_text`), one request at a time, so a result depends only on its request.
- Faults (`POST /_control`): an error rate over chosen statuses (with Retry-After), the first N
  attempts of every request failing, added latency (for all requests, or for prompts containing a
  given text), dropped connections (TCP reset), an unhealthy /health. Which attempt fails is a hash of
  (fault seed, route, body, attempt number): the same requests meet the same faults whatever their order, so
  outcomes compare with a fault-free run.
- Every request body and every response body is checked against the OpenAPI schemas when the spec is
  given; `GET /_stats` returns the violations (tests assert there are none) and the request counts.

Run `python tests/tgi_server.py [--openapi FILE]`: it prints `{"ready": true}` once its imports are
done, then reads JSON commands on stdin (`{"cmd": "load", "model": DIR}`, `{"cmd": "start", "port": 0,
"settings": {...}, "faults": {...}}`, `{"cmd": "kill", "pid": N}`) and answers one JSON line each;
`TGIServers` below drives it.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import json
import os
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

SPEC = Path(__file__).resolve().parents[1] / "data" / "tgi" / "openapi.json"  # shipped with the project
TGI_VERSION = "3.3.6-dev0"  # the version of the OpenAPI document this double follows

#: TGI's error bodies per status (router/src/server.rs and infer/mod.rs).
ERRORS = {
    422: ("Input validation error", "validation"),
    424: ("Request failed during generation", "generation"),
    429: ("Model is overloaded", "overloaded"),
    500: ("Incomplete generation", "incomplete_generation"),
    503: ("unhealthy", "healthcheck"),
}


# -- a validator for the part of OpenAPI 3.0 that TGI's schemas use -------------------------------
class OpenAPISchemas:
    """Checks a JSON value against `#/components/schemas/NAME` (jsonschema is not installed).

    Supports $ref, allOf, oneOf, nullable, type, required, properties, items, enum, minItems/maxItems,
    minimum/maximum, exclusiveMinimum/exclusiveMaximum (numbers, as TGI's generator writes them: the
    value must be strictly greater/less), and the int32/int64 formats."""

    def __init__(self, spec: dict[str, Any]):
        self.spec = spec
        self.schemas: dict[str, Any] = spec["components"]["schemas"]

    @classmethod
    def load(cls, path: str | Path = SPEC) -> OpenAPISchemas:
        """The document's schemas; a missing document is an error (the double would check nothing)."""
        if not Path(path).is_file():
            raise FileNotFoundError(f"TGI's OpenAPI document is missing at {path} (the project ships it in data/tgi)")
        return cls(json.loads(Path(path).read_text(encoding="utf-8")))

    def errors(self, value: Any, name: str) -> list[str]:
        found: list[str] = []
        self._check(value, {"$ref": f"#/components/schemas/{name}"}, name, found)
        return found

    def _check(self, value: Any, schema: dict[str, Any], where: str, found: list[str]) -> None:
        if "$ref" in schema:
            return self._check(value, self.schemas[schema["$ref"].rsplit("/", 1)[1]], where, found)
        if value is None:
            if not schema.get("nullable") and ("type" in schema or "allOf" in schema or "oneOf" in schema):
                found.append(f"{where}: null is not allowed")
            return
        for sub in schema.get("allOf", []):
            self._check(value, sub, where, found)
        if "oneOf" in schema:
            matching = sum(not self._sub_errors(value, sub, where) for sub in schema["oneOf"])
            if matching != 1:
                found.append(f"{where}: matches {matching} of the oneOf schemas, not exactly one")
        kind = schema.get("type")
        checks = {
            "object": lambda v: isinstance(v, dict),
            "array": lambda v: isinstance(v, list),
            "string": lambda v: isinstance(v, str),
            "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
            "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
            "boolean": lambda v: isinstance(v, bool),
        }
        if kind is not None and not checks[kind](value):
            found.append(f"{where}: expected {kind}, got {type(value).__name__} {value!r:.60}")
            return
        if "enum" in schema and value not in schema["enum"]:
            found.append(f"{where}: {value!r} is not one of {schema['enum']}")
        if kind == "object":
            for key in schema.get("required", []):
                if key not in value:
                    found.append(f"{where}: missing required field '{key}'")
            for key, sub in schema.get("properties", {}).items():
                if key in value:
                    self._check(value[key], sub, f"{where}.{key}", found)
        if kind == "array":
            if "maxItems" in schema and len(value) > schema["maxItems"]:
                found.append(f"{where}: {len(value)} items, at most {schema['maxItems']} allowed")
            if "minItems" in schema and len(value) < schema["minItems"]:
                found.append(f"{where}: {len(value)} items, at least {schema['minItems']} required")
            for i, item in enumerate(value):
                self._check(item, schema.get("items", {}), f"{where}[{i}]", found)
        if kind in ("integer", "number"):
            bounds = [
                ("minimum", lambda v, b: v >= b),
                ("maximum", lambda v, b: v <= b),
                ("exclusiveMinimum", lambda v, b: v > b),
                ("exclusiveMaximum", lambda v, b: v < b),
            ]
            for key, ok in bounds:
                bound = schema.get(key)
                if isinstance(bound, (int, float)) and not isinstance(bound, bool) and not ok(value, bound):
                    found.append(f"{where}: {value} violates {key} {bound}")
            limit = {"int32": 2**31, "int64": 2**63}.get(schema.get("format", ""))
            if limit and kind == "integer" and not -limit <= value < limit:
                found.append(f"{where}: {value} does not fit {schema['format']}")

    def _sub_errors(self, value: Any, schema: dict[str, Any], where: str) -> list[str]:
        found: list[str] = []
        self._check(value, schema, where, found)
        return found


# -- the model, TGI's way ---------------------------------------------------------------------------
class ValidationFailure(Exception):
    """A request TGI's validation would refuse (422)."""


class TinyModel:
    """The model and tokenizer, loaded once in the zygote and shared by its forked servers."""

    def __init__(self, model_dir: str):
        import inspect

        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(1)
        self.path = model_dir
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        parameters = inspect.signature(self.model.forward).parameters
        self.cache_kwarg = "cache" if "cache" in parameters else "past_key_values"
        self.eos_ids = {self.tokenizer.eos_token_id} - {None}
        self.special_ids = set(self.tokenizer.all_special_ids)
        self.lock = threading.Lock()

    def token(self, token_id: int, logprob: float | None, with_special: bool = True) -> dict[str, Any]:
        entry = {"id": token_id, "text": self.tokenizer.decode([token_id]), "logprob": logprob}
        if with_special:
            entry["special"] = token_id in self.special_ids
        return entry

    def tokenize(self, text: str) -> list[dict[str, Any]]:
        encoded = self.tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
        return [
            {"id": i, "text": text[a:b], "start": a, "stop": b}
            for i, (a, b) in zip(encoded["input_ids"], encoded["offset_mapping"], strict=True)
        ]

    def generate(self, body: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
        """TGI's validation (router/src/validation.rs) and generation for one request."""
        import torch
        from transformers import DynamicCache

        inputs = body.get("inputs")
        p = body.get("parameters") or {}
        if not isinstance(inputs, str) or not inputs:
            raise ValidationFailure("`inputs` cannot be empty")
        temperature, top_p = p.get("temperature"), p.get("top_p")
        repetition_penalty, top_n = p.get("repetition_penalty"), p.get("top_n_tokens") or 0
        if temperature is not None and temperature <= 0:
            raise ValidationFailure("`temperature` must be strictly positive")
        if top_p is not None and not 0 < top_p < 1:
            raise ValidationFailure("`top_p` must be > 0.0 and < 1.0")
        if repetition_penalty is not None and repetition_penalty <= 0:
            raise ValidationFailure("`repetition_penalty` must be strictly positive")
        if top_n > settings["max_top_n_tokens"]:
            raise ValidationFailure(f"`top_n_tokens` must be >= 0 and <= {settings['max_top_n_tokens']}")
        stop = p.get("stop") or []
        if len(stop) > settings["max_stop_sequences"]:
            raise ValidationFailure(
                f"`stop` supports up to {settings['max_stop_sequences']} stop sequences. Given: {len(stop)}"
            )
        ids = self.tokenizer(inputs, add_special_tokens=True)["input_ids"]
        n = len(ids)
        max_new = p.get("max_new_tokens")
        if max_new is None:
            max_new = settings["max_total_tokens"] - n
        if max_new <= 0:
            raise ValidationFailure("`max_new_tokens` must be strictly positive")
        if n > settings["max_input_tokens"]:
            raise ValidationFailure(f"`inputs` must have less than {settings['max_input_tokens']} tokens. Given: {n}")
        if n + max_new > settings["max_total_tokens"]:
            raise ValidationFailure(
                f"`inputs` tokens + `max_new_tokens` must be <= {settings['max_total_tokens']}. "
                f"Given: {n} `inputs` tokens and {max_new} `max_new_tokens`"
            )
        # TGI samples when asked to or when any warper is set.
        sampling = bool(p.get("do_sample")) or (temperature not in (None, 1.0)) or (top_p not in (None, 1.0))
        seed = p.get("seed")
        if sampling and seed is None:
            seed = int.from_bytes(os.urandom(4), "little") + 1
        with self.lock, torch.inference_mode():
            cache = DynamicCache(config=self.model.config)
            out = self.model(input_ids=torch.tensor([ids]), use_cache=True, **{self.cache_kwarg: cache})
            all_logits = out.logits[0].float()
            prefill = []
            if p.get("decoder_input_details") and settings["prefill_logprobs"]:
                prompt_logprobs = torch.log_softmax(all_logits[:-1], dim=-1)
                prefill = [self.token(ids[0], None, False)] + [
                    self.token(ids[i], float(prompt_logprobs[i - 1, ids[i]]), False) for i in range(1, n)
                ]
            logits = all_logits[-1]
            generator = (
                torch.Generator().manual_seed(int(seed)) if sampling and seed is not None else None
            )  # drawn above
            seen = torch.zeros_like(logits, dtype=torch.bool)
            seen[torch.tensor(ids)] = True
            generated, tokens, top_tokens, finish = [], [], [], "length"
            for step in range(max_new):
                scores = logits
                if repetition_penalty not in (None, 1.0):
                    penalized = torch.where(scores < 0, scores * repetition_penalty, scores / repetition_penalty)
                    scores = torch.where(seen, penalized, scores)
                if sampling and temperature not in (None, 1.0):
                    scores = scores / temperature
                if sampling and top_p not in (None, 1.0):
                    ordered, order = torch.sort(scores, descending=False)
                    remove = ordered.softmax(-1).cumsum(-1) <= (1 - top_p)
                    remove[-1:] = False
                    scores = scores.masked_fill(remove.scatter(0, order, remove), -float("inf"))
                logprobs = torch.log_softmax(scores, dim=-1)
                if sampling:
                    token = int(torch.multinomial(scores.softmax(-1), 1, generator=generator).item())
                else:
                    token = int(scores.argmax().item())
                tokens.append(self.token(token, float(logprobs[token])))
                if top_n:
                    values, index = torch.topk(logprobs, top_n)
                    top_tokens.append(
                        [self.token(int(i), float(v)) for v, i in zip(values.tolist(), index.tolist(), strict=True)]
                    )
                generated.append(token)
                seen[token] = True
                if token in self.eos_ids:
                    finish = "eos_token"
                    break
                text = self.tokenizer.decode(generated, skip_special_tokens=True)
                assert isinstance(text, str)  # one sequence decodes to one string
                if any(text.endswith(s) for s in stop):
                    finish = "stop_sequence"
                    break
                if step == max_new - 1:
                    break
                out = self.model(input_ids=torch.tensor([[token]]), use_cache=True, **{self.cache_kwarg: cache})
                logits = out.logits[0, -1].float()
        response: dict[str, Any] = {"generated_text": self.tokenizer.decode(generated, skip_special_tokens=True)}
        if p.get("details"):
            details = {
                "finish_reason": finish,
                "generated_tokens": len(generated),
                "seed": seed if sampling else None,
                "prefill": prefill,
                "tokens": tokens,
            }
            if top_tokens:
                details["top_tokens"] = top_tokens
            response["details"] = details
        return response


# -- one server process ---------------------------------------------------------------------------
DEFAULT_FAULTS: dict[str, Any] = {
    "seed": 0,
    "error_rate": 0.0,  # share of /generate and /tokenize attempts answered with an error status
    "statuses": [500, 503, 429],  # drawn among these (by the same hash)
    "fail_first": 0,  # the first N attempts of every distinct request fail (with statuses[0])
    "retry_after": None,  # seconds, sent as Retry-After with 429 and 503
    "drop_rate": 0.0,  # share of attempts whose connection is reset without an answer
    "latency": 0.0,  # seconds added before every answer (/health and /info included)
    "unhealthy": False,  # /health answers 503
    "slow": {},  # {text: seconds}: a /generate whose inputs contain `text` answers that much later
    "failing": [],  # a /generate whose inputs contain one of these texts fails every attempt (statuses[0])
}


@dataclass
class ServerState:
    model: TinyModel
    schemas: OpenAPISchemas | None
    settings: dict[str, Any]
    faults: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_FAULTS))
    lock: threading.Lock = field(default_factory=threading.Lock)
    attempts: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    in_flight: int = 0

    def count(self, key: str) -> None:
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + 1

    @contextlib.contextmanager
    def serving(self):
        """Counts the POST requests (/generate, /tokenize) being answered; `max in flight` is the most at once.
        Yields `leave`, called as the answer's body is written: from then on the client may have the whole
        answer and send its next request, which must not count as one more at once while this thread ends."""
        left = False

        def leave() -> None:
            nonlocal left
            with self.lock:
                if not left:
                    left = True
                    self.in_flight -= 1

        with self.lock:
            self.in_flight += 1
            self.counts["max in flight"] = max(self.counts.get("max in flight", 0), self.in_flight)
        try:
            yield leave
        finally:
            leave()

    def fault_for(self, route: str, raw: bytes) -> tuple[str, int] | None:
        """('drop', 0) / ('error', status) / None for this attempt: a function of the request and its attempt number."""
        faults = self.faults
        digest = hashlib.sha256(route.encode() + b"\0" + raw).hexdigest()
        with self.lock:
            attempt = self.attempts.get(digest, 0)
            self.attempts[digest] = attempt + 1
        draw = hashlib.sha256(f"{faults['seed']}:{digest}:{attempt}".encode()).digest()
        u = int.from_bytes(draw[:8], "big") / 2**64
        statuses = faults["statuses"]
        if attempt < faults["fail_first"]:
            return ("error", statuses[0])
        if u < faults["drop_rate"]:
            return ("drop", 0)
        if u < faults["drop_rate"] + faults["error_rate"]:
            return ("error", statuses[draw[8] % len(statuses)])
        return None

    def info(self) -> dict[str, Any]:
        s = self.settings
        info = {
            "model_id": s["model_id"],
            "model_sha": s["model_sha"],
            "model_pipeline_tag": "text-generation",
            "max_concurrent_requests": s["max_concurrent_requests"],
            "max_best_of": 2,
            "max_stop_sequences": s["max_stop_sequences"],
            "max_input_tokens": s["max_input_tokens"],
            "max_total_tokens": s["max_total_tokens"],
            "validation_workers": 2,
            "max_client_batch_size": 4,
            "router": "text-generation-router",
            "version": s["version"],
            "sha": "db931fcf42da018a3657580c64bf2720f167f9ab",
            "docker_label": None,
        }
        if s.get("report_top_n"):
            info["max_top_n_tokens"] = s["max_top_n_tokens"]
        return info


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: DoubleServer
    _leave: Callable[[], None] | None = None  # ends this request's count in flight (ServerState.serving)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    @property
    def state(self) -> ServerState:
        return self.server.state

    def do_GET(self) -> None:
        route = self.path.split("?", 1)[0]
        if route == "/_stats":
            with self.state.lock:
                stats = {
                    "counts": dict(self.state.counts),
                    "violations": list(self.state.violations),
                    "pid": os.getpid(),
                }
            return self._send(200, stats)
        self.state.count(f"GET {route}")
        if self.headers.get("Authorization"):
            self.state.count("with authorization")
        time.sleep(self.state.faults["latency"])
        if route == "/health":
            if self.state.faults["unhealthy"]:
                return self._error(503)
            return self._send(200, None)
        if route == "/info":
            return self._send(200, self.state.info(), "Info")
        return self._send(404, None)

    def do_POST(self) -> None:
        route = self.path.split("?", 1)[0]
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if route == "/_control":
            self.state.faults.update(json.loads(raw))
            return self._send(200, {"faults": self.state.faults})
        self.state.count(f"POST {route}")
        if self.headers.get("Authorization"):
            self.state.count("with authorization")
        with self.state.serving() as leave:
            self._leave = leave
            try:
                self._answer(route, raw)
            finally:
                self._leave = None

    def _answer(self, route: str, raw: bytes) -> None:
        time.sleep(self.state.faults["latency"])
        try:
            body = json.loads(raw)
        except ValueError:
            return self._send(422, "Failed to parse the request body as JSON")
        if route not in ("/generate", "/tokenize"):
            return self._send(404, None)
        self._validate(body, "GenerateRequest", f"request {route}")
        if route == "/generate":
            time.sleep(
                sum(seconds for text, seconds in self.state.faults["slow"].items() if text in body.get("inputs", ""))
            )
        fault = self.state.fault_for(route, raw)
        if route == "/generate" and any(text in body.get("inputs", "") for text in self.state.faults["failing"]):
            fault = ("error", self.state.faults["statuses"][0])
        if fault and fault[0] == "drop":
            self.state.count("dropped")
            return self._drop()
        if fault:
            self.state.count("injected")
            return self._error(fault[1])
        if route == "/tokenize":
            return self._send(200, self.state.model.tokenize(body.get("inputs", "")), "TokenizeResponse")
        try:
            response = self.state.model.generate(body, self.state.settings)
        except ValidationFailure as error:
            return self._error(422, f"Input validation error: {error}")
        self.state.count("generated")
        return self._send(200, response, "GenerateResponse")

    # -- answers ----------------------------------------------------------------------------------
    def _validate(self, value: Any, schema: str, where: str) -> None:
        if self.state.schemas is None:
            return
        problems = self.state.schemas.errors(value, schema)
        if problems:
            with self.state.lock:
                self.state.violations.extend(f"{where}: {p}" for p in problems)

    def _error(self, status: int, message: str | None = None) -> None:
        default, kind = ERRORS[status]
        body = {"error": message or default, "error_type": kind}
        headers = {}
        if status in (429, 503) and self.state.faults["retry_after"] is not None:
            headers["Retry-After"] = str(self.state.faults["retry_after"])
        self._send(status, body, "ErrorResponse", headers)

    def _send(
        self, status: int, payload: Any, schema: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        if schema:
            self._validate(payload, schema, f"response {schema}")
        data = (
            b""
            if payload is None
            else json.dumps(payload).encode()
            if not isinstance(payload, str)
            else payload.encode()
        )
        self.state.count(f"status {status}")
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if not isinstance(payload, str) else "text/plain")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self._leave is not None:
            self._leave()
        self.wfile.write(data)

    def _drop(self) -> None:
        """Reset the connection without an answer (SO_LINGER 0: the client sees a TCP reset)."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.shutdown(socket.SHUT_RDWR)


class DoubleServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, sock: socket.socket, state: ServerState):
        super().__init__(sock.getsockname(), Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.server_name, self.server_port = sock.getsockname()[:2]
        self.state = state


def _die_with_parent() -> None:
    """Linux: receive SIGKILL when the parent process dies, so no server outlives the tests."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


DEFAULT_SETTINGS = {
    "model_sha": None,
    "version": TGI_VERSION,
    "max_input_tokens": 3000,
    "max_total_tokens": 4096,
    "max_stop_sequences": 4,
    "max_concurrent_requests": 128,
    "max_top_n_tokens": 5,
    "report_top_n": False,
    "prefill_logprobs": True,  # TGI >= 3.0 without --enable-prefill-logprobs: False (an empty `prefill`, no error)
}


def zygote(openapi: str | None) -> None:
    """Import torch and transformers (while the caller builds the model), load the model on `load`,
    then fork one server process per `start` command."""
    _die_with_parent()
    import torch  # the slow imports, before anyone waits

    importlib.import_module("transformers")

    model: TinyModel | None = None
    model_dir = ""
    schemas = OpenAPISchemas.load(openapi) if openapi else None
    children: set[int] = set()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        try:
            if command["cmd"] == "load":
                model_dir = command["model"]
                model = TinyModel(model_dir)
                reply: dict[str, Any] = {"ok": True}
            elif command["cmd"] == "start" and model is None:
                reply = {"error": "no model loaded: send {'cmd': 'load', 'model': DIR} first"}
            elif command["cmd"] == "start" and model is not None:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("127.0.0.1", command.get("port", 0)))
                sock.listen(256)
                settings = {"model_id": model_dir, **DEFAULT_SETTINGS, **command.get("settings", {})}
                faults = {**DEFAULT_FAULTS, **command.get("faults", {})}
                pid = os.fork()
                if pid == 0:
                    try:
                        _die_with_parent()
                        devnull = os.open(os.devnull, os.O_RDWR)
                        os.dup2(devnull, 0)
                        os.dup2(devnull, 1)
                        import torch

                        torch.set_num_threads(1)
                        DoubleServer(sock, ServerState(model, schemas, settings, faults)).serve_forever(
                            poll_interval=0.05
                        )
                    finally:
                        os._exit(0)
                port = sock.getsockname()[1]
                sock.close()
                children.add(pid)
                reply = {"pid": pid, "port": port}
            elif command["cmd"] == "kill":
                os.kill(command["pid"], signal.SIGKILL)
                os.waitpid(command["pid"], 0)
                children.discard(command["pid"])
                reply = {"ok": True}
            else:
                reply = {"error": f"unknown command {command['cmd']}"}
        except Exception as error:  # answer, never hang the caller
            reply = {"error": repr(error)}
        print(json.dumps(reply), flush=True)
    for pid in children:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


# -- the test side ----------------------------------------------------------------------------------
def http_json(url: str, body: Any = None, timeout: float = 30.0) -> tuple[int, dict[str, str], Any]:
    """(status, headers, JSON body or None) of a GET (body None) or POST, with the stdlib (no HF client)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, headers, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        status, headers, raw = error.code, dict(error.headers), error.read()
    return status, headers, json.loads(raw) if raw else None


@dataclass
class Server:
    """One running test server (a process); restartable on the same port."""

    pool: TGIServers
    port: int
    pid: int
    settings: dict[str, Any]
    faults: dict[str, Any]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_faults(self, **faults: Any) -> None:
        self.faults.update(faults)
        status, _, _ = http_json(self.url + "/_control", faults, timeout=10)
        assert status == 200

    def stats(self) -> dict[str, Any]:
        return http_json(self.url + "/_stats", timeout=10)[2]

    def kill(self) -> None:
        self.pool.command({"cmd": "kill", "pid": self.pid})

    def restart(self) -> None:
        """Start again on the same port, with the same settings and faults (fresh attempt counters)."""
        reply = self.pool.command({"cmd": "start", "port": self.port, "settings": self.settings, "faults": self.faults})
        self.pid = reply["pid"]


class TGIServers:
    """Test servers on 127.0.0.1, forked from one process that loaded `model_dir` once."""

    def __init__(self, model_dir: str | Path | None = None, openapi: str | Path | None = SPEC, timeout: float = 180.0):
        """Spawn the server process (it starts importing at once); `load` the model before `start`."""
        env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
        args = [sys.executable, str(Path(__file__).resolve())]
        if openapi and Path(openapi).is_file():
            args += ["--openapi", str(openapi)]
        self._process = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, env=env
        )
        assert self._process.stdin is not None and self._process.stdout is not None  # both are pipes
        self._stdin, self._stdout = self._process.stdin, self._process.stdout
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.servers: list[Server] = []
        self.timeout = timeout
        if model_dir is not None:
            self.load(model_dir)

    def load(self, model_dir: str | Path) -> None:
        self._read(self.timeout)  # {"ready": true}: the imports are done
        self.command({"cmd": "load", "model": str(model_dir)}, timeout=self.timeout)

    def _pump(self) -> None:
        for line in self._stdout:
            self._lines.put(line)
        self._lines.put("")

    def _read(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"the TGI test double did not answer within {timeout:g}s") from None
        if not line:
            raise RuntimeError(f"the TGI test double exited (status {self._process.poll()})")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"TGI test double: {reply['error']}")
        return reply

    def command(self, command: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        self._stdin.write(json.dumps(command) + "\n")
        self._stdin.flush()
        return self._read(timeout)

    def start(self, faults: dict[str, Any] | None = None, **settings: Any) -> Server:
        """A new server; `settings` override /info (model_id, model_sha, max_input_tokens, ...)."""
        reply = self.command({"cmd": "start", "port": 0, "settings": settings, "faults": faults or {}})
        server = Server(self, reply["port"], reply["pid"], dict(settings), dict(faults or {}))
        deadline = time.monotonic() + 30
        while True:  # listening already (bound before the fork); wait until it answers
            with contextlib.suppress(OSError):
                if http_json(server.url + "/_stats", timeout=5)[0] == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"test server on port {server.port} does not answer")
            time.sleep(0.02)
        self.servers.append(server)
        return server

    def stop_all(self) -> None:
        for server in self.servers:
            with contextlib.suppress(Exception):
                server.kill()
        self.servers.clear()

    def close(self) -> None:
        self.stop_all()
        with contextlib.suppress(Exception):
            self._stdin.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)

    def __enter__(self) -> TGIServers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--openapi", default=None)
    zygote(parser.parse_args().openapi)
