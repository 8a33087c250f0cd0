"""The `trl.SFTConfig` of one training stage, from the run's `train` section.

The paper's batches (global batch, gradient accumulation derived from the world size), precision, the
speed settings of `trainers/speed.py`, and `train.sft_args` passed through after their keys are checked.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trl

from inversecoder.core.config import FieldError, TrainConfig, check_sft_args
from inversecoder.core.errors import ConfigError
from inversecoder.core.ranks import world_size
from inversecoder.core.secrets import is_secret_name
from inversecoder.trainers import speed


@dataclass
class InverseCoderSFTConfig(trl.SFTConfig):
    """`trl.SFTConfig` plus the recipe's own fields; gradient accumulation follows the global batch."""

    global_batch_size: int | None = field(
        default=None,
        metadata={"help": "Sequences per optimizer step; sets gradient_accumulation_steps (None: leave it)."},
    )
    stage: str = field(default="", metadata={"help": "Name of the training stage (stage1, stage2, mix)."})
    documents_per_row: float | None = field(
        default=None,
        metadata={
            "help": "With packing: estimated documents per packed row; global_batch_size then counts "
            "documents, and the rows per micro-batch and the accumulation are derived from it."
        },
    )
    speed_plan: dict | None = field(
        default=None, metadata={"help": "The packing/attention/kernels/compile choice and its reasons (a record)."}
    )

    def __post_init__(self) -> None:
        if self.global_batch_size is not None:
            if self.packing and self.documents_per_row:
                self.per_device_train_batch_size, self.gradient_accumulation_steps = speed.packed_batch(
                    self.global_batch_size, self.per_device_train_batch_size, world_size(), self.documents_per_row
                )
            else:
                self.gradient_accumulation_steps = gradient_accumulation_for(
                    self.global_batch_size, self.per_device_train_batch_size, world_size()
                )
        if self.packing and self.pad_to_multiple_of in (None, "auto"):
            self.pad_to_multiple_of = (
                speed.static_length(self.speed_plan, self.per_device_train_batch_size, self.max_length)
                or self.pad_to_multiple_of
            )
        super().__post_init__()


# --------------------------------------------------------------------------------------------- config


def gradient_accumulation_for(global_batch_size: int, per_device: int, processes: int) -> int:
    """Steps to accumulate so that one optimizer step sees at least `global_batch_size` sequences."""
    if global_batch_size < 1 or per_device < 1:
        raise ConfigError(
            f"train.global_batch_size ({global_batch_size}) and train.per_device_batch_size ({per_device}) "
            "must be positive"
        )
    return max(1, math.ceil(global_batch_size / (per_device * processes)))


def _has_accelerator() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return torch.cuda.is_available() or bool(mps and mps.is_available())


def uses_bf16(setting: str) -> bool:
    """`auto`: bf16 only where the GPU supports it (the paper trains in bf16 on A100s); the config allows
    nothing but auto, true and false."""
    import torch

    if setting == "auto":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return setting == "true"


def _checked_sft_args(sft_args: dict[str, Any]) -> dict[str, Any]:
    """Reject unknown keys by name: a typo must not silently fall back to TRL's default. The config already
    checked them when it was read; this holds for a TrainConfig made with `model_copy(update=...)` too."""
    try:
        check_sft_args(sft_args, [f.name for f in dataclasses.fields(InverseCoderSFTConfig) if f.init])
    except FieldError as error:
        raise ConfigError(f"train.sft_args.{error.loc[0]}: {error}") from None
    return dict(sft_args)


