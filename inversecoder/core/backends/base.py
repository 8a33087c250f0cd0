"""The backend protocol (small on purpose) and the cache every model call goes through.

A backend samples completions and scores Yes/No; the stages never know whether it runs in-process
(`transformers`) or on servers (`tgi`). `CachedModel` wraps any backend: results are stored under a
hash of everything that determines them, batch by batch, so runs resume and reruns are free.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import functools
import types
import typing
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from tqdm.auto import tqdm

from inversecoder.core.cache import ResultCache, cache_key
from inversecoder.core.errors import ConfigError

if TYPE_CHECKING:
    from inversecoder.core.config import GeneratorConfig, RunConfig

R = TypeVar("R")


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings shared by a batch of requests; temperature 0 means greedy."""

    temperature: float = 0.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    max_new_tokens: int = 512
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class GenerationRequest:
    """One completion of one prompt; `seed` makes a sampled completion reproducible on its own,
    whatever else shares its batch."""

    prompt: str
    seed: int = 0


@dataclass
class Completion:
    """A generated text, or the reason there is none (`retryable` errors are not cached)."""

    text: str | None
    finish_reason: str = "stop"  # stop | eos | length | error
    prompt_tokens: int = 0
    generated_tokens: int = 0
    error: str | None = None
    retryable: bool = False

    @classmethod
    def failed(cls, error: str) -> Completion:
        return cls(None, "error", error=error, retryable=True)


@dataclass
class YesNoScore:
    """P(Yes) / (P(Yes) + P(No)) at the first response token, with the Yes+No share of all mass."""

    score: float | None
    yes_no_mass: float | None = None
    prompt_tokens: int = 0
    error: str | None = None
    retryable: bool = False

    @classmethod
    def failed(cls, error: str) -> YesNoScore:
        return cls(None, error=error, retryable=True)


@dataclass(frozen=True)
class BackendInfo:
    """What produced the results: goes into cache keys and cards."""

    backend: str
    model: str
    revision: str
    max_context: int
    details: dict[str, Any] = field(default_factory=dict)


def open_model(
    config: RunConfig, model: str | None = None, revision: str | None = None, progress: bool = True
) -> CachedModel:
    """The configured backend (serving `model`, default `generator.model`) behind the run's result cache."""
    return CachedModel(
        make_backend(config.generator, model, revision), ResultCache(config.layout.model_calls), progress=progress
    )


def _out_of_memory_errors() -> tuple[type[BaseException], ...]:
    """MemoryError, plus torch's OutOfMemoryError (a RuntimeError) when torch is loaded."""
    import sys

    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", None) if torch else None
    return (MemoryError, oom) if oom else (MemoryError,)


def run_halving_on_oom(
    compute: Callable[[list[int]], list[R]], batch: list[int], failed: Callable[[str], R]
) -> list[R]:
    """Run a batch; out of memory, run its halves. A single item that still does not fit becomes a
    retryable error (recorded, not cached) instead of ending the run."""
    try:
        return compute(batch)
    except _out_of_memory_errors() as error:
        if len(batch) == 1:
            return [failed(f"out of memory: {str(error).splitlines()[0][:200] if str(error) else ''}")]
        half = len(batch) // 2
        return run_halving_on_oom(compute, batch[:half], failed) + run_halving_on_oom(compute, batch[half:], failed)


def filled(results: list[R | None]) -> list[R]:
    """The results once every slot is set (each request was either refused up front or run)."""
    done = [result for result in results if result is not None]
    assert len(done) == len(results)
    return done


