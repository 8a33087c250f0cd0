"""The run configuration: one pydantic model per section, read from YAML, overridable from the command line.

Every field has a documented default (the paper's settings where the paper has one) and is checked when
the config is read: types, ranges, enumerations, `train.sft_args` keys and sizes that could not fit in
memory (see `config_sections`). `load_config` reads a YAML file and applies `section.field=value`
overrides; any problem is a one-line `ConfigError` that names the field, so a typo never silently falls
back to a default and a bad value never fails hours into a run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from inversecoder.core.config_checks import (  # noqa: F401  (re-exported: the config's public names)
    ATTENTION,
    BACKENDS,
    BENCHMARKS,
    DTYPES,
    EMBEDDING_RUNTIMES,
    KERNELS,
    MAX_BATCH_TOKENS,
    MAX_CANDIDATES,
    MAX_CONCURRENCY,
    MAX_ENDPOINTS,
    MAX_EVAL_SAMPLES,
    MAX_GLOBAL_BATCH,
    MAX_LIST,
    MAX_ROWS,
    MAX_TOKENS,
    RECIPE_SFT_ARGS,
    RESERVED_SFT_ARGS,
    SANDBOXES,
    SWITCHES,
    TRAIN_MODES,
    FieldError,
    Section,
    Text,
    check_sft_args,
    config_error,
    did_you_mean,
    sft_field_names,
)
from inversecoder.core.config_sections import (
    DatasetConfig,
    DecontaminateConfig,
    DedupConfig,
    EvalConfig,
    GeneratorConfig,
    PlanConfig,
    PreferencesConfig,
    PushConfig,
    SourceConfig,
    SummarizeConfig,
    TrainConfig,
)
from inversecoder.core.errors import ConfigError
from inversecoder.core.fidelity import PAPER_SETTINGS
from inversecoder.core.files import write_atomic
from inversecoder.core.layout import Layout
from inversecoder.core.secrets import redact

MAX_CONFIG_NODES = 50_000
"""Values (mappings, lists and scalars) a config may hold once YAML aliases are expanded: a few hundred is
usual; an alias bomb (anchors of lists of anchors) expands a 1 KB file into millions."""


class RunConfig(Section):
    """The whole pipeline: corpus -> dataset -> model -> evaluation -> cards."""

    output_dir: Text = Field("outputs/run", min_length=1)
    """Where everything goes: dataset/, model/, eval/, train/ (checkpoints) and .cache/ (model calls)."""
    seed: int = Field(42, ge=0, le=2**32 - 1)
    """Seeds the verb prefixes, sampling (one seed per candidate), training and shuffling."""
    benchmarks_dir: Text | None = None
    """Folder with the EvalPlus data files (HumanEvalPlus-v0.1.10.jsonl.gz, MbppPlus-v0.2.0.jsonl.gz); unset: the
    copies shipped in data/benchmarks (with their checksums); `download`: evalplus's own downloader (network)."""
    fidelity: Literal["paper", "improved"] = "improved"
    """`improved`: this project's defaults; `paper`: the method as the paper and its code ran it (the fields of the
    README's "Fidelity to the paper" table get the paper's values, unless the config sets them itself)."""
    source: SourceConfig = Field(default_factory=SourceConfig)
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    summarize: SummarizeConfig = Field(default_factory=SummarizeConfig)
    decontaminate: DecontaminateConfig = Field(default_factory=DecontaminateConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    preferences: PreferencesConfig = Field(default_factory=PreferencesConfig)
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvalConfig = Field(default_factory=EvalConfig)
    push: PushConfig = Field(default_factory=PushConfig)
    plan: PlanConfig = Field(default_factory=PlanConfig)

    #: Fields added after fingerprints were first recorded that change what is built: left out of every
    #: fingerprint while at their defaults (today's behaviour), so a folder built before them is not rebuilt;
    #: in it as soon as they differ. ("": top-level fields.)
    NEW_RESULT_FIELDS: ClassVar[dict[str, tuple[str, ...]]] = {
        "": ("fidelity",),
        "source": ("duplicates",),
        "generator": ("answer_tokens",),
        "summarize": ("language_tag",),
        "decontaminate": ("original_action",),
        "dataset": ("license_name", "license_link"),
    }

    @model_validator(mode="before")
    @classmethod
    def _fidelity(cls, data: Any) -> Any:
        """`fidelity: paper` gives the fields of `fidelity.PAPER_SETTINGS` the paper's values, except those the
        config sets itself (a key of its YAML or override, or a field in a section's `model_fields_set`): the one
        place the switch is read."""
        if not isinstance(data, dict) or data.get("fidelity") != "paper":
            return data
        data = dict(data)
        for dotted, value in PAPER_SETTINGS.items():
            section, name = dotted.split(".")
            given = data.get(section, {})
            if isinstance(given, dict) and name not in given:
                data[section] = {**given, name: value}
            elif isinstance(given, BaseModel) and name not in given.model_fields_set:
                data[section] = given.model_copy(update={name: value})
        return data

    @property
    def output(self) -> Path:
        return Path(self.output_dir)

    @property
    def layout(self) -> Layout:
        """The folders and files under `output_dir`."""
        return Layout(Path(self.output_dir))

    def to_dict(self) -> dict[str, Any]:
        """Plain values, section by section in field order (what `dataclasses.asdict` gave: fingerprints rest on it)."""
        return self.model_dump()

    def result_dict(self) -> dict[str, Any]:
        """`to_dict` without the settings that change how a result is fetched, not what it is (which TGI
        servers, how many requests in flight, timeouts, retries): what fingerprints are made of, so that
        adding a server to a run does not make its finished steps or its dataset look different; nor the
        permissions that let a run proceed (`EvalConfig.PERMISSION_FIELDS`), nor where and how results are
        published (`PushConfig.DESTINATION_FIELDS`)."""
        data = self.to_dict()
        not_results = {
            "generator": GeneratorConfig.TRANSPORT_FIELDS,
            "evaluate": EvalConfig.PERMISSION_FIELDS,
            "decontaminate": DecontaminateConfig.TRANSPORT_FIELDS,
            "train": TrainConfig.TRANSPORT_FIELDS,
            "push": PushConfig.DESTINATION_FIELDS,
            "plan": PlanConfig.NODE_FIELDS,
        }
        for section, names in not_results.items():
            for name in names:
                data[section].pop(name)
        for section, names in self.NEW_RESULT_FIELDS.items():
            model = type(getattr(self, section)) if section else type(self)
            values = data[section] if section else data
            for name in names:
                if values[name] == model.model_fields[name].get_default(call_default_factory=True):
                    values.pop(name)
        return data

    def fingerprint(self, *sections: str) -> str:
        """A short hash of the named sections (all but output_dir when none): proves two runs match."""
        data = self.result_dict()
        data.pop("output_dir")
        if sections:
            data = {name: data[name] for name in sections}
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    *parents, leaf = dotted.split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot override '{dotted}': '{part}' is not a section")
        node = child
    node[leaf] = value


def _check_size(data: Any) -> None:
    """Count the values as if YAML aliases were copied (as saving the config would), stopping at the limit."""
    pending, count = [data], 0
    while pending:
        node = pending.pop()
        count += 1
        if count > MAX_CONFIG_NODES:
            raise ConfigError(
                f"the config holds more than {MAX_CONFIG_NODES} values once its YAML aliases are "
                "expanded (anchors of lists of anchors?): refusing it"
            )
        if isinstance(node, dict):
            pending.extend(node.keys())
            pending.extend(node.values())
        elif isinstance(node, (list, tuple, set)):
            pending.extend(node)


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


def load_config(path: str | Path | None, overrides: Sequence[str] = (), output_dir: str | None = None) -> RunConfig:
    """Read a YAML recipe (or start from the defaults), apply command-line overrides and check every value."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as error:
            raise ConfigError(
                f"{path} is not UTF-8 text ({error.reason} at byte {error.start}): save it as UTF-8"
            ) from None
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
    _check_size(data)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as error:
        raise config_error(error, RunConfig) from None


DATASET_SECTIONS = (
    "seed",
    "benchmarks_dir",
    "fidelity",
    "source",
    "generator",
    "summarize",
    "decontaminate",
    "dedup",
    "preferences",
    "dataset",
)
"""What a dataset is built from: the dataset's `build_config.yaml` holds these (not train, evaluate, push, plan)."""


def config_yaml(config: RunConfig, sections: Sequence[str] = ()) -> str:
    """The resolved config as YAML (the named top-level fields only, when given): plain values only (no
    anchors, no Python objects), every secret-named field redacted (`core.secrets`)."""
    data = config.model_dump(mode="json")
    if sections:
        data = {name: value for name, value in data.items() if name in sections}
    return yaml.safe_dump(redact(data), sort_keys=False)


def save_config(config: RunConfig, path: Path, sections: Sequence[str] = ()) -> None:
    """Write the resolved config next to an artifact, atomically and without secrets (see `config_yaml`)."""
    write_atomic(path, config_yaml(config, sections))


def describe_fields() -> list[tuple[str, str, str]]:
    """(dotted name, default, doc) for every field: the README's config reference is made from this."""
    rows: list[tuple[str, str, str]] = []

    def walk(cls: type[BaseModel], prefix: str) -> None:
        for name, field in cls.model_fields.items():
            default = field.get_default(call_default_factory=True)
            if isinstance(default, BaseModel):
                walk(type(default), f"{prefix}{name}.")
            else:
                rows.append((prefix + name, json.dumps(default), " ".join((field.description or "").split())))

    walk(RunConfig, "")
    return rows
