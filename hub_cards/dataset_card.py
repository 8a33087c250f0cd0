"""Dataset cards: `huggingface_hub.DatasetCard`s rendered from a build's machine-readable report.

The builders write data plus a report (`build_report.json`); these writers turn a report into the
folder's README.md (and the score histogram), on the scratch folder before it is published.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from huggingface_hub import DatasetCard, DatasetCardData

from inversecoder.core.dataset_files import SCHEMAS, hub_configs
from inversecoder.core.files import write_json
from inversecoder.core.layout import BUILD_INFO, BUILD_REPORT
from inversecoder.core.manifest import write_manifest
from inversecoder.hub_cards.card_refs import (
    describe_generator,
    describe_license,
    describe_source,
    deviations_table,
    license_metadata,
    license_record,
    license_summary,
)
from inversecoder.hub_cards.reproduce import REPRODUCE_CONFIG, write_reproduce_config

TEMPLATE = Path(__file__).parent / "templates" / "dataset_card.md"
#: The card's `load_dataset` lines: config -> what it holds (a config without rows in a build is left out).
SNIPPETS = {
    "default": "selected pairs",
    "candidates": "every candidate and its score",
    "rejected": "what was dropped, and why",
    "original": "the source pairs stage 2 trains on",
    "contamination": "benchmark matches of flagged rows",
    "preferences": "DPO pairs (TRL's prompt/chosen/rejected)",
}


def size_category(rows: int) -> str:
    """The Hub's size_categories bucket for `rows`."""
    bounds = [
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
        (10_000_000, "1M<n<10M"),
    ]
    for bound, label in bounds:
        if rows < bound:
            return label
    return "10M<n<100M"


