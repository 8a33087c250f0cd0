"""Run untrusted (model-written) Python in a sandbox: one process per program, isolated by the kernel.

evalplus 0.3.1 runs each program in a forked process with a memory limit and Python-level guards
(`reliability_guard` sets `os.kill`, `open`, ... to None): it documents itself as "NOT a security
sandbox". `import posix; posix.kill(...)`, `io.open(...)` or `socket` go straight past those guards,
and the program shares the user's network, files, environment (HF_TOKEN!) and processes. Here the
kernel enforces the isolation, and the Python-level guards stay on top where evalplus uses them.

Process tree (one "zygote" per parallel worker; a job is one program run)::

    harness ──pipe── zygote (`serve` in a fresh interpreter: clean environment, numpy/evalplus
                     │        preloaded, in its own network namespace)
                     └─ guard (per job: unpickles the job's arguments, new mount + PID namespaces,
                        │       builds the file-system view, enforces the wall-clock deadline,
                        │       SIGKILLs the namespace on expiry)
                        └─ init (PID 1 of the job's namespace: mounts a fresh /proc, reaps)
                           └─ program (new session, private cwd, clean env, rlimits, no privileges:
                                       runs evalplus's checking code or a script)

The zygote forks (10-30 ms a job on a busy 2-core VM) instead of starting an interpreter (0.5 s with
numpy). The harness never unpickles anything the program wrote: results come back through a
shared memory page as bytes its caller decodes, and the program has no descriptor of the zygote's pipes.

Isolation levels (the best one the kernel allows is probed when a zygote starts; recorded in
`Sandbox.info` and in eval_results.json):

| level | when | what the program gets |
|---|---|---|
| `namespaces+uid` | running as root with CAP_SYS_ADMIN (CI here) | everything below, plus its own unprivileged uid/gid (one per worker, from 0x7F000000 up, never a real user): file permissions apply, RLIMIT_NPROC counts only its own processes, it cannot signal the harness, and directories closed to other users (/root) stay closed; the Python installation is bind-mounted back into view read-only when it lives in one (pyenv under /root) |
| `namespaces` | not root, unprivileged user namespaces allowed | its own user namespace (same uid as the user, all capabilities dropped): no network, read-only file system, private /tmp, fresh /proc, its own PID namespace, and the secret locations hidden as in `namespaces+uid` (`secret_paths`: the home, Hub and cache folders, /root, /home, /etc/shadow, ...). Other files the user can read stay readable, but nothing can leave except its pass count: no network, no writable place outside a tmpfs that vanishes, and its output is never recorded |
| `uid` | root without namespaces (e.g. unprivileged Docker; the evaluation refuses it without `evaluate.allow_weak_sandbox`) | own uid, rlimits, private temp dir (0700), clean env, new session; NO network isolation; it can write where any user can (/tmp, /dev/shm); leftover processes are killed by uid. When Python lives where that uid cannot enter (pyenv under /root), only modules the zygote preloaded (`COMMON_MODULES`) import: `info["unreachable_paths"]` says so |
| `rlimits` | neither (e.g. Ubuntu 24.04 AppArmor restricting user namespaces; refused like `uid`) | rlimits, private temp dir, clean environment, new session and evalplus's own guards; NO network, file-system or process isolation: the program runs as you. Pass `require_isolation=True` to refuse to run instead |

In the namespace levels: a new network namespace (only a loopback that is down: connecting even to
127.0.0.1 fails with ENETUNREACH); a new mount namespace where the whole file system is read-only
and nosuid (`mount_setattr(AT_RECURSIVE)`), the harness user's home, Hub and cache folders and the
system's secret locations are covered by empty read-only tmpfs (/dev/null over files; the Python
installation bound back where it lives below one), /tmp is a private tmpfs of `tmpfs_bytes` (the cwd,
HOME and TMPDIR), and /proc shows only the job's own processes (so no other process's environment);
a new PID namespace, so `kill(-1)` or killing its parent reaches nothing outside, and killing the
namespace's init on the deadline kills every process the program started. Always: the environment
is cleared to an allow-list (PATH, HOME, TMPDIR, LANG, thread counts: no tokens, no proxies), every
inherited descriptor is closed, no_new_privs is set, SIGXFSZ is ignored (an oversized write raises),
and RLIMIT_CPU, RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_NPROC, RLIMIT_NOFILE and RLIMIT_CORE=0 are set before
privileges are dropped.

Not covered: memory is limited per process (RLIMIT_AS), so a program may hold up to
`max_processes` x `memory_bytes` (no memory cgroup is created). Verdicts are not decided in here:
`checker.py` has the program return its outputs as data and compares them in the harness.

One module, though long: the zygote imports it alone (`_ZYGOTE_MAIN`) before it isolates itself, so
everything that runs inside (kernel interfaces, guard, init, program) must load from here without
pulling in the rest of the package; and the two sides of the protocol (the job frames, the shared
result page, the level names) are checked against each other here, in one place, where a change to
one side cannot miss the other.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import json
import mmap
import os
import pickle
import queue
import resource
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from inversecoder.core.data import BENCHMARKS_DIR

LEVELS = ("namespaces+uid", "namespaces", "uid", "rlimits")
NAMESPACE_LEVELS = ("namespaces+uid", "namespaces")
UID_LEVELS = ("namespaces+uid", "uid")
#: First uid handed to sandboxed programs (one per worker, in a block of 1024 chosen by the harness
#: pid, so concurrent harnesses rarely share one): far above any real or container-mapped user.
UID_BASE = 0x7F000000

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
    1,
    2,
    4,
    8,
    32,
    4096,
    16384,
    1 << 18,
)
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID = 0x1, 0x2
AT_FDCWD, AT_RECURSIVE = -100, 0x8000
SYS_MOUNT_SETATTR = 442  # the same number on every architecture (syscalls added after 5.1 share it)
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
O_PATH = getattr(os, "O_PATH", 0o10000000)

#: Environment a sandboxed program sees (plus what a job adds): nothing from the harness's.
BASE_ENVIRONMENT = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


#: Imported by every zygote before it forks: programs import them for free, and they stay importable
#: in the `uid` level even when the Python installation is in a directory the sandbox uid cannot enter.
COMMON_MODULES = (
    "array",
    "bisect",
    "calendar",
    "cmath",
    "collections",
    "copy",
    "dataclasses",
    "datetime",
    "decimal",
    "encodings.ascii",
    "encodings.idna",
    "encodings.latin_1",
    "enum",
    "errno",
    "fractions",
    "functools",
    "hashlib",
    "heapq",
    "itertools",
    "json",
    "math",
    "numbers",
    "operator",
    "queue",
    "random",
    "re",
    "socket",
    "statistics",
    "string",
    "struct",
    "textwrap",
    "typing",
    "unicodedata",
)


#: Hidden from programs at the namespace levels (an empty read-only tmpfs over each directory, /dev/null
#: over each file), besides the harness user's home and Hub/cache folders (`secret_paths`): what a
#: program could otherwise read and leak through how many tests it passes.
SECRET_DIRS = ("/root", "/home", "/etc/ssh", "/run/secrets", "/var/run/secrets", "/var/lib/sss")
SECRET_FILES = ("/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-", "/etc/sudoers")
#: Environment variables naming folders that may hold tokens or cached data (the Hub token sits in
#: HF_HOME/token, evalplus's ground truth in XDG_CACHE_HOME/evalplus).
SECRET_VARIABLES = (
    "HOME",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_DATASETS_CACHE",
    "TRANSFORMERS_CACHE",
    "XDG_CACHE_HOME",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "XDG_RUNTIME_DIR",
)


def secret_paths(environ: dict[str, str] | None = None, extra: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """(directories, files) to hide from programs: the fixed ones, those the environment names, the benchmark
    data the project ships (a program must not read the canonical solution of the task it is tested on),
    and `extra` (e.g. the run's benchmark copies and evalplus's ground truth)."""
    environ = dict(os.environ if environ is None else environ)
    folders = [environ.get(name, "") for name in SECRET_VARIABLES] + [os.path.expanduser("~"), *SECRET_DIRS]
    folders += [str(BENCHMARKS_DIR), *extra]
    folders += [environ.get("HF_TOKEN_PATH", "") and os.path.dirname(environ["HF_TOKEN_PATH"])]
    found = set()
    for folder in folders:
        if folder and os.path.isabs(folder) and os.path.isdir(folder):
            real = os.path.realpath(folder)
            if real not in ("/", "/tmp", "/proc", "/dev", "/usr", "/etc"):
                found.add(real)
    ordered = sorted(found)
    dirs = [p for p in ordered if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in ordered)]
    files = [f for f in SECRET_FILES if os.path.isfile(f)]
    return dirs, files


class SandboxError(RuntimeError):
    """The sandbox itself could not run a job (never a verdict on the program)."""


def default_memory_bytes() -> int | None:
    """evalplus's per-program memory limit: EVALPLUS_MAX_MEMORY_BYTES or 4 GiB, at most the RAM; None: off."""
    value = int(os.environ.get("EVALPLUS_MAX_MEMORY_BYTES", 4 * 1024**3))
    if value == -1:
        return None
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return value
    return min(value, total)


