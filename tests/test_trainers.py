"""Training recipe: real TRL SFTTrainer runs on the tiny model and a small dataset folder in Hub layout."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from inversecoder.core import prompts
from inversecoder.core.config import RunConfig, TrainConfig
from inversecoder.core.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

README = """---
configs:
- config_name: default
  default: true
  data_files:
  - split: train
    path: data/train-00000-of-00001.parquet
- config_name: original
  data_files:
  - split: train
    path: original/train-00000-of-00001.parquet
---
# test dataset
"""
N_GENERATED, N_ORIGINAL = 48, 32


def generated_rows(n: int) -> list[dict]:
    return [
        {
            "instruction": f"Write a python function that multiplies its argument by {i}.",
            "response": f"```python\ndef times_{i}(x):\n    return x * {i}\n```",
            "score": 0.5 + i / 1000,
            "language": "python",
            "row_id": f"g{i}",
            "source_index": i,
            "candidate_id": f"g{i}-0",
        }
        for i in range(n)
    ]


def original_rows(n: int) -> list[dict]:
    return [
        {
            "instruction": f"Implement a function that adds {i} to a number.",
            "response": f"Here it is:\n```python\ndef add_{i}(x):\n    return x + {i}\n```",
            "row_id": f"o{i}",
            "source_index": i,
        }
        for i in range(n)
    ]


def write_dataset(folder: Path, generated: list[dict], original: list[dict]) -> Path:
    """A dataset folder like builders/dataset.py writes: README `configs:` + one parquet per config."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from inversecoder.core.dataset_files import SCHEMAS

    schemas = {"data": SCHEMAS["default"], "original": SCHEMAS["original"]}  # what the builder writes
    empty = []
    for sub, name, rows in (("data", "default", generated), ("original", "original", original)):
        if not rows:  # as the builder does: datasets cannot load a row-less parquet config
            empty.append(name)
            continue
        (folder / sub).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=schemas[sub]), folder / sub / "train-00000-of-00001.parquet")
    (folder / "README.md").write_text(README, encoding="utf-8")
    (folder / "build_info.json").write_text(json.dumps({"empty_configs": empty}), encoding="utf-8")
    return folder


def run_config(model_dir: Path, **train: Any) -> RunConfig:
    """Small, fast settings: 8 sequences per step as 2 x 4, so gradient accumulation is exercised."""
    settings: dict[str, Any] = dict(
        base_model=str(model_dir),
        global_batch_size=8,
        per_device_batch_size=4,
        learning_rate=1e-3,
        warmup_steps=1,
        max_length=256,
        logging_steps=1,
        save_steps=1000,
    )
    settings.update(train)
    return RunConfig(seed=0, train=TrainConfig(**settings))


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("dataset"), generated_rows(N_GENERATED), original_rows(N_ORIGINAL))


