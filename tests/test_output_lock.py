"""One writer per output folder: real `inversecoder` processes racing for one folder, real SIGKILLs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import SAMPLE

from inversecoder.core.lock import LOCK_ENV, output_lock


def recipe(folder: Path, tiny_model_dir: Path, limit: int) -> Path:
    path = folder / f"r{limit}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "source": {"path": str(SAMPLE), "limit": limit},
                "generator": {"model": str(tiny_model_dir)},
                "summarize": {"num_samples": 4, "max_new_tokens": 24},
                "decontaminate": {"enabled": False},
                "train": {"enabled": False},
                "evaluate": {"enabled": False},
            }
        )
    )
    return path


def inversecoder(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "inversecoder.cli", *args], capture_output=True, text=True, timeout=600, env=env
    )


def wait_for_holder(lock: Path, process: subprocess.Popen, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            holder = json.loads(lock.read_text())
        except (OSError, ValueError):
            holder = None
        if holder and holder.get("pid") == process.pid:
            return holder
        time.sleep(0.1)
    raise AssertionError("the first run never took the lock")


def test_a_second_run_on_the_same_folder_stops_and_a_killed_run_leaves_no_stale_lock(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    slow = recipe(tmp_path, tiny_model_dir, limit=154)  # long enough to be still running when the second starts
    first = subprocess.Popen(
        [sys.executable, "-m", "inversecoder.cli", "build-dataset", str(slow), "--output-dir", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        holder = wait_for_holder(out / ".lock", first)
        for command in ("build-dataset", "run"):  # same config, then another command and another config
            config = slow if command == "build-dataset" else recipe(tmp_path, tiny_model_dir, limit=6)
            second = inversecoder(command, str(config), "--output-dir", str(out))
            assert first.poll() is None, "the first run ended before the second was tried: make it slower"
            assert second.returncode == 2, second.stdout[-2000:] + second.stderr[-2000:]
            lines = [line for line in second.stderr.splitlines() if line.strip()]
            assert len(lines) == 1 and lines[0].startswith("inversecoder: error:"), second.stderr
            assert f"pid {first.pid} " in lines[0] and "in use by another inversecoder run" in lines[0]
            assert holder["started"] in lines[0] and "build-dataset" in lines[0] and holder["host"] in lines[0]
        assert not (out / "dataset").exists()  # the second wrote nothing
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert first.returncode == -signal.SIGKILL

    third = inversecoder("run", str(recipe(tmp_path, tiny_model_dir, limit=6)), "--output-dir", str(out))
    assert third.returncode == 0, third.stderr[-3000:]
    assert list((out / "dataset" / "data").glob("*.parquet"))
    again = inversecoder("build-dataset", str(recipe(tmp_path, tiny_model_dir, limit=6)), "--output-dir", str(out))
    assert again.returncode == 0, again.stderr[-3000:]  # the finished run let go of it too


HOLD = """
import sys
from inversecoder.core.lock import output_lock
with output_lock(sys.argv[1]):
    print("held")
"""


def test_the_processes_of_one_run_share_its_lock(tmp_path):
    """A process started by the holder (it inherits INVERSECODER_OUTPUT_LOCK) works under the holder's
    lock; any other process is refused, and a secondary rank of a distributed launch leaves it to rank 0."""
    with output_lock(tmp_path):
        assert os.environ.get(LOCK_ENV)
        child = subprocess.run([sys.executable, "-c", HOLD, str(tmp_path)], capture_output=True, text=True)
        assert child.returncode == 0 and child.stdout == "held\n", child.stderr
        stranger_env = {k: v for k, v in os.environ.items() if k != LOCK_ENV}
        stranger = subprocess.run(
            [sys.executable, "-c", HOLD, str(tmp_path)], capture_output=True, text=True, env=stranger_env
        )
        assert stranger.returncode != 0 and f"pid {os.getpid()} " in stranger.stderr
        rank = subprocess.run(
            [sys.executable, "-c", HOLD, str(tmp_path)],
            capture_output=True,
            text=True,
            env=stranger_env | {"RANK": "1", "WORLD_SIZE": "2"},
        )
        assert rank.returncode == 0, rank.stderr
    assert LOCK_ENV not in os.environ
    after = subprocess.run([sys.executable, "-c", HOLD, str(tmp_path)], capture_output=True, text=True)
    assert after.returncode == 0, after.stderr


@pytest.mark.parametrize("command", ["build-dataset", "run"])
def test_a_config_error_creates_no_output_folder(command, tmp_path):
    result = inversecoder(
        command,
        "configs/demo.yaml",
        "generator.model=null",
        "train.base_model=null",
        "--output-dir",
        str(tmp_path / "o"),
    )
    assert result.returncode == 2 and not (tmp_path / "o").exists(), result.stderr