@dataclass(frozen=True)
class Limits:
    """Per-program resource limits (the CPU limit comes with each job, from its deadline)."""

    memory_bytes: int | None = field(default_factory=default_memory_bytes)  # RLIMIT_AS, None: none
    max_processes: int = 4  # RLIMIT_NPROC: tasks (processes + threads) the program may have
    file_size_bytes: int = 16 * 1024**2  # RLIMIT_FSIZE: largest file it may write
    tmpfs_bytes: int = 64 * 1024**2  # size of its private /tmp (namespace levels)
    open_files: int = 256  # RLIMIT_NOFILE


@dataclass
class Outcome:
    """How one job ended. `shared` is the job's result page as the program left it."""

    exit_code: int | None  # None: killed by a signal, or never ran
    signal: int | None
    timed_out: bool
    wall_seconds: float
    shared: bytes = b""
    stdout: bytes = b""
    stderr: bytes = b""
    error: str | None = None  # the sandbox failed (worker died, setup failed): not the program's doing


# -- kernel interfaces ------------------------------------------------------------------------------
_libc: Any = None


def _lib() -> Any:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
        _libc.unshare.argtypes = [ctypes.c_int]
        _libc.syscall.restype = ctypes.c_long
        _libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return _libc


def _check(result: int, what: str) -> None:
    if result != 0:
        number = ctypes.get_errno()
        raise OSError(number, f"{what}: {os.strerror(number)}")


