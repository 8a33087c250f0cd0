"""How a training step uses the node: how many processes, and DDP, FSDP2 or ZeRO-3, with the reasons.

The choice is arithmetic on the model's shape and the devices' memory, so it is made (and shown by
`run --dry-run`) before anything is loaded:

- **processes**: `train.num_processes`, else every visible GPU (one process per GPU), else 1 (CPU, MPS).
- **strategy** (`train.strategy: auto`): DDP when the whole training state of one process fits one
  device: weights + gradients + DDP's gradient buckets + optimizer state + activations of one micro-batch
  under 90% of its memory (the rest is the CUDA context and the allocator's slack); FSDP2 otherwise
  (weights, gradients and optimizer state sharded over the processes, activations not). ZeRO-3 only when
  asked (`train.strategy: zero3`, needs deepspeed). One process trains in process, with no launcher.
  Weights and gradients are fp32 (TRL loads the model in fp32 and bf16 is autocast) unless
  `train.sft_args.model_init_kwargs.dtype` is 16-bit; `sft_args` overrides of the batch, length and
  optimizer count too.

Activations per decoder layer follow Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
Transformer Models"): 34 x tokens x hidden bytes in 16-bit without recomputation (attention scores are
not stored: sdpa/flash kernels), 2 x tokens x hidden with activation checkpointing (the layer's input)
plus one layer recomputed at a time; the LM head's fp32 logits come on top. The global batch is kept
whatever the processes (gradient accumulation follows the world size: `sft_config.py`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from inversecoder.core.config import TrainConfig
from inversecoder.core.errors import ConfigError

USABLE_MEMORY = 0.9
"""Share of a device's memory the training state may take (the rest: CUDA context, allocator slack)."""
OPTIMIZER_BYTES: dict[str, float] = {
    "adafactor": 0.0,  # factored second moments (rows + columns per matrix) and no first moment: ~0 per parameter
    "sgd": 0.0,
    "adamw_8bit": 2.0,
    "adamw_bnb_8bit": 2.0,
    "paged_adamw_8bit": 2.0,
    "lion_8bit": 1.0,
    "lion_32bit": 4.0,
}
"""Optimizer state per parameter in bytes; any other optimizer is taken as AdamW's two fp32 moments (8)."""
ADAMW_BYTES = 8.0
STRATEGIES = ("ddp", "fsdp2", "zero3")


@dataclass(frozen=True)
class Devices:
    """What the training processes can run on: the kind, how many, and the smallest one's memory."""

    kind: str  # cuda | mps | cpu
    count: int
    memory_bytes: int | None = None  # per device (the smallest); None where unknown (CPU, MPS)


@dataclass(frozen=True)
class ModelShape:
    """What the memory estimate needs from the model's config."""

    parameters: int
    hidden_size: int
    layers: int
    vocab_size: int


@dataclass
class Distribution:
    """The launch a training step gets, and why (written into training_config.json and the dry-run)."""

    processes: int
    strategy: str  # single | ddp | fsdp2 | zero3
    device: str
    reasons: list[str] = field(default_factory=list)
    memory: dict[str, float] = field(default_factory=dict)  # GB per process, by part

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        where = f"{self.processes} {self.device} process{'es' if self.processes > 1 else ''}"
        return f"{self.strategy} on {where}: " + "; ".join(self.reasons)


def visible_devices() -> Devices:
    """The GPUs this process sees (CUDA_VISIBLE_DEVICES applies), else MPS, else the CPU."""
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        count = torch.cuda.device_count()
        memory = min(torch.cuda.get_device_properties(i).total_memory for i in range(count))
        return Devices("cuda", count, memory)
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return Devices("mps", 1)
    return Devices("cpu", 1)


def model_shape(model: str, revision: str | None = None) -> ModelShape | None:
    """The model's exact parameter count (an empty model on the meta device: no weights read) and the
    dimensions activations scale with; None when its config cannot be read (offline, no such model)."""
    from transformers import AutoConfig

    from inversecoder.core.backends.replicas import parameter_count

    try:
        config = AutoConfig.from_pretrained(model, revision=revision)
    except (OSError, ValueError):
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return ModelShape(
        parameters=parameter_count(config),
        hidden_size=int(getattr(text, "hidden_size", 0) or 0),
        layers=int(getattr(text, "num_hidden_layers", 0) or 0),
        vocab_size=int(getattr(text, "vocab_size", 0) or 0),
    )


@dataclass(frozen=True)
class Effective:
    """The training settings the memory depends on, after `train.sft_args` overrides."""

    rows: int
    max_length: int
    optim: str
    weight_bytes: int
    checkpointing: bool

    @classmethod
    def of(cls, train: TrainConfig) -> Effective:
        args = train.sft_args
        init = args.get("model_init_kwargs") if isinstance(args.get("model_init_kwargs"), dict) else {}
        dtype = str((init or {}).get("dtype") or (init or {}).get("torch_dtype") or "float32")
        checkpointing = args.get("activation_checkpointing", args.get("gradient_checkpointing"))
        return cls(
            rows=int(args.get("per_device_train_batch_size", train.per_device_batch_size)),
            max_length=int(args.get("max_length") or train.max_length),
            optim=str(args.get("optim", train.optim)),
            # TRL loads the weights in fp32 unless model_init_kwargs says otherwise; bf16 is autocast only
            weight_bytes=2 if dtype.replace("torch.", "") in ("bfloat16", "float16", "bf16", "fp16") else 4,
            checkpointing=bool(train.gradient_checkpointing if checkpointing is None else checkpointing),
        )