def fit_generations(
    encode: Callable[[str], list[int]], requests: Sequence[GenerationRequest], max_context: int, new_tokens: int
) -> tuple[list[Completion | None], list[list[int]], list[int]]:
    """An in-process backend's first step: each prompt's ids, or a final error when the prompt leaves no room in
    the context for `new_tokens`. Returns (results with the errors set, the runnable prompts' ids, their indexes)."""
    results: list[Completion | None] = [None] * len(requests)
    encoded: list[list[int]] = []
    runnable: list[int] = []
    limit = max_context - new_tokens
    for i, request in enumerate(requests):
        ids = encode(request.prompt)
        if len(ids) > limit:
            error = (
                f"prompt has {len(ids)} tokens; the model's context ({max_context}) leaves room "
                f"for {max(limit, 0)} with max_new_tokens={new_tokens}"
            )
            results[i] = Completion(None, "error", len(ids), 0, error=error)
        else:
            encoded.append(ids)
            runnable.append(i)
    return results, encoded, runnable


def fit_scorings(
    encode: Callable[[str], list[int]], prompts: Sequence[str], max_context: int, answer_tokens: int = 0
) -> tuple[list[YesNoScore | None], list[list[int]], list[int]]:
    """`fit_generations` for Yes/No scores: a prompt (plus `answer_tokens`) longer than the context is a final error."""
    results: list[YesNoScore | None] = [None] * len(prompts)
    encoded: list[list[int]] = []
    runnable: list[int] = []
    for i, prompt in enumerate(prompts):
        ids = encode(prompt)
        if len(ids) + answer_tokens > max_context:
            error = f"prompt has {len(ids)} tokens; the model's context is {max_context}"
            results[i] = YesNoScore(None, None, len(ids), error=error)
        else:
            encoded.append(ids)
            runnable.append(i)
    return results, encoded, runnable


class Backend(abc.ABC):
    """Everything a caller may use of a backend, declared here (callers never probe for methods).

    A backend implements the four abstract operations; in-process backends keep the defaults of the
    batch streams (one batch after another, a batch that runs out of memory halved), while servers
    that keep many requests in flight (TGI) override them to overlap batches.
    """

    @abc.abstractmethod
    def info(self) -> BackendInfo: ...

    @abc.abstractmethod
    def plan_batches(self, prompts: Sequence[str], new_tokens: int) -> list[list[int]]:
        """Group prompt indices into batches; deterministic for the same prompts."""

    @abc.abstractmethod
    def generate(self, requests: Sequence[GenerationRequest], params: SamplingParams) -> list[Completion]: ...

    @abc.abstractmethod
    def score_yes_no(self, prompts: Sequence[str]) -> list[YesNoScore]: ...

    #: How the Yes/No token ids are resolved (`generator.answer_tokens`): part of a score's cache key when not
    #: the default, so `variants` keys stay those of the builds made before the setting existed.
    answer_tokens: str = "variants"

    def answer_token_ids(self) -> dict[str, list[int]]:
        """The token ids read as "Yes" and "No" by `score_yes_no` (for the card); empty when unknown."""
        return {}

    def generate_batches(
        self, requests: Sequence[GenerationRequest], batches: Sequence[Sequence[int]], params: SamplingParams
    ) -> Iterator[tuple[int, list[Completion]]]:
        """Yields (position in `batches`, completions of that batch) as each batch is done."""
        for k, batch in enumerate(batches):
            yield (
                k,
                run_halving_on_oom(
                    lambda b: self.generate([requests[i] for i in b], params), list(batch), Completion.failed
                ),
            )

    def score_batches(
        self, prompts: Sequence[str], batches: Sequence[Sequence[int]]
    ) -> Iterator[tuple[int, list[YesNoScore]]]:
        """Yields (position in `batches`, scores of that batch) as each batch is done."""
        for k, batch in enumerate(batches):
            yield (
                k,
                run_halving_on_oom(
                    lambda b: self.score_yes_no([prompts[i] for i in b]), list(batch), YesNoScore.failed
                ),
            )

    def close(self) -> None:
        """Release connections, threads or memory; the backend is not used afterwards."""
        return None  # an in-process backend holds nothing that outlives the garbage collector


