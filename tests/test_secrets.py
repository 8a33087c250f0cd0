"""A token given in the config (`train.sft_args.hub_token`) is in no file of the output folder: not the
saved configs, not the dataset's build_config.yaml (which `push dataset` uploads), not the training
records, not the `training_args.bin` the Trainer saves with torch.save."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import SAMPLE

from inversecoder.core.config import DATASET_SECTIONS, RunConfig, config_yaml, load_config
from inversecoder.core.secrets import REDACTED, is_secret_name, redact

CANARY = "hf_CANARYqv7Zt3xNw0secretDoNotPublish"


@pytest.mark.parametrize(
    "name", ["hub_token", "api_key", "push_to_hub_token", "HF_TOKEN", "token", "password", "clientSecret", "passwd"]
)
def test_secret_names(name):
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "max_new_tokens",
        "top_n_tokens",
        "batch_tokens",
        "semantic_max_tokens",
        "eos_token",
        "pad_token",
        "keys",
        "monkey",
    ],
)
def test_names_that_are_not_secrets(name):
    assert not is_secret_name(name)


def test_saved_configs_redact_secrets_but_fingerprints_of_other_configs_do_not_change(monkeypatch):
    from test_config import without_cascade_fields

    plain = load_config(None, ["train.sft_args={weight_decay: 0.1}"])
    secret = load_config(None, [f"train.sft_args={{weight_decay: 0.1, hub_token: {CANARY}}}"])
    assert CANARY not in config_yaml(secret)
    assert yaml.safe_load(config_yaml(secret))["train"]["sft_args"] == {"weight_decay": 0.1, "hub_token": REDACTED}
    assert config_yaml(plain) == yaml.safe_dump(plain.model_dump(mode="json"), sort_keys=False)
    assert secret.fingerprint("train") != plain.fingerprint("train")  # hashed as given; saved redacted
    without_cascade_fields(monkeypatch)  # the fields of issues #16 and #20 aside, the fingerprint is the old one
    assert RunConfig().fingerprint() == "c5d45692f9f93c93"
    assert list(yaml.safe_load(config_yaml(secret, DATASET_SECTIONS))) == [
        "seed",
        "benchmarks_dir",
        "fidelity",
        "source",
        "generator",
        "summarize",
        "decontaminate",
        "dedup",
        "preferences",
        "dataset",
    ]
    nested = {"a": [{"api_key": "k", "max_new_tokens": 3}], "auth": None, "eos_token": "</s>"}
    assert redact(nested) == {"a": [{"api_key": REDACTED, "max_new_tokens": 3}], "auth": None, "eos_token": "</s>"}


def test_no_file_of_a_run_holds_the_token(tiny_model_dir, benchmarks_dir, tmp_path):
    import torch

    recipe = {
        "benchmarks_dir": str(benchmarks_dir),
        "source": {"path": str(SAMPLE), "limit": 16},
        "generator": {"model": None},  # step 0 trains M too: its training_args.bin as well
        "summarize": {"num_samples": 2, "max_new_tokens": 8},
        "train": {
            "base_model": str(tiny_model_dir),
            "global_batch_size": 8,
            "per_device_batch_size": 4,
            "warmup_steps": 1,
            "max_length": 256,
            "original_epochs": 1,
            "save_steps": 1,
            "sft_args": {"hub_token": CANARY, "model_init_kwargs": {"token": CANARY}},
        },
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    printed = ""
    for command in ("build-dataset", "train"):
        result = subprocess.run(
            [sys.executable, "-m", "inversecoder.cli", command, str(tmp_path / "r.yaml"), "--output-dir", str(out)],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        printed += result.stdout + result.stderr

    files = [path for path in out.rglob("*") if path.is_file()]
    assert len(files) > 50
    assert [path for path in files if CANARY.encode() in path.read_bytes()] == []
    assert CANARY not in printed

    build_config = yaml.safe_load((out / "dataset" / "build_config.yaml").read_text())
    assert "train" not in build_config and "evaluate" not in build_config and "push" not in build_config
    assert yaml.safe_load((out / "run_config.yaml").read_text())["train"]["sft_args"]["hub_token"] == REDACTED
    saved_args = [path for path in files if path.name == "training_args.bin"]
    assert {p.relative_to(out).parts[0] for p in saved_args} == {"generator", "train"}
    for path in saved_args:
        args = torch.load(path, weights_only=False)
        assert args.hub_token is None
        assert "token" not in (args.model_init_kwargs or {})
    assert Path(out / "model" / "README.md").is_file()


def test_training_arguments_hold_no_token_while_a_stage_trains(tmp_path, monkeypatch):
    from inversecoder.core.config import TrainConfig
    from inversecoder.core.errors import ConfigError
    from inversecoder.trainers.sft_config import secrets_outside, sft_config_for

    monkeypatch.setenv("HF_TOKEN", "hf_users_own")
    train = TrainConfig(sft_args={"hub_token": CANARY, "model_init_kwargs": {"token": CANARY, "dtype": "float32"}})
    args = sft_config_for(train, tmp_path, 1.0, 0, "stage1")
    with secrets_outside(args):
        init = args.model_init_kwargs
        assert args.hub_token is None and isinstance(init, dict) and "token" not in init and init["dtype"] == "float32"
        assert os.environ["HF_TOKEN"] == CANARY
    assert os.environ["HF_TOKEN"] == "hf_users_own"
    assert args.hub_token == CANARY and CANARY in str(args.model_init_kwargs)

    differing = TrainConfig(sft_args={"hub_token": CANARY, "model_init_kwargs": {"token": "hf_other"}})
    with pytest.raises(ConfigError, match="differ"), secrets_outside(sft_config_for(differing, tmp_path, 1.0, 0, "s")):
        pass
    assert os.environ["HF_TOKEN"] == "hf_users_own"
