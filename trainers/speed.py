"""Training at the speed of the hardware: packing, attention kernel, fused kernels and compile, by device.

The paper trains on padded batches. On a GPU about half of such a batch is padding (measured on an
H200: 53% for code-instruction lengths), so the fast recipe packs instead: TRL's padding-free best-fit-decreasing
(`bfd`) packing puts several whole documents in one row, the collator emits per-document `position_ids`
(and `cu_seq_lens` for varlen kernels) and no attention mask, and transformers turns those into a
block-diagonal causal mask, so no document attends to another: the per-token losses are those of the
unpacked batch (tests/test_training_speed.py checks loss and gradients on CPU). Completion-only loss is kept:
the completion mask is packed with the tokens, and the first token of each document never carries loss.

Packing only pays with a kernel that skips the masked blocks: with `sdpa` the block-diagonal mask is a dense
mask and the run is SLOWER than padding (6.7k vs 10.6k tokens/s on an H200); `flex_attention` (34.3k) and
flash-attention-2's varlen path skip them. Hence `auto`:

| setting | GPU (CUDA) | CPU / MPS |
|---|---|---|
| packing | on (bfd, padding-free) | off: no block-sparse kernel, a dense mask over the whole packed row, and the demo/tests keep the paper's exact batches |
| attention | flash_attention_2 if `flash_attn` is installed, else flex_attention (packing) / sdpa | sdpa |
| kernels | Liger (RMSNorm, SwiGLU, RoPE) if `liger_kernel` is installed | none |
| torch_compile | off (not measured to pay with packing's varying shapes) | off |
| one shape per step | packed micro-batch padded to rows x max_length under flex attention or compile | no |

Compiled kernels need ONE shape. Padding-free packing flattens each micro-batch into a single row whose length
changes every step, and flex attention (compiled, with a compiled block mask) then recompiles at every new
length: measured on an H100, the packed recipe did not finish 10 timed steps in 150 s. Padding the flattened
row to `rows x max_length` (`pad_to_multiple_of`) gives every step the same shape; bfd rows are nearly full,
so the padding is ~1% of the tokens (pads carry no loss and attend only to themselves: position 0 each).
Measured there: 34.9k tokens/s, 3.8x TRL's defaults (README, "Training speed").

Every choice can be forced through `train.packing`, `train.attn_implementation`, `train.kernels`,
`train.torch_compile` (or any `train.sft_args` field, applied last). TRL already computes the loss with a
chunked fused LM head (no full logits tensor), so cross-entropy needs no extra kernel.

With packing, a row holds several documents; to keep the paper's global batch (512 *documents* per optimizer
step) the micro-batch of rows and the accumulation are derived from the estimated documents per row.
"""  # noqa: E501 (a markdown table row cannot be wrapped)

from __future__ import annotations

import bisect
import importlib.util
import resource
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from inversecoder.core.config import ATTENTION, KERNELS  # noqa: F401  (the settings' names, checked by the config)
from inversecoder.core.errors import ConfigError

PACKING_STRATEGY = "bfd"


@dataclass
class SpeedPlan:
    """What the recipe uses on this machine, and why (the reasons are written into the training record)."""

    device: str
    packing: bool
    attn_implementation: str
    liger: bool
    torch_compile: bool
    static_shape: bool = False
    reasons: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def device_kind() -> str:
    """`cuda`, `mps` or `cpu`: what the Trainer will train on."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    return "mps" if mps is not None and mps.is_available() else "cpu"


def installed(module: str) -> bool:
    """Whether an optional accelerator package can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def choose(train: Any, device: str | None = None) -> SpeedPlan:
    """The packing / attention / kernels / compile settings for `train` (a TrainConfig, whose values were
    checked when it was made: switches are auto, true or false) on `device`."""
    device = device or device_kind()
    gpu = device == "cuda"
    reasons: dict[str, str] = {}

    packing_setting = train.packing
    if packing_setting == "auto":
        packing = gpu
        reasons["packing"] = (
            "auto: GPU, padding-free bfd packing with per-document masks (about half a padded batch is padding)"
            if gpu
            else (
                f"auto: {device}, no block-sparse attention kernel (a packed row gets a dense mask): "
                "paper's padded batches"
            )
        )
    else:
        packing = packing_setting == "true"
        reasons["packing"] = f"set to {packing_setting}"

    attention = train.attn_implementation
    if attention == "auto":
        if gpu and installed("flash_attn"):
            attention = "flash_attention_2"
            reasons["attention"] = "auto: flash-attn installed (varlen kernel, per-document via cu_seq_lens)"
        elif gpu and packing:
            attention = "flex_attention"
            reasons["attention"] = "auto: packing on a GPU without flash-attn: flex attention skips masked blocks"
        else:
            attention = "sdpa"
            reasons["attention"] = f"auto: {device}{' without packing' if gpu else ''}: torch sdpa"
    else:
        reasons["attention"] = f"set to {attention}"
    if packing and attention == "eager":
        # eager attention builds its mask the same way, so it stays correct, only slow; say so.
        reasons["attention"] += " (correct but slow with packing)"

    kernels = train.kernels
    if kernels == "auto":
        liger = gpu and installed("liger_kernel")
        reasons["kernels"] = (
            "auto: Liger kernels"
            if liger
            else ("auto: liger-kernel not installed" if gpu else f"auto: {device}, Liger kernels are GPU (Triton) only")
        )
    else:
        liger = kernels == "liger"
        if liger and not installed("liger_kernel"):
            raise ConfigError("train.kernels is liger but the liger-kernel package is not installed")
        reasons["kernels"] = f"set to {kernels}"

    compile_setting = train.torch_compile
    if compile_setting == "auto":
        compiled = False
        reasons["torch_compile"] = "auto: off (not measured to pay with packed rows of varying length)"
    else:
        compiled = compile_setting == "true"
        reasons["torch_compile"] = f"set to {compile_setting}"
    static = packing and (attention == "flex_attention" or compiled)
    reasons["static_shape"] = (
        "packed rows padded to rows x max_length: compiled kernels would recompile at every new length"
        if static
        else "not needed: no compiled kernel sees the packed row's length"
    )
    return SpeedPlan(device, packing, attention, liger, compiled, static, reasons)


