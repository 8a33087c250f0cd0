"""The paper's training recipe (Step 4 of Inverse-Instruct) on TRL's SFTTrainer.

InverseCoder starts from the BASE model, trains 1 epoch on the generated pairs, then 2 epochs on the
original pairs with a fresh optimizer and learning-rate schedule (that order beats a mixture, which
`mode: mix` reproduces for the ablation). Data is prompt-completion: TRL appends EOS to the completion
and puts loss on completion tokens only, which is the paper's "loss on response tokens + EOS".

Runs are resumable: each stage trains in `work_dir/<stage>`, resumes from its newest complete checkpoint
(broken ones, from a kill while one was written, are set aside: `checkpoints.py`), and is
skipped once `<stage>/final` holds its completion marker. A stage's fingerprint (settings, start model,
data content) is stored with it: after a change of config or dataset the stage retrains from scratch
rather than reusing a stale model or resuming from checkpoints of other settings.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import trl

from inversecoder.core import prompts
from inversecoder.core.config import TRAIN_MODES, RunConfig, TrainConfig
from inversecoder.core.errors import ConfigError
from inversecoder.core.files import atomic_path, read_json, write_json
from inversecoder.core.hub_refs import is_commit_sha
from inversecoder.core.layout import TRAINING_CONFIG, TRAINING_LOGS
from inversecoder.core.manifest import write_manifest
from inversecoder.core.secrets import redact
from inversecoder.trainers import checkpoints, speed
from inversecoder.trainers.sft_config import InverseCoderSFTConfig, secrets_outside, sft_config_for

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    import datasets
    from transformers import GenerationConfig, PreTrainedTokenizerBase

COMPLETE = ".complete"
"""Written last into `<stage>/final`: its presence means the stage's weights are whole."""
STAGE_INFO = "stage.json"
PLAN = "plan.json"
_NOT_IN_FINGERPRINT = (
    "enabled",
    "logging_steps",
    "save_steps",
    "bf16",
    "gradient_checkpointing",
    "per_device_batch_size",
    "attn_implementation",
    "kernels",
    "torch_compile",
    "num_processes",
    "strategy",
)
"""Knobs that change speed, memory or bookkeeping but not what is learned: a resume may change them."""


def _to_prompt_completion(row: dict[str, Any]) -> dict[str, str]:
    return {"prompt": prompts.magicoder_prompt(row["instruction"]), "completion": row["response"]}


def load_pairs(dataset_dir: Path, config_name: str) -> datasets.Dataset:
    """One config of the dataset folder as prompt-completion rows in the Magicoder format.

    Read from the config's parquet files (not `load_dataset(folder)`, whose cache of a local folder
    can serve a previous build's rows after the folder is rebuilt)."""
    from inversecoder.core.dataset_files import load_config_rows

    dataset_dir = Path(dataset_dir)
    if not (dataset_dir / "README.md").is_file():
        raise ConfigError(f"{dataset_dir} is not a dataset folder (no README.md with `configs:`)")
    try:
        rows = load_config_rows(dataset_dir, config_name)
    except FileNotFoundError:
        raise ConfigError(
            f"{dataset_dir} has no '{config_name}' config; "
            "two-stage and mix training need dataset.include_original: true"
        ) from None
    _check_columns(rows.column_names, dataset_dir, config_name)
    return rows.map(_to_prompt_completion, remove_columns=rows.column_names, desc=f"Formatting {config_name}")


def _check_columns(columns: list[str], dataset_dir: Path, config_name: str) -> None:
    missing = {"instruction", "response"} - set(columns)
    if missing:
        raise ConfigError(f"{dataset_dir} config '{config_name}' lacks column(s): {', '.join(sorted(missing))}")


def _content_hash(rows: datasets.Dataset) -> str:
    """Hash of the training text, so a regenerated dataset is never mistaken for the one trained on."""
    digest = hashlib.sha256()
    for batch in rows.iter(batch_size=4096):
        for prompt, completion in zip(batch["prompt"], batch["completion"], strict=True):
            digest.update(len(prompt).to_bytes(8, "little") + prompt.encode())
            digest.update(len(completion).to_bytes(8, "little") + completion.encode())
    return digest.hexdigest()[:16]


# --------------------------------------------------------------------------------------------- stages


@dataclass
class Stage:
    """One SFT run: which configs it trains on, for how long, in which folder."""

    name: str
    configs: list[str]
    epochs: float
    rows: datasets.Dataset
    folder: Path

    @property
    def final(self) -> Path:
        return self.folder / "final"


