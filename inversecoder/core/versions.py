"""Installed package versions: recorded in cards, build records and evaluation results."""

from __future__ import annotations

import importlib.metadata

#: The packages whose versions decide a build's or a model's numbers.
PACKAGES = ("inversecoder", "torch", "transformers", "datasets", "huggingface_hub", "trl", "evalplus")


def version(name: str) -> str | None:
    """The installed version of `name`, or None when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """name -> version ("not installed" when absent) for `names`."""
    return {name: version(name) or "not installed" for name in names}