def make_backend(config: GeneratorConfig, model: str | None = None, revision: str | None = None) -> Backend:
    """The backend named by `config.backend`, serving `model` (default: `config.model`)."""
    model = model or config.model
    if not model:
        raise ConfigError("generator.model is required: a Hub model id or a local model folder")
    if config.backend == "transformers":
        from inversecoder.core.backends.transformers_backend import TransformersBackend

        return TransformersBackend(
            model,
            revision=revision if model != config.model else (revision or config.revision),
            device=config.device,
            dtype=config.dtype,
            batch_tokens=config.batch_tokens,
            max_batch_size=config.max_batch_size,
            max_context=config.max_context,
            replicas=config.replicas,
            answer_tokens=config.answer_tokens,
        )
    if config.backend == "vllm-local":
        if model != config.model:
            # Another model (the judge, or a trained model being evaluated) runs embedded: a second vLLM engine in
            # this process would claim the GPU memory the first one holds.
            return make_backend(config.model_copy(update={"backend": "transformers"}, deep=True), model, revision)
        from inversecoder.core.backends.vllm_local import VLLMLocalBackend, require_vllm

        require_vllm()
        return VLLMLocalBackend.from_config(config, model, revision)
    if config.backend == "tgi":
        if model != config.model:
            # The endpoints serve generator.model; another model (e.g. the trained one being evaluated) runs embedded.
            return make_backend(config.model_copy(update={"backend": "transformers"}, deep=True), model, revision)
        from inversecoder.core.backends.tgi import TGIBackend

        return TGIBackend.from_config(config)
    if config.backend in ("vllm", "sglang", "openai"):
        if model != config.model:  # as for tgi: the endpoints serve generator.model only
            return make_backend(config.model_copy(update={"backend": "transformers"}, deep=True), model, revision)
        from inversecoder.core.backends.openai_backend import OpenAIBackend

        return OpenAIBackend.from_config(config)
    raise ConfigError(
        f"generator.backend must be 'transformers', 'vllm-local', 'tgi', 'vllm', 'sglang' or 'openai', "
        f"got '{config.backend}'"
    )


_FIELD_TYPES: dict[type, dict[str, tuple[type, ...]]] = {}


def _field_types(result_type: type) -> dict[str, tuple[type, ...]]:
    """The types each field of a result dataclass accepts (an int where a float goes: JSON writes 1.0 as 1.0,
    other writers as 1)."""
    if result_type in _FIELD_TYPES:
        return _FIELD_TYPES[result_type]
    accepted: dict[str, tuple[type, ...]] = {}
    for name, hint in typing.get_type_hints(result_type).items():
        options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        accepted[name] = tuple(t for option in options for t in ((float, int) if option is float else (option,)))
    _FIELD_TYPES[result_type] = accepted
    return accepted


def stored_result(result_type: type[R], value: Any) -> R:
    """A result rebuilt from its cached dict; ValueError or TypeError when the value is not one (a damaged or
    foreign row): the cache then treats it as missing."""
    if not isinstance(value, dict):
        raise TypeError(f"a stored result is {type(value).__name__}, not an object")
    result = result_type(**value)  # TypeError on a missing or unknown field
    for name, accepted in _field_types(result_type).items():
        if not isinstance(getattr(result, name), accepted):
            raise TypeError(f"field {name!r} of a stored result is {type(getattr(result, name)).__name__}")
    return result


ERROR_KEY_CHARS = 120
"""Failures are counted by the start of their message (which names the status and the endpoint)."""


