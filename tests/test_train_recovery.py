"""Training resumes from its newest COMPLETE checkpoint: a run killed while a checkpoint is written, a
truncated weights file or a lost trainer_state.json must not make every later `train` fail."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_trainers import N_GENERATED, N_ORIGINAL, generated_rows, original_rows, read, run_config, write_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLI_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


@pytest.fixture(autouse=True)
def _training_log(caplog):
    caplog.set_level("INFO", logger="inversecoder")


# ------------------------------------------------------------------------ a real kill -9 mid-checkpoint


def _new_checkpoint(train_dir: Path, seen: set[Path]) -> Path | None:
    for stage in ("stage1", "stage2"):
        folder = train_dir / stage
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            continue
        for entry in entries:
            path = Path(entry.path)
            if entry.name.startswith("checkpoint-") and path not in seen:
                return path
    return None


def _train_until_a_checkpoint_appears(command: list[str], train_dir: Path, seen: set[Path]) -> Path | None:
    """Start `inversecoder train`, SIGKILL it the moment a new checkpoint folder appears; the folder (or
    None when the run finished first)."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=CLI_ENV)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            found = _new_checkpoint(train_dir, seen)
            if found is not None:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
                seen.add(found)
                return found
            if process.poll() is not None:
                return None
            time.sleep(0.0005)
        raise AssertionError("no checkpoint appeared within 300 s")
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()


def test_a_run_killed_while_a_checkpoint_is_written_trains_to_the_end_next_time(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    write_dataset(out / "dataset", generated_rows(N_GENERATED), original_rows(N_ORIGINAL))
    recipe = {
        "seed": 0,
        "train": {
            "base_model": str(tiny_model_dir),
            "global_batch_size": 8,
            "per_device_batch_size": 4,
            "learning_rate": 1e-3,
            "warmup_steps": 1,
            "max_length": 256,
            "logging_steps": 1,
            "save_steps": 1,
        },
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    command = [sys.executable, "-m", "inversecoder.cli", "train", str(tmp_path / "r.yaml"), "--output-dir", str(out)]

    seen: set[Path] = set()
    caught = []
    for _ in range(4):  # until one kill lands before the checkpoint's last file (trainer_state.json) is written
        checkpoint = _train_until_a_checkpoint_appears(command, out / "train", seen)
        assert checkpoint is not None, "the run finished before any checkpoint was caught"
        if not (checkpoint / "trainer_state.json").is_file():
            caught.append(checkpoint)
            break
    assert caught, "no kill landed while a checkpoint was being written"

    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=CLI_ENV)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (broken,) = caught
    assert f"{broken} is incomplete" in result.stdout
    assert (broken.parent / f"broken-{broken.name}").is_dir(), "set aside, not deleted"
    logs = read(out / "model" / "training_logs.json")
    assert [e["step"] for e in logs["stage1"] if "loss" in e][-1] == 6
    assert [e["step"] for e in logs["stage2"] if "loss" in e][-1] == 8
    assert (out / "model" / "model.safetensors").is_file()


# -------------------------------------------------------------- damaged checkpoints, set aside by name


@pytest.fixture(scope="module")
def interrupted(tiny_model_dir, tmp_path_factory):
    """stage1 trained to step 4 with checkpoints at steps 2 and 4, then stopped (as a crash would)."""
    from transformers import TrainerCallback

    from inversecoder.trainers import recipe

    class Interrupted(Exception):
        pass

    class CrashAtStep4(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 4:
                raise Interrupted

    root = tmp_path_factory.mktemp("interrupted")
    dataset = write_dataset(root / "dataset", generated_rows(N_GENERATED), original_rows(N_ORIGINAL))
    config = run_config(tiny_model_dir, save_steps=2)
    build = recipe._build_trainer
    mp = pytest.MonkeyPatch()

    def with_crash(*args, **kwargs):
        trainer = build(*args, **kwargs)
        trainer.add_callback(CrashAtStep4())
        return trainer

    mp.setattr(recipe, "_build_trainer", with_crash)
    try:
        with pytest.raises(Interrupted):
            recipe.train_model(config, dataset, root / "work", root / "model")
    finally:
        mp.undo()
    stage1 = root / "work" / "stage1"
    assert sorted(p.name for p in stage1.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    return config, dataset, root / "work"


def _resume(interrupted, tmp_path, damage) -> tuple[Path, Path]:
    from inversecoder.trainers import train_model

    config, dataset, work = interrupted
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    damage(copy / "stage1" / "checkpoint-4")
    model = train_model(config, dataset, copy, tmp_path / "model")
    return copy, model


def _truncate_weights(checkpoint: Path) -> None:
    weights = checkpoint / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_truncate_weights, "model.safetensors"),
        (lambda checkpoint: (checkpoint / "trainer_state.json").unlink(), "no trainer_state.json"),
        (lambda checkpoint: (checkpoint / "optimizer.pt").write_bytes(b"PK\x03\x04"), "optimizer.pt"),
    ],
    ids=["truncated-weights", "no-trainer-state", "truncated-optimizer"],
)
def test_a_damaged_newest_checkpoint_is_set_aside_and_the_previous_one_resumed(
    interrupted, tmp_path, caplog, damage, reason
):
    work, model = _resume(interrupted, tmp_path, damage)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("checkpoint-4 is incomplete" in w and reason in w and "broken-checkpoint-4" in w for w in warnings)
    assert f"stage1: resuming from {work / 'stage1' / 'checkpoint-2'}" in caplog.text
    assert (work / "stage1" / "broken-checkpoint-4").is_dir(), "set aside, not deleted"
    logs = read(model / "training_logs.json")
    assert [e["step"] for e in logs["stage1"] if "loss" in e] == list(range(1, 7)), "steps 1-2 from the checkpoint"


def test_with_no_complete_checkpoint_the_stage_starts_from_scratch(interrupted, tmp_path, caplog):
    def break_both(checkpoint: Path) -> None:
        _truncate_weights(checkpoint)
        (checkpoint.parent / "checkpoint-2" / "trainer_state.json").write_text('{"global_st')

    work, model = _resume(interrupted, tmp_path, break_both)
    assert "stage1: no complete checkpoint" in caplog.text and "starts from scratch" in caplog.text
    assert "stage1: resuming from" not in caplog.text
    assert sorted(p.name for p in (work / "stage1").glob("broken-*")) == ["broken-checkpoint-2", "broken-checkpoint-4"]
    assert read(model / "training_logs.json")["stage1"][-1]["step"] == 6