MODES = TRAIN_MODES


def _plan(config: RunConfig, dataset_dir: Path, work_dir: Path) -> tuple[list[Stage], dict[str, int]]:
    """Two-stage (the paper), one shuffled mixture (its ablation), or the original pairs alone (how the
    generator M is made from the base model), and the size of each config; data is loaded up front so
    that a missing config fails before hours of training."""
    train = config.train  # its mode is one of MODES: checked when the config was read
    original = load_pairs(dataset_dir, "original")
    if train.mode == "original":
        return [Stage("original", ["original"], train.original_epochs, original, work_dir / "original")], {
            "original": len(original)
        }
    generated = load_pairs(dataset_dir, "default")
    sizes = {"default": len(generated), "original": len(original)}
    if train.mode == "two-stage":
        return [
            Stage("stage1", ["default"], train.generated_epochs, generated, work_dir / "stage1"),
            Stage("stage2", ["original"], train.original_epochs, original, work_dir / "stage2"),
        ], sizes
    import datasets

    mixture = datasets.concatenate_datasets([generated, original]).shuffle(seed=config.seed)
    mixture = mixture.flatten_indices()  # materialize the shuffled order: maps through an index mapping are slower
    return [Stage("mix", ["default", "original"], train.generated_epochs, mixture, work_dir / "mix")], sizes


def _check_available(model: str, revision: str | None) -> str | None:
    """A base model that is neither a local folder nor reachable on the Hub is a one-line ConfigError
    before any data is loaded (the same resolution the embedded backend uses). Returns the Hub commit sha it
    resolved to (None for a local folder), which `training_config.json` records even when no revision was set."""
    from inversecoder.core.backends.transformers_backend import resolve_model

    resolved = resolve_model(model, revision)[1]
    return resolved if is_commit_sha(resolved) else None


def base_model(config: RunConfig) -> tuple[str, str | None]:
    """The paper fine-tunes the BASE model; by default the one the generator was made from."""
    train = config.train
    if train.base_model:
        return train.base_model, train.base_revision
    if config.generator.model:
        return config.generator.model, train.base_revision or config.generator.revision
    raise ConfigError("set train.base_model (or generator.model): there is no model to fine-tune")


