"""The model card: `huggingface_hub.ModelCard` whose `model-index` comes from `eval_results.json`.

Scores are stored as percentages (as the paper reports them); a run on a subset of tasks says so in
the metric's dataset name, so a quick run can never pass for a full-benchmark score.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

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
    license: str,
    datasets: list[str],
    eval_results: dict[str, Any] | None,
    dataset_hub: dict[str, Any] | None = None,
    **context: Any,
) -> ModelCard:
    """The card of a trained model.

    `dataset_hub` is the record a dataset push leaves (`inversecoder.hub_cards.push.read_hub_record(
    OUTPUT/dataset)`: repo_id, commit, commit_url, tag): when given, the card's `datasets` metadata names
    the repo and its body pins the exact commit the model was trained on. Without it the data is
    described as an unpublished local build.
    """
    if dataset_hub:
        datasets = [dataset_hub["repo_id"], *(name for name in datasets if name != dataset_hub["repo_id"])]
    rows = []
    for bench in (eval_results or {}).get("benchmarks", {}).values():
        rows.append({
            "dataset": bench["dataset"], "version": bench.get("version", ""), "hash": bench.get("hash", ""),
            "n_tasks": bench["n_tasks"], "limit": bench.get("limit") or (bench["n_tasks"] if bench.get("subset") else None),
            "base": 100 * bench["pass@1"]["base"], "plus": 100 * bench["pass@1"]["plus"],
        })
    settings = (eval_results or {}).get("settings", {})
    card_data = ModelCardData(
        model_name=model_name,
        base_model=base_model if "/" in base_model and not Path(base_model).exists() else None,
        datasets=datasets or None,
        license=license,
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
        eval_settings={
            "max_new_tokens": settings.get("decoding", {}).get("max_new_tokens"),
            "backend": settings.get("backend", {}).get("backend"),
            "revision": settings.get("backend", {}).get("revision"),
        },
        prompts=settings.get("prompt_templates", {}),
        dataset_hub=dataset_hub,
        **context,
    )
