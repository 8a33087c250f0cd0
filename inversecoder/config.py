"""The run configuration: one dataclass per section, read from YAML, overridable from the command line.

Every field has a documented default (the paper's settings where the paper has one). `load_config`
reads a YAML file and applies `section.field=value` overrides; unknown fields and wrong types are
`ConfigError`s that name the field, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from inversecoder.errors import ConfigError


@dataclass
class SourceConfig:
    """The instruction corpus to start from."""

    path: str = "ise-uiuc/Magicoder-Evol-Instruct-110K"
    """A local .jsonl/.json/.parquet file, a local dataset folder, or a Hub dataset id."""
    revision: str | None = None
    """Hub revision (branch, tag or commit sha) of a Hub dataset; recorded in the card."""
    split: str = "train"
    """Split of a folder / Hub source."""
    instruction_column: str = "instruction"
    """Column holding the instruction."""
    response_column: str = "response"
    """Column holding the response (its first code block is what gets summarized)."""
    limit: int | None = None
    """Use only the first `limit` rows (quick runs)."""


@dataclass
class GeneratorConfig:
    """The model M that writes and scores instructions (the paper: the base model fine-tuned on the corpus)."""

    backend: str = "transformers"
    """`transformers` (in-process, the default) or `tgi` (text-generation-inference endpoints)."""
    model: str | None = None
    """A Hub model id or a local folder. Required."""
    revision: str | None = None
    """Hub revision of `model`; the resolved commit sha goes into the card and the cache keys."""
    endpoints: list[str] = field(default_factory=list)
    """TGI endpoints (backend `tgi`), e.g. [http://h1:8080, http://h2:8080]."""
    device: str = "auto"
    """`auto` (cuda when available), `cpu`, `cuda`, `cuda:1`, ..."""
    dtype: str = "auto"
    """`auto` (bfloat16 on GPU, float32 on CPU), `bfloat16`, `float16` or `float32`."""
    batch_tokens: int = 32768
    """Token budget of one batch (padded prompt + new tokens, summed over rows): sets the batch size."""
    max_batch_size: int = 256
    """Upper bound on rows per batch, whatever the token budget."""
    max_context: int | None = None
    """Override the model's context length (default: its `max_position_embeddings`)."""


@dataclass
class SummarizeConfig:
    """Step 2: K candidate instructions per snippet (the paper's sampling settings)."""

    num_samples: int = 10
    """K: candidate instructions per snippet."""
    temperature: float = 0.8
    """Sampling temperature (the paper: 0.8)."""
    top_p: float = 1.0
    """Nucleus sampling threshold (1.0: off)."""
    repetition_penalty: float = 1.1
    """HF-style repetition penalty over prompt and generated tokens."""
    max_new_tokens: int = 2048
    """Longest candidate instruction, in tokens."""
    stop: list[str] = field(default_factory=lambda: ["```"])
    """Generation stops at (and excludes) the first of these strings."""


@dataclass
class DecontaminateConfig:
    """Step 4: drop rows that overlap HumanEval(+) / MBPP(+)."""

    enabled: bool = True
    """Set false to skip decontamination (the card then says so)."""
    benchmarks: list[str] = field(default_factory=lambda: ["humaneval", "mbpp"])
    """Benchmarks to check against: `humaneval` (HumanEval+) and/or `mbpp` (MBPP+)."""
    ngram: int = 13
    """Word n-gram size for the overlap test (bigcode / Magicoder use 13)."""
    min_substring_words: int = 8
    """Benchmark strings shorter than this (in words) are too generic for the substring test."""


@dataclass
class DatasetConfig:
    """The dataset folder (Hub repo layout) and its card."""

    name: str = "inversecoder-evol-instruct"
    """Dataset name (card title, default repo name)."""
    version: str = "v1.0"
    """Version of this build, written into the card (and the Hub tag when pushed)."""
    license: str = "apache-2.0"
    """License of the published data and model (the corpus's license applies)."""
    include_original: bool = True
    """Also write the decontaminated source pairs as the `original` config (stage 2 trains on them)."""


@dataclass
class TrainConfig:
    """Step 5: TRL SFT, the paper's recipe by default (Magicoder's trainer settings)."""

    enabled: bool = True
    """Set false to stop `run` after the dataset."""
    base_model: str | None = None
    """Model to fine-tune; defaults to `generator.model`. The paper starts from the BASE model."""
    base_revision: str | None = None
    """Hub revision of `base_model`."""
    mode: str = "two-stage"
    """`two-stage` (generated pairs, then original pairs, fresh schedule each) or `mix` (one shuffled set)."""
    generated_epochs: float = 1.0
    """Stage 1 epochs on the generated pairs (and the epochs of `mix`)."""
    original_epochs: float = 2.0
    """Stage 2 epochs on the original pairs."""
    learning_rate: float = 5e-5
    """Peak learning rate."""
    warmup_steps: int = 15
    """Linear warmup steps (each stage restarts its schedule)."""
    lr_scheduler_type: str = "linear"
    """Learning-rate schedule after warmup."""
    optim: str = "adafactor"
    """Optimizer (any `transformers` optim name)."""
    global_batch_size: int = 512
    """Sequences per optimizer step; gradient accumulation is derived from it and the world size."""
    per_device_batch_size: int = 8
    """Sequences per device per micro-batch."""
    max_length: int = 1024
    """Longest training sequence (prompt + response), in tokens."""
    max_grad_norm: float = 0.0
    """0 disables clipping (the paper uses none)."""
    bf16: str = "auto"
    """`auto` (on when the GPU supports it), `true` or `false`."""
    logging_steps: int = 10
    """Log the loss every N optimizer steps."""
    save_steps: int = 200
    """Checkpoint every N optimizer steps (training resumes from the last one)."""
    gradient_checkpointing: bool = False
    """Trade compute for memory on big models."""
    sft_args: dict[str, Any] = field(default_factory=dict)
    """Any other `trl.SFTConfig` field, passed through as is."""


@dataclass
class EvalConfig:
    """Step 6: EvalPlus HumanEval+ and MBPP+, greedy pass@1 with the paper's prompts."""

    enabled: bool = True
    """Set false to skip evaluation in `run`."""
    benchmarks: list[str] = field(default_factory=lambda: ["humaneval", "mbpp"])
    """`humaneval` (HumanEval+ v0.1.10) and/or `mbpp` (MBPP+ v0.2.0)."""
    model: str | None = None
    """Model to evaluate; defaults to the trained model (`OUTPUT/model`)."""
    limit: int | None = None
    """Evaluate only the first `limit` tasks of each benchmark (quick runs; the card says so)."""
    max_new_tokens: int = 512
    """Longest solution, in tokens (the paper: 512)."""
    parallel: int = 0
    """Worker processes for running tests (0: one per CPU core)."""
    min_time_limit: float = 1.0
    """Minimum seconds a program may run per test input (evalplus's setting)."""
    gt_time_limit_factor: float = 4.0
    """Time limit = this x the canonical solution's time (evalplus's setting)."""


@dataclass
class RunConfig:
    """The whole pipeline: corpus -> dataset -> model -> evaluation -> cards."""

    output_dir: str = "outputs/run"
    """Where everything goes: dataset/, model/, eval/, train/ (checkpoints) and .cache/ (model calls)."""
    seed: int = 42
    """Seeds the verb prefixes, sampling (one seed per candidate), training and shuffling."""
    benchmarks_dir: str | None = None
    """Folder with offline copies of the EvalPlus data files (HumanEvalPlus-v0.1.10.jsonl.gz, ...);
    unset: evalplus downloads them (or uses HUMANEVAL_OVERRIDE_PATH / MBPP_OVERRIDE_PATH)."""
    source: SourceConfig = field(default_factory=SourceConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    summarize: SummarizeConfig = field(default_factory=SummarizeConfig)
    decontaminate: DecontaminateConfig = field(default_factory=DecontaminateConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvalConfig = field(default_factory=EvalConfig)

    @property
    def output(self) -> Path:
        return Path(self.output_dir)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self, *sections: str) -> str:
        """A short hash of the named sections (all but output_dir when none): proves two runs match."""
        data = self.to_dict()
        data.pop("output_dir")
        if sections:
            data = {name: data[name] for name in sections}
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(value: Any, tp: Any, name: str) -> Any:
    """Check `value` against the annotation `tp`; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, name)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if errors else f"{name}: invalid value {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        (item_type,) = typing.get_args(tp)
        return [_coerce(item, item_type, f"{name}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is str and isinstance(value, (bool, int, float)) and not isinstance(value, bool):
        return str(value)
    if tp is str and isinstance(value, bool):  # YAML reads `bf16: true` as a bool
        return "true" if value else "false"
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping of fields, got {value!r}")
        return _build(tp, value, name)
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ConfigError(f"{name}: expected {_type_name(tp)}, got {value!r}")
    return value


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{prefix + '.' if prefix else ''}{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown config field '{full}'{hint}")
        kwargs[key] = _coerce(value, hints[key], full)
    return cls(**kwargs)


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    *parents, leaf = dotted.split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot override '{dotted}': '{part}' is not a section")
        node = child
    node[leaf] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`section.field=value`; the value is read as YAML (`10`, `true`, `[a, b]`, `null`)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.field=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def load_config(path: str | Path | None, overrides: list[str] = (), output_dir: str | None = None) -> RunConfig:
    """Read a YAML recipe (or start from the defaults) and apply command-line overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            raise ConfigError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path} must be a mapping of sections")
        data = loaded or {}
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(data, key, value)
    if output_dir is not None:
        data["output_dir"] = output_dir
    return _build(RunConfig, data)


def save_config(config: RunConfig, path: Path) -> None:
    """Write the resolved config (no secrets are ever part of it) next to an artifact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")


def describe_fields() -> list[tuple[str, str, str]]:
    """(dotted name, default, doc) for every field: the README's config reference is made from this."""
    import ast
    import inspect

    rows: list[tuple[str, str, str]] = []

    def docs_of(cls: type) -> dict[str, str]:
        tree = ast.parse(inspect.getsource(cls))
        body = tree.body[0].body
        found = {}
        for node, nxt in zip(body, body[1:]):
            if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
                found[node.target.id] = " ".join(str(nxt.value.value).split())
        return found

    def walk(cls: type, prefix: str) -> None:
        docs = docs_of(cls)
        instance = cls()
        for f in dataclasses.fields(cls):
            value = getattr(instance, f.name)
            if dataclasses.is_dataclass(value):
                walk(type(value), f"{prefix}{f.name}.")
            else:
                rows.append((prefix + f.name, json.dumps(value), docs.get(f.name, "")))

    walk(RunConfig, "")
    return rows