def static_length(plan: SpeedPlan | dict | None, rows: int, max_length: int | None) -> int | None:
    """`pad_to_multiple_of` that gives every packed micro-batch one shape, or None where it is not needed."""
    needed = plan.get("static_shape") if isinstance(plan, dict) else getattr(plan, "static_shape", False)
    return rows * max_length if needed and max_length else None


def sft_kwargs(plan: SpeedPlan) -> dict[str, Any]:
    """`trl.SFTConfig` keyword arguments for the plan (bfd packing makes TRL's collator padding-free)."""
    kwargs: dict[str, Any] = {
        "packing": plan.packing,
        "model_init_kwargs": {"attn_implementation": plan.attn_implementation},
    }
    if plan.packing:
        kwargs["packing_strategy"] = PACKING_STRATEGY
    if plan.liger:
        kwargs["use_liger_kernel"] = True
    if plan.torch_compile:
        kwargs["torch_compile"] = True
    return kwargs


# ------------------------------------------------------------------------------------- packed batch size


def packed_rows(lengths: Iterable[int], max_length: int) -> int:
    """Rows that best-fit-decreasing packing makes of documents of `lengths` (each truncated to `max_length`)."""
    free: list[int] = []  # remaining capacity of each open row, sorted
    for length in sorted((min(int(n), max_length) for n in lengths), reverse=True):
        at = bisect.bisect_left(free, length)  # the fullest row that still fits it
        if at == len(free):
            bisect.insort(free, max_length - length)
        else:
            remaining = free.pop(at) - length
            bisect.insort(free, remaining)
    return len(free)


def documents_per_row(lengths: list[int], max_length: int) -> float:
    """Average whole documents per packed row (1.0 for an empty set)."""
    rows = packed_rows(lengths, max_length)
    return len(lengths) / rows if rows else 1.0


def packed_batch(global_batch: int, per_device_rows: int, processes: int, docs_per_row: float) -> tuple[int, int]:
    """(rows per micro-batch, accumulation steps) so that an optimizer step sees about `global_batch` documents."""
    docs_per_row = max(float(docs_per_row), 1.0)
    rows = max(1, min(per_device_rows, round(global_batch / (processes * docs_per_row))))
    return rows, max(1, round(global_batch / (rows * processes * docs_per_row)))


def document_lengths(tokenizer: Any, rows: Any) -> list[int]:
    """Tokens per prompt-completion document as TRL builds it: prompt + completion + EOS."""
    lengths: list[int] = []
    for batch in rows.iter(batch_size=2048):
        prompt_ids = tokenizer(batch["prompt"])["input_ids"]
        completion_ids = tokenizer(batch["completion"], add_special_tokens=False)["input_ids"]
        lengths.extend(len(p) + len(c) + 1 for p, c in zip(prompt_ids, completion_ids, strict=True))
    return lengths


# -------------------------------------------------------------------------------------------- peak memory


def reset_peak_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_memory() -> dict[str, Any]:
    """GPU: torch.cuda.max_memory_allocated since the last reset; CPU: the process's max RSS (whole lifetime)."""
    import torch

    if torch.cuda.is_available():
        peak = int(torch.cuda.max_memory_allocated())
        return {"peak_memory_gib": round(peak / 2**30, 3), "peak_memory_kind": "cuda_max_memory_allocated"}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = rss if sys.platform == "darwin" else rss * 1024  # bytes on macOS, KiB on Linux
    return {"peak_memory_gib": round(peak / 2**30, 3), "peak_memory_kind": "process_max_rss"}
