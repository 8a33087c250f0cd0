"""The sandbox against hostile programs: each is contained, harms nothing, and the next job still runs.

The programs here call the kernel directly (`posix.kill`, `posix.fork`, `io.open`, `socket`), as
model-written code could: evalplus's Python-level guards (`os.kill = None`, ...) are not in the way,
so what stops them is the sandbox. Each attack is aimed at something this test owns (a canary
directory, a listener, an environment variable), so a broken sandbox fails the test without harm.

Which attacks a level stops is the module docstring's table in `inversecoder/core/sandbox.py`; on a
machine that only offers a weaker level, the attacks that level does not stop are skipped with the
level in the reason (CI runs as root: `namespaces+uid`, everything runs).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import threading
import time

import pytest

from inversecoder.core.sandbox import (
    NAMESPACE_LEVELS,
    UID_BASE,
    UID_LEVELS,
    Limits,
    Sandbox,
    SandboxError,
    secret_paths,
)

SECRET = "hf_CANARY_sandbox_test_do_not_leak_0123456789"
MEMORY = 512 * 1024**2


@pytest.fixture(scope="module")
def sandbox():
    """Two workers, started while HF_TOKEN is set in this process (as on a user's machine)."""
    previous = os.environ.get("HF_TOKEN")
    os.environ["HF_TOKEN"] = SECRET
    try:
        with Sandbox(workers=2, limits=Limits(memory_bytes=MEMORY)) as box:
            yield box
    finally:
        if previous is None:
            os.environ.pop("HF_TOKEN", None)
        else:
            os.environ["HF_TOKEN"] = previous


def needs(box: Sandbox, levels: tuple[str, ...], what: str) -> None:
    if box.level not in levels:
        pytest.skip(f"sandbox level here is '{box.level}': {what} is not guaranteed at this level")


def leftover_sandbox_processes() -> list[int]:
    """Processes on the host still running under a sandbox uid."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid >= UID_BASE:
                    found.append(int(name))
            except OSError:
                pass
    return found


def test_a_program_runs_and_its_output_comes_back(sandbox):
    outcome = sandbox.run_source("import sys\nprint('hello')\nprint('oops', file=sys.stderr)\nraise SystemExit(3)")
    assert (outcome.exit_code, outcome.signal, outcome.timed_out, outcome.error) == (3, None, False, None)
    assert outcome.stdout == b"hello\n" and outcome.stderr == b"oops\n"
    assert sandbox.info["level"] == sandbox.level
    if os.geteuid() == 0 and os.uname().sysname == "Linux":
        assert sandbox.level == "namespaces+uid", sandbox.info["levels_unavailable"]


def test_infinite_loop_is_killed_at_the_deadline(sandbox):
    start = time.monotonic()
    outcome = sandbox.run_source(
        "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True:\n    pass\n", wall_seconds=1.0
    )
    assert outcome.timed_out and outcome.signal == signal.SIGKILL
    assert time.monotonic() - start < 5
    assert sandbox.run_source("print(1)").stdout == b"1\n"


def test_fork_bomb_is_capped_and_cleaned_up(sandbox):
    needs(sandbox, UID_LEVELS, "a per-program process count")
    program = """
import posix, time
forked = 0
for _ in range(500):
    try:
        if posix.fork() == 0:
            while True:
                time.sleep(1)
        forked += 1
    except OSError:
        break
print(forked)
"""
    outcome = sandbox.run_source(program, wall_seconds=10)
    assert outcome.exit_code == 0, outcome.stderr
    assert int(outcome.stdout) < sandbox.limits.max_processes
    assert leftover_sandbox_processes() == []
    # the classic bomb: every process forks forever, errors ignored, until the deadline
    bomb = "import posix\nwhile True:\n    try:\n        posix.fork()\n    except OSError:\n        pass\n"
    outcome = sandbox.run_source(bomb, wall_seconds=2)
    assert outcome.timed_out
    assert leftover_sandbox_processes() == []


def test_memory_bomb_fails_inside_the_program(sandbox):
    program = """
try:
    bytearray(2 ** 44)
except MemoryError:
    print("16 TiB refused")
blocks = []
try:
    while True:
        blocks.append(bytearray(64 * 2 ** 20))
except MemoryError:
    print(len(blocks) * 64)
"""
    outcome = sandbox.run_source(program, wall_seconds=20)
    assert outcome.exit_code == 0, outcome.stderr
    refused, megabytes = outcome.stdout.decode().splitlines()
    assert refused == "16 TiB refused" and int(megabytes) <= MEMORY // 2**20


def test_environment_secrets_are_not_visible(sandbox):
    needs(sandbox, NAMESPACE_LEVELS + UID_LEVELS, "hiding other processes' environments")
    assert os.environ["HF_TOKEN"] == SECRET
    program = f"""
import os, sys
print(sorted(os.environ))
seen = os.environ.get("HF_TOKEN")
for pid in os.listdir("/proc"):
    for part in ("environ", "cmdline"):
        try:
            with open(f"/proc/{{pid}}/{{part}}", "rb") as handle:
                if {SECRET!r}.encode() in handle.read():
                    seen = f"/proc/{{pid}}/{{part}}"
        except OSError:
            pass
try:
    with open("/proc/{os.getpid()}/environ", "rb") as handle:
        seen = seen or ("harness environ" if {SECRET!r}.encode() in handle.read() else None)
except OSError as error:
    print("harness environ:", type(error).__name__)
print("seen:", seen)
"""
    outcome = sandbox.run_source(program)
    assert outcome.exit_code == 0, outcome.stderr
    assert SECRET.encode() not in outcome.stdout + outcome.stderr
    assert b"seen: None" in outcome.stdout
    assert b"HF_TOKEN" not in outcome.stdout


def test_no_network_not_even_loopback(sandbox, listener):
    needs(sandbox, NAMESPACE_LEVELS, "network isolation")
    port, accepted = listener
    # Only loopback is ever tried: even inside the namespace, tests send nothing to outside addresses.
    program = f"""
import socket
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=1).close()
    print("connected")
