"""The dataset card: `huggingface_hub.DatasetCard` rendered from `templates/dataset_card.md`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from huggingface_hub import DatasetCard, DatasetCardData

TEMPLATE = Path(__file__).parent / "templates" / "dataset_card.md"


def size_category(rows: int) -> str:
    """The Hub's size_categories bucket for `rows`."""
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")]
    for bound, label in bounds:
        if rows < bound:
            return label
    return "10M<n<100M"


def render_dataset_card(
    *, pretty_name: str, license: str, configs: list[dict[str, Any]], dataset_info: list[dict[str, Any]], rows: int,
    generator_model: str, **context: Any
) -> DatasetCard:
    """Metadata the Hub understands (configs, license, tags, size) plus the body from the template."""
    card_data = DatasetCardData(
        pretty_name=pretty_name,
        license=license,
        language=["en"],
        task_categories=["text-generation"],
        tags=["code", "synthetic", "inverse-instruct", "inversecoder"],
        size_categories=[size_category(rows)],
        configs=configs,
        dataset_info=dataset_info,
    )
    return DatasetCard.from_template(card_data, template_path=str(TEMPLATE), pretty_name=pretty_name, **context)
