"""The steps behind the commands: build the dataset, train, evaluate, write the model card.

Each step reads what the previous one left in the output folder (dataset/, model/, eval/), so any
step can be rerun on its own; `run_all` chains them and prints where every artifact is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from inversecoder.config import RunConfig, save_config
from inversecoder.errors import UserError


def dataset_dir(config: RunConfig) -> Path:
    return config.output / "dataset"


def model_dir(config: RunConfig) -> Path:
    return config.output / "model"


def eval_dir(config: RunConfig) -> Path:
    return config.output / "eval"


def build(config: RunConfig) -> Path:
    from inversecoder.builders.pipeline import build_dataset

    save_config(config, config.output / "run_config.yaml")
    return build_dataset(config).dataset_dir


def train(config: RunConfig) -> Path:
    from inversecoder.trainers.recipe import train_model

    data = dataset_dir(config)
    if not (data / "README.md").is_file():
        raise UserError(f"no dataset at {data}: run `inversecoder build-dataset` (or `run`) with this config first")
    save_config(config, config.output / "run_config.yaml")
    path = train_model(config, data, config.output / "train", model_dir(config))
    write_model_card(config)
    return path


def evaluate(config: RunConfig) -> dict[str, Any]:
    from inversecoder.builders.pipeline import cache_dir, open_model
    from inversecoder.eval.harness import evaluate_model

    target = config.evaluate.model or str(model_dir(config))
    if config.evaluate.model is None and not (model_dir(config) / "config.json").is_file():
        raise UserError(f"no trained model at {model_dir(config)}: run `inversecoder train` first or set evaluate.model")
    model = open_model(config, model=target)
    results = evaluate_model(model, config.evaluate, config.benchmarks_dir, cache_dir(config) / "benchmarks", eval_dir(config))
    if config.evaluate.model is None:
        write_model_card(config)
    return results


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def write_model_card(config: RunConfig) -> Path:
    """(Re)write `model/README.md` from the training record, the dataset's build info and eval results."""
    from inversecoder.builders.pipeline import package_versions
    from inversecoder.builders.prompts import magicoder_prompt
    from inversecoder.hub_cards.model_card import render_model_card

    folder = model_dir(config)
    build_info = _read_json(dataset_dir(config) / "build_info.json") or {}
    training = _read_json(folder / "training_config.json") or {}
    results = _read_json(eval_dir(config) / "eval_results.json")
    base_model = config.train.base_model or config.generator.model or "unknown"
    stages = [
        {"name": s.get("stage"), "rows": s.get("rows"), "epochs": s.get("epochs"), "skipped": s.get("skipped", False)}
        for s in training.get("stages", [])
    ]
    card = render_model_card(
        model_name=f"{config.dataset.name}-model",
        base_model=base_model,
        base_revision=config.train.base_revision,
        license=config.dataset.license,
        datasets=[],
        eval_results=results,
        repo_id=f"<org>/{config.dataset.name}-model",
        dataset={"path": str(dataset_dir(config)), "version": build_info.get("version"), "fingerprint": build_info.get("fingerprint")},
        generator=build_info.get("generator", {"model": config.generator.model, "revision": config.generator.revision}),
        source=config.source.path,
        chat_format=magicoder_prompt("{instruction}", "{response}<eos>"),
        train=config.train,
        stages=stages,
        seed=config.seed,
        versions=package_versions(),
    )
    card.save(folder / "README.md")
    return folder / "README.md"


def run_all(config: RunConfig) -> None:
    """The whole loop; each step resumes from what is already in the output folder."""
    build(config)
    if config.train.enabled:
        train(config)
    if config.evaluate.enabled:
        evaluate(config)
    print("\nArtifacts:")
    print(f"  dataset     {dataset_dir(config)}   (load_dataset('{dataset_dir(config)}'))")
    if config.train.enabled:
        print(f"  model       {model_dir(config)}   (card: {model_dir(config) / 'README.md'})")
    if config.evaluate.enabled:
        print(f"  evaluation  {eval_dir(config) / 'eval_results.json'}")