except OSError as error:
    print("refused", error.errno)
try:
    socket.getaddrinfo("localhost", 443)
    print("resolved")
except OSError as error:
    print("no dns")
"""
    outcome = sandbox.run_source(program)
    assert outcome.exit_code == 0, outcome.stderr
    assert b"connected" not in outcome.stdout
    assert b"refused" in outcome.stdout  # no interface is up: not even loopback
    time.sleep(0.3)
    assert accepted == []


def test_files_outside_its_directory_cannot_be_written_or_deleted(sandbox, canary):
    needs(sandbox, NAMESPACE_LEVELS, "a read-only file system")
    program = f"""
import io, os, posix, shutil
targets = [{str(canary / "new.txt")!r}, {str(canary / "keep.txt")!r}, "/dev/shm/x", "/var/tmp/x",
           {os.path.expanduser("~/inversecoder-sandbox-test")!r}, {str(os.getcwd())!r} + "/x"]
for path in targets:
    try:
        with io.open(path, "a") as handle:
            handle.write("pwned")
        print("wrote", path)
    except OSError as error:
        print("blocked", error.errno)
for attempt in (lambda: posix.unlink({str(canary / "keep.txt")!r}), lambda: shutil.rmtree({str(canary)!r}),
                lambda: posix.rename({str(canary / "keep.txt")!r}, "/tmp/stolen")):
    try:
        attempt()
        print("deleted")
    except OSError as error:
        print("blocked", error.errno)
with open("scratch.txt", "w") as handle:  # its own directory is writable
    handle.write("fine")
with open("/tmp/also-private.txt", "w") as handle:
    handle.write("fine")
print("canary visible:", os.path.exists({str(canary / "keep.txt")!r}))
"""
    outcome = sandbox.run_source(program)
    assert outcome.exit_code == 0, outcome.stderr
    assert b"wrote" not in outcome.stdout and b"deleted" not in outcome.stdout, outcome.stdout
    assert b"canary visible: True" in outcome.stdout  # the attacks were real: it could see its targets
    assert outcome.stdout.count(b"blocked 30") >= 4  # EROFS: the file system is read-only
    assert sorted(p.name for p in canary.iterdir()) == ["keep.txt"]
    assert (canary / "keep.txt").read_text() == "precious"
    assert not os.path.exists("/tmp/also-private.txt") and not os.path.exists("/tmp/stolen")
    assert not os.path.exists(os.path.expanduser("~/inversecoder-sandbox-test"))


def test_killing_its_parent_or_everything_harms_nothing(sandbox):
    needs(sandbox, NAMESPACE_LEVELS + UID_LEVELS, "protection of other processes")
    zygotes = [w.process.pid for w in sandbox._workers]
    program = """
import os, posix, signal
for target in (os.getppid(), -1, 1):
    try:
        posix.kill(target, signal.SIGKILL)
        print("sent", target)
    except OSError as error:
        print("blocked", target, error.errno)