class CachedModel:
    """A backend behind the result cache, with progress bars and call counts.

    Batches are planned over ALL requests and stored one transaction per batch, so after a crash
    every batch is either fully stored or fully missing: a resumed run computes exactly the
    batches an uninterrupted run would have, and its outputs are identical.
    """

    def __init__(self, backend: Backend, cache: ResultCache, progress: bool = True):
        self.backend = backend
        self.cache = cache
        self.progress = progress
        self.computed = 0  # results computed by the model in this process (cache misses)
        self.reused = 0  # results read from the cache
        self.errors = 0
        self.failed: Counter[str] = Counter()  # retryable failures (asked again next run), by error

    def info(self) -> BackendInfo:
        return self.backend.info()

    def close(self) -> None:
        """Close the backend (an in-process engine frees its GPU memory here, before training needs it)."""
        self.backend.close()

    def _identity(self) -> dict[str, Any]:
        info = self.backend.info()
        return {"backend_model": info.model, "revision": info.revision}

    def generate(
        self, requests: Sequence[GenerationRequest], params: SamplingParams, desc: str = "generate"
    ) -> list[Completion]:
        identity = self._identity()
        settings = dataclasses.asdict(params)
        keys = [cache_key(op="generate", prompt=r.prompt, seed=r.seed, params=settings, **identity) for r in requests]
        return self._run(
            keys,
            lambda: self.backend.plan_batches([r.prompt for r in requests], params.max_new_tokens),
            lambda todo: self.backend.generate_batches(requests, todo, params),
            Completion,
            desc,
            unit="gen",
        )

    def score_yes_no(self, prompts: Sequence[str], desc: str = "score") -> list[YesNoScore]:
        identity = self._identity()
        if self.backend.answer_tokens != Backend.answer_tokens:
            identity["answer_tokens"] = self.backend.answer_tokens
        keys = [cache_key(op="score_yes_no", prompt=p, **identity) for p in prompts]
        return self._run(
            keys,
            lambda: self.backend.plan_batches(list(prompts), 1),
            lambda todo: self.backend.score_batches(prompts, todo),
            YesNoScore,
            desc,
            unit="pair",
        )

    def _run(self, keys, plan, stream, result_type, desc: str, unit: str) -> list:
        """Results for `keys`: from the cache, else from the backend's batch stream (`stream(batches)` yields
        each batch's position and results when done); each batch is stored in one transaction. Batches are
        planned (`plan()`, over all the keys) only when some result is missing: a finished rerun tokenizes
        nothing.

        A stored result that cannot be read back (a damaged row) is computed again with its whole batch, as
        the batch was when it was stored: a result can depend on its batch's shape (padding), so recomputing
        it alone could change it."""
        unreadable: set[str] = set()
        stored = self.cache.get_many(keys, decode=functools.partial(stored_result, result_type), unreadable=unreadable)
        results: list[Any] = [stored.get(key) for key in keys]
        if all(result is not None for result in results):
            self.reused += len(results)
            return results
        batches = plan()
        for batch in batches:
            if any(keys[i] in unreadable for i in batch):
                for i in batch:
                    results[i] = None
        self.reused += sum(r is not None for r in results)
        todo = [[i for i in batch if results[i] is None] for batch in batches]
        todo = [batch for batch in todo if batch]
        total = sum(len(b) for b in todo)
        done = stream(todo)
        # closing(): an error here (a full disk, Ctrl-C during a write) stops the backend's requests at once,
        # rather than whenever the garbage collector gets to the stream.
        with (
            tqdm(total=total, desc=desc, unit=unit, disable=not self.progress or total == 0, dynamic_ncols=True) as bar,
            contextlib.closing(done),
        ):
            for k, outputs in done:
                batch = todo[k]
                fresh = {}
                for i, output in zip(batch, outputs, strict=True):
                    results[i] = output
                    self.errors += output.error is not None
                    if output.error is not None and output.retryable:
                        self.failed[output.error[:ERROR_KEY_CHARS]] += 1
                    if not output.retryable:
                        fresh[keys[i]] = dataclasses.asdict(output)
                self.cache.put_many(fresh)
                self.computed += len(batch)
                bar.update(len(batch))
                bar.set_postfix(errors=self.errors, refresh=False)
        return results