def sft_config_for(
    train: TrainConfig,
    output_dir: Path,
    epochs: float,
    seed: int,
    stage: str,
    lengths: list[int] | None = None,
) -> InverseCoderSFTConfig:
    """The paper's hyper-parameters as an SFTConfig; `train.sft_args` is applied last and wins.

    Packing, attention kernel, Liger kernels and compile follow the hardware (`speed.choose`). With packing,
    `lengths` (tokens per document) lets the global batch keep counting documents rather than packed rows."""
    plan = speed.choose(train)
    kwargs: dict[str, Any] = dict(
        output_dir=str(output_dir),
        stage=stage,
        global_batch_size=train.global_batch_size,
        per_device_train_batch_size=train.per_device_batch_size,
        num_train_epochs=epochs,
        optim=train.optim,
        learning_rate=train.learning_rate,
        warmup_steps=train.warmup_steps,
        lr_scheduler_type=train.lr_scheduler_type,
        max_length=train.max_length,
        max_grad_norm=train.max_grad_norm,  # 0 turns clipping off in transformers.Trainer
        logging_steps=train.logging_steps,
        save_steps=train.save_steps,
        save_total_limit=2,
        seed=seed,
        completion_only_loss=True,
        report_to="none",
        bf16=uses_bf16(train.bf16),
        # TRL defaults to bf16 and then refuses to run without a GPU unless told it is a CPU run.
        use_cpu=not _has_accelerator(),
        # Every parameter gets a gradient: DDP's search for unused ones is an extra pass over the graph.
        ddp_find_unused_parameters=False,
    )
    kwargs.update(speed.sft_kwargs(plan), speed_plan=plan.as_dict())
    names = {f.name for f in dataclasses.fields(InverseCoderSFTConfig)}
    overrides = _checked_sft_args(train.sft_args)
    if isinstance(overrides.get("model_init_kwargs"), dict):  # merged: a dtype override keeps the attention choice
        overrides["model_init_kwargs"] = {**kwargs["model_init_kwargs"], **overrides["model_init_kwargs"]}
    packing = overrides.get("packing", kwargs["packing"])
    if packing and lengths is not None and overrides.get("packing_strategy", speed.PACKING_STRATEGY) != "wrapped":
        max_length = overrides.get("max_length", kwargs["max_length"])
        kwargs["documents_per_row"] = speed.documents_per_row(lengths, max_length)
    # transformers 5.24 renamed gradient_checkpointing to activation_checkpointing; the old name only counts
    # when the new one is unset, and TRL's default for the old one (True) always warns. Set the new name.
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    kwargs[checkpointing] = train.gradient_checkpointing
    if "gradient_checkpointing" in overrides and checkpointing not in overrides:
        overrides[checkpointing] = overrides.pop("gradient_checkpointing")
    if "gradient_accumulation_steps" in overrides and "global_batch_size" not in overrides:
        kwargs["global_batch_size"] = None  # an explicit accumulation count wins over the derived one
    kwargs.update(overrides)
    try:
        return InverseCoderSFTConfig(**kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"invalid training settings for {stage}: {error}") from None


# -------------------------------------------------------------------------------------------- secrets


@contextlib.contextmanager
def secrets_outside(args: InverseCoderSFTConfig) -> Iterator[None]:
    """While the block runs, `args` holds no credential and the Hub token is `HF_TOKEN` instead.

    The Trainer saves its whole arguments (`torch.save`, `training_args.bin`) into every checkpoint and
    into the stage's final folder: a `train.sft_args.hub_token` (or a `token` in `model_init_kwargs`)
    would be in those files. Every secret-named field is cleared for the block, and the token goes to
    huggingface_hub through the environment, which it reads whenever no token is passed (what the Trainer
    does with `hub_token=None`: pushing and model downloads see the same token). Restored afterwards."""
    cleared = {f.name: getattr(args, f.name) for f in dataclasses.fields(args) if is_secret_name(f.name)}
    cleared = {name: value for name, value in cleared.items() if value not in (None, "")}
    init = args.model_init_kwargs if isinstance(args.model_init_kwargs, dict) else None
    init_secrets = {key: value for key, value in (init or {}).items() if is_secret_name(key)}
    tokens = {value for value in (*cleared.values(), *init_secrets.values()) if isinstance(value, str) and value}
    if len(tokens) > 1:
        raise ConfigError(
            "train.sft_args: the hub token and model_init_kwargs' token differ; give one token (HF_TOKEN)"
        )
    for name in cleared:
        setattr(args, name, None)
    if init is not None and init_secrets:
        args.model_init_kwargs = {key: value for key, value in init.items() if key not in init_secrets}
    previous = os.environ.get("HF_TOKEN")
    if tokens:
        os.environ["HF_TOKEN"] = tokens.pop()
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("HF_TOKEN", None)
        else:
            os.environ["HF_TOKEN"] = previous
        for name, value in cleared.items():
            setattr(args, name, value)
        if init is not None and init_secrets:
            kept = args.model_init_kwargs if isinstance(args.model_init_kwargs, dict) else {}
            args.model_init_kwargs = {**kept, **init_secrets}


# ----------------------------------------------------------------------------------------------- data