print("still here")
"""
    errors = sandbox.errors
    for _ in range(2):  # whichever worker runs it
        outcome = sandbox.run_source(program)
        assert outcome.error is None
    assert sandbox.errors == errors
    for pid in zygotes:
        os.kill(pid, 0)  # alive
    assert sandbox.run_source("print('next job')").stdout == b"next job\n"


def test_a_worker_killed_from_outside_is_replaced(sandbox):
    """Infrastructure failure (OOM killer, an admin): the job reports a sandbox error, never a verdict."""
    errors = sandbox.errors
    results = []

    def slow_job():
        results.append(sandbox.run_source("import time\ntime.sleep(30)", wall_seconds=60))

    thread = threading.Thread(target=slow_job)
    thread.start()
    deadline = time.monotonic() + 20
    victim = None
    while victim is None and time.monotonic() < deadline:  # the worker that took the job
        busy = [w for w in sandbox._workers if w not in list(sandbox._idle.queue)]
        victim = busy[0] if busy else None
        time.sleep(0.05)
    assert victim is not None
    time.sleep(0.5)
    os.kill(victim.process.pid, signal.SIGKILL)
    thread.join(timeout=60)
    assert results and results[0].error and "worker" in results[0].error
    assert sandbox.errors == errors + 1
    assert [sandbox.run_source("print(2)").stdout for _ in range(3)] == [b"2\n"] * 3
    assert leftover_sandbox_processes() == []


@pytest.mark.parametrize("level", ["namespaces", "uid", "rlimits"])
def test_fallback_levels(level, canary):
    """The weaker levels start when forced (as they would where the kernel refuses more), record
    themselves, and keep what their row of the table promises."""
    try:
        box = Sandbox(workers=1, isolation=level, limits=Limits(memory_bytes=MEMORY))
    except SandboxError as error:
        pytest.skip(f"level '{level}' is not available here: {error}")
    with box:
        assert box.level == level
        isolated = level in NAMESPACE_LEVELS
        assert (box.info["network"] == "NOT isolated") is not isolated
        outcome = box.run_source(
            "import os\nprint(sorted(os.environ), flush=True)\nwhile True:\n    pass", wall_seconds=1.0
        )
        assert outcome.timed_out and b"HF_TOKEN" not in outcome.stdout and b"'HOME'" in outcome.stdout
        closed = canary / "closed"  # the harness user's directory, not world-writable
        closed.mkdir(mode=0o755)
        program = f"""
import io
try:
    io.open({str(closed / "outside.txt")!r}, "w").write("x")
    print("wrote")
except OSError as error:
    print("blocked", error.errno)
"""
        outcome = box.run_source(program)
        if isolated or level in UID_LEVELS:  # read-only file system, or a uid that owns nothing
            assert outcome.stdout.startswith(b"blocked"), outcome.stdout + outcome.stderr
            assert not (closed / "outside.txt").exists()
        if isolated:
            outcome = box.run_source(
                "import socket\ntry:\n    socket.create_connection(('127.0.0.1', 9), timeout=1)\n"
                "except OSError as error:\n    print(error.errno)"
            )
            assert outcome.stdout == b"101\n"
        if level in UID_LEVELS:
            outcome = box.run_source(
                f"import posix\ntry:\n    posix.kill({os.getpid()}, 0)\nexcept OSError as e:\n    print(e.errno)"
            )
            assert outcome.stdout == b"1\n"  # EPERM: another uid's process
    assert box.info["level"] == level


def test_require_isolation_refuses_a_level_without_network_isolation():
    with pytest.raises(SandboxError, match="network isolation unavailable"):
        Sandbox(workers=1, isolation="rlimits", require_isolation=True)


def test_unknown_isolation_level_is_rejected():
    with pytest.raises(ValueError, match="isolation must be"):
        Sandbox(isolation="docker")


def test_python_stays_importable_when_it_lives_in_a_closed_directory(sandbox):
    """pyenv under /root (mode 700): the sandbox uid cannot enter it, so the view re-exposes exactly
    the Python installation there, and the rest of /root stays out of sight."""
    outcome = sandbox.run_source("import fractions, sqlite3, xml.dom.minidom, numpy\nprint('imported')")
    assert outcome.stdout == b"imported\n", outcome.stderr
    program = "import json, os\ntry:\n    print(json.dumps(os.listdir('/root')))\nexcept OSError:\n    print('[]')"
    visible = set(json.loads(sandbox.run_source(program).stdout))
    allowed = {path.split("/")[2] for path in sandbox.info["reexposed_paths"] if path.startswith("/root/")}
    assert visible <= allowed


# -- secrets at the namespace levels ----------------------------------------------------------------
READ_TOKEN = """
import os
import shutil
home = {home!r}
for path in (home + "/.cache/huggingface/token", "/etc/shadow"):
    try:
        with open(path) as handle:
            print(path, repr(handle.read()))
    except OSError as error:
        print(path, type(error).__name__)
