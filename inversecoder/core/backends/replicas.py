"""The embedded backend's replicas: one whole copy of the model per GPU, planned batches spread over them.

- Which devices: `replica_devices` (pure) turns `generator.device` / `generator.replicas` and the number of
  visible GPUs into one device per replica: every visible GPU by default, one device on CPU or MPS, an explicit
  `replicas` caps it (on CPU it makes CPU replicas, which is how the tests run the data-parallel path).
- Whether the model fits one GPU: `check_fits` (pure) compares the weights (parameter count x dtype bytes) plus a
  working set (one full-context sequence's KV cache, plus CUDA context and activations) with the smallest GPU; a
  model that does not fit is a one-line error pointing at the served backends (tensor parallelism).
- Running: `spread` runs work items (planned batches) over the replicas, one thread per replica pulling the next
  item from the list (torch releases the GIL inside its kernels), and yields each result with its position.

Results do not depend on the replica count: the batches are planned before they are spread (the plan depends on
the prompts, `batch_tokens` and `max_batch_size` only), every replica holds the same weights, and every sampled row
draws from its own seeded generator, so a batch's output is the same whichever replica runs it.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from inversecoder.core.errors import ConfigError, UserError

if TYPE_CHECKING:
    from pathlib import Path

    import torch
    from transformers import PretrainedConfig, PreTrainedModel

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

GIB = 1 << 30
#: Beyond the weights and one sequence's KV cache: the CUDA context, the allocator's slack, a small batch's
#: activations and the last position's logits.
OVERHEAD_BYTES = 1 * GIB


def replica_devices(device: str, replicas: int | None, cuda_count: int) -> list[str]:
    """One device name per replica. `auto` is `cuda` when a GPU is visible, else `cpu`; `cuda` means every
    visible GPU (`replicas` caps the count); an explicit device (`cuda:1`, `mps`, ...) is one replica; `cpu`
    makes `replicas` CPU replicas (default 1)."""
    if device == "auto":
        device = "cuda" if cuda_count > 0 else "cpu"
    if device == "cpu":
        return ["cpu"] * (replicas or 1)
    if device == "cuda":
        if cuda_count < 1:
            raise ConfigError("generator.device is cuda but torch sees no CUDA device (check CUDA_VISIBLE_DEVICES)")
        return [f"cuda:{i}" for i in range(min(replicas or cuda_count, cuda_count))]
    if replicas is not None and replicas > 1:
        raise ConfigError(
            f"generator.replicas={replicas} needs generator.device auto, cuda or cpu; {device} is one device"
        )
    return [device]


def describe_devices(devices: Sequence[str]) -> str:
    """`cuda:0..3`, `cpu`, `cuda:1`, or the list as it is."""
    if len(set(devices)) == 1:
        return devices[0]
    indexes = [int(d.split(":")[1]) if d.startswith("cuda:") else -1 for d in devices]
    if min(indexes) >= 0 and indexes == list(range(indexes[0], indexes[0] + len(indexes))):
        return f"cuda:{indexes[0]}..{indexes[-1]}"
    return ", ".join(devices)


def parameter_count(model_config: PretrainedConfig) -> int:
    """Exact parameter count from a model's config: an empty model on the meta device (no weights read); tied
    weights count once."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config)
    return sum(p.numel() for p in model.parameters())


def kv_bytes_per_token(model_config: PretrainedConfig, dtype_bytes: int) -> int:
    """Keys and values of one token over all layers; 0 when the config does not say (an unusual architecture)."""
    text = getattr(model_config, "text_config", None) or model_config
    layers = getattr(text, "num_hidden_layers", None)
    heads = getattr(text, "num_attention_heads", None)
    hidden = getattr(text, "hidden_size", None)
    if not (layers and heads and hidden):
        return 0
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or hidden // heads
    return 2 * layers * kv_heads * head_dim * dtype_bytes


def check_fits(
    model: str, weight_bytes: int, working_bytes: int, device_memory: Sequence[tuple[str, int]], dtype: str
) -> None:
    """A `UserError` when the weights plus the working set exceed the smallest device's total memory: the
    embedded backend puts a whole model on each GPU, so a model that fits none must be served across GPUs."""
    if not device_memory:
        return
    smallest, memory = min(device_memory, key=lambda item: item[1])
    need = weight_bytes + working_bytes
    if need <= memory:
        return
    raise UserError(
        f"{model} does not fit one GPU: it needs ~{need / GIB:.1f} GiB ({weight_bytes / GIB:.1f} GiB of {dtype} "
        f"weights + {working_bytes / GIB:.1f} GiB for one full-context sequence's KV cache and activations) and "
        f"{smallest} has {memory / GIB:.1f} GiB; the embedded backend loads a whole model per GPU: serve it with "
        "tensor parallelism instead (generator.backend: vllm with --tensor-parallel-size, or tgi with --num-shard)"
    )