def _unshare(flags: int) -> None:
    _check(_lib().unshare(flags), f"unshare({flags:#x})")


def _encode(value: str | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_lib().mount(_encode(source), _encode(target), _encode(fstype), flags, _encode(data)), f"mount {target}")


def _make_read_only(path: str, recursive: bool = True) -> None:
    """Read-only + nosuid for `path` (and every mount below it): mount_setattr, or remounts on old kernels."""
    attr = ctypes.create_string_buffer(struct.pack("QQQQ", MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, 0, 0, 0))
    flags = AT_RECURSIVE if recursive else 0
    if _lib().syscall(SYS_MOUNT_SETATTR, AT_FDCWD, os.fsencode(path), flags, attr, 32) == 0:
        return
    if ctypes.get_errno() != 38:  # not ENOSYS: a real failure
        _check(-1, f"mount_setattr {path}")
    targets = [path]
    if recursive:  # kernels before 5.12: remount every mount point under `path`, one by one
        with open("/proc/self/mountinfo") as table:
            points = [line.split()[4].encode().decode("unicode_escape") for line in table]
        prefix = path.rstrip("/") + "/"
        targets += [p for p in points if p != path and p.startswith(prefix)]
    for target in targets:
        _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)


def _drop_capabilities() -> None:
    """Empty effective/permitted/inheritable sets (user-namespace level: the uid stays, power goes)."""
    header = struct.pack("Ii", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = ctypes.create_string_buffer(24)
    _check(_lib().capset(ctypes.create_string_buffer(header), data), "capset")


def _prctl(option: int, value: int) -> None:
    _check(_lib().prctl(option, value, 0, 0, 0), f"prctl({option})")


def _can_enter(st: os.stat_result, uid: int, gid: int, need_read: bool) -> bool:
    if st.st_uid == uid:
        shift = 6
    elif st.st_gid == gid:
        shift = 3
    else:
        shift = 0
    bits = (st.st_mode >> shift) & 0o7
    return bool(bits & 0o1) and (not need_read or bool(bits & 0o4))


def _blocked_root(path: str, uid: int, gid: int) -> str | None:
    """The outermost directory on `path` that uid/gid cannot enter (or list, for `path` itself)."""
    parts = path.strip("/").split("/")
    for depth in range(len(parts) + 1):
        current = "/" + "/".join(parts[:depth])
        try:
            st = os.stat(current)
        except OSError:
            return None
        if not _can_enter(st, uid, gid, need_read=current == path):
            return current
    return None


def _python_paths() -> list[str]:
    """Directories the interpreter may still import from: prefixes and sys.path (outermost only)."""
    found = set()
    for entry in [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *sys.path]:
        if isinstance(entry, str) and entry and os.path.isdir(entry):
            found.add(os.path.realpath(entry))
    ordered = sorted(found)
    return [p for p in ordered if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in ordered)]


# -- inside the zygote ------------------------------------------------------------------------------
@dataclass
class _State:
    """What every job of one zygote shares."""

    level: str
    limits: Limits
    uid: int
    gid: int
    scratch: str  # parent of the per-job directories in the non-namespace levels
    reexpose: dict[str, list[str]] = field(default_factory=dict)  # hidden dir -> python paths to bind back
    tmp_paths: list[str] = field(default_factory=list)  # python paths under /tmp (hidden by the tmpfs)
    hidden_files: list[str] = field(default_factory=list)  # /dev/null over each (namespace levels)


# control page, written by guard and init only: done, wait status of the program, timed out, error length
_CONTROL = struct.Struct("iiii")
_CONTROL_SIZE = 4096