def _fingerprint(train: TrainConfig, stage: Stage, start: str, revision: str | None, seed: int, previous: str) -> str:
    """What the stage's weights depend on (the previous stage's fingerprint included); logging/saving/precision
    knobs are left out."""
    settings = {k: v for k, v in train.model_dump().items() if k not in _NOT_IN_FINGERPRINT}
    data = {
        "settings": settings,
        "seed": seed,
        "stage": stage.name,
        "configs": stage.configs,
        "epochs": stage.epochs,
        "start": None if previous else start,
        "revision": revision,
        "previous": previous,
        "data": _content_hash(stage.rows),
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _is_main_process() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


def _wait_for_everyone() -> None:
    from accelerate import PartialState

    PartialState().wait_for_everyone()


def _start_fresh_if_changed(folder: Path, fingerprint: str, stage: str, launch: str) -> None:
    """A stage folder from other settings or data (complete or not) is outdated: remove it, so the stage
    retrains instead of resuming from, or skipping to, weights that no longer match the config. Checkpoints
    of another strategy (DDP, FSDP2, ZeRO-3) are set aside (renamed, never deleted): their optimizer state is
    laid out for it; another process count resumes (the global batch and its step count are the same)."""
    plan = folder / PLAN
    previous = read_json(plan) if plan.is_file() else None
    if previous is not None and _is_main_process():
        if previous.get("fingerprint") != fingerprint:
            logger.info(f"{stage}: settings or data changed since {folder} was trained: retraining from scratch")
            shutil.rmtree(folder)
        elif previous.get("launch", launch) != launch and not (folder / "final" / COMPLETE).is_file():
            for checkpoint in checkpoints.checkpoints(folder):
                checkpoints.set_aside(
                    checkpoint,
                    f"saved under {previous.get('launch')}, now {launch}",
                    "other-launch-",
                    "is of another launch",
                )
            write_json(plan, {"stage": stage, "fingerprint": fingerprint, "launch": launch})
    _wait_for_everyone()
    if not plan.is_file() and _is_main_process():
        folder.mkdir(parents=True, exist_ok=True)
        write_json(plan, {"stage": stage, "fingerprint": fingerprint, "launch": launch})
    _wait_for_everyone()


def _last_checkpoint(folder: Path, stage: str, save_only_model: bool) -> str | None:
    """The newest complete checkpoint: the main process sets broken ones aside (`checkpoints.py`), then
    every process resumes from the newest one left."""
    if _is_main_process():
        checkpoints.last_complete(folder, stage, save_only_model)
    _wait_for_everyone()
    found = checkpoints.checkpoints(folder)
    return str(found[0]) if found else None


def _load_tokenizer(path: str, revision: str | None) -> PreTrainedTokenizerBase:
    """The tokenizer the model ships with: Magicoder chat template, and a pad token for batching."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
    if tokenizer.eos_token is None:
        raise ConfigError(f"the tokenizer of {path} has no eos_token: the model could never learn to stop")
    tokenizer.chat_template = prompts.CHAT_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _build_trainer(
    args: InverseCoderSFTConfig, start: str, revision: str | None, rows: datasets.Dataset
) -> trl.SFTTrainer:
    """A fresh SFTTrainer (hence a fresh optimizer and schedule) on the weights at `start`."""
    if revision:
        init = args.model_init_kwargs if isinstance(args.model_init_kwargs, dict) else {}
        args.model_init_kwargs = {**init, "revision": revision}
    tokenizer = _load_tokenizer(start, revision)
    return trl.SFTTrainer(model=start, args=args, train_dataset=rows, processing_class=tokenizer)


def _public(data: Any) -> Any:
    """What may be written: every key that mentions a token is dropped (TrainingArguments.to_dict turns each
    `*_token` value into a placeholder, so they say nothing), every other secret-named one redacted."""
    return redact(_without_tokens(data))


def _without_tokens(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _without_tokens(v) for k, v in data.items() if "token" not in str(k).lower()}
    if isinstance(data, (list, tuple)):
        return [_without_tokens(v) for v in data]
    return data


def _save_final(trainer: trl.SFTTrainer, final: Path, info: dict[str, Any]) -> None:
    """Weights + tokenizer + generation config, then the stage record, then the marker (last)."""
    # transformers types these as unions (any processor; a model or a bare Module); this trainer was
    # built from a tokenizer and a causal LM, above.
    tokenizer = cast("PreTrainedTokenizerBase", trainer.processing_class)
    assert trainer.model is not None
    generation = cast("GenerationConfig", trainer.model.generation_config)
    generation.eos_token_id = tokenizer.eos_token_id
    generation.pad_token_id = tokenizer.pad_token_id
    if _is_main_process() and final.exists():
        shutil.rmtree(final)  # an interrupted save: its marker was never written
    _wait_for_everyone()
    trainer.save_model(str(final))  # every rank: sharded (FSDP/DeepSpeed) weights are gathered here
    if _is_main_process():
        write_json(final / STAGE_INFO, info)
        (final / COMPLETE).write_text("ok\n", encoding="utf-8")
    _wait_for_everyone()


def _remove_checkpoints(folder: Path) -> None:
    """Checkpoints only serve resumption; once `final` is complete they are dead weight (optimizer state)."""
    if not _is_main_process():
        return
    for checkpoint in folder.glob("checkpoint-*"):
        shutil.rmtree(checkpoint, ignore_errors=True)


def free_memory() -> None:
    """Collected garbage and the CUDA allocator's cached blocks, before other processes or stages need them."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _run_stage(
    args: InverseCoderSFTConfig, stage: Stage, start: str, revision: str | None, fingerprint: str, launch: str
) -> dict[str, Any]:
    """Train one stage (or skip it: already complete, or no rows) and return its record."""
    record: dict[str, Any] = {
        "stage": stage.name,
        "configs": stage.configs,
        "rows": len(stage.rows),
        "epochs": stage.epochs,
        "start_model": start,
        "fingerprint": fingerprint,
    }
    _start_fresh_if_changed(stage.folder, fingerprint, stage.name, launch)
    if (stage.final / COMPLETE).is_file():
        logger.info(f"{stage.name}: already trained ({stage.final}), skipping")
        return read_json(stage.final / STAGE_INFO)
    if len(stage.rows) == 0:
        logger.info(f"{stage.name}: no rows in {'+'.join(stage.configs)}, skipped (the next stage starts from {start})")
        return {**record, "skipped": "no rows", "sft_args": None, "log_history": []}
    with secrets_outside(args):  # the Trainer saves its args into every checkpoint and the final folder
        trainer = _build_trainer(args, start, revision, stage.rows)
        checkpoint = _last_checkpoint(stage.folder, stage.name, args.save_only_model)
        if checkpoint:
            logger.info(f"{stage.name}: resuming from {checkpoint}")
        speed.reset_peak_memory()
        trainer.train(resume_from_checkpoint=checkpoint)
        peak = speed.peak_memory()
        trainer.state.log_history.append({**peak, "step": trainer.state.global_step})
        record.update(
            sft_args=_public(args.to_dict()),
            global_step=trainer.state.global_step,
            **peak,
            log_history=trainer.state.log_history,
        )
        _save_final(trainer, stage.final, record)
        del trainer
    free_memory()
    _remove_checkpoints(stage.folder)
    return record


