"""What the config's values may be, and how a bad one is reported: the names of every enumeration, the
upper bounds on sizes, the value types the sections share, the `Section` base model and `config_error`,
which turns pydantic's `ValidationError` into a one-line `ConfigError` naming the dotted field
(`summarize.num_samples: must be >= 1, got 0`). The sections themselves are in `config_sections`.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import re
import reprlib
import typing
from collections.abc import Iterable
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PydanticSchemaGenerationError,
    TypeAdapter,
    ValidationError,
)

from inversecoder.core.errors import ConfigError
from inversecoder.core.sandbox import LEVELS as SANDBOX_LEVELS

# Each enumeration is a Literal type (what the sections are annotated with) and the tuple of its values.
BackendName = Literal["transformers", "vllm-local", "tgi", "vllm", "sglang", "openai"]
#: `vllm.LLM` arguments that generator fields set (backend `vllm-local`): `generator.vllm_args` may not set them.
VLLM_RESERVED_ARGS = {
    "model": "generator.model",
    "tokenizer": "generator.model",
    "revision": "generator.revision",
    "tokenizer_revision": "generator.revision",
    "dtype": "generator.dtype",
    "max_model_len": "generator.max_context",
}
#: The backends that run on servers (`generator.endpoints`).
SERVED_BACKENDS = ("tgi", "vllm", "sglang", "openai")
EmbeddingRuntime = Literal["auto", "torch", "onnxruntime", "onnxruntime-int8"]
DType = Literal["auto", "bfloat16", "float16", "float32"]
BenchmarkName = Literal["humaneval", "mbpp"]
TrainMode = Literal["two-stage", "mix", "original"]
TrainStrategy = Literal["auto", "ddp", "fsdp2", "zero3"]
SwitchValue = Literal["auto", "true", "false"]
KernelsName = Literal["auto", "liger", "none"]
SandboxName = Literal["auto", "namespaces+uid", "namespaces", "uid", "rlimits"]
BACKENDS: tuple[str, ...] = typing.get_args(BackendName)
EMBEDDING_RUNTIMES: tuple[str, ...] = typing.get_args(EmbeddingRuntime)
DTYPES: tuple[str, ...] = typing.get_args(DType)
BENCHMARKS: tuple[str, ...] = typing.get_args(BenchmarkName)
TRAIN_MODES: tuple[str, ...] = typing.get_args(TrainMode)
SWITCHES: tuple[str, ...] = typing.get_args(SwitchValue)
KERNELS: tuple[str, ...] = typing.get_args(KernelsName)
ATTENTION = ("auto", "eager", "sdpa", "flex_attention", "flash_attention_2", "flash_attention_3")
SANDBOXES: tuple[str, ...] = typing.get_args(SandboxName)
assert SANDBOXES[1:] == SANDBOX_LEVELS, "the sandbox levels changed: update SandboxName"
RESERVED_SFT_ARGS = ("output_dir", "stage")
"""Set by the recipe per stage: overriding them would break the resumable stage layout."""
RECIPE_SFT_ARGS = ("global_batch_size", "documents_per_row", "speed_plan")
"""Fields `trainers/recipe.py`'s InverseCoderSFTConfig adds to trl.SFTConfig (besides the reserved `stage`)."""

# Upper bounds: beyond them a run cannot fit in memory or is a typo (an extra zero), never a setting.
MAX_TOKENS = 1_048_576  # new tokens, context and training lengths
MAX_BATCH_TOKENS = 16 * MAX_TOKENS  # a generation batch's token budget, summed over its rows
MAX_ROWS = 4096  # rows of one generation / embedding / training micro-batch
MAX_GLOBAL_BATCH = 65_536  # sequences per optimizer step
MAX_CANDIDATES = 256  # summarize.num_samples: K instructions per snippet
MAX_EVAL_SAMPLES = 1000  # evaluate.n_samples: solutions per task (pass@100 needs a few hundred)
MAX_CONCURRENCY = 4096  # requests in flight per endpoint, worker processes
MAX_ENDPOINTS = 1024
MAX_PROCESSES = 1024  # training processes on one node
MAX_REPLICAS = 1024  # copies of the embedded model (one per GPU)
MAX_LIST = 10_000  # allow-list strings
DAY = 86_400.0  # seconds


