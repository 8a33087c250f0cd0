"""The fast training recipe: hardware-selected packing/attention/kernels, same maths packed and unpacked,
packed-batch accounting, peak memory, and the shipped accelerate configs (all on CPU with the tiny model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inversecoder.core.config import TrainConfig
from inversecoder.core.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]
ACCELERATE_DIR = REPO / "trainers" / "accelerate"


# ------------------------------------------------------------------------------------------ choice by hardware


def test_auto_choice_by_hardware(monkeypatch):
    from inversecoder.trainers import speed

    monkeypatch.setattr(speed, "installed", lambda module: False)
    cpu = speed.choose(TrainConfig(), device="cpu")
    assert (cpu.packing, cpu.attn_implementation, cpu.liger, cpu.torch_compile) == (False, "sdpa", False, False)
    gpu = speed.choose(TrainConfig(), device="cuda")
    assert (gpu.packing, gpu.attn_implementation, gpu.liger, gpu.torch_compile) == (
        True,
        "flex_attention",
        False,
        False,
    )
    assert set(gpu.reasons) == {"packing", "attention", "kernels", "torch_compile", "static_shape"}
    assert gpu.static_shape and not cpu.static_shape, "flex attention recompiles at every new packed length"
    assert speed.static_length(gpu, 8, 2048) == 16384 and speed.static_length(cpu, 8, 2048) is None

    monkeypatch.setattr(speed, "installed", lambda module: module in ("flash_attn", "liger_kernel"))
    fast = speed.choose(TrainConfig(), device="cuda")
    assert (fast.attn_implementation, fast.liger) == ("flash_attention_2", True)
    assert speed.choose(TrainConfig(), device="cpu").liger is False, "Liger is Triton: GPU only"
    kwargs = speed.sft_kwargs(fast)
    assert kwargs == {
        "packing": True,
        "packing_strategy": "bfd",
        "use_liger_kernel": True,
        "model_init_kwargs": {"attn_implementation": "flash_attention_2"},
    }

    forced = TrainConfig(packing="true", attn_implementation="eager", kernels="none", torch_compile="true")
    plan = speed.choose(forced, device="cuda")
    assert (plan.packing, plan.attn_implementation, plan.liger, plan.torch_compile) == (True, "eager", False, True)
    assert speed.choose(TrainConfig(packing="false"), device="cuda").attn_implementation == "flash_attention_2"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"packing": "sometimes"}, "train.packing"),
        ({"attn_implementation": "fast"}, "attn_implementation"),
        ({"kernels": "triton"}, "train.kernels"),
        ({"torch_compile": "maybe"}, "torch_compile"),
    ],
)
def test_bad_speed_settings(changes, message):
    from inversecoder.trainers import speed

    with pytest.raises(ConfigError, match=message):
        speed.choose(TrainConfig(**changes), device="cpu")


def test_cpu_sft_config_keeps_the_paper_batches(tmp_path):
    from inversecoder.trainers import sft_config

    args = sft_config.sft_config_for(TrainConfig(), tmp_path, 1.0, 0, "stage1")
    assert args.packing is False and args.model_init_kwargs == {"attn_implementation": "sdpa"}
    assert args.speed_plan is not None  # sft_config_for always records its plan
    assert args.speed_plan["device"] in ("cpu", "cuda", "mps") and args.speed_plan["reasons"]["packing"]
    merged = sft_config.sft_config_for(
        TrainConfig(sft_args={"model_init_kwargs": {"dtype": "float32"}}), tmp_path, 1.0, 0, "stage1"
    )
    assert merged.model_init_kwargs == {"attn_implementation": "sdpa", "dtype": "float32"}


def test_packed_global_batch_counts_documents(tmp_path):
    from inversecoder.trainers import sft_config, speed

    assert speed.packed_rows([600, 500, 400, 300, 200, 100], 1000) == 3  # 600+400, 500+300+200, 100 -> bfd
    assert speed.packed_rows([2000], 1024) == 1, "an over-long document is truncated into one row"
    assert speed.packed_batch(512, 8, 8, 4.0) == (8, 2)  # 8 rows x 8 GPUs x 2 steps x 4 docs = 512 documents
    assert speed.packed_batch(512, 8, 1, 4.0) == (8, 16)
    assert speed.packed_batch(8, 4, 1, 4.0) == (2, 1), "never more documents per step than the global batch"
    args = sft_config.sft_config_for(
        TrainConfig(packing="true", max_length=1024), tmp_path, 1.0, 0, "stage1", lengths=[250] * 4096
    )
    assert args.packing is True and args.packing_strategy == "bfd" and args.documents_per_row == 4.0
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (8, 16)
    assert args.pad_to_multiple_of is None, "sdpa on a CPU: no compiled kernel, no padding"
    flex = sft_config.sft_config_for(
        TrainConfig(packing="true", max_length=1024, attn_implementation="flex_attention"),
        tmp_path,
        1.0,
        0,
        "stage1",
        lengths=[250] * 4096,
    )
    assert flex.pad_to_multiple_of == 8 * 1024, "one shape per step: 8 rows x max_length"
    explicit = sft_config.sft_config_for(
        TrainConfig(packing="true", sft_args={"gradient_accumulation_steps": 3}),
        tmp_path,
        1.0,
        0,
        "stage1",
        lengths=[250] * 64,
    )
    assert explicit.gradient_accumulation_steps == 3


# ------------------------------------------------------------------------------------------------- same maths


def _rows(n: int):
    import datasets

    from inversecoder.core import prompts

    return datasets.Dataset.from_list(
        [
            {
                "prompt": prompts.magicoder_prompt(
                    f"Write a function number {i} that " + "adds and multiplies " * (i % 5)
                ),
                "completion": f"```python\ndef f_{i}(x):\n"
                + f"    x = x * {i} + 1\n" * (1 + i % 7)
                + "    return x\n```",
            }
            for i in range(n)
        ]
    )


def _trainer(model_dir: Path, out: Path, rows, **train):
    from inversecoder.trainers import recipe, sft_config, speed

    config = TrainConfig(
        base_model=str(model_dir),
        learning_rate=1e-3,
        warmup_steps=0,
        max_length=256,
        logging_steps=1,
        save_steps=1000,
        **train,
    )
    lengths = speed.document_lengths(recipe._load_tokenizer(str(model_dir), None), rows)
    args = sft_config.sft_config_for(config, out, 1.0, 0, "stage1", lengths=lengths)
    return recipe._build_trainer(args, str(model_dir), None, rows)


def test_packed_and_unpacked_give_the_same_loss_and_gradients(tiny_model_dir, tmp_path):
    import torch

    rows = _rows(12)
    padded = _trainer(
        tiny_model_dir, tmp_path / "padded", rows, packing="false", global_batch_size=12, per_device_batch_size=12
    )
    packed = _trainer(
        tiny_model_dir, tmp_path / "packed", rows, packing="true", global_batch_size=12, per_device_batch_size=12
    )
    assert packed.args.packing and packed.padding_free and not padded.padding_free
    assert len(packed.train_dataset) < len(rows), "several documents share a packed row"
    assert sum(len(r["seq_lengths"]) for r in packed.train_dataset) == len(rows)
    # Padded to one shape as under flex attention on a GPU: the pads change nothing.
    fixed = _trainer(
        tiny_model_dir,
        tmp_path / "fixed",
        rows,
        packing="true",
        global_batch_size=12,
        per_device_batch_size=12,
        sft_args={"pad_to_multiple_of": 4096},
    )
    assert packed.args.gradient_accumulation_steps == 1
    assert packed.args.per_device_train_batch_size >= len(packed.train_dataset), "one step sees every document"

    def loss_and_grads(trainer):
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])
        model = trainer.model
        model.train()
        model.zero_grad()
        items = (batch["labels"][..., 1:] != -100).sum()
        loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=items)
        loss.backward()
        return loss.item(), int(items), {n: p.grad.detach().clone() for n, p in model.named_parameters()}

    with torch.random.fork_rng():
        padded_loss, padded_items, padded_grads = loss_and_grads(padded)
        packed_loss, packed_items, packed_grads = loss_and_grads(packed)
        fixed_loss, fixed_items, fixed_grads = loss_and_grads(fixed)
    assert fixed.data_collator([fixed.train_dataset[0]])["input_ids"].shape[1] == 4096
    assert packed_items == padded_items == fixed_items, "the same response tokens carry loss"
    assert packed_loss == pytest.approx(padded_loss, abs=1e-4)
    assert fixed_loss == pytest.approx(padded_loss, abs=1e-4)
    for name, grad in padded_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, rtol=1e-3, atol=1e-5, msg=name)
        torch.testing.assert_close(fixed_grads[name], grad, rtol=1e-3, atol=1e-5, msg=name)

    # And through the real training loop: one optimizer step over the same 12 documents, same logged loss.
    first = []
    for trainer in (padded, packed):
        trainer.model.zero_grad()
        trainer.train()
        assert trainer.state.global_step == 1
        first.append(next(e["loss"] for e in trainer.state.log_history if "loss" in e))
    assert first[1] == pytest.approx(first[0], abs=1e-4)


def test_packed_two_stage_run_writes_the_model_folder(tiny_model_dir, tmp_path):
    from test_trainers import generated_rows, original_rows, write_dataset
    from transformers import AutoTokenizer, GenerationConfig

    from inversecoder.core import prompts
    from inversecoder.core.config import RunConfig
    from inversecoder.trainers import train_model

    dataset_dir = write_dataset(tmp_path / "dataset", generated_rows(16), original_rows(8))
    config = RunConfig(
        seed=0,
        train=TrainConfig(
            base_model=str(tiny_model_dir),
            packing="true",
            global_batch_size=8,
            per_device_batch_size=4,
            learning_rate=1e-3,
            warmup_steps=1,
            max_length=256,
            logging_steps=1,
            save_steps=1000,
        ),
    )
    model_dir = train_model(config, dataset_dir, tmp_path / "work", tmp_path / "model")
    assert (model_dir / "model.safetensors").is_file()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert tokenizer.chat_template == prompts.CHAT_TEMPLATE
    assert GenerationConfig.from_pretrained(model_dir).eos_token_id == tokenizer.eos_token_id
    info = json.loads((model_dir / "training_config.json").read_text())
    for stage in info["stages"]:
        args = stage["sft_args"]
        assert args["packing"] is True and args["documents_per_row"] > 1
        # about 8 documents per optimizer step, whatever the packing
        docs = args["per_device_train_batch_size"] * args["gradient_accumulation_steps"] * args["documents_per_row"]
        assert 4 <= docs <= 16
        assert stage["peak_memory_gib"] > 0 and stage["peak_memory_kind"] in (
            "process_max_rss",
            "cuda_max_memory_allocated",
        )
        assert args["speed_plan"]["packing"] is True
    logs = json.loads((model_dir / "training_logs.json").read_text())
    assert all(history[-1]["peak_memory_gib"] > 0 for history in logs.values())


# ------------------------------------------------------------------------------------------ accelerate configs


@pytest.mark.parametrize("name", ["ddp", "fsdp2", "deepspeed-zero3"])
def test_accelerate_configs(name):
    import yaml
    from accelerate.commands.config.config_args import ClusterConfig

    path = ACCELERATE_DIR / f"{name}.yaml"
    data = yaml.safe_load(path.read_text())
    assert data["num_processes"] == 8 and data["mixed_precision"] == "bf16"
    config = ClusterConfig.from_yaml_file(str(path))
    expected = {"ddp": "MULTI_GPU", "fsdp2": "FSDP", "deepspeed-zero3": "DEEPSPEED"}[name]
    assert str(config.distributed_type).endswith(expected)
    if name == "fsdp2":
        assert config.fsdp_config["fsdp_version"] == 2
        assert config.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT", "save_model writes whole safetensors"
    if name == "deepspeed-zero3":
        assert config.deepspeed_config["zero_stage"] == 3
        assert config.deepspeed_config["zero3_save_16bit_model"] is True
