"""Training on the whole node: `run` launches the train step as a 2-process job through accelerate (gloo
on this CPU) and the result is the 1-process model, with the same global batch; the strategy choice."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file
from test_trainers import generated_rows, original_rows, run_config, write_dataset

from inversecoder.core.config import RunConfig, TrainConfig, save_config
from inversecoder.core.errors import ConfigError, UserError
from inversecoder.trainers.distribution import Devices, ModelShape, choose
from inversecoder.trainers.launch import _free_port

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOLERANCE = 1e-4
"""Largest weight difference allowed between the 1- and 2-process models: the same examples make each
optimizer step; only the order of float additions may differ (per-rank sums, then the all-reduce). Measured
on this CPU: 0 (two micro-batches: the all-reduce adds the same two gradients)."""


def _weights(model_dir: Path) -> dict:
    return load_file(str(model_dir / "model.safetensors"))


def _run_folder(root: Path, dataset: Path, base_model: Path, **train) -> RunConfig:
    config = run_config(base_model, **train)
    config = config.model_copy(update={"output_dir": str(root)})
    config.evaluate.enabled = False
    config.generator.model = str(base_model)
    shutil.copytree(dataset, config.layout.dataset)
    return config


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("dataset"), generated_rows(24), original_rows(16))


def test_the_train_step_on_two_processes_matches_one_process(tiny_model_dir, dataset_dir, tmp_path, caplog):
    from inversecoder.workflow import run_all

    caplog.set_level("INFO", logger="inversecoder")
    one = _run_folder(tmp_path / "one", dataset_dir, tiny_model_dir)
    run_all(one, "train", "train")
    two = _run_folder(tmp_path / "two", dataset_dir, tiny_model_dir, num_processes=2)
    caplog.clear()
    run_all(two, "train", "train")

    log = caplog.text
    assert "ddp on 2 cpu processes" in log and log.count("[train] running") == 1
    assert (two.layout.train / "accelerate_config.yaml").is_file()
    records = json.loads(two.layout.steps.read_text())
    assert list(records) == ["train"]  # the parent alone records the step, once
    for config, processes in ((one, 1), (two, 2)):
        info = json.loads((config.layout.model / "training_config.json").read_text())
        assert info["distribution"]["processes"] == processes
        assert info["distribution"]["strategy"] == ("single" if processes == 1 else "ddp")
        for stage in info["stages"]:
            args = stage["sft_args"]
            # the global batch is kept: rows per device x accumulation x processes
            assert args["per_device_train_batch_size"] * args["gradient_accumulation_steps"] * processes == 8
    # The same job, started by the user's launcher (how several nodes train): every rank runs `train`.
    three = _run_folder(tmp_path / "three", dataset_dir, tiny_model_dir)
    save_config(three, tmp_path / "three.yaml")
    launched = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--main_process_port",
            str(_free_port()),
            "-m",
            "inversecoder.cli",
            "train",
            str(tmp_path / "three.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert launched.stdout.count("[train] running") == 1  # progress from the main process only
    assert list(json.loads(three.layout.steps.read_text())) == ["train"]
    info = json.loads((three.layout.model / "training_config.json").read_text())
    assert info["distribution"]["processes"] == 2 and "launcher" in info["distribution"]["reasons"][0]
    assert (three.layout.model / "README.md").is_file()  # the report (model card), written by the main process
    a, b = _weights(one.layout.model), _weights(two.layout.model)
    assert all(((b[name] - c).abs().max().item() == 0) for name, c in _weights(three.layout.model).items())
    base = _weights(tiny_model_dir)
    assert a.keys() == b.keys()
    moved = max((a[name].float() - base[name].float()).abs().max().item() for name in a)
    diff = max((a[name].float() - b[name].float()).abs().max().item() for name in a)
    assert moved > 10 * TOLERANCE, "training must have changed the weights for the comparison to mean anything"
    assert diff < TOLERANCE, f"1- and 2-process models differ by {diff}"


def test_a_failing_job_stops_the_run_with_its_exit_code(tiny_model_dir, dataset_dir, tmp_path):
    from inversecoder.workflow import run_all

    config = _run_folder(tmp_path / "bad", dataset_dir, tiny_model_dir, num_processes=2)
    shutil.rmtree(config.layout.dataset / "original")  # the workers cannot load the original pairs
    with pytest.raises(UserError, match="2-process job exited with code"):
        run_all(config, "train", "train")
    assert not config.layout.steps.exists() or "train" not in json.loads(config.layout.steps.read_text())


# -- the strategy, from memory arithmetic --------------------------------------------------------------
SIX_B = ModelShape(parameters=6_740_000_000, hidden_size=4096, layers=32, vocab_size=32256)
ONE_B = ModelShape(parameters=1_350_000_000, hidden_size=2048, layers=24, vocab_size=32256)
GB = 1_000_000_000


@pytest.mark.parametrize(
    ("shape", "memory_gb", "train", "expected"),
    [
        (ONE_B, 80, {}, "ddp"),  # 1.3B: fp32 weights, grads and DDP buckets 16 GB, activations ~14 GB
        (SIX_B, 40, {}, "fsdp2"),  # the paper's 6.7B on 8 x A100-40GB
        (SIX_B, 80, {"gradient_checkpointing": True}, "fsdp2"),  # 81 GB of fp32 state alone
        (SIX_B, 141, {}, "ddp"),  # an H200 holds the whole state (118 GB)
        (ONE_B, 80, {"strategy": "fsdp2"}, "fsdp2"),  # forced
    ],
)
def test_the_strategy_follows_model_size_and_gpu_memory(shape, memory_gb, train, expected):
    plan = choose(TrainConfig(**train), shape, Devices("cuda", 8, memory_gb * GB))
    assert (plan.processes, plan.strategy) == (8, expected)
    assert plan.reasons and plan.memory["weights"] > 0


def test_the_estimate_follows_the_effective_training_settings():
    devices = Devices("cuda", 8, 80 * GB)
    fp32 = choose(TrainConfig(), SIX_B, devices).memory
    bf16 = choose(TrainConfig(sft_args={"model_init_kwargs": {"dtype": "bfloat16"}}), SIX_B, devices).memory
    # TRL loads fp32 unless model_init_kwargs says otherwise
    assert fp32["weights"] == pytest.approx(2 * bf16["weights"], abs=0.01)
    half = choose(TrainConfig(sft_args={"per_device_train_batch_size": 4}), SIX_B, devices).memory
    assert half["activations"] == pytest.approx(fp32["activations"] / 2, abs=0.01)  # (GB, rounded)
    adam = choose(TrainConfig(optim="adamw_torch", num_processes=8), ONE_B, devices)
    assert adam.memory["optimizer"] > 0 and adam.strategy == "ddp"
    uneven = choose(TrainConfig(num_processes=6), ONE_B, devices)
    assert any("not a multiple of 48 rows" in reason and "takes 528" in reason for reason in uneven.reasons)


def test_strategy_choices_that_cannot_work_are_one_line_errors():
    with pytest.raises(ConfigError, match="needs CUDA GPUs"):
        choose(TrainConfig(num_processes=2, strategy="fsdp2"), ONE_B, Devices("cpu", 1))
    moot = choose(TrainConfig(strategy="fsdp2"), ONE_B, Devices("cpu", 1))  # one process: nothing to shard
    assert moot.strategy == "single" and "moot" in moot.reasons[-1]
    with pytest.raises(ConfigError, match="only 8 GPU"):
        choose(TrainConfig(num_processes=16), ONE_B, Devices("cuda", 8, 80 * GB))
    one = choose(TrainConfig(), ONE_B, Devices("cpu", 1))
    assert (one.processes, one.strategy) == (1, "single")


def test_under_a_launcher_only_training_steps_may_run(monkeypatch):
    from inversecoder.workflow import _check_launched_steps

    monkeypatch.setenv("WORLD_SIZE", "2")
    _check_launched_steps(["train", "report"], {"train": "run", "report": "run"}, ())
    with pytest.raises(UserError, match="only the training steps run, but dataset"):
        _check_launched_steps(["dataset", "train"], {"dataset": "run", "train": "run"}, ())


def _job_processes(marker: str) -> list[int]:
    """Pids of the processes of a training job whose config names `marker` (the launcher and its workers)."""
    from inversecoder.trainers.launch import JOB_ENV

    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if f"{JOB_ENV}=".encode() in environ and marker.encode() in environ:
                found.append(int(entry.name))
    return found


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_stopping_the_run_stops_the_whole_training_job(tiny_model_dir, dataset_dir, tmp_path, sig):
    import signal
    import time

    config = _run_folder(tmp_path / "run", dataset_dir, tiny_model_dir, num_processes=2, generated_epochs=500)
    save_config(config, tmp_path / "run.yaml")
    run = subprocess.Popen(
        [sys.executable, "-m", "inversecoder.cli", "train", str(tmp_path / "run.yaml")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while len(_job_processes(str(tmp_path))) < 3 and time.monotonic() < deadline:  # the launcher and 2 workers
        time.sleep(0.2)
    assert len(_job_processes(str(tmp_path))) >= 3, "the job did not start"
    run.send_signal(getattr(signal, sig))
    assert run.wait(60) == -getattr(signal, sig)  # the run ends as the signal ends it ...
    gone = time.monotonic() + 20  # (the job alone would train for minutes)
    while _job_processes(str(tmp_path)) and time.monotonic() < gone:
        time.sleep(0.2)
    assert _job_processes(str(tmp_path)) == []  # ... and takes its whole job with it
