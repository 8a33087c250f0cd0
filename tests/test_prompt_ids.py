"""Prompt token ids as the served backends send them: exactly `tokenizer(prompts)["input_ids"]`, read from the
Rust tokenizer in chunks when it agrees, from the Python one when it does not."""

from __future__ import annotations

import json
from array import array

import pytest
from conftest import SAMPLE
from transformers import AutoTokenizer

from inversecoder.core import prompts as templates
from inversecoder.core.backends import prompt_ids
from inversecoder.core.backends.prompt_ids import prompt_token_ids


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _prompts() -> list[str]:
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines()][:12]
    summarize = [templates.summarize_prompt(row["response"], "Build a python") for row in rows for _ in range(3)]
    score = [templates.score_prompt(row["instruction"], row["response"]) for row in rows]
    return [*summarize, *score, "", "Answer: ", "naïve café – 東京 🙂"]


def test_ids_equal_the_tokenizers_in_chunks_with_duplicates_shared(tokenizer, monkeypatch):
    monkeypatch.setattr(prompt_ids, "CHUNK", 5)  # several chunks, duplicates across their edges
    prompts = _prompts()
    expected = [list(ids) for ids in tokenizer(prompts, add_special_tokens=True)["input_ids"]]
    assert prompt_ids._rust(tokenizer) is not None  # the tiny model's fast tokenizer agrees on the probes
    found = prompt_token_ids(tokenizer, prompts)
    assert [list(ids) for ids in found] == expected
    assert all(isinstance(ids, array) and ids.itemsize == 4 for ids in found)
    assert found[0] is found[1] is found[2]  # the K samples of one snippet: tokenized once
    assert prompt_token_ids(tokenizer, []) == []


class PythonSideRule:
    """A fast tokenizer whose Python call adds a token its Rust tokenizer does not (as some add a BOS)."""

    is_fast = True

    def __init__(self, inner):
        self.inner = inner
        self.backend_tokenizer = inner.backend_tokenizer

    def __call__(self, texts, add_special_tokens=True):
        ids = self.inner(texts, add_special_tokens=add_special_tokens)["input_ids"]
        return {"input_ids": [[7, *one] for one in ids]}


def test_a_tokenizer_whose_rust_ids_differ_is_called_as_it_is(tokenizer):
    odd = PythonSideRule(tokenizer)
    assert prompt_ids._rust(odd) is None
    prompts = _prompts()
    assert [list(ids) for ids in prompt_token_ids(odd, prompts)] == odd(prompts)["input_ids"]


@pytest.mark.parametrize(
    "other_call",
    [
        {"truncation": True, "max_length": 8},
        {"split_special_tokens": True},
        {"padding": "max_length", "max_length": 64},
    ],
)
def test_a_call_with_other_settings_does_not_leak_into_the_ids(tiny_model_dir, other_call):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)  # its own: the call changes the Rust tokenizer's state
    prompts = [*_prompts(), "<|endoftext|> inside a prompt"]
    expected = [list(ids) for ids in tokenizer(prompts, add_special_tokens=True)["input_ids"]]
    assert prompt_ids._rust(tokenizer) is not None
    tokenizer(["x <|endoftext|> y " * 20], **other_call)
    assert [list(ids) for ids in prompt_token_ids(tokenizer, prompts)] == expected