def dataset_infos(tables: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The `dataset_info:` metadata (features, split sizes) that `push_to_hub` writes too, from each
    config's `rows` and `num_bytes`.

    Beyond documenting the schema, it matters for correctness: `datasets` keys its cache of a local
    folder by the card's metadata, not by the files' contents, so without split sizes in the card a
    rebuilt folder at a path seen before could load the previous build's rows.
    """
    from datasets import DatasetInfo, Features, SplitDict, SplitInfo

    infos = []
    for name, table in tables.items():
        splits = SplitDict()
        splits.add(SplitInfo(name="train", num_bytes=table["num_bytes"], num_examples=table["rows"]))
        info = DatasetInfo(
            features=Features.from_arrow_schema(SCHEMAS[name]), splits=splits, dataset_size=table["num_bytes"]
        )
        infos.append({"config_name": name, **info._to_yaml_dict()})
    return infos


def render_dataset_card(
    *,
    pretty_name: str,
    license: dict[str, Any],
    configs: list[dict[str, Any]],
    dataset_info: list[dict[str, Any]],
    rows: int,
    generator_model: str,
    **context: Any,
) -> DatasetCard:
    """Metadata the Hub understands (configs, license, tags, size) plus the body from the template.
    `license` is a license record (`core.licenses`)."""
    card_data = DatasetCardData(
        pretty_name=pretty_name,
        **license_metadata(license),
        language=["en"],
        task_categories=["text-generation"],
        tags=["code", "synthetic", "inverse-instruct", "inversecoder"],
        size_categories=[size_category(rows)],
        configs=configs,
        dataset_info=dataset_info,
    )
    return DatasetCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        pretty_name=pretty_name,
        license_md=describe_license(license, "dataset.license"),
        license_summary=license_summary(license),
        snippets=SNIPPETS,
        **context,
    )


def write_histogram(scores: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axis = plt.subplots(figsize=(6, 3.2), dpi=100)
    axis.hist(scores, bins=20, range=(0.0, 1.0), color="#3b7dd8", edgecolor="white")
    axis.set_xlabel("self-evaluation score P(Yes)")
    axis.set_ylabel("selected pairs")
    axis.set_title(f"Score distribution ({len(scores)} pairs)")
    figure.tight_layout()
    figure.savefig(path, metadata={"Software": None})
    plt.close(figure)


def score_summary(scores: list[float]) -> str:
    if not scores:
        return "No pairs were selected."
    ordered = sorted(scores)

    def quantile(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return (
        f"{len(scores)} pairs: min {ordered[0]:.3f}, 25% {quantile(0.25):.3f}, median {quantile(0.5):.3f}, "
        f"75% {quantile(0.75):.3f}, max {ordered[-1]:.3f}, mean {sum(scores) / len(scores):.3f}."
    )


def _scores(folder: Path, files: list[str]) -> list[float]:
    """The `score` column of the default config (one float per pair, read column-only)."""
    scores: list[float] = []
    for relative in files:
        scores += pq.read_table(folder / relative, columns=["score"]).column("score").to_pylist()
    return scores


def write_dataset_card(folder: Path, report: dict[str, Any]) -> Path:
    """README.md and the score histogram of a built dataset folder, from its build report (see
    `builders/pipeline.py`); the pipeline calls it on the scratch folder before publishing it."""
    folder = Path(folder)
    tables = report["tables"]
    scores = _scores(folder, tables["default"]["files"]) if "default" in tables else []
    write_histogram(scores, folder / report["histogram"])
    return _save_card(folder, report, scores)


def rewrite_dataset_records(folder: Path, info: dict[str, Any], report: dict[str, Any]) -> Path:
    """An updated build info and report, the card from them, and the manifest again (the data and the histogram
    stay as built): how the dataset comes to name M once M is pushed (`lineage.py`) and its code
    (`reproduce.py`)."""
    folder = Path(folder)
    write_json(folder / BUILD_INFO, info)
    write_json(folder / BUILD_REPORT, report)
    tables = report["tables"]
    card = _save_card(folder, report, _scores(folder, tables["default"]["files"]) if "default" in tables else [])
    write_manifest(folder)
    return card


def _save_card(folder: Path, report: dict[str, Any], scores: list[float]) -> Path:
    """README.md and reproduce.yaml (what the card's Reproduce block downloads), from the report."""
    context = dict(report)
    tables = context.pop("tables")
    context["license"] = license_record(context.get("license"))
    context["code"] = context.get("code") or {}
    card = render_dataset_card(
        reproduce={"file": REPRODUCE_CONFIG, "local": write_reproduce_config(folder, report)},
        configs=hub_configs({name: table["files"] for name, table in tables.items()}),
        dataset_info=dataset_infos(tables),
        tables={name: {"rows": table["rows"], "columns": table["columns"]} for name, table in tables.items()},
        score_summary=score_summary(scores),
        generator_md=describe_generator(report["generator"]),
        source_md=describe_source(report["source"]),
        fidelity_md=fidelity_markdown(report),
        **context,
    )
    card.save(folder / "README.md")
    return folder / "README.md"


def write_original_card(folder: Path, report: dict[str, Any]) -> Path:
    """The card of step 0's data (the corpus's usable, clean pairs the generator M is trained on)."""
    folder = Path(folder)
    tables = report["tables"]
    license = license_record(report.get("license"))
    card = DatasetCard(
        "---\n"
        + DatasetCardData(
            **license_metadata(license),
            configs=hub_configs({n: t["files"] for n, t in tables.items()}),
            dataset_info=dataset_infos(tables),
        ).to_yaml()
        + "\n---\n\n"
        "# Training data of the generator M\n\n"
        f"{report['rows']} pairs of {describe_source(report.get('source_info') or report['source'])} "
        f"that are usable and {_original_cleaning(report)}: "
        "the base model is fine-tuned on them to make M.\n\n"
        f"## License\n\n{describe_license(license, None, kind='corpus')}\n"
    )
    card.save(folder / "README.md")
    return folder / "README.md"


def _original_cleaning(report: dict[str, Any]) -> str:
    """How step 0's data was decontaminated, in words."""
    screening = report.get("screening", {})
    if not screening.get("enabled", True):
        return "not decontaminated (decontaminate.enabled is false)"
    if not screening.get("original", True):
        return "not decontaminated (decontaminate.original is false: the corpus as it is, as in the paper)"
    if screening.get("action") == "report":
        return f"not decontaminated ({report['flagged']} contaminated rows kept: decontaminate.action is report)"
    if screening.get("original_action") == "report":
        return (
            f"not decontaminated ({report['flagged']} contaminated rows kept: decontaminate.original_action is "
            "report, the corpus as it is, as in the paper)"
        )
    cascade = screening.get("cascade") or {}
    judge = "" if cascade.get("judge") else f" (no judge: {cascade.get('judge_off')})" if cascade.get("enabled") else ""
    return f"clean ({report['decontaminated']} removed by decontamination{judge})"


# -- fidelity to the paper (its own block: the rest of the card does not depend on it) --------------------------


def fidelity_markdown(report: dict[str, Any]) -> str:
    """The card's "Fidelity to the paper" section: the build's `fidelity` and, for each way the dataset step can
    differ from the paper (`core/fidelity.py`'s table, as the build report recorded it), what the paper did, what
    this build did and why. Empty for a report written before the table existed."""
    rows = report.get("deviations")
    if not rows:
        return ""
    lines = [
        f"Built with `fidelity: {report.get('fidelity', 'improved')}` (`paper`: the method as the paper and its "
        "code ran it; `improved`: this project's defaults). How this dataset's making differs from the paper's "
        "(how models are trained on it and evaluated, batch packing and HumanEval/32's checker, is in "
        'inversecoder\'s README, "Fidelity to the paper"):',
        "",
    ]
    return "\n".join(lines) + "\n" + deviations_table(rows, "this build")
