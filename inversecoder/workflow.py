"""The paper's loop as resumable steps: generator M, dataset, InverseCoder, evaluations, report.

Each step has a fingerprint: the config sections it reads plus the fingerprints of the steps it
depends on. A step whose output exists with the same fingerprint is skipped; a changed setting reruns
that step and the ones after it (and each step's own caches make a rerun cheap: model calls are
cached, training resumes from checkpoints). `--from STEP` / `--until STEP` run a part of the loop.

    generator ─► dataset ─► train ─► evaluate ─┐
        └──────────────────────► evaluate-generator ─► report (cards, comparison, run summary)
    (evaluate-base, optional) ─────────────────┘
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inversecoder.comparison import comparison, summary_markdown
from inversecoder.core.config import DATASET_SECTIONS, RunConfig, save_config
from inversecoder.core.errors import UserError
from inversecoder.core.files import read_json, write_atomic, write_json
from inversecoder.core.layout import BUILD_INFO, EVAL_RESULTS
from inversecoder.core.lock import output_lock
from inversecoder.core.manifest import read_manifest, write_manifest
from inversecoder.core.paired import METHOD
from inversecoder.core.ranks import barrier, in_launched_job, is_main_rank
from inversecoder.step_records import Record, check, read_records, record

logger = logging.getLogger(__name__)


def resolved(config: RunConfig) -> RunConfig:
    """The config the steps act on: without a named generator, M is the one step 0 trains."""
    if config.generator.model:
        return config
    if not (config.train.base_model):
        raise UserError(
            "set generator.model (the model M that writes the data) or train.base_model (M is then trained from it)"
        )
    config = config.model_copy(deep=True)
    config.generator.model = str(config.layout.generator_model)
    return config


# -- the steps ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    name: str
    sections: tuple[str, ...]  # config sections whose values determine the output
    after: tuple[str, ...]  # steps whose outputs it reads
    output: Callable[[RunConfig], Path]  # exists when the step is done
    run: Callable[[RunConfig], Any]
    enabled: Callable[[RunConfig], bool] = lambda config: True


def _train_generator(config: RunConfig) -> Path:
    """Step 0: M = the base model fine-tuned on the (decontaminated) original pairs (the paper: 2 epochs)."""
    from inversecoder.builders.original_data import build_original_data
    from inversecoder.core.backends.transformers_backend import resolve_model
    from inversecoder.hub_cards.dataset_card import write_original_card
    from inversecoder.trainers.launch import train_on_node

    assert config.train.base_model is not None  # the step runs only without a named generator: see resolved()
    resolve_model(config.train.base_model, config.train.base_revision)  # fails before the data work
    layout = config.layout
    if is_main_rank():  # in a job the user launched, the main process builds the data, the others wait
        build_original_data(config, layout.generator_data, write_card=write_original_card)
    barrier()
    generator_config = config.model_copy(deep=True)
    generator_config.train.mode = "original"
    return train_on_node(generator_config, layout.generator_data, layout.generator_train, layout.generator_model)


def _build(config: RunConfig) -> Path:
    """Build the dataset; while model calls failed, build again (only they are asked: the rest is cached),
    `generator.retry_rounds` times; more failures than `generator.max_failed_fraction` then stop the run."""
    from inversecoder.builders.pipeline import FailedCalls, build_dataset
    from inversecoder.hub_cards.dataset_card import write_dataset_card

    generator = config.generator
    for round_number in range(generator.retry_rounds + 1):
        last = round_number == generator.retry_rounds
        try:
            result = build_dataset(resolved(config), write_card=write_dataset_card)
        except FailedCalls as error:
            if last:
                raise
            failed = error.failed
        else:
            if result.failed_calls == 0 or last:
                return result.dataset_dir
            failed = result.failed_calls
        logger.warning(
            f"[dataset] {failed} model calls failed: asking them again in {generator.retry_backoff_max:g} s "
            f"(retry round {round_number + 1} of {generator.retry_rounds})"
        )
        time.sleep(generator.retry_backoff_max)
    raise AssertionError("unreachable: the last round returns or raises")


def _require_dataset(config: RunConfig) -> None:
    if not (config.layout.dataset / "README.md").is_file():
        raise UserError(
            f"no dataset at {config.layout.dataset}: run `inversecoder build-dataset` (or `run`) with this config first"
        )


def _train(config: RunConfig) -> Path:
    from inversecoder.trainers.launch import train_on_node

    _require_dataset(config)
    layout = config.layout
    return train_on_node(resolved(config), layout.dataset, layout.train, layout.model)


def _evaluate_into(config: RunConfig, model: str, output: Path) -> dict[str, Any]:
    from inversecoder.core.backends import open_model
    from inversecoder.eval.harness import evaluate_model

    if not Path(model).exists() and not (model.count("/") == 1 and not model.startswith((".", "/"))):
        raise UserError(f"no model at {model}: train it first or set evaluate.model")
    with contextlib.closing(open_model(config, model=model)) as cached:
        return evaluate_model(
            cached, config.evaluate, config.benchmarks_dir, config.layout.benchmark_cache, output, seed=config.seed
        )


def _require_model(config: RunConfig) -> None:
    if config.evaluate.model is None and not (config.layout.model / "config.json").is_file():
        raise UserError(
            f"no trained model at {config.layout.model}: run `inversecoder train` first or set evaluate.model"
        )


def _evaluate(config: RunConfig) -> dict[str, Any]:
    config = resolved(config)
    layout = config.layout
    _require_model(config)
    return _evaluate_into(config, config.evaluate.model or str(layout.model), layout.eval)


def _evaluate_generator(config: RunConfig) -> dict[str, Any]:
    config = resolved(config)
    assert config.generator.model is not None  # resolved() names it
    return _evaluate_into(config, config.generator.model, config.layout.eval_generator)


def _evaluate_base(config: RunConfig) -> dict[str, Any]:
    config = resolved(config)
    base = config.train.base_model or config.generator.model
    assert base is not None  # resolved() names the generator
    return _evaluate_into(config, base, config.layout.eval_base)


STEPS: tuple[Step, ...] = (
    Step(
        "generator",
        ("source", "decontaminate", "train", "seed", "benchmarks_dir"),
        (),
        lambda c: c.layout.generator_model / "config.json",
        _train_generator,
        enabled=lambda c: not c.generator.model,
    ),
    Step(
        "dataset",
        # what the dataset's build_config.yaml holds, but `fidelity`: the fields it sets are fingerprinted instead
        tuple(name for name in DATASET_SECTIONS if name != "fidelity"),
        ("generator",),
        lambda c: c.layout.dataset / "README.md",
        _build,
    ),
    Step(
        "train",
        ("train", "seed"),
        ("dataset",),
        lambda c: c.layout.model / "config.json",
        _train,
        enabled=lambda c: c.train.enabled,
    ),
    Step(
        "evaluate",
        ("evaluate", "benchmarks_dir"),
        ("train",),
        lambda c: c.layout.eval / EVAL_RESULTS,
        _evaluate,
        # InverseCoder exists only when this run trains it, unless evaluate.model names a model to evaluate
        enabled=lambda c: c.evaluate.enabled and (c.train.enabled or c.evaluate.model is not None),
    ),
    Step(
        "evaluate-generator",
        ("evaluate", "benchmarks_dir"),
        ("generator",),
        lambda c: c.layout.eval_generator / EVAL_RESULTS,
        _evaluate_generator,
        enabled=lambda c: c.evaluate.enabled and c.evaluate.compare_generator,
    ),
    Step(
        "evaluate-base",
        ("evaluate", "benchmarks_dir"),
        (),
        lambda c: c.layout.eval_base / EVAL_RESULTS,
        _evaluate_base,
        enabled=lambda c: c.evaluate.enabled and c.evaluate.compare_base,
    ),
)
STEP_NAMES = (*(step.name for step in STEPS), "report")


def _section_values(config: RunConfig, sections: tuple[str, ...]) -> dict[str, Any]:
    data = config.result_dict()
    values = {name: data[name] for name in sections}
    if "generator" in values and not config.generator.model:
        values["generator"] = dict(values["generator"], model="<trained by step 0>")
    return values


#: What a later step chains on for the dataset's license, whatever it is: the card's license is publication, not
#: what training reads (setting it, as a push of an unknown license asks, must not retrain); the value is the
#: default of before the license followed the corpus's and M's cards (issue #20), so older folders keep their models.
CHAINED_DATASET_LICENSE = "apache-2.0"


def _chained_values(config: RunConfig, step: Step) -> dict[str, Any]:
    """What a step's dependents chain on: its sections, less what none of them reads. The dataset's
    `preferences` config and its card's license change the dataset folder (so the step reruns, its model
    calls from the cache) but not the `default` and `original` tables training reads: a model trained on
    them is not trained again."""
    values = _section_values(config, step.sections)
    if step.name == "dataset":
        values.pop("preferences", None)
        dataset = {k: v for k, v in values["dataset"].items() if k not in ("license_name", "license_link")}
        dataset["license"] = CHAINED_DATASET_LICENSE
        values["dataset"] = dataset
    return values


def _hash(blob: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fingerprints(config: RunConfig) -> dict[str, str]:
    """Each step's fingerprint: its config sections and what its upstream steps chain on (`_chained_values`)."""
    found: dict[str, str] = {}
    chained: dict[str, str] = {}
    for step in STEPS:
        after = [chained.get(name, "") for name in step.after]
        if step.enabled(config):
            found[step.name] = _hash({"sections": _section_values(config, step.sections), "after": after})
            chained[step.name] = _hash({"sections": _chained_values(config, step), "after": after})
    return found


