"""`inversecoder make-tiny-model`: offline, deterministic, loadable, with meaningful Yes/No tokens."""

import hashlib
import subprocess
import sys

from transformers import AutoModelForCausalLM, AutoTokenizer

from inversecoder.core import prompts


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_builds_deterministically_from_the_command_line(tiny_model_dir, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "inversecoder.cli", "make-tiny-model", str(tmp_path / "m")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert digest(tmp_path / "m" / name) == digest(tiny_model_dir / name), name


def test_loads_with_auto_classes_and_keeps_its_token_ids(tiny_model_dir):
    from inversecoder.tiny_model import build_tokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    text = prompts.score_prompt("Write a python function.", "```python\nprint(1)\n```")
    assert tokenizer.encode(text) == build_tokenizer().encode(text)  # reloading did not rebuild the tokenizer
    assert model.config.model_type == "llama" and model.config.eos_token_id == tokenizer.eos_token_id
    for word in ("Yes", " Yes", "No", " No"):
        assert len(tokenizer.encode(word, add_special_tokens=False)) == 1, word
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered == prompts.magicoder_prompt("Hi")