def memory_per_process(train: TrainConfig, shape: ModelShape, strategy: str, shards: int = 1) -> dict[str, float]:
    """Bytes one process holds, by part; `shards` > 1 divides weights, gradients and optimizer state. DDP
    also holds a copy of the gradients in its all-reduce buckets."""
    settings = Effective.of(train)
    weight = settings.weight_bytes
    optimizer = OPTIMIZER_BYTES.get(settings.optim, ADAMW_BYTES)
    tokens = settings.rows * settings.max_length
    per_layer_full = 34 * tokens * shape.hidden_size
    if settings.checkpointing:
        activations = 2 * tokens * shape.hidden_size * shape.layers + per_layer_full
    else:
        activations = per_layer_full * shape.layers
    memory = {
        "weights": shape.parameters * weight / shards,
        "gradients": shape.parameters * weight / shards,
        "optimizer": shape.parameters * optimizer / shards,
        "activations": float(activations),
        "logits": float(tokens * shape.vocab_size * 4),
    }
    if strategy == "ddp":
        memory["ddp_buckets"] = shape.parameters * weight
    return memory


def _gb(value: float) -> str:
    return f"{value / 1e9:.1f} GB"


def choose(train: TrainConfig, shape: ModelShape | None, devices: Devices) -> Distribution:
    """The processes and strategy for `train` on `devices` (see the module docstring)."""
    requested = train.num_processes
    processes = requested or devices.count
    reasons = [
        f"train.num_processes = {requested}"
        if requested
        else (
            f"one process per visible GPU ({devices.count})"
            if devices.kind == "cuda"
            else f"one process on {devices.kind} (no GPU visible)"
        )
    ]
    if devices.kind == "cuda" and processes > devices.count:
        raise ConfigError(f"train.num_processes is {processes} but only {devices.count} GPU(s) are visible")
    if devices.kind == "mps" and processes > 1:
        raise ConfigError("train.num_processes > 1 needs GPUs or the CPU; MPS trains in one process")
    strategy = train.strategy
    if strategy in ("fsdp2", "zero3") and devices.kind != "cuda" and processes > 1:
        raise ConfigError(f"train.strategy {strategy} needs CUDA GPUs; on {devices.kind} use ddp (or auto)")
    if strategy == "zero3":
        from inversecoder.trainers.speed import installed

        if not installed("deepspeed"):
            raise ConfigError("train.strategy zero3 needs DeepSpeed: pip install deepspeed (or use fsdp2)")
    memory: dict[str, float] = {}
    if shape is not None:
        memory = memory_per_process(train, shape, "ddp" if processes > 1 else "single")
    whole = sum(memory.values())
    budget = devices.memory_bytes * USABLE_MEMORY if devices.memory_bytes else None
    if processes == 1:
        chosen = "single"
        if strategy != "auto":
            reasons.append(f"train.strategy {strategy} is moot with one process")
    elif strategy != "auto":
        chosen = strategy
        reasons.append(f"train.strategy = {strategy}")
    elif devices.kind != "cuda":
        chosen = "ddp"
        reasons.append(f"{devices.kind}: DDP over gloo (sharding needs GPUs)")
    elif shape is None or budget is None:
        chosen = "fsdp2"
        reasons.append("model size unknown: FSDP2 (sharded), which fits whatever DDP fits")
    elif whole <= budget:
        chosen = "ddp"
        reasons.append(f"the whole training state ({_gb(whole)}) fits one GPU ({_gb(budget)} usable): DDP")
    else:
        chosen = "fsdp2"
        reasons.append(f"the whole training state ({_gb(whole)}) exceeds one GPU ({_gb(budget)} usable): FSDP2")
    if shape is not None and chosen in ("fsdp2", "zero3"):
        memory = memory_per_process(train, shape, chosen, shards=processes)
    if shape is not None and budget is not None and sum(memory.values()) > budget:
        reasons.append(
            f"warning: {_gb(sum(memory.values()))} per process exceeds the usable {_gb(budget)}; "
            "set train.gradient_checkpointing, lower train.per_device_batch_size or use more GPUs"
        )
    rows = Effective.of(train).rows * processes
    if train.global_batch_size % rows and "gradient_accumulation_steps" not in train.sft_args:
        steps = -(-train.global_batch_size // rows)
        reasons.append(
            f"warning: train.global_batch_size {train.global_batch_size} is not a multiple of {rows} rows per "
            f"micro-step ({processes} processes): each optimizer step takes {steps * rows}"
        )
    return Distribution(
        processes, chosen, devices.kind, reasons, {name: round(value / 1e9, 2) for name, value in memory.items()}
    )


def plan_for(train: TrainConfig, model: str, revision: str | None = None) -> Distribution:
    """`choose` for `model` on this machine's devices."""
    return choose(train, model_shape(model, revision), visible_devices())
