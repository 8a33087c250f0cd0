"""A training step on the whole node: in process for one process, else a job started through accelerate.

`run` (one process: it builds the data, holds the output lock and writes the step records) calls
`train_on_node`. With more than one process planned (`distribution.py`), it writes the accelerate config
of the launch into the stage folder (`accelerate_config.yaml`: DDP, FSDP2 or ZeRO-3, the process count,
a free rendezvous port) and starts `accelerate launch -m inversecoder.train_worker` on it; every worker
trains through `recipe.train_model`, whose main process alone writes checkpoints' side files, the model
folder and its `training_config.json`; the others wait at its barriers. The job's config travels in an
environment variable, never in a file (it may carry a Hub token). `run` waits for the job and, when it
fails, stops with its exit code: finished checkpoints stay, the same command resumes.

A process that is already one rank of a launched job (`accelerate launch -m inversecoder.cli train`,
e.g. on several nodes) trains in place: it was started by the user's launcher.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from inversecoder.core.config import RunConfig
from inversecoder.core.errors import UserError
from inversecoder.core.files import write_atomic
from inversecoder.core.ranks import in_launched_job, world_size
from inversecoder.core.secrets import is_secret_name
from inversecoder.trainers.distribution import Distribution, plan_for

logger = logging.getLogger(__name__)

JOB_ENV = "INVERSECODER_TRAIN_JOB"
ACCELERATE_CONFIG = "accelerate_config.yaml"
STOP_GRACE_SECONDS = 30
PR_SET_PDEATHSIG = 1


def train_on_node(config: RunConfig, dataset_dir: Path, work_dir: Path, model_dir: Path) -> Path:
    """Train `config` on `dataset_dir` into `model_dir` with the processes and strategy the node allows."""
    from inversecoder.trainers.recipe import base_model, free_memory, train_model

    if in_launched_job():
        launched = Distribution(
            world_size(),
            launched_strategy(),
            "launched",
            ["started by the user's launcher (accelerate launch / torchrun)"],
        )
        return train_model(config, dataset_dir, work_dir, model_dir, distribution=launched.as_dict())
    distribution = plan_for(config.train, *base_model(config))
    logger.info(f"train: {distribution.describe()}")
    if distribution.processes == 1:
        return train_model(config, dataset_dir, work_dir, model_dir, distribution=distribution.as_dict())
    free_memory()  # the generator's cached blocks, before the job's processes need the GPUs
    _launch(config, distribution, Path(dataset_dir), Path(work_dir), Path(model_dir))
    return Path(model_dir)


def launched_strategy() -> str:
    """What the user's accelerate launch runs (accelerate exports its choice to the processes it starts)."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        return "zero3" if os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3" else "deepspeed"
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        return "fsdp2" if os.environ.get("FSDP_VERSION") == "2" else "fsdp"
    return "ddp"


def accelerate_config(config: RunConfig, distribution: Distribution, port: int) -> dict[str, Any]:
    """accelerate's config for one node; for several nodes, copy it and set num_machines, machine_rank and
    main_process_ip on each (README: "Training on several nodes")."""
    from inversecoder.trainers.sft_config import uses_bf16

    settings: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE",
        "debug": False,
        "distributed_type": {"ddp": "MULTI_GPU", "fsdp2": "FSDP", "zero3": "DEEPSPEED"}[distribution.strategy],
        "downcast_bf16": "no",
        "machine_rank": 0,
        "main_process_port": port,
        "mixed_precision": "bf16" if uses_bf16(config.train.bf16) else "no",
        "num_machines": 1,
        "num_processes": distribution.processes,
        "rdzv_backend": "static",
        "same_network": True,
        # On a CPU the workers still go through the multi-GPU launcher (torchrun); they train with gloo.
        "use_cpu": False,
    }
    if distribution.device == "cuda":
        settings["gpu_ids"] = "all"
    if distribution.strategy == "fsdp2":
        settings["fsdp_config"] = {
            "fsdp_version": 2,
            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",  # the model's own _no_split_modules (decoder layers)
            "fsdp_reshard_after_forward": True,
            "fsdp_offload_params": False,
            "fsdp_cpu_ram_efficient_loading": True,
            "fsdp_state_dict_type": "FULL_STATE_DICT",  # save_model gathers one set of weights on rank 0
            "fsdp_activation_checkpointing": False,  # train.gradient_checkpointing goes through the Trainer
        }
    if distribution.strategy == "zero3":
        settings["deepspeed_config"] = {
            "zero_stage": 3,
            "zero3_init_flag": True,
            "zero3_save_16bit_model": True,
            "deepspeed_multinode_launcher": "standard",  # torchrun per node, as the other strategies (not pdsh)
            "offload_optimizer_device": "none",
            "offload_param_device": "none",
        }
    return settings


def _free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _launch(config: RunConfig, distribution: Distribution, dataset_dir: Path, work_dir: Path, model_dir: Path) -> None:
    work_dir.mkdir(parents=True, exist_ok=True)
    config_file = work_dir / ACCELERATE_CONFIG
    write_atomic(config_file, yaml.safe_dump(accelerate_config(config, distribution, _free_port()), sort_keys=False))
    job_config, token = _job_config(config)
    job = {
        "config": job_config,
        "dataset_dir": str(dataset_dir),
        "work_dir": str(work_dir),
        "model_dir": str(model_dir),
        "distribution": distribution.as_dict(),
    }
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(config_file),
        "--quiet",
        "-m",
        "inversecoder.train_worker",
    ]
    logger.info(f"train: launching {distribution.processes} processes with {config_file}")
    env = os.environ | {JOB_ENV: json.dumps(job)} | ({"HF_TOKEN": token} if token else {})
    # Its own process group, stopped whole with this run: on Ctrl-C, SIGTERM or SIGHUP (below), and by the
    # kernel when this process dies without a word (SIGKILL: the launcher's parent-death signal).
    process = subprocess.Popen(command, env=env, start_new_session=True, preexec_fn=_stop_with_parent)
    stopped: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        stopped.append(signum)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        code = process.wait()
    except BaseException:
        _stop(process)
        if stopped:  # end as the signal would have ended this process, the job being stopped first
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            signal.raise_signal(stopped[0])
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code != 0:
        raise UserError(
            f"training failed: the {distribution.processes}-process job exited with code {code} (its log is above); "
            "finished checkpoints are kept, rerun the same command to resume"
        )


def _job_config(config: RunConfig) -> tuple[dict[str, Any], str | None]:
    """What the workers need (train, seed, the model names), without credentials: a token named in
    `train.sft_args` travels as HF_TOKEN, which huggingface_hub reads (as `secrets_outside` does in training)."""
    train = config.train.model_dump(mode="json")
    tokens: list[str] = []
    for mapping in (train["sft_args"], train["sft_args"].get("model_init_kwargs")):
        if isinstance(mapping, dict):
            for key in [k for k in mapping if is_secret_name(k)]:
                value = mapping.pop(key)
                if isinstance(value, str) and value:
                    tokens.append(value)
    minimal = {
        "seed": config.seed,
        "train": train,
        "generator": {"model": config.generator.model, "revision": config.generator.revision},
    }
    return minimal, (tokens[0] if tokens else None)


def _stop_with_parent() -> None:
    """In the launcher, before it starts: SIGTERM when `run` dies (Linux), which torchrun passes to its workers."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _stop(process: subprocess.Popen) -> None:
    """Stop the job's whole process group: SIGTERM, then SIGKILL after a grace period."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(STOP_GRACE_SECONDS)
            return
        except subprocess.TimeoutExpired:
            continue