def step_folder(config: RunConfig, step: Step) -> Path:
    """The folder a step writes (its output marker's folder): what its manifest covers."""
    return step.output(config).parent


def step_status(
    config: RunConfig, reasons: dict[str, str] | None = None, done: dict[str, Record] | None = None
) -> dict[str, str]:
    """`run`, `skip` (done with the same fingerprint, its files as it wrote them) or `disabled`, for every
    step; `reasons` (when given) gets, per step that reruns although recorded, why."""
    prints = fingerprints(config)
    root = config.layout.root
    done = read_records(config.layout.steps) if done is None else done
    status = {}
    for step in STEPS:
        entry = done.get(step.name)
        if not step.enabled(config):
            status[step.name] = "disabled"
        elif entry is None or entry.fingerprint != prints[step.name]:
            status[step.name] = "run"
        elif not step.output(config).exists():
            status[step.name] = "run"
            if reasons is not None:
                reasons[step.name] = f"{step.output(config)} is missing"
        else:
            why = check(root, step_folder(config, step), entry, dataset=step.name == "dataset")
            status[step.name] = "run" if why else "skip"
            if why and reasons is not None:
                reasons[step.name] = why
    # A step that reruns makes every step after it that reads it rerun too.
    for step in STEPS:
        if status[step.name] == "skip" and any(status.get(up) == "run" for up in step.after):
            status[step.name] = "run"
    status["report"] = "run"
    return status