def _build_view(state: _State) -> None:
    """In the job's fresh mount namespace: read-only everything, a private /tmp, python paths in view."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    wanted = [p for paths in state.reexpose.values() for p in paths] + state.tmp_paths
    handles = {p: os.open(p, O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) for p in wanted}
    _make_read_only("/")
    os.umask(0o022)
    for hidden, paths in state.reexpose.items():
        try:
            _mount("tmpfs", hidden, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
        except OSError:
            if os.access(hidden, os.R_OK) or paths:  # visible to the program: never run with it in view
                raise
            continue  # a folder the program could not read anyway (/root, for a user namespace)
        for path in paths:
            os.makedirs(path, exist_ok=True)
            _mount(f"/proc/self/fd/{handles[path]}", path, None, MS_BIND | MS_REC)
            _make_read_only(path)
        _make_read_only(hidden, recursive=False)
    for path in state.hidden_files:
        try:
            _mount("/dev/null", path, None, MS_BIND)
        except OSError:
            if os.access(path, os.R_OK):
                raise
    options = f"size={state.limits.tmpfs_bytes},nr_inodes=4096,mode=0700"
    if state.level == "namespaces+uid":
        options += f",uid={state.uid},gid={state.gid}"
    _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, options)
    for path in state.tmp_paths:
        os.makedirs(path, exist_ok=True)
        _mount(f"/proc/self/fd/{handles[path]}", path, None, MS_BIND | MS_REC)
        _make_read_only(path)
    for handle in handles.values():
        os.close(handle)


def _close_fds(keep: set[int]) -> None:
    """Close every descriptor from 3 up except `keep`."""
    top = max(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 4096)
    start = 3
    for fd in sorted(k for k in keep if k >= 3):
        os.closerange(start, fd)
        start = fd + 1
    os.closerange(start, top)


def _count_tasks(uid: int) -> int:
    """Processes + threads of `uid` now (RLIMIT_NPROC counts them all; `rlimits` level only)."""
    count = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid == uid:
                    count += len(os.listdir(f"/proc/{name}/task"))
            except OSError:
                pass
    return count


def _program(
    state: _State,
    job: dict[str, Any],
    fn: Callable,
    shared: mmap.mmap,
    control: mmap.mmap,
    outputs: tuple[int, int] | None,
    workdir: str,
) -> None:
    """The sandboxed process: lock itself in, then run `fn(shared, *args)`. Never returns."""
    code = 1
    try:
        parent = os.getppid()
        os.setsid()
        null = os.open("/dev/null", os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(outputs[0] if outputs else null, 1)
        os.dup2(outputs[1] if outputs else null, 2)
        _close_fds(keep=set())
        control.close()
        os.chdir(workdir)
        os.umask(0o077)
        os.environ.clear()
        os.environ.update(BASE_ENVIRONMENT, HOME=workdir, TMPDIR=workdir, **job.get("env", {}))
        tempfile.tempdir = workdir
        limits = state.limits
        cpu = int(job["cpu"])
        nproc = limits.max_processes
        if state.level == "namespaces" and os.getuid() != 0:
            nproc += 3  # zygote, guard and init share the uid inside the user namespace
        elif state.level == "rlimits":
            nproc += _count_tasks(os.getuid())
        settings = [
            (resource.RLIMIT_CPU, (cpu, cpu + 1)),
            (resource.RLIMIT_FSIZE, (limits.file_size_bytes,) * 2),
            (resource.RLIMIT_NOFILE, (limits.open_files,) * 2),
            (resource.RLIMIT_NPROC, (nproc,) * 2),
            (resource.RLIMIT_CORE, (0, 0)),
        ]
        if limits.memory_bytes is not None:
            settings.append((resource.RLIMIT_AS, (limits.memory_bytes,) * 2))
        for which, value in settings:
            resource.setrlimit(which, value)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        _prctl(PR_SET_NO_NEW_PRIVS, 1)
        if state.level in UID_LEVELS:
            os.setgroups([])
            os.setresgid(state.gid, state.gid, state.gid)
            os.setresuid(state.uid, state.uid, state.uid)
        elif state.level == "namespaces":
            _drop_capabilities()
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # after the uid change, which clears it
        if os.getppid() != parent:  # the parent is already gone
            raise SystemExit(1)
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
        fn(shared, *job["args"])
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:  # the program's own failure, reported through its exit code
        with contextlib.suppress(BaseException):
            traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()
        os._exit(code & 0xFF)


def _wait(pid: int, seconds: float) -> tuple[int, bool]:
    """Wait for `pid` up to `seconds`, SIGKILL it after that; (wait status, timed out)."""
    timed_out = False
    try:
        handle = os.pidfd_open(pid)
    except (AttributeError, OSError):
        handle = None
    if handle is not None:
        poller = select.poll()
        poller.register(handle, select.POLLIN)
        if not poller.poll(max(0, int(seconds * 1000))):
            timed_out = True
            os.kill(pid, signal.SIGKILL)
        os.close(handle)
    else:  # kernels before 5.3
        end = time.monotonic() + seconds
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status, False
            if time.monotonic() > end:
                timed_out = True
                os.kill(pid, signal.SIGKILL)
                break
            time.sleep(0.002)
    _, status = os.waitpid(pid, 0)
    return status, timed_out


def _kill_uid(uid: int) -> None:
    """SIGKILL every process of `uid` (`uid` level): a helper becomes that uid and kill(-1)s."""
    helper = os.fork()
    if helper == 0:
        try:
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            os.kill(-1, signal.SIGKILL)
        finally:
            os._exit(0)
    os.waitpid(helper, 0)


def _guard(
    state: _State,
    job: dict[str, Any],
    fn: Callable,
    shared: mmap.mmap,
    control: mmap.mmap,
    outputs: tuple[int, int] | None,
) -> None:
    """Per job: set up the namespaces, start the program, enforce the deadline. Never returns."""
    code = 70
    try:
        null = os.open("/dev/null", os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.close(null)
        _close_fds(keep=set(outputs or ()))  # the zygote's pipes stay with the zygote
        # the job's arguments: unpickled here, in a process that ends with the job (the zygote's heap
        # stays small), and before the deadline starts, as evalplus's data is in memory before its fork
        job["args"] = pickle.loads(job.pop("payload"))
        if state.level in NAMESPACE_LEVELS:
            _unshare(CLONE_NEWNS | CLONE_NEWPID)
            _build_view(state)
            init = os.fork()
            if init == 0:
                _init(state, job, fn, shared, control, outputs)
            status, timed_out = _wait(init, job["wall"])  # killing init kills the whole namespace
            if timed_out:
                _CONTROL.pack_into(control, 0, 1, signal.SIGKILL, 1, 0)
            else:
                done = _CONTROL.unpack_from(control, 0)[0]
                if not done:  # init failed before the program ended
                    raise SandboxError(f"sandbox init ended without a result (status {status})")
        else:
            workdir = tempfile.mkdtemp(prefix="job-", dir=state.scratch)
            if state.level == "uid":
                os.chown(workdir, state.uid, state.gid)
            program = os.fork()
            if program == 0:
                _program(state, job, fn, shared, control, outputs, workdir)
            status, timed_out = _wait(program, job["wall"])
            with contextlib.suppress(OSError):
                os.killpg(program, signal.SIGKILL)  # whatever it left in its session
            if state.level == "uid":
                _kill_uid(state.uid)
            shutil.rmtree(workdir, ignore_errors=True)
            _CONTROL.pack_into(control, 0, 1, status, int(timed_out), 0)
        code = 0
    except BaseException as error:
        message = f"{type(error).__name__}: {error}".encode()[: _CONTROL_SIZE - _CONTROL.size]
        _CONTROL.pack_into(control, 0, 0, 0, 0, len(message))
        control[_CONTROL.size : _CONTROL.size + len(message)] = message
    finally:
        os._exit(code)


def _init(
    state: _State,
    job: dict[str, Any],
    fn: Callable,
    shared: mmap.mmap,
    control: mmap.mmap,
    outputs: tuple[int, int] | None,
) -> None:
    """PID 1 of the job's namespace: a /proc of its own, start the program, reap. Never returns."""
    code = 71
    try:
        try:  # a /proc that shows this namespace only
            _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        except OSError:  # not allowed (some user-namespace setups): hide /proc instead
            _mount("tmpfs", "/proc", "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=0555")
        program = os.fork()
        if program == 0:
            _program(state, job, fn, shared, control, outputs, "/tmp")
        while True:
            pid, status = os.wait()
            if pid == program:
                _CONTROL.pack_into(control, 0, 1, status, 0, 0)
                code = 0
                break
    except BaseException as error:
        message = f"init: {type(error).__name__}: {error}".encode()[: _CONTROL_SIZE - _CONTROL.size]
        _CONTROL.pack_into(control, 0, 0, 0, 0, len(message))
        control[_CONTROL.size : _CONTROL.size + len(message)] = message
    finally:
        os._exit(code)  # the kernel now kills whatever the program left in the namespace


