"""Step 5: fine-tune the base model with TRL's SFTTrainer (the paper's two-stage recipe).

Import-light on purpose: `inversecoder --help` and the data steps must not pay for importing torch,
transformers and trl, so the public names are resolved from `recipe` on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["InverseCoderSFTConfig", "load_pairs", "sft_config_for", "train_model"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from inversecoder.trainers import recipe

        return getattr(recipe, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