def memory_needed(model_config: PretrainedConfig, dtype: torch.dtype, max_context: int) -> tuple[int, int]:
    """(weight bytes, working-set bytes) of a model in `dtype`: what `check_fits` compares with a GPU."""
    size = dtype.itemsize
    return parameter_count(model_config) * size, kv_bytes_per_token(model_config, size) * max_context + OVERHEAD_BYTES


@dataclass
class Replica:
    """One copy of the model on one device, with its own tokenizer (a fast tokenizer is not meant to be shared
    between threads)."""

    device: torch.device
    model: PreTrainedModel
    tokenizer: Any

    def current(self) -> contextlib.AbstractContextManager[Any]:
        """Make this replica's GPU the thread's current device (what kernels launched without one use)."""
        import torch

        return torch.cuda.device(self.device) if self.device.type == "cuda" else contextlib.nullcontext()


def load_replicas(
    path: Path,
    name: str,
    model_config: PretrainedConfig,
    tokenizer: Any,
    devices: Sequence[torch.device],
    dtype: torch.dtype,
    max_context: int,
) -> list[Replica]:
    """One copy of the model in `dtype` per device; on GPUs, refused first when it does not fit the smallest one."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype_name = str(dtype).removeprefix("torch.")
    gpus = [device for device in devices if device.type == "cuda"]
    if gpus:
        try:
            needed = memory_needed(model_config, dtype, max_context)
        except (ValueError, TypeError, ImportError, RuntimeError) as error:  # an architecture meta cannot build
            log.warning("cannot estimate the size of %s (%s): loading it without checking that it fits", name, error)
        else:
            memory = [(str(gpu), torch.cuda.get_device_properties(gpu).total_memory) for gpu in gpus]
            check_fits(name, *needed, memory, dtype_name)
        if len({torch.cuda.get_device_name(gpu) for gpu in gpus}) > 1:
            log.warning("the GPUs are not all the same model: a batch's floats may round differently on each")
    replicas = []
    for device in devices:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        # transformers wraps `to` in functools.wraps(Module.to): typeshed's _Wrapped takes the device for `self`
        model = model.to(device).eval()  # type: ignore[arg-type]
        # A fast tokenizer is not shared between threads: each replica but a lone one gets its own.
        own = tokenizer if len(devices) == 1 else AutoTokenizer.from_pretrained(path)
        replicas.append(Replica(device, model, own))
    copies = f"{len(devices)} replicas" if len(devices) > 1 else "1 replica"
    log.info("generator: %s of %s on %s (%s)", copies, name, describe_devices([str(d) for d in devices]), dtype_name)
    return replicas


def spread(
    replicas: Sequence[Replica], work: Callable[[Replica, T], R], items: Sequence[T]
) -> Generator[tuple[int, R]]:
    """Yields (position in `items`, `work(replica, item)`) for every item. One replica: in this thread, in order.
    More: one thread per replica takes the next item as it becomes free; results come as they are done. An error
    in a worker is raised here; closing the iterator (or an error) lets the batches in flight finish, starts no
    other, and joins the threads, so no replica runs once this returns."""
    if len(replicas) == 1:
        for k, item in enumerate(items):
            yield k, work(replicas[0], item)
        return
    pending: queue.SimpleQueue[tuple[int, T]] = queue.SimpleQueue()
    for k, item in enumerate(items):
        pending.put((k, item))
    done: queue.SimpleQueue[tuple[int, Any, bool]] = queue.SimpleQueue()
    stop = threading.Event()

    def serve(replica: Replica) -> None:
        with replica.current():
            while not stop.is_set():
                try:
                    k, item = pending.get_nowait()
                except queue.Empty:
                    return
                try:
                    done.put((k, work(replica, item), False))
                except BaseException as error:  # handed to the caller's thread, raised there
                    done.put((k, error, True))
                    return

    threads = [
        threading.Thread(target=serve, args=(replica,), name=f"replica-{i}", daemon=True)
        for i, replica in enumerate(replicas[: len(items)])
    ]
    for thread in threads:
        thread.start()
    try:
        for _ in range(len(items)):
            k, result, failed = done.get()
            if failed:
                raise result
            yield k, result
    finally:
        stop.set()
        for thread in threads:
            thread.join()