_ENTRIES: dict[str, Callable] = {}


def _resolve(entry: str) -> Callable:
    if entry not in _ENTRIES:
        module, _, name = entry.partition(":")
        _ENTRIES[entry] = getattr(importlib.import_module(module), name)
    return _ENTRIES[entry]


def _run_job(state: _State, job: dict[str, Any]) -> dict[str, Any]:
    """One job, start to end, from inside the zygote."""
    fn = _resolve(job["entry"])
    size = max(int(job.get("shared", 0)), 1)
    shared = mmap.mmap(-1, size)
    initial = job.get("shared_init", b"")[:size]
    shared[: len(initial)] = initial
    control = mmap.mmap(-1, _CONTROL_SIZE)
    outputs = None
    if job.get("capture"):
        outputs = (os.memfd_create("stdout", 0), os.memfd_create("stderr", 0))
    sys.stdout.flush()
    sys.stderr.flush()
    start = time.monotonic()
    guard = os.fork()
    if guard == 0:
        _guard(state, job, fn, shared, control, outputs)
    _, guard_status = os.waitpid(guard, 0)
    wall = time.monotonic() - start
    done, status, timed_out, error_size = _CONTROL.unpack_from(control, 0)
    returned = int(job.get("shared", 0))
    if job.get("shared_trim") and returned >= 8:  # the page's first 8 bytes: how much of it was used
        returned = max(8, min(struct.unpack_from("<Q", shared, 0)[0], returned))
    reply: dict[str, Any] = {"wall_seconds": wall, "shared": bytes(shared[:returned])}
    if outputs:
        limit = state.limits.file_size_bytes
        reply["stdout"], reply["stderr"] = (os.pread(fd, limit, 0) for fd in outputs)
        for fd in outputs:
            os.close(fd)
    shared.close()
    if not done:
        detail = control[_CONTROL.size : _CONTROL.size + error_size].decode(errors="replace")
        control.close()
        reply.update(
            exit_code=None, signal=None, timed_out=False, error=detail or f"sandbox guard died (status {guard_status})"
        )
        return reply
    control.close()
    reply["timed_out"] = bool(timed_out)
    if os.WIFSIGNALED(status):
        reply.update(exit_code=None, signal=os.WTERMSIG(status))
    else:
        reply.update(exit_code=os.WEXITSTATUS(status), signal=None)
    return reply


def _enter(level: str) -> None:
    """Zygote-wide isolation, once: its own network namespace (and user namespace when not root)."""
    if level == "namespaces+uid":
        _unshare(CLONE_NEWNET)
    elif level == "namespaces":
        uid, gid = os.getuid(), os.getgid()
        _unshare(CLONE_NEWUSER | CLONE_NEWNET)
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as handle:
                handle.write(text)