# ------------------------------------------------------------------------------------------ helpers


def did_you_mean(word: object, options: Iterable[str], prefix: str = "") -> str:
    """` (did you mean 'x'?)` for the closest of `options`, or "" (unknown fields, enumerations, sft_args keys)."""
    options = [str(option) for option in options]
    lowered = {option.lower(): option for option in options}
    close = difflib.get_close_matches(str(word).lower(), list(lowered), n=1)
    return f" (did you mean '{prefix}{lowered[close[0]]}'?)" if close else ""


class FieldError(ValueError):
    """Raised by a validator about a field below the one it validates (`loc`: the path from there)."""

    def __init__(self, loc: tuple[str | int, ...], message: str):
        super().__init__(message)
        self.loc = loc


_SHOW = reprlib.Repr()
_SHOW.maxstring, _SHOW.maxother, _SHOW.maxlist, _SHOW.maxdict, _SHOW.maxlevel = 60, 60, 5, 4, 2


def show(value: object) -> str:
    return " ".join(_SHOW.repr(value).split())  # one line, whatever the value


def _dotted(prefix: str, loc: Iterable[str | int]) -> str:
    name = prefix
    for part in loc:
        name = f"{name}[{part}]" if isinstance(part, int) else (f"{name}.{part}" if name else str(part))
    return name


def _model_at(root: type[BaseModel], loc: Iterable[str | int]) -> type[BaseModel] | None:
    cls = root
    for part in loc:
        field = cls.model_fields.get(part) if isinstance(part, str) else None
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        cls = annotation
    return cls


def _options(tp: Any) -> tuple[str, ...]:
    if typing.get_origin(tp) is Literal:
        return typing.get_args(tp)
    for arg in typing.get_args(tp):
        found = _options(arg)
        if found:
            return found
    return ()


_TYPES = {
    "int_type": "expected int",
    "float_type": "expected float",
    "string_type": "expected str",
    "bool_type": "expected bool (true or false)",
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping of fields",
    "finite_number": "expected a finite number",
}
_BOUNDS = {
    "greater_than_equal": (">=", "ge"),
    "greater_than": (">", "gt"),
    "less_than_equal": ("<=", "le"),
    "less_than": ("<", "lt"),
}


def config_error(error: ValidationError, root: type[BaseModel], prefix: str = "") -> ConfigError:
    """The first problem of `error` as one line naming the dotted field."""
    first = error.errors(include_url=False)[0]
    loc, kind, ctx, value = tuple(first["loc"]), first["type"], first.get("ctx") or {}, first.get("input")
    if kind == "extra_forbidden":
        parent = _model_at(root, loc[:-1])
        hint = did_you_mean(loc[-1], parent.model_fields, _dotted(prefix, loc[:-1]) + ".") if parent else ""
        return ConfigError(f"unknown config field '{_dotted(prefix, loc)}'{hint}")
    if isinstance(ctx.get("error"), FieldError):
        loc, message = loc + ctx["error"].loc, str(ctx["error"])
    elif kind in _BOUNDS:
        sign, key = _BOUNDS[kind]
        message = f"must be {sign} {ctx[key]}, got {show(value)}"
    elif kind == "literal_error":
        names = [part for part in loc if isinstance(part, str)]
        owner = _model_at(root, loc[: loc.index(names[-1])])
        options = _options(owner.model_fields[names[-1]].annotation) if owner else ()
        message = (
            f"must be one of {', '.join(options)}; got {show(value)}{did_you_mean(value, options)}"
            if options
            else first["msg"]
        )
    elif kind in ("too_short", "string_too_short") and isinstance(value, str):
        message = "must not be empty"
    elif kind in ("too_long", "too_short"):
        bound = f"at most {ctx['max_length']}" if kind == "too_long" else f"at least {ctx['min_length']}"
        message = f"must hold {bound} items, got {ctx.get('actual_length', len(value))}"
    elif kind in _TYPES:
        message = f"{_TYPES[kind]}, got {show(value)}"
        if kind == "float_type" and isinstance(value, str) and re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", value):
            message += " (YAML reads a number without a dot as text: write it as 1.0e-5, not 1e-5)"
    elif kind == "value_error":
        message = str(ctx.get("error", first["msg"]))
    else:
        message = first["msg"]
    return ConfigError(f"{_dotted(prefix, loc) or 'config'}: {message}")


