"""`inversecoder make-tiny-model DIR`: a small Llama-architecture model built offline, deterministically.

The tokenizer is a byte-level BPE trained on text shipped with this package (`data/tiny_model_corpus.jsonl.gz`:
Python sources frozen at one commit, plus the paper's prompts), with "Yes"/"No" guaranteed to be single tokens so that
self-evaluation scores are meaningful; the Magicoder format is its chat template. Weights are random (seeded): the
tiny model exercises every code path at laptop speed, it does not write good instructions.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from inversecoder.core import prompts
from inversecoder.core.data import TINY_MODEL_CORPUS, require

EOS = "<|endoftext|>"
PAD = "<|pad|>"


def _training_corpus() -> list[str]:
    """Deterministic text: a fixed corpus of Python sources shipped in data/ (the project's own sources at
    f1ce952, frozen so that the tiny model, and so every cache key made with it, never changes with
    the code), the prompts, and the Yes/No answers repeated."""
    texts = [
        prompts.SYSTEM,
        prompts.summarize_prompt("```python\nprint(1)\n```", "Write a python"),
        prompts.score_prompt("Write a function.", "```python\nprint(1)\n```"),
    ]
    with gzip.open(require(TINY_MODEL_CORPUS), "rt", encoding="utf-8") as corpus:
        texts.extend(json.loads(line)["text"] for line in corpus)
    texts.extend(["Yes\nNo\n Yes\n No\nYes, No. Yes! No.\n```python\n```\n"] * 200)
    return texts


def build_tokenizer(vocab_size: int = 2048):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_training_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS, pad_token=PAD, bos_token=None)
    fast.chat_template = prompts.CHAT_TEMPLATE
    fast.model_max_length = 4096
    return fast


def make_tiny_model(
    output_dir: str | Path,
    hidden_size: int = 128,
    num_layers: int = 2,
    vocab_size: int = 2048,
    max_position_embeddings: int = 4096,
    seed: int = 0,
) -> Path:
    """Build and save (`save_pretrained`) the tiny model, tokenizer and generation config."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from inversecoder.core.backends.transformers_backend import resolve_answer_token_ids

    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(vocab_size)
    for word in ("Yes", "No"):
        resolve_answer_token_ids(tokenizer, word)  # raises if the answer is not one token
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    return output