print(sorted(os.listdir(home)) if os.path.isdir(home) else "no home")
"""


@pytest.mark.parametrize("level", NAMESPACE_LEVELS)
def test_home_and_hub_token_are_hidden_at_namespace_levels(level, monkeypatch):
    """A readable Hub token in the harness user's HOME (outside /tmp, which the sandbox replaces
    anyway) and /etc/shadow: the program sees neither."""
    base = next((d for d in ("/var/tmp", "/dev/shm") if os.path.isdir(d) and os.access(d, os.W_OK)), None)
    if base is None:
        pytest.skip("no writable /var/tmp or /dev/shm for the fake home")
    home = tempfile.mkdtemp(prefix="inversecoder-home-", dir=base)
    try:
        token = os.path.join(home, ".cache", "huggingface", "token")
        os.makedirs(os.path.dirname(token))
        with open(token, "w") as handle:
            handle.write(CANARY_TOKEN)
        for folder in (home, f"{home}/.cache", f"{home}/.cache/huggingface"):
            os.chmod(folder, 0o755)
        os.chmod(token, 0o644)  # readable by any uid: only the hiding protects it
        monkeypatch.setenv("HOME", home)
        monkeypatch.setenv("HF_HOME", os.path.join(home, ".cache", "huggingface"))
        try:
            box = Sandbox(workers=1, isolation=level)
        except SandboxError as error:
            pytest.skip(f"level {level} unavailable here: {error}")
        with box:
            outcome = box.run_source(READ_TOKEN.format(home=home))
        out = outcome.stdout.decode()
        assert outcome.exit_code == 0, outcome.stderr.decode()
        assert CANARY_TOKEN not in out
        assert f"{token} FileNotFoundError" in out and "[]" in out.splitlines()[-1], out
        shadow = next(line for line in out.splitlines() if line.startswith("/etc/shadow"))
        assert shadow.endswith("''") or "Error" in shadow, shadow
    finally:
        shutil.rmtree(home, ignore_errors=True)


CANARY_TOKEN = "hf_CANARY_home_token_do_not_leak_0123456789"


READ_ANSWERS = """
import gzip, io, os
for path in {paths!r}:
    try:
        with io.open(path, 'rb') as handle:
            print(path, len(handle.read()))
    except OSError as error:
        print(path, type(error).__name__)
"""


@pytest.mark.parametrize("level", NAMESPACE_LEVELS)
def test_benchmark_answers_are_hidden_at_namespace_levels(level, canary):
    """The shipped benchmark files and the folders the harness names (the run's benchmark copies) hold the
    canonical solutions: a program must not read the answer of the task it is tested on."""
    from inversecoder.core.data import BENCHMARKS_DIR

    copies = canary / "copies"  # outside /tmp (the sandbox has its own): only the hiding protects it
    copies.mkdir()
    (copies / "HumanEvalPlus-v0.1.10.jsonl").write_text('{"canonical_solution": "answer"}\n')
    copies.chmod(0o755)
    (copies / "HumanEvalPlus-v0.1.10.jsonl").chmod(0o644)
    shipped = str(BENCHMARKS_DIR / "HumanEvalPlus-v0.1.10.jsonl.gz")
    assert not str(copies).startswith("/tmp/")
    # Hidden wherever the checkout is (under /tmp it is out of sight anyway: the program has its own /tmp).
    shipped_dir = os.path.realpath(BENCHMARKS_DIR)
    assert any(shipped_dir == d or shipped_dir.startswith(d + "/") for d in secret_paths()[0])
    try:
        box = Sandbox(workers=1, isolation=level, hidden=[str(copies)])
    except SandboxError as error:
        pytest.skip(f"level {level} unavailable here: {error}")
    with box:
        outcome = box.run_source(READ_ANSWERS.format(paths=[shipped, str(copies / "HumanEvalPlus-v0.1.10.jsonl")]))
    out = outcome.stdout.decode()
    assert outcome.exit_code == 0, outcome.stderr.decode()
    assert f"{shipped} FileNotFoundError" in out, out
    assert "FileNotFoundError" in out.splitlines()[-1], out
