"""inversecoder: build Inverse-Instruct datasets and InverseCoder models, Hub-native.

Subpackages: `inversecoder.builders` (data), `inversecoder.trainers` (TRL SFT), `inversecoder.eval`
(EvalPlus), `inversecoder.hub_cards` (cards). Heavy libraries (torch, transformers, trl) are imported
lazily so that `inversecoder --help` and configuration errors answer at once.
"""

__version__ = "0.1.0"