def _selected(start: str | None, until: str | None) -> list[str]:
    for name in (start, until):
        if name is not None and name not in STEP_NAMES:
            raise UserError(f"unknown step '{name}': the steps are {', '.join(STEP_NAMES)}")
    first = STEP_NAMES.index(start) if start else 0
    last = STEP_NAMES.index(until) if until else len(STEP_NAMES) - 1
    if first > last:
        raise UserError(f"--from {start} comes after --until {until}")
    return list(STEP_NAMES[first : last + 1])


def run_steps(
    config: RunConfig,
    start: str | None = None,
    until: str | None = None,
    force: tuple[str, ...] = (),
    token: str | None = None,
) -> None:
    """Run the selected steps in order, skipping the ones already done with the same fingerprint; with a
    Hub token, publish the generator M (push.generator_repo_id) and the dataset once the steps are done (the
    dataset then names M's commit, the model card pins both) and the model after the report."""
    resolved(config)  # a run with no model at all fails here, before any work
    selected = _selected(start, until)
    main = is_main_rank()  # in a launched job, the main process alone writes the run's state
    if main:
        save_config(config, config.layout.run_config)
    reasons: dict[str, str] = {}
    steps_file = config.layout.steps
    done = read_records(steps_file)
    status = step_status(config, reasons, done)
    prints = fingerprints(config)
    _check_launched_steps(selected, status, force)
    if any(name in selected and (status[name] == "run" or name in force) for name in TRAINING_STEPS):
        _check_training_launch(config)  # a setting that cannot run here fails now, not after the dataset
    for step in STEPS:
        if step.name not in selected or status[step.name] == "disabled":
            continue
        folder = step_folder(config, step)
        if status[step.name] == "skip" and step.name not in force:
            logger.info("[%s] up to date (fingerprint %s), skipped", step.name, prints[step.name])
            if done[step.name].files is None and main:  # an older record, verified: add its manifest
                if step.name == "dataset" and read_manifest(folder) is None:
                    write_manifest(folder)
                record(steps_file, done, step.name, prints[step.name], folder)
            continue
        if step.name in reasons:
            logger.warning("[%s] %s: running it again", step.name, reasons[step.name])
        logger.info("[%s] running", step.name)
        step.run(config)
        if main:
            record(steps_file, done, step.name, prints[step.name], folder)
        barrier()
    if not main:
        return
    if token and ("generator" in selected or "dataset" in selected):
        _push_generator_then_dataset(config, token, selected, done)
    if "report" in selected:
        write_report(config)
        if token:
            from inversecoder.hub_cards.push import push_run_model

            push_run_model(config, token)