@pytest.fixture(scope="module")
def bare_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model as a BASE model ships: no chat template, no pad token, no eos in generation_config."""
    import shutil

    from transformers import AutoTokenizer, GenerationConfig

    folder = tmp_path_factory.mktemp("bare") / "model"
    shutil.copytree(tiny_model_dir, folder, ignore=shutil.ignore_patterns("tokenizer*", "chat_template*"))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template, tokenizer.pad_token = None, None
    tokenizer.save_pretrained(folder)
    generation = GenerationConfig.from_pretrained(tiny_model_dir)
    generation.eos_token_id = generation.pad_token_id = None
    generation.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def trained(bare_model_dir, dataset_dir, tmp_path_factory) -> tuple[RunConfig, Path, Path]:
    """One two-stage run shared by the tests that inspect its output."""
    from inversecoder.trainers import train_model

    root = tmp_path_factory.mktemp("run")
    config = run_config(bare_model_dir)
    model_dir = train_model(config, dataset_dir, root / "work", root / "model")
    return config, root / "work", model_dir


def read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_two_stage_model_folder(trained, bare_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    _, work_dir, model_dir = trained
    assert model_dir.is_dir() and not model_dir.with_suffix(".partial").exists()
    assert (model_dir / "model.safetensors").is_file()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert tokenizer.chat_template == prompts.CHAT_TEMPLATE
    assert tokenizer.pad_token == tokenizer.eos_token, "a missing pad token falls back to EOS"
    question = "Write a function that reverses a string."
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
    )
    assert rendered == prompts.magicoder_prompt(question)
    assert GenerationConfig.from_pretrained(model_dir).eos_token_id == tokenizer.eos_token_id

    trained_model = AutoModelForCausalLM.from_pretrained(model_dir)
    base_model = AutoModelForCausalLM.from_pretrained(bare_model_dir)
    base = base_model.state_dict()
    changed = [name for name, tensor in trained_model.state_dict().items() if not torch.equal(tensor, base[name])]
    assert len(changed) == len(base), "every weight should move after two stages at lr 1e-3"

    logs = read(model_dir / "training_logs.json")
    assert list(logs) == ["stage1", "stage2"]
    steps = {"stage1": math.ceil(N_GENERATED / 8), "stage2": math.ceil(N_ORIGINAL / 8) * 2}
    for stage, history in logs.items():
        losses = [entry for entry in history if "loss" in entry]
        assert [entry["step"] for entry in losses] == list(range(1, steps[stage] + 1))
        # A fresh schedule per stage: each restarts its 1-step warmup (HF warmup starts at 0), then peaks.
        assert [entry["learning_rate"] for entry in losses[:2]] == pytest.approx([0.0, 1e-3])
    assert logs["stage2"][-1]["step"] == steps["stage2"]

    info = read(model_dir / "training_config.json")
    assert info["base_model"] == str(bare_model_dir)
    assert info["dataset_sizes"] == {"default": N_GENERATED, "original": N_ORIGINAL}
    assert [s["stage"] for s in info["stages"]] == ["stage1", "stage2"]
    stage1, stage2 = (s["sft_args"] for s in info["stages"])
    assert stage1["gradient_accumulation_steps"] == stage2["gradient_accumulation_steps"] == 2
    assert (stage1["num_train_epochs"], stage2["num_train_epochs"]) == (1.0, 2.0)
    assert stage1["completion_only_loss"] is True and stage1["packing"] is False
    assert "token" not in json.dumps(list(_keys(info))).lower()
    assert not list((work_dir / "stage1").glob("checkpoint-*")), "checkpoints are removed once a stage is final"


def _keys(data):
    if isinstance(data, dict):
        for key, value in data.items():
            yield key
            yield from _keys(value)
    elif isinstance(data, list):
        for value in data:
            yield from _keys(value)


@pytest.fixture(autouse=True)
def _training_log(caplog):
    """The recipe's progress lines (logging, INFO) are what some tests read."""
    caplog.set_level("INFO", logger="inversecoder")


def test_completed_stages_are_skipped(trained, dataset_dir, monkeypatch, caplog):
    from inversecoder.trainers import recipe

    config, work_dir, model_dir = trained
    finals = [work_dir / stage / "final" / "model.safetensors" for stage in ("stage1", "stage2")]
    before = [path.stat().st_mtime_ns for path in finals]

    def no_training(*args, **kwargs):
        raise AssertionError("a completed stage was trained again")

    monkeypatch.setattr(recipe, "_build_trainer", no_training)
    assert recipe.train_model(config, dataset_dir, work_dir, model_dir) == model_dir
    assert [path.stat().st_mtime_ns for path in finals] == before
    assert caplog.text.count("already trained") == 2
    assert list(read(model_dir / "training_logs.json")) == ["stage1", "stage2"]


def test_changed_settings_retrain_instead_of_reusing_stale_stages(trained, dataset_dir, tmp_path, caplog):
    import shutil

    from inversecoder.trainers import train_model

    config, work_dir, _model_dir = trained
    work_copy = tmp_path / "work"
    shutil.copytree(work_dir, work_copy)
    changed = config.model_copy(update={"train": config.train.model_copy(update={"learning_rate": 2e-3})}, deep=True)
    old_plan = read(work_copy / "stage1" / "plan.json")["fingerprint"]
    train_model(changed, dataset_dir, work_copy, tmp_path / "model")
    out = caplog.text
    assert out.count("retraining from scratch") == 2 and "already trained" not in out
    assert read(work_copy / "stage1" / "plan.json")["fingerprint"] != old_plan
    stages = read(tmp_path / "model" / "training_config.json")["stages"]
    assert all(stage["sft_args"]["learning_rate"] == 2e-3 for stage in stages)


