"""Secrets never reach a saved or published file: fields named like a credential are redacted.

A config may carry a credential (`train.sft_args.hub_token: hf_...`, an `api_key` in some nested
mapping). Fingerprints hash the config as it is (a hash reveals nothing), but everything that is
written (run_config.yaml, the dataset's build_config.yaml, training_config.json, the cards) goes
through `redact` first.

A name is a secret's when one of its words (split at `_`, `-`, `.`, spaces and camelCase) is token,
secret, password, passwd, key, apikey, credential(s) or auth: `hub_token`, `api_key`, `push_to_hub_token`,
`HF_TOKEN`. Whole words only, so `max_new_tokens`, `top_n_tokens`, `batch_tokens` or `keys` are not; nor
are the special-token settings (`eos_token`, `pad_token`, ...), which name a vocabulary entry.
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "<redacted>"
SECRET_WORDS = frozenset(
    {"token", "secret", "secrets", "password", "passwd", "key", "apikey", "credential", "credentials", "auth"}
)
SPECIAL_TOKENS = frozenset({"bos", "eos", "pad", "unk", "sep", "cls", "mask"})
"""`<word>_token` names a special token of the vocabulary (TRL's `eos_token`, `pad_token`), not a credential."""

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SEPARATORS = re.compile(r"[^a-z0-9]+")


def name_words(name: str) -> list[str]:
    """`pushToHub_token` -> ['push', 'to', 'hub', 'token']."""
    return [word for word in _SEPARATORS.split(_CAMEL.sub("_", str(name)).lower()) if word]


def is_secret_name(name: Any) -> bool:
    """Whether a field called `name` holds a credential (see the module docstring)."""
    words = name_words(str(name))
    if not SECRET_WORDS.intersection(words):
        return False
    return not (len(words) == 2 and words[1] == "token" and words[0] in SPECIAL_TOKENS)


def redact(data: Any) -> Any:
    """A copy of `data` (mappings, lists, scalars) with the value of every secret-named field that is set
    replaced by `REDACTED`, at any depth."""
    if isinstance(data, dict):
        return {
            key: REDACTED if is_secret_name(key) and value not in (None, "") else redact(value)
            for key, value in data.items()
        }
    if isinstance(data, (list, tuple)):
        return [redact(value) for value in data]
    return data