TRAINING_STEPS = ("generator", "train")


def _check_launched_steps(selected: list[str], status: dict[str, str], force: tuple[str, ...]) -> None:
    """Under a launcher every process runs this command: only training steps may have work to do (the data
    and evaluation steps run once, in `inversecoder run` without a launcher)."""
    if not in_launched_job():
        return
    pending = [
        name
        for name in selected
        if name not in (*TRAINING_STEPS, "report") and (status.get(name) == "run" or name in force)
    ]
    if pending:
        raise UserError(
            f"under accelerate launch only the training steps run, but {', '.join(pending)} must run too: "
            "run `inversecoder run CONFIG --until dataset` first (or `inversecoder run CONFIG`, which launches "
            "the training processes itself)"
        )


def _push_generator_then_dataset(config: RunConfig, token: str, selected: list[str], done: dict[str, Record]) -> None:
    """M first (when push.generator_repo_id is set), then the dataset, whose files now name M's commit and the
    code's URL (so its step record is rewritten), then (after the report) InverseCoder, whose card names both."""
    from inversecoder.hub_cards.lineage import link_generator, push_run_generator
    from inversecoder.hub_cards.push import check_license, push_run_dataset
    from inversecoder.hub_cards.reproduce import link_code

    if "dataset" in selected and config.push.dataset_repo_id and (config.layout.dataset / BUILD_INFO).is_file():
        check_license(config.layout.dataset, "dataset")  # before M is pushed: nothing is published half
    pushed = push_run_generator(config, token)
    linked = pushed is not None and link_generator(config, pushed, token)
    if "dataset" in selected and config.push.dataset_repo_id:
        linked = link_code(config) or linked  # push.code_url / code_revision set since the build
    if linked and "dataset" in done:
        record(config.layout.steps, done, "dataset", done["dataset"].fingerprint, config.layout.dataset)
    if "dataset" in selected:
        push_run_dataset(config, token)