def _export(
    final: Path,
    model_dir: Path,
    config: RunConfig,
    base: tuple[str, str | None, str | None],
    sizes: dict[str, int],
    records: list[dict[str, Any]],
    distribution: dict[str, Any] | None,
) -> None:
    """The model folder users load: weights, tokenizer with the chat template, and how it was trained; it
    replaces `model_dir` whole, so a crash leaves the previous folder or the new one."""
    with atomic_path(model_dir) as partial:
        _write_model_folder(partial, final, base, config, sizes, records, distribution)
        write_manifest(partial)  # every file with its sha256: checked before the folder is trusted or pushed


def _write_model_folder(
    partial: Path,
    final: Path,
    base: tuple[str, str | None, str | None],
    config: RunConfig,
    sizes: dict[str, int],
    records: list[dict[str, Any]],
    distribution: dict[str, Any] | None,
) -> None:
    from transformers import GenerationConfig

    shutil.copytree(final, partial, ignore=shutil.ignore_patterns(STAGE_INFO, COMPLETE, "training_args.bin"))
    tokenizer = _load_tokenizer(str(final), None)
    tokenizer.save_pretrained(partial)
    generation = GenerationConfig.from_pretrained(final)
    generation.eos_token_id = tokenizer.eos_token_id
    generation.pad_token_id = tokenizer.pad_token_id
    generation.save_pretrained(partial)
    stages = [{k: v for k, v in r.items() if k != "log_history"} for r in records]
    write_json(
        partial / TRAINING_CONFIG,
        _public(
            {
                "base_model": base[0],
                "base_revision": base[1],  # as configured (None: the Hub's main when trained)
                "base_commit": base[2],  # the commit sha it resolved to (None for a local folder)
                "seed": config.seed,
                "train": config.train.model_dump(),
                "dataset_sizes": sizes,
                "distribution": distribution,
                "stages": stages,
            }
        ),
    )
    write_json(partial / TRAINING_LOGS, {r["stage"]: r["log_history"] for r in records})


def train_model(
    config: RunConfig, dataset_dir: Path, work_dir: Path, model_dir: Path, distribution: dict[str, Any] | None = None
) -> Path:
    """Fine-tune the base model on the dataset folder (resumably) and write the final model folder; every
    process of a launched job calls it (`launch.py`), `distribution` says how it was launched."""
    dataset_dir, work_dir, model_dir = Path(dataset_dir), Path(work_dir), Path(model_dir)
    base = base_model(config)
    base_commit = _check_available(*base)
    stages, sizes = _plan(config, dataset_dir, work_dir)
    # Every stage's settings are checked before the first one trains for hours.
    stage_args = [sft_config_for(config.train, s.folder, s.epochs, config.seed, s.name) for s in stages]
    if any(args.packing for args in stage_args):
        # Packed rows hold several documents: the global batch keeps counting documents (see speed.py).
        tokenizer = _load_tokenizer(*base)
        stage_args = [
            sft_config_for(
                config.train, s.folder, s.epochs, config.seed, s.name, lengths=speed.document_lengths(tokenizer, s.rows)
            )
            if args.packing
            else args
            for s, args in zip(stages, stage_args, strict=True)
        ]
    start, revision = base
    # single and ddp checkpoints hold whole states: they resume under each other
    strategy = (distribution or {}).get("strategy", "single")
    launch = "whole" if strategy in ("single", "ddp") else strategy
    records: list[dict[str, Any]] = []
    previous = ""
    for stage, args in zip(stages, stage_args, strict=True):
        fingerprint = _fingerprint(config.train, stage, start, revision, config.seed, previous)
        record = _run_stage(args, stage, start, revision, fingerprint, launch)
        records.append(record)
        if not record.get("skipped"):
            start, revision, previous = str(stage.final), None, fingerprint
    if not previous:
        raise ConfigError(f"{dataset_dir}: every training stage is empty, there is nothing to train on")
    if _is_main_process():
        _export(Path(start), model_dir, config, (*base, base_commit), sizes, records, distribution)
    _wait_for_everyone()
    return model_dir