def _probe(shared: mmap.mmap) -> None:
    """Runs sandboxed when a zygote starts: what can the program actually do?"""
    import errno
    import socket

    found: dict[str, Any] = {"uid": os.getuid(), "environ": sorted(os.environ)}
    try:
        with open("/inversecoder-sandbox-probe", "w"):
            pass
        os.unlink("/inversecoder-sandbox-probe")
        found["root_writable"] = True
    except OSError:
        found["root_writable"] = False
    try:
        socket.create_connection(("127.0.0.1", 9), timeout=0.5).close()
        found["network"] = "connected"
    except OSError as error:
        found["network"] = errno.errorcode.get(error.errno or 0, str(error))
    with open("probe.txt", "w") as handle:  # the private working directory is writable
        handle.write("ok")
    data = json.dumps(found).encode()
    shared[: len(data)] = data


def _probe_level(level: str, state: _State) -> str | None:
    """Try `level` end to end in a throwaway fork of the zygote; None when it works, else why not."""
    reader, writer = os.pipe()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:
        os.close(reader)
        verdict = "unknown"
        try:
            _enter(level)
            reply = _run_job(
                state,
                {
                    "entry": f"{__name__}:_probe",
                    "payload": pickle.dumps(()),
                    "wall": 10.0,
                    "cpu": 10,
                    "shared": 4096,
                    "capture": True,
                },
            )
            if reply.get("error"):
                verdict = reply["error"]
            elif reply["exit_code"] != 0:
                last = reply["stderr"].decode(errors="replace").strip().splitlines()[-1:]
                verdict = f"probe program failed (exit {reply['exit_code']}, signal {reply['signal']}): {last}"
            else:
                found = json.loads(reply["shared"].rstrip(b"\0").decode())
                if level in NAMESPACE_LEVELS and (found["root_writable"] or found["network"] == "connected"):
                    verdict = f"namespaces did not isolate: {found}"
                elif level in UID_LEVELS and found["uid"] != state.uid:
                    verdict = f"uid not dropped: {found['uid']}"
                else:
                    verdict = ""
        except BaseException as error:
            verdict = f"{type(error).__name__}: {error}"
        finally:
            os.write(writer, verdict.encode()[:4000])
            os._exit(0)
    os.close(writer)
    chunks = []
    while chunk := os.read(reader, 4096):
        chunks.append(chunk)
    os.close(reader)
    os.waitpid(child, 0)
    verdict = b"".join(chunks).decode(errors="replace")
    return verdict or None


def _candidates(requested: str) -> list[str]:
    if requested != "auto":
        return [requested]
    if sys.platform != "linux":
        return ["rlimits"]
    return ["namespaces+uid", "namespaces", "uid", "rlimits"] if os.geteuid() == 0 else ["namespaces", "rlimits"]


# A message: sizes of its two parts, a small pickled dict, then an opaque payload (a job's pickled
# arguments, which only the job's guard process unpickles).
_FRAME = struct.Struct("<QQ")


def _read_message(handle) -> dict[str, Any] | None:
    header = handle.read(_FRAME.size)
    if len(header) < _FRAME.size:
        return None
    meta_size, payload_size = _FRAME.unpack(header)
    message = pickle.loads(handle.read(meta_size))
    message["payload"] = handle.read(payload_size)
    return message


def _write_message(handle, message: dict[str, Any]) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    handle.write(_FRAME.pack(len(data), 0) + data)
    handle.flush()


def serve(spec: dict[str, Any]) -> None:
    """The zygote: probe the isolation level, preload, then run jobs read from stdin until EOF."""
    protocol_in = os.fdopen(os.dup(0), "rb")
    protocol_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print must never corrupt the protocol
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the harness decides when we stop
    for module in (*COMMON_MODULES, *spec.get("preload", [])):
        loaded = importlib.import_module(module)
        if callable(getattr(loaded, "sandbox_preload", None)):  # a module's own warm-up (e.g. compiling)
            loaded.sandbox_preload()
    import gc

    gc.collect()
    gc.freeze()  # preloaded objects: never scanned (nor copied on write) by the forked processes' GC
    limits = Limits(**spec["limits"])
    state = _State("rlimits", limits, spec["uid"], spec["gid"], spec["scratch"])
    paths = _python_paths()
    state.tmp_paths = [p for p in paths if p == "/tmp" or p.startswith("/tmp/")]
    reasons: dict[str, str] = {}
    for level in _candidates(spec.get("isolation", "auto")):
        state.level = level
        state.reexpose = {}
        state.hidden_files = []
        if level in NAMESPACE_LEVELS:
            hidden_dirs, state.hidden_files = spec.get("secrets", ([], []))
            roots = set(hidden_dirs)
            if level == "namespaces+uid":
                roots |= {
                    h for p in paths if p not in state.tmp_paths and (h := _blocked_root(p, state.uid, state.gid))
                }
            outermost = [
                r for r in sorted(roots) if not any(r != q and r.startswith(q.rstrip("/") + "/") for q in roots)
            ]
            for root in outermost:  # each hidden folder, with the python paths below it bound back
                state.reexpose[root] = [
                    p for p in paths if p not in state.tmp_paths and (p == root or p.startswith(root.rstrip("/") + "/"))
                ]
        why = _probe_level(level, state)
        if why is None:
            break
        reasons[level] = why
    else:
        _write_message(protocol_out, {"error": f"no sandbox level works: {reasons}"})
        return
    _enter(state.level)
    unreachable = []
    if state.level == "uid":
        unreachable = [p for p in paths if _blocked_root(p, state.uid, state.gid)]
    _write_message(
        protocol_out,
        {
            "level": state.level,
            "reasons": reasons,
            "pid": os.getpid(),
            "reexposed": sorted(p for ps in state.reexpose.values() for p in ps),
            "unreachable": unreachable,
        },
    )
    while (job := _read_message(protocol_in)) is not None:
        try:
            reply = _run_job(state, job)
        except Exception as error:  # report, keep serving
            reply = {
                "error": f"{type(error).__name__}: {error}",
                "exit_code": None,
                "signal": None,
                "timed_out": False,
                "wall_seconds": 0.0,
                "shared": b"",
            }
        _write_message(protocol_out, reply)