def _check_training_launch(config: RunConfig) -> None:
    if in_launched_job():
        return
    from inversecoder.trainers.distribution import plan_for
    from inversecoder.trainers.recipe import base_model

    plan_for(config.train, *base_model(resolved(config)))


# -- commands ---------------------------------------------------------------------------------------
# Every command that writes into OUTPUT holds its lock for the whole command (see core/lock.py).
def build(config: RunConfig) -> Path:
    """Build (or refresh) the dataset; when no generator is named, step 0 makes M first (or reuses it)."""
    resolved(config)  # before the lock: a config error leaves no folder behind
    with output_lock(config.layout.root):
        run_steps(config, "generator", "dataset", force=("dataset",))
    return config.layout.dataset


def train(config: RunConfig) -> Path:
    _require_dataset(config)
    with output_lock(config.layout.root):
        run_steps(config, "train", "train", force=("train",))
        if is_main_rank():
            write_report(config)
    return config.layout.model


def evaluate(config: RunConfig) -> dict[str, Any]:
    _require_model(config)
    with output_lock(config.layout.root):
        run_steps(config, "evaluate", "evaluate", force=("evaluate",))
        write_report(config)
    return read_json(config.layout.eval / EVAL_RESULTS) or {}


def run_all(config: RunConfig, start: str | None = None, until: str | None = None, push: bool = False) -> None:
    """The whole loop; each step resumes from what the output folder already holds."""
    resolved(config)
    _selected(start, until)  # config and step names fail before the lock (which creates the folder)
    with output_lock(config.layout.root):
        token = None
        if push:
            from inversecoder.hub_cards.push import check_push_config

            token = check_push_config(config)  # repo ids and token, before any work
        run_steps(config, start, until, token=token)
    layout = config.layout
    rows = [
        ("generator", layout.generator_model, "the model M that wrote the data"),
        ("dataset", layout.dataset, f"load_dataset('{layout.dataset}')"),
        ("model", layout.model, f"card: {layout.model / 'README.md'}"),
        ("evaluation", layout.eval / EVAL_RESULTS, ""),
        ("comparison", layout.run_summary_md, "InverseCoder vs its generator"),
    ]
    logger.info(
        "\nArtifacts:\n%s",
        "\n".join(
            f"  {label:<11} {path}" + (f"   ({note})" if note else "") for label, path, note in rows if path.exists()
        ),
    )


# -- report: comparison, cards ------------------------------------------------------------------------
def _summary_intro(config: RunConfig) -> str:
    return (
        f"InverseCoder (`{config.layout.model}`) vs its generator M (`{resolved(config).generator.model}`), "
        "same harness and settings (EvalPlus, greedy pass@1, %)."
    )


def write_report(config: RunConfig) -> None:
    """Cards for InverseCoder (with the comparison) and for M, and OUTPUT/run_summary.{json,md}."""
    from inversecoder.hub_cards.model_card import write_generator_card, write_model_card

    layout = config.layout
    ours = read_json(layout.eval / EVAL_RESULTS)
    generator = read_json(layout.eval_generator / EVAL_RESULTS)
    base = read_json(layout.eval_base / EVAL_RESULTS)
    rows = comparison(ours, generator, base)
    if (layout.model / "config.json").is_file():
        write_model_card(resolved(config), rows, METHOD)
    if not config.generator.model and (layout.generator_model / "config.json").is_file():
        write_generator_card(config, generator)
    if ours is not None:
        summary = {
            "comparison": rows,
            "comparison_method": METHOD,
            "inversecoder": str(layout.model),
            "generator": resolved(config).generator.model,
            "dataset": str(layout.dataset),
            "fingerprints": fingerprints(config),
        }
        write_json(layout.run_summary_json, summary)
        write_atomic(layout.run_summary_md, summary_markdown(config.dataset.name, _summary_intro(config), rows))