def test_loss_is_on_response_and_eos_only(tiny_model_dir, dataset_dir, tmp_path):
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

    from inversecoder.trainers import recipe, sft_config

    config = run_config(tiny_model_dir)
    args = sft_config.sft_config_for(config.train, tmp_path / "out", 1.0, 0, "stage1")
    rows = recipe.load_pairs(dataset_dir, "default")
    assert rows.column_names == ["prompt", "completion"]
    source = generated_rows(N_GENERATED)
    expected = {"prompt": prompts.magicoder_prompt(source[3]["instruction"]), "completion": source[3]["response"]}
    assert rows[3] == expected

    trainer = recipe._build_trainer(args, str(tiny_model_dir), None, rows)
    tokenizer = trainer.processing_class
    dataset = trainer.train_dataset
    assert isinstance(tokenizer, PreTrainedTokenizerBase)  # a tokenizer, of the processing classes transformers allows
    assert isinstance(dataset, Dataset)  # SFTTrainer tokenizes into a datasets.Dataset
    for index in (0, 3):
        example = dataset[index]
        ids, labels = example["input_ids"], example["labels"]
        start = next(i for i, label in enumerate(labels) if label != -100)
        assert all(label == -100 for label in labels[:start])
        assert labels[start:] == ids[start:], "every response token and the EOS carry loss"
        assert tokenizer.decode(ids[:start]) == rows[index]["prompt"]
        assert tokenizer.decode(ids[start:]) == rows[index]["completion"] + tokenizer.eos_token
        assert ids[-1] == tokenizer.eos_token_id

    batch = trainer.data_collator([dataset[i] for i in (0, 12)])
    for row, index in enumerate((0, 12)):
        labels = dataset[index]["labels"]
        assert batch["labels"][row, : len(labels)].tolist() == labels
        assert (batch["labels"][row, len(labels) :] == -100).all(), "padding carries no loss"


def test_gradient_accumulation_follows_global_batch(monkeypatch, tmp_path):
    import torch

    from inversecoder.trainers import sft_config

    def config_for(**train: Any):
        return sft_config.sft_config_for(TrainConfig(**train), tmp_path, 1.0, 0, "stage1")

    assert config_for(global_batch_size=512, per_device_batch_size=8).gradient_accumulation_steps == 64
    assert config_for(global_batch_size=10, per_device_batch_size=4).gradient_accumulation_steps == 3  # ceil
    explicit = config_for(global_batch_size=512, sft_args={"gradient_accumulation_steps": 3})
    assert explicit.gradient_accumulation_steps == 3 and explicit.global_batch_size is None
    # Several processes share the global batch (a real WORLD_SIZE > 1 makes TrainingArguments start
    # torch.distributed, so the multi-process arithmetic is checked without building a config).
    assert sft_config.gradient_accumulation_for(512, 8, 8) == 8
    assert sft_config.gradient_accumulation_for(10, 4, 2) == 2
    assert sft_config.gradient_accumulation_for(8, 4, 16) == 1
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert sft_config.world_size() == 4
    monkeypatch.delenv("WORLD_SIZE")
    assert sft_config.world_size() == 1
    with pytest.raises(ConfigError, match="global_batch_size"):
        config_for(global_batch_size=0)

    paper = config_for()
    assert (paper.optim, paper.learning_rate, paper.warmup_steps, paper.lr_scheduler_type) == (
        "adafactor",
        5e-5,
        15,
        "linear",
    )
    assert (paper.max_length, paper.max_grad_norm, paper.save_total_limit) == (1024, 0.0, 2)
    assert paper.completion_only_loss is True and paper.packing is False and paper.report_to == []
    assert paper.stage == "stage1" and paper.output_dir == str(tmp_path)
    if not torch.cuda.is_available():
        assert paper.bf16 is False and paper.use_cpu is True
    assert config_for(sft_args={"max_length": 64, "seed": 7}).max_length == 64
    assert config_for().gradient_checkpointing is False
    assert config_for(gradient_checkpointing=True).gradient_checkpointing is True
    assert config_for(sft_args={"gradient_checkpointing": True}).gradient_checkpointing is True