# -- the harness side -------------------------------------------------------------------------------
def _zygote_environment() -> dict[str, str]:
    env = dict(BASE_ENVIRONMENT)
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


_ZYGOTE_MAIN = "import json, sys; from inversecoder.core.sandbox import serve; serve(json.loads(sys.argv[1]))"


class _Worker:
    """One zygote process and its pipes."""

    def __init__(self, spec: dict[str, Any]):
        self.spec = spec
        self.process = subprocess.Popen(
            [sys.executable, "-B", "-c", _ZYGOTE_MAIN, json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=_zygote_environment(),
            cwd="/",
            start_new_session=True,
            close_fds=True,
        )
        self.hello: dict[str, Any] | None = None

    def handshake(self, timeout: float) -> dict[str, Any]:
        self.hello = self._receive(timeout)
        if self.hello is None or "error" in self.hello:
            self.kill()
            raise SandboxError(f"sandbox worker did not start: {self.hello and self.hello.get('error')}")
        return self.hello

    def _receive(self, timeout: float) -> Any:
        stream = self.process.stdout
        assert stream is not None
        end = time.monotonic() + timeout

        def read(size: int) -> bytes:
            chunks, left = [], size
            while left:
                remaining = end - time.monotonic()
                if remaining <= 0 or not select.select([stream], [], [], remaining)[0]:
                    raise TimeoutError("sandbox worker did not answer in time")
                chunk = os.read(stream.fileno(), min(left, 1 << 20))
                if not chunk:
                    raise EOFError("sandbox worker exited")
                chunks.append(chunk)
                left -= len(chunk)
            return b"".join(chunks)

        meta_size, payload_size = _FRAME.unpack(read(_FRAME.size))
        message = pickle.loads(read(meta_size))  # the zygote's own reply: plain ints and bytes
        read(payload_size)
        return message

    def request(self, job: dict[str, Any], payload: bytes, timeout: float) -> dict[str, Any]:
        assert self.process.stdin is not None
        data = pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)
        self.process.stdin.write(_FRAME.pack(len(data), len(payload)))
        self.process.stdin.write(data)
        self.process.stdin.write(payload)
        self.process.stdin.flush()
        return self._receive(timeout)

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):
                stream and stream.close()

    def close(self) -> None:
        try:
            if self.process.stdin:
                self.process.stdin.close()
            self.process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.kill()
        if self.process.stdout:
            self.process.stdout.close()


