"""Token ids of a batch of prompts, as the served backends send and count them, at a client's speed.

At the paper's scale the client tokenizes ~2.2M prompts; profiled against a simulated fleet
(benchmarks/rehearsal.py) tokenizing was ~45% of the client's CPU. Two things made it so:
- the K samples of one snippet differ only by their seeded verb prefix (7 of them: ~5.4 distinct prompts
  in 10), and each was tokenized again: identical prompts of a batch are now tokenized once (the ids are
  shared; nothing downstream mutates them);
- transformers turns every Rust `Encoding` into a Python `BatchEncoding` (offsets, masks, ~300 us for a
  2 KB prompt) only for us to read `input_ids`: when the model's tokenizer is a fast one whose Rust
  `encode_batch` gives the very ids `tokenizer(...)` gives (checked once per tokenizer on probe texts,
  else the slow path is kept), the ids are read from Rust directly. transformers also resets the Rust
  tokenizer's truncation and padding and syncs `split_special_tokens` on every call: the Rust path is
  taken only while that state is still the default one (`_in_call_state`), else the Python call is made.
Prompts are tokenized CHUNK at a time: a Rust `Encoding` also holds each token's text, offsets and
masks (~80 bytes a token), and one call on a batch of 16K prompts held ~1.3 GB of them at once (the
rehearsal's peak memory grew with the batch, not the corpus). The ids are kept as 4-byte `array('i')`s,
not lists of Python ints (~36 bytes a token): a batch of 16K prompts of ~750 tokens held ~430 MB as
lists; request bodies turn them into lists one request at a time.
"""

from __future__ import annotations

import contextlib
import weakref
from array import array
from collections.abc import Sequence
from typing import Any

#: Texts on which the Rust path must give what `tokenizer(text, add_special_tokens=True)` gives: code,
#: whitespace runs, a trailing space, non-ASCII, special-token-like text.
PROBES = (
    "def add(a, b):\n    return a + b\n",
    "Is the instruction right? Answer: Yes",
    "Answer:Yes ",
    "  \t\n\n  indented\r\n",
    "naïve café – 東京 🙂",
    "<|endoftext|> </s> <s> [INST]",
)
#: Prompts tokenized per call of the Rust tokenizer: its transient memory stays ~20 MB.
CHUNK = 256
_agrees: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def _slow(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]]


def _in_call_state(tokenizer: Any, backend: Any) -> bool:
    """Whether the Rust tokenizer is set as `tokenizer(texts)` would set it: no truncation or padding, special
    tokens split as the Python side says (a call with other settings leaves them changed)."""
    split = bool(getattr(tokenizer, "split_special_tokens", False))
    return (
        backend.truncation is None
        and backend.padding is None
        and bool(getattr(backend, "encode_special_tokens", split)) == split
    )


def _rust(tokenizer: Any) -> Any:
    """The Rust tokenizer to read ids from, or None when the Python one must be used."""
    backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    if backend is None:
        return None
    try:
        agrees = _agrees[tokenizer]
    except (KeyError, TypeError):
        texts = list(PROBES)
        expected = _slow(tokenizer, texts)  # first: it puts the Rust tokenizer in its call state
        agrees = [e.ids for e in backend.encode_batch(texts, add_special_tokens=True)] == expected
        with contextlib.suppress(TypeError):  # not weakly referenceable: checked again next time
            _agrees[tokenizer] = agrees
    return backend if agrees and _in_call_state(tokenizer, backend) else None


def prompt_token_ids(tokenizer: Any, prompts: Sequence[str]) -> list[array]:
    """The ids of each prompt with the tokenizer's special tokens (as `tokenizer(prompts)` gives them);
    identical prompts share one array."""
    if not prompts:
        return []
    unique = list(dict.fromkeys(prompts))
    backend = _rust(tokenizer)
    encoded: list[array] = []
    for start in range(0, len(unique), CHUNK):
        chunk = unique[start : start + CHUNK]
        if backend is not None:
            encoded += [array("i", e.ids) for e in backend.encode_batch(chunk, add_special_tokens=True)]
        else:
            encoded += [array("i", ids) for ids in _slow(tokenizer, chunk)]
    if len(unique) == len(prompts):
        return encoded
    by_text = dict(zip(unique, encoded, strict=True))
    return [by_text[p] for p in prompts]