def test_checkpoint_resume(tiny_model_dir, dataset_dir, tmp_path, monkeypatch, caplog):
    from transformers import TrainerCallback

    from inversecoder.trainers import recipe

    class Interrupted(Exception):
        pass

    class Crash(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            raise Interrupted(state.global_step)

    class CountSteps(TrainerCallback):
        def __init__(self):
            self.steps: dict[str, int] = {}

        def on_step_end(self, args, state, control, **kwargs):
            self.steps[args.stage] = self.steps.get(args.stage, 0) + 1

    build = recipe._build_trainer
    callbacks: list = []

    def with_callbacks(*args, **kwargs):
        trainer = build(*args, **kwargs)
        for callback in callbacks:
            trainer.add_callback(callback)
        return trainer

    monkeypatch.setattr(recipe, "_build_trainer", with_callbacks)
    config = run_config(tiny_model_dir, save_steps=2)
    work_dir, model_dir = tmp_path / "work", tmp_path / "model"

    callbacks[:] = [Crash()]
    with pytest.raises(Interrupted):
        recipe.train_model(config, dataset_dir, work_dir, model_dir)
    assert (work_dir / "stage1" / "checkpoint-2").is_dir() and not model_dir.exists()

    counter = CountSteps()
    callbacks[:] = [counter]
    recipe.train_model(config, dataset_dir, work_dir, model_dir)
    assert "stage1: resuming from" in caplog.text
    assert counter.steps == {"stage1": 6 - 2, "stage2": 8}
    logs = read(model_dir / "training_logs.json")
    assert [e["step"] for e in logs["stage1"] if "loss" in e] == list(range(1, 7)), "history survives the resume"


def test_mix_mode(tiny_model_dir, dataset_dir, tmp_path):
    from inversecoder.trainers import train_model

    config = run_config(tiny_model_dir, mode="mix", sft_args={"max_length": 128})
    model_dir = train_model(config, dataset_dir, tmp_path / "work", tmp_path / "model")
    logs = read(model_dir / "training_logs.json")
    assert list(logs) == ["mix"]
    assert max(e["step"] for e in logs["mix"]) == math.ceil((N_GENERATED + N_ORIGINAL) / 8)
    info = read(model_dir / "training_config.json")
    assert info["dataset_sizes"] == {"default": N_GENERATED, "original": N_ORIGINAL}
    (stage,) = info["stages"]
    assert stage["rows"] == N_GENERATED + N_ORIGINAL and stage["sft_args"]["max_length"] == 128


def test_empty_stage_is_skipped(tiny_model_dir, tmp_path, caplog):
    from inversecoder.trainers import train_model

    dataset_dir = write_dataset(tmp_path / "dataset", [], original_rows(8))
    model_dir = train_model(run_config(tiny_model_dir), dataset_dir, tmp_path / "work", tmp_path / "model")
    assert "stage1: no rows" in caplog.text
    stage1, stage2 = read(model_dir / "training_config.json")["stages"]
    assert stage1["skipped"] == "no rows" and stage2["start_model"] == str(tiny_model_dir)
    assert read(model_dir / "training_logs.json")["stage1"] == []


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mode": "original-first"}, "train.mode"),
        ({"sft_args": {"learning_rat": 1e-4}}, "learning_rat"),
        ({"sft_args": {"output_dir": "elsewhere"}}, "output_dir"),
        ({"bf16": "sometimes"}, "train.bf16"),
        ({"base_model": None}, "base_model"),
    ],
)
def test_config_errors(tiny_model_dir, dataset_dir, tmp_path, changes, message):
    from inversecoder.trainers import train_model

    with pytest.raises(ConfigError, match=message):  # most are refused when the config is made, before any work
        train_model(run_config(tiny_model_dir, **changes), dataset_dir, tmp_path / "work", tmp_path / "model")
    assert not (tmp_path / "model").exists()


def test_missing_original_config(tiny_model_dir, tmp_path):
    from inversecoder.trainers import train_model

    dataset_dir = write_dataset(tmp_path / "dataset", generated_rows(4), [])
    (dataset_dir / "build_info.json").write_text(json.dumps({"empty_configs": []}), encoding="utf-8")  # never built
    with pytest.raises(ConfigError, match="no 'original' config"):
        train_model(run_config(tiny_model_dir), dataset_dir, tmp_path / "work", tmp_path / "model")


def test_a_hub_base_model_without_a_revision_records_the_commit_it_trained_from(
    bare_model_dir, dataset_dir, tmp_path, monkeypatch
):
    """`train.base_revision` unset (as for CodeLlama in the paper's configs): training resolves the Hub id to a
    snapshot of the cache, and `training_config.json` and the model card name that commit, not `null`."""
    import shutil

    from huggingface_hub import constants

    from inversecoder.hub_cards.model_card import write_model_card
    from inversecoder.trainers import train_model

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub-cache" / "models--org--tiny-base"
    shutil.copytree(bare_model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    config = run_config(bare_model_dir, base_model="org/tiny-base", mode="mix").model_copy(
        update={"output_dir": str(tmp_path / "out")}
    )
    assert config.train.base_revision is None
    model_dir = train_model(config, dataset_dir, tmp_path / "work", config.layout.model)
    info = read(model_dir / "training_config.json")
    assert (info["base_model"], info["base_revision"], info["base_commit"]) == ("org/tiny-base", None, commit)
    card = write_model_card(config).read_text()
    assert f"- **Base model:** `org/tiny-base` @ `{commit}`" in card

    local_dir = train_model(run_config(bare_model_dir, mode="mix"), dataset_dir, tmp_path / "w2", tmp_path / "m2")
    local = read(local_dir / "training_config.json")
    assert local["base_commit"] is None  # a local folder has no commit (its content hash is not one)