class Sandbox:
    """A pool of `workers` zygotes; `call` is thread-safe (each call borrows an idle zygote).

    with Sandbox(workers=2) as sandbox:
        outcome = sandbox.run_source("print('hi')", wall_seconds=5)
    """

    def __init__(
        self,
        workers: int = 1,
        limits: Limits | None = None,
        isolation: str = "auto",
        preload: Sequence[str] = (),
        require_isolation: bool = False,
        start_timeout: float = 120.0,
        hidden: Sequence[str] = (),
    ):
        if isolation not in ("auto", *LEVELS):
            raise ValueError(f"isolation must be 'auto' or one of {LEVELS}, got {isolation!r}")
        self.limits = limits or Limits()
        self.isolation = isolation
        self.preload = list(preload)
        self.require_isolation = require_isolation
        self.start_timeout = start_timeout
        self.hidden = [str(path) for path in hidden]  # folders hidden from programs besides `secret_paths`'s
        self.errors = 0  # jobs the sandbox itself failed (worker died, setup failed)
        self._lock = threading.Lock()
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._workers: list[_Worker | None] = []
        self._hello: dict[str, Any] = {}
        self._closed = False
        # per-job directories of the non-namespace levels go here; removed by close()
        self._scratch = tempfile.mkdtemp(prefix="inversecoder-sandbox-")
        os.chmod(self._scratch, 0o711)
        if not 1 <= workers <= 1024:
            raise ValueError(f"workers must be between 1 and 1024, got {workers}")
        uid_base = UID_BASE + (os.getpid() % 4096) * 1024  # below 2**31 whatever the pid
        specs = [self._spec(uid_base + i) for i in range(workers)]
        started = [_Worker(spec) for spec in specs]
        try:
            for index, worker in enumerate(started):
                hello = worker.handshake(start_timeout)
                self._workers.append(worker)
                self._idle.put(worker)
                if index == 0:
                    self._hello = hello
        except BaseException:
            for worker in started:
                worker.kill()
            self._remove_scratch()
            raise
        if self.require_isolation and self.level not in NAMESPACE_LEVELS:
            self.close()
            raise SandboxError(
                f"network isolation unavailable (sandbox level '{self.level}': {self._hello.get('reasons')}); "
                "run as root, or allow unprivileged user namespaces"
            )

    def _spec(self, uid: int) -> dict[str, Any]:
        return {
            "limits": asdict(self.limits),
            "uid": uid,
            "gid": uid,
            "isolation": self.isolation,
            "preload": self.preload,
            "scratch": self._scratch,
            "secrets": secret_paths(extra=self.hidden),
        }

    @property
    def workers(self) -> int:
        """Programs that can run at once."""
        return len(self._workers)

    @property
    def level(self) -> str:
        return self._hello["level"]

    @property
    def info(self) -> dict[str, Any]:
        """What the programs ran under: for eval_results.json."""
        level = self.level
        namespaces = level in NAMESPACE_LEVELS
        return {
            "level": level,
            "network": "own network namespace (no interface up)" if namespaces else "NOT isolated",
            "filesystem": "read-only, private tmpfs /tmp, own /proc"
            if namespaces
            else "private temp dir; the rest as the program's uid allows",
            "processes": "own PID namespace and session" if namespaces else "own session",
            "uid": "unprivileged sandbox uid per worker" if level in UID_LEVELS else "the harness user's",
            "environment": [*sorted(BASE_ENVIRONMENT), "HOME", "TMPDIR"],
            "limits": asdict(self.limits),
            "levels_unavailable": self._hello.get("reasons", {}),
            "reexposed_paths": self._hello.get("reexposed", []),
            "unreachable_paths": self._hello.get("unreachable", []),
            "kernel": os.uname().release,
        }

    def call(
        self,
        entry: str,
        args: Sequence[Any] = (),
        *,
        wall_seconds: float,
        cpu_seconds: int | None = None,
        shared_bytes: int = 0,
        shared_init: bytes = b"",
        shared_trim: bool = False,
        capture_output: bool = False,
        env: dict[str, str] | None = None,
    ) -> Outcome:
        """Run `module:function(shared_page, *args)` in a fresh sandboxed process.

        `shared_page` is an mmap of `shared_bytes` (starting as `shared_init`, then zeros) that comes
        back as `Outcome.shared`: the only channel from the program to the caller besides its exit
        status (and its output, with `capture_output`). With `shared_trim`, the page's first 8 bytes
        (little-endian) say how many of its bytes come back (a large page costs only what is used)."""
        if self._closed:
            raise SandboxError("sandbox is closed")
        payload = pickle.dumps(tuple(args), protocol=pickle.HIGHEST_PROTOCOL)
        job = {
            "entry": entry,
            "wall": float(wall_seconds),
            "cpu": int(cpu_seconds if cpu_seconds is not None else int(wall_seconds) + 2),
            "shared": int(shared_bytes),
            "shared_init": bytes(shared_init),
            "shared_trim": shared_trim,
            "capture": capture_output,
            "env": dict(env or {}),
        }
        worker = self._idle.get()
        try:
            # generous: the guard unpickles the arguments before the deadline starts (~1 s per 100 MB)
            reply = worker.request(job, payload, timeout=wall_seconds + 60.0 + len(payload) / 10e6)
        except (OSError, EOFError, TimeoutError, pickle.UnpicklingError, struct.error) as error:
            worker.kill()
            worker = self._replace(worker)
            with self._lock:
                self.errors += 1
            return Outcome(None, None, False, 0.0, error=f"sandbox worker failed: {type(error).__name__}: {error}")
        finally:
            self._idle.put(worker)
        if reply.get("error"):
            with self._lock:
                self.errors += 1
        return Outcome(
            reply.get("exit_code"),
            reply.get("signal"),
            bool(reply.get("timed_out")),
            reply.get("wall_seconds", 0.0),
            reply.get("shared", b""),
            reply.get("stdout", b""),
            reply.get("stderr", b""),
            reply.get("error"),
        )

    def _replace(self, dead: _Worker) -> _Worker:
        fresh = _Worker(dead.spec)
        fresh.handshake(self.start_timeout)
        with self._lock:
            self._workers = [fresh if w is dead else w for w in self._workers]
        return fresh

    def run_source(self, source: str, wall_seconds: float = 10.0, env: dict[str, str] | None = None) -> Outcome:
        """Run a Python script (as __main__) in the sandbox, capturing its stdout and stderr."""
        return self.call(f"{__name__}:run_script", (source,), wall_seconds=wall_seconds, capture_output=True, env=env)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for worker in self._workers:
            if worker is not None:
                worker.close()
        self._remove_scratch()

    def _remove_scratch(self) -> None:
        shutil.rmtree(self._scratch, ignore_errors=True)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_script(shared: mmap.mmap, source: str) -> None:
    """Entry for `Sandbox.run_source` (runs sandboxed)."""
    exec(compile(source, "<sandboxed>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
