"""The README and the shipped recipes stay true to the code."""

from pathlib import Path

import pytest

from inversecoder.core.config import describe_fields, load_config

REPO = Path(__file__).resolve().parents[1]


def test_readme_starts_with_the_two_commands_and_documents_every_field():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    head = readme[:600]
    assert "make demo" in head and "make test" in head
    missing = [name for name, _default, _doc in describe_fields() if f"| `{name}` |" not in readme]
    assert missing == [], f"README's configuration reference lacks {missing}"


@pytest.mark.parametrize("recipe", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_loads(recipe):
    config = load_config(recipe)
    assert (config.generator.model or config.train.base_model) and config.output_dir.startswith("outputs/")