def text(value: Any) -> Any:
    """YAML reads `bf16: true` as a bool and `version: 1.0` as a float: strings they are (as before pydantic)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if hasattr(value, "__fspath__"):
        return value.__fspath__()
    return value


Text = Annotated[str, BeforeValidator(text)]
Name = Annotated[str, BeforeValidator(text), Field(min_length=1)]
Switch = Annotated[SwitchValue, BeforeValidator(text)]
Benchmarks = Annotated[
    list[Annotated[BenchmarkName, BeforeValidator(text)]], Field(min_length=1, max_length=len(BENCHMARKS))
]
Fraction = Annotated[float, Field(gt=0, le=1)]


def all_benchmarks() -> list[BenchmarkName]:
    """The default of the `benchmarks` lists: HumanEval+ and MBPP+."""
    return ["humaneval", "mbpp"]


def _device(value: str) -> str:
    if not re.fullmatch(r"auto|cpu|mps|(cuda|xpu|npu|hpu)(:\d+)?", value):
        raise ValueError(f"must be auto, cpu, mps or cuda[:N] (or xpu, npu, hpu[:N]); got {show(value)}")
    return value


Device = Annotated[str, BeforeValidator(text), AfterValidator(_device)]


def unique(values: list[Any]) -> list[Any]:
    for i, item in enumerate(values):
        if item in values[:i]:
            raise FieldError((i,), f"{show(item)} is listed twice")
    return values


def sft_field_names() -> set[str]:
    """What `train.sft_args` may set: every trl.SFTConfig field (trl is slow to import: only called when needed)."""
    import trl

    return {f.name for f in dataclasses.fields(trl.SFTConfig) if f.init} | set(RECIPE_SFT_ARGS)


def check_sft_args(args: dict[str, Any], names: Iterable[str] | None = None) -> None:
    """A `FieldError` for the first key of `train.sft_args` that the recipe sets or SFTConfig lacks, or whose
    value does not have the type that SFTConfig declares for it."""
    names = sft_field_names() if names is None else set(names)
    for key, value in args.items():
        if key in RESERVED_SFT_ARGS:
            raise FieldError((key,), "set by the recipe (one folder per stage): cannot be overridden")
        if key not in names:
            raise FieldError((key,), f"not a trl.SFTConfig field{did_you_mean(key, sorted(names))}")
        declared = _sft_types().get(key)
        if declared is not None:
            try:
                TypeAdapter(declared).validate_python(value)
            except ValidationError:
                raise FieldError((key,), f"expected {_type_name(declared)}, got {show(value)}") from None


@functools.cache
def _sft_types() -> dict[str, Any]:
    """trl.SFTConfig's field types (those pydantic can check)."""
    import trl

    found = {}
    for name, declared in typing.get_type_hints(trl.SFTConfig).items():
        try:
            TypeAdapter(declared)
        except PydanticSchemaGenerationError:
            continue
        found[name] = declared
    return found


def _type_name(declared: Any) -> str:
    return getattr(declared, "__name__", None) or str(declared).replace("typing.", "")


def transformers_choice(value: str, default: str, kind: str) -> str:
    """`train.optim` / `train.lr_scheduler_type` against transformers' names (imported only for non-defaults)."""
    if value == default:
        return value
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    names: type[enum.Enum] = OptimizerNames if kind == "optim" else SchedulerType
    options = [member.value for member in names]
    if value not in options:
        raise ValueError(
            f"not a transformers {kind} name ({names.__name__}); got {show(value)}{did_you_mean(value, options)}"
        )
    return value


class Section(BaseModel):
    """Strict: an int is accepted where a float is expected, but no string for a number and no number for a bool."""

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, strict=True, allow_inf_nan=False, use_attribute_docstrings=True
    )
    SECTION: ClassVar[str] = ""

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as error:
            raise config_error(error, type(self), self.SECTION) from None

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except ValidationError as error:
            raise config_error(error, type(self), self.SECTION) from None
