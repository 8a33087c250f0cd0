"""The model card: `huggingface_hub.ModelCard` whose `model-index` comes from `eval_results.json`.

Scores are stored as percentages (as the paper reports them); a run on a subset of tasks says so in
the metric's dataset name, so a quick run can never pass for a full-benchmark score.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from inversecoder.core.config import RunConfig
from inversecoder.core.fidelity import deviation_rows
from inversecoder.core.files import read_json
from inversecoder.core.layout import BUILD_INFO, BUILD_REPORT, EVAL_RESULTS, TRAINING_CONFIG
from inversecoder.core.licenses import card_license, resolved_license
from inversecoder.core.prompts import magicoder_prompt
from inversecoder.core.versions import code_reference, package_versions
from inversecoder.hub_cards.card_refs import (
    describe_generator,
    describe_license,
    describe_source,
    deviations_table,
    license_metadata,
    license_record,
    license_summary,
)

TEMPLATE = Path(__file__).parent / "templates" / "model_card.md"

# benchmark -> (base-test dataset, plus-test dataset): (type on the Hub, display name)
_DATASETS = {
    "humaneval": (("openai/openai_humaneval", "HumanEval"), ("evalplus/humanevalplus", "HumanEval+")),
    "mbpp": (("google-research-datasets/mbpp", "MBPP"), ("evalplus/mbppplus", "MBPP+")),
}


def eval_results_from(results: dict[str, Any]) -> list[EvalResult]:
    """`EvalResult`s (pass@1, base and plus) for every benchmark in an `eval_results.json`."""
    entries = []
    for name, bench in results.get("benchmarks", {}).items():
        if bench.get("limit"):
            suffix = f" (first {bench['limit']} tasks)"
        elif bench.get("subset"):  # e.g. samples scored from a file that covers only some tasks
            suffix = f" ({bench['n_tasks']}-task subset)"
        else:
            suffix = ""
        for (dataset_type, dataset_name), key in zip(_DATASETS[name], ("base", "plus"), strict=True):
            entries.append(
                EvalResult(
                    task_type="text-generation",
                    dataset_type=dataset_type,
                    dataset_name=dataset_name + suffix,
                    dataset_revision=bench.get("version"),
                    metric_type="pass@1",
                    metric_name="pass@1",
                    metric_value=round(100 * bench["pass@1"][key], 1),
                    verified=False,
                )
            )
    return entries


def render_model_card(
    *,
    model_name: str,
    base_model: str,
    license: dict[str, Any] | str,
    datasets: list[str],
    eval_results: dict[str, Any] | None,
    dataset_hub: dict[str, Any] | None = None,
    model_revision: str | None = None,
    **context: Any,
) -> ModelCard:
    """The card of a trained model.

    `license` is a license record (`core.licenses`: the base model's, or `push.model_license`) or a bare id.
    `dataset_hub` is the record a dataset push leaves (`inversecoder.hub_cards.push.read_hub_record(
    OUTPUT/dataset)`: repo_id, commit, commit_url, tag): when given, the card's `datasets` metadata names
    the repo and its body pins the exact commit the model was trained on. Without it the data is
    described as an unpublished local build. `model_revision`: the tag this model is published under, which
    the usage snippet pins.
    """
    license = license_record(license, "push.model_license")
    context["license_md"] = describe_license(license, "push.model_license", kind="model")
    context["license_summary"] = license_summary(license)
    context["data_license"] = (
        license_summary(license_record(context["data_license"])) if context.get("data_license") else None
    )
    if dataset_hub:
        datasets = [dataset_hub["repo_id"], *(name for name in datasets if name != dataset_hub["repo_id"])]
    context["source_md"] = describe_source(context.get("source"))
    context["generator_md"] = describe_generator(context.get("generator") or {})
    context.setdefault("generator_lineage", None)
    rows = []
    for bench in (eval_results or {}).get("benchmarks", {}).values():
        rows.append(
            {
                "dataset": bench["dataset"],
                "version": bench.get("version", ""),
                "hash": bench.get("hash", ""),
                "n_tasks": bench["n_tasks"],
                "limit": bench.get("limit") or (bench["n_tasks"] if bench.get("subset") else None),
                "base": 100 * bench["pass@1"]["base"],
                "plus": 100 * bench["pass@1"]["plus"],
            }
        )
    settings = (eval_results or {}).get("settings", {})
    card_data = ModelCardData(
        model_name=model_name,
        base_model=base_model if "/" in base_model and not Path(base_model).exists() else None,
        datasets=datasets or None,
        **license_metadata(license),
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=["code", "inversecoder", "inverse-instruct", "trl", "sft"],
        eval_results=eval_results_from(eval_results or {}) or None,
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        model_name=model_name,
        base_model=base_model,
        results=rows,
        limited=any(row["limit"] for row in rows),
        eval_settings={  # samples scored from a file (`evaluate --samples`) record no decoding and no backend
            "max_new_tokens": (settings.get("decoding") or {}).get("max_new_tokens"),
            "backend": (settings.get("backend") or {}).get("backend"),
            "revision": (settings.get("backend") or {}).get("revision"),
            "samples_sha256": (settings.get("samples") or {}).get("sha256"),
        },
        prompts=settings.get("prompt_templates", {}),
        dataset_hub=dataset_hub,
        model_revision=model_revision,
        **context,
    )


def _card_context(config: RunConfig, code: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "chat_format": magicoder_prompt("{instruction}", "{response}<eos>"),
        "seed": config.seed,
        "versions": package_versions(),
        "license": model_license(config),
        "fidelity_md": fidelity_markdown(
            config, code or code_reference(config.push.code_url, config.push.code_revision)
        ),
    }


#: The README section that lists every deviation (its anchor on GitHub-like code hosts).
README_FIDELITY = "README.md#fidelity-to-the-paper"


def readme_link(code: dict[str, Any]) -> str:
    """inversecoder's README, "Fidelity to the paper", at the commit of the code (`core.versions.code_reference`)
    when its URL is a web address; else named in words."""
    text = 'inversecoder\'s README, "Fidelity to the paper"'
    url, commit = code.get("url") or "", code.get("commit")
    if url.startswith(("https://", "http://")) and commit:
        return f"[{text}]({url.removesuffix('.git')}/blob/{commit}/{README_FIDELITY})"
    return text


def fidelity_markdown(config: RunConfig, code: dict[str, Any]) -> str:
    """The model card's "Fidelity to the paper" section: the deviations from the paper that concern how the model
    was trained and evaluated (its pass@1 depends on them), as `config` ran them (`core/fidelity.py`'s table,
    rendered as the dataset card renders the dataset's)."""
    return (
        f"Trained and evaluated with `fidelity: {config.fidelity}` (`paper`: the method as the paper and its code ran "
        "it; `improved`: this project's defaults). How this model's training and evaluation differ from the paper's "
        '(how its training data was made: the dataset card\'s "Fidelity to the paper"; every deviation, with both '
        f"settings: {readme_link(code)}):\n\n"
    ) + deviations_table(deviation_rows(config, ("training", "evaluation")), "this model")


def model_license(config: RunConfig) -> dict[str, Any]:
    """The license of the models this run trains (InverseCoder and M, both fine-tuned from the base model):
    `push.model_license` when set, else what the base model's card declares."""
    base = config.train.base_model or config.generator.model
    revision = config.train.base_revision if config.train.base_model else config.generator.revision
    push = config.push
    inputs = {"base model": card_license(base, "model", revision)}
    return resolved_license(
        "push.model_license", push.model_license, push.model_license_name, push.model_license_link, inputs
    )


def _stages(training: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"name": s.get("stage"), "rows": s.get("rows"), "epochs": s.get("epochs"), "skipped": s.get("skipped", False)}
        for s in training.get("stages", [])
    ]


def write_model_card(
    config: RunConfig, comparison: list[dict[str, Any]] | None = None, comparison_method: dict[str, str] | None = None
) -> Path:
    """(Re)write InverseCoder's `model/README.md` from its training record, the dataset's build info and push
    record, and its evaluation results. `config` names the generator M (resolved by the workflow); `comparison`
    is the workflow's table against M (with each delta's paired statistics), `comparison_method` how they were
    computed."""
    from inversecoder.hub_cards.push import read_hub_record

    layout = config.layout
    build_info = read_json(layout.dataset / BUILD_INFO) or {}
    source = build_info.get("source") or {"path": config.source.path}
    trained_here = config.generator.model == str(layout.generator_model)  # M is step 0's
    training = read_json(layout.model / TRAINING_CONFIG) or {}
    card = render_model_card(
        model_name=f"{config.dataset.name}-model",
        base_model=config.train.base_model or config.generator.model or "unknown",
        base_revision=_base_revision(training, config),
        datasets=_hub_datasets(source),
        eval_results=read_json(layout.eval / EVAL_RESULTS),
        dataset_hub=read_hub_record(layout.dataset),
        repo_id=config.push.model_repo_id or f"<org>/{config.dataset.name}-model",
        dataset={
            "path": str(layout.dataset),
            "version": build_info.get("version"),
            "fingerprint": build_info.get("fingerprint"),
        },
        generator=build_info.get("generator", {"model": config.generator.model, "revision": config.generator.revision}),
        generator_lineage=_generator_lineage(config) if trained_here else None,
        source=source,
        data_license=build_info.get("license"),
        model_revision=config.push.model_tag,
        train=config.train,
        stages=_stages(training),
        comparison=comparison or [],
        comparison_method=comparison_method or {},
        **_card_context(config, build_info.get("code")),
    )
    card.save(layout.model / "README.md")
    return layout.model / "README.md"


def write_generator_card(config: RunConfig, results: dict[str, Any] | None) -> Path:
    """The card of M (trained by step 0): its base model, its data, its scores, the dataset it wrote."""
    layout = config.layout
    source = _generator_source(config)
    training = read_json(layout.generator_model / TRAINING_CONFIG) or {}
    card = render_model_card(
        model_name=f"{config.dataset.name}-generator",
        base_model=config.train.base_model or "unknown",
        base_revision=_base_revision(training, config),
        datasets=_hub_datasets(source),
        eval_results=results,
        repo_id=config.push.generator_repo_id or f"<org>/{config.dataset.name}-generator",
        dataset={"path": str(layout.generator_data), "version": None, "fingerprint": None},
        generator={"model": "(this model)", "revision": "-"},
        role="generator",
        related={
            "Dataset it generated": config.push.dataset_repo_id or str(layout.dataset),
            "InverseCoder trained on that dataset": config.push.model_repo_id or str(layout.model),
        },
        source=source,
        data_license=(read_json(layout.generator_data / BUILD_REPORT) or {}).get("license"),
        train=config.train.model_copy(update={"mode": "original"}, deep=True),
        stages=_stages(training),
        comparison=[],
        comparison_method={},
        **_card_context(config),
    )
    card.save(layout.generator_model / "README.md")
    return layout.generator_model / "README.md"


def _base_revision(training: dict[str, Any], config: RunConfig) -> str | None:
    """The base model's revision the card names: the commit sha training resolved it to (recorded in
    `training_config.json`, also when `train.base_revision` was left unset), else the configured one."""
    return training.get("base_commit") or training.get("base_revision") or config.train.base_revision


def _hub_datasets(source: dict[str, Any]) -> list[str]:
    """The card metadata's `datasets` entry for the source corpus: its repo id when it is a Hub dataset."""
    return [source["path"]] if source.get("kind") == "hub" else []


def _generator_source(config: RunConfig) -> dict[str, Any]:
    """What M was trained on: the source as step 0's data recorded it (a Hub corpus with its commit sha)."""
    info = read_json(config.layout.generator_data / BUILD_INFO) or {}
    return info.get("source_info") or {"path": config.source.path}


def _generator_lineage(config: RunConfig) -> str:
    """Where the M this run trained comes from: its base model (at the revision training used) and data."""
    training = read_json(config.layout.generator_model / TRAINING_CONFIG) or {}
    base = training.get("base_model") or config.train.base_model
    revision = _base_revision(training, config)
    return (
        f"`{base}`" + (f" @ `{revision}`" if revision else "") + " fine-tuned (step 0 of this run) on the usable, "
        f"decontaminated pairs of {describe_source(_generator_source(config))}"
    )
