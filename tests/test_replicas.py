"""The embedded backend's replicas: the data-parallel path on real CPU replicas of the tiny model (real threads,
real model), which devices a run uses, and the check that a model fits one GPU."""

from __future__ import annotations

import logging
import re
import threading
from typing import Any, cast

import pytest
import torch

from inversecoder.core import prompts
from inversecoder.core.backends import CachedModel, GenerationRequest, SamplingParams
from inversecoder.core.backends.replicas import (
    GIB,
    Replica,
    check_fits,
    describe_devices,
    memory_needed,
    replica_devices,
    spread,
)
from inversecoder.core.backends.transformers_backend import TransformersBackend
from inversecoder.core.cache import ResultCache
from inversecoder.core.errors import ConfigError, UserError

CODE = "```python\ndef add(a, b):\n    return a + b\n```"


def _build(tiny_model_dir, tmp_path, replicas: int) -> tuple[TransformersBackend, CachedModel]:
    backend = TransformersBackend(str(tiny_model_dir), device="cpu", batch_tokens=1024, replicas=replicas)
    return backend, CachedModel(backend, ResultCache(tmp_path / f"calls-{replicas}.sqlite"), progress=False)


def test_two_replicas_give_exactly_what_one_gives(tiny_model_dir, tmp_path, one_torch_thread, caplog):
    """48 sampled completions (seeded, repetition penalty, stop strings) and 40 Yes/No scores through the cache, as
    a build makes them: two CPU replicas in two threads give the same texts and the same floats as one."""
    requests = [
        GenerationRequest(prompts.summarize_prompt(CODE + "\n# step" * (i % 9), "Write a"), seed=1000 + i)
        for i in range(48)
    ]
    params = SamplingParams(temperature=0.8, repetition_penalty=1.1, max_new_tokens=24, stop=("```",))
    texts = [prompts.score_prompt(f"Write function {i} that adds " + "numbers " * i, CODE) for i in range(40)]
    one, one_cached = _build(tiny_model_dir, tmp_path, 1)
    two, two_cached = _build(tiny_model_dir, tmp_path, 2)
    # The plan is made before the batches are spread: it does not depend on the replicas.
    planned = two.plan_batches([r.prompt for r in requests], params.max_new_tokens)
    assert planned == one.plan_batches([r.prompt for r in requests], params.max_new_tokens) and len(planned) >= 4

    ran: list[tuple[str, int]] = []  # (thread, replica) of every batch
    generate_on = two._generate_on

    def recorded(replica, batch, sampling):  # the real method, its caller noted
        ran.append((threading.current_thread().name, id(replica)))
        return generate_on(replica, batch, sampling)

    two._generate_on = recorded  # type: ignore[method-assign]
    with caplog.at_level(logging.INFO, logger="inversecoder"):
        completions = two_cached.generate(requests, params)
        scores = two_cached.score_yes_no(texts)
    assert completions == one_cached.generate(requests, params)
    assert scores == one_cached.score_yes_no(texts)
    assert [r.score for r in scores] == [r.score for r in one.score_yes_no(texts)]  # exact floats, not approx
    assert all(c.error is None for c in completions) and len({c.text for c in completions}) > 10
    # Both replicas ran batches, each in its own thread.
    assert len(ran) == len(planned) and len({replica for _, replica in ran}) == 2
    assert {thread for thread, _ in ran} == {"replica-0", "replica-1"}
    assert "generator: 2 replicas of" in caplog.text and "on cpu" in caplog.text
    assert two_cached.computed == 48 + 40 and len(two._replicas) == 2
    assert two._replicas[0].tokenizer is not two._replicas[1].tokenizer  # a fast tokenizer per thread
    two.close()
    assert two._replicas == []
    threads = [t.name for t in threading.enumerate() if t.name.startswith("replica-")]
    assert threads == []


def _cpu(n: int) -> list[Replica]:
    return [Replica(torch.device("cpu"), cast(Any, None), None) for _ in range(n)]


def test_a_worker_error_reaches_the_caller_and_closing_stops_the_workers():
    def work(replica: Replica, item: int) -> int:
        if item == 5:
            raise ValueError("batch 5 failed")
        return item * 10

    with pytest.raises(ValueError, match="batch 5 failed"):
        list(spread(_cpu(3), work, list(range(12))))
    assert not [t for t in threading.enumerate() if t.name.startswith("replica-")]
    assert sorted(spread(_cpu(3), lambda r, i: i * 10, list(range(7)))) == [(k, k * 10) for k in range(7)]

    started: list[int] = []
    gate = threading.Event()

    def slow(replica: Replica, item: int) -> int:  # item 0 is quick, the others wait for the gate
        started.append(item)
        if item:
            gate.wait(10)
        return item

    stream = spread(_cpu(2), slow, list(range(50)))
    assert next(stream) == (0, 0)
    threading.Timer(0.2, gate.set).start()
    stream.close()  # what CachedModel does on an error: the batches in flight finish, no other starts
    assert len(started) <= 3  # item 0 and the one each replica had taken
    assert not [t for t in threading.enumerate() if t.name.startswith("replica-")]


@pytest.mark.parametrize(
    "device, replicas, gpus, expected",
    [
        ("auto", None, 4, ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]),
        ("cuda", 2, 4, ["cuda:0", "cuda:1"]),
        ("cuda", 16, 4, ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]),  # capped by the GPUs there are
        ("auto", None, 0, ["cpu"]),
        ("auto", 2, 0, ["cpu", "cpu"]),
        ("cpu", 3, 8, ["cpu", "cpu", "cpu"]),
        ("cuda:1", None, 4, ["cuda:1"]),
        ("mps", None, 0, ["mps"]),
    ],
)
def test_which_devices_the_replicas_use(device, replicas, gpus, expected):
    assert replica_devices(device, replicas, gpus) == expected


def test_devices_that_cannot_be_had_are_config_errors():
    with pytest.raises(ConfigError, match="torch sees no CUDA device"):
        replica_devices("cuda", None, 0)
    with pytest.raises(ConfigError, match=re.escape("generator.replicas=2 needs generator.device auto, cuda or cpu")):
        replica_devices("cuda:1", 2, 4)
    assert describe_devices(["cuda:0", "cuda:1", "cuda:2"]) == "cuda:0..2"
    assert describe_devices(["cpu", "cpu"]) == "cpu" and describe_devices(["cuda:0", "cuda:2"]) == "cuda:0, cuda:2"


def test_a_model_that_does_not_fit_the_smallest_gpu_is_sent_to_the_servers():
    from transformers import LlamaConfig

    # Llama-2-7B's shape: 6.74B parameters, 12.55 GiB in bfloat16; 512 KiB of KV cache per token.
    llama_7b = LlamaConfig(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        vocab_size=32000,
        max_position_embeddings=4096,
    )
    weights, working = memory_needed(llama_7b, torch.bfloat16, 4096)
    assert weights == 6_738_415_616 * 2 and working == 512 * 1024 * 4096 + GIB
    check_fits("llama-7b", weights, working, [("cuda:0", 80 * GIB), ("cuda:1", 40 * GIB)], "bfloat16")
    with pytest.raises(UserError) as caught:
        check_fits("llama-7b", weights, working, [("cuda:0", 80 * GIB), ("cuda:1", 12 * GIB)], "bfloat16")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("llama-7b does not fit one GPU: it needs ~15.6 GiB (12.6 GiB of bfloat16 weights")
    assert "cuda:1 has 12.0 GiB" in message and "generator.backend: vllm" in message and "tgi" in message
    check_fits("llama-7b", weights, working, [], "bfloat16")  # no GPU: nothing to check


def test_the_tiny_models_estimate_is_its_real_size(tiny_model_dir):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    weights, working = memory_needed(config, torch.float32, 64)
    assert weights == sum(p.numel() * p.element_size() for p in model.parameters())
    head_dim = config.hidden_size // config.num_attention_heads
    kv_heads = config.num_key_value_heads or config.num_attention_heads
    assert working - GIB == 2 * config.num_hidden_layers * kv_heads * head_dim * 4 * 64


def test_a_sampled_build_with_two_replicas_is_the_build_with_one(tiny_model_dir, tmp_path, one_torch_thread, caplog):
    """A whole dataset build (24 rows x 3 sampled candidates, scored, selected): same rows, same floats, same
    fingerprint with 2 CPU replicas as with 1."""
    import yaml
    from small_builds import build, tables, write_recipe

    built = {}
    for replicas in (1, 2):
        recipe = write_recipe(
            tmp_path, f"r{replicas}", tiny_model_dir, {"device": "cpu", "replicas": replicas, "batch_tokens": 2048}
        )
        settings = yaml.safe_load(recipe.read_text())
        settings["summarize"]["temperature"] = 0.8  # sampled: every candidate draws from its own seed
        recipe.write_text(yaml.safe_dump(settings))
        with caplog.at_level(logging.INFO, logger="inversecoder"):
            built[replicas] = build(recipe, tmp_path / f"out{replicas}")
    assert "generator: 1 replica of" in caplog.text and "generator: 2 replicas of" in caplog.text
    one, two = built[1], built[2]
    assert two.model_calls == one.model_calls > 100 and two.fingerprint == one.fingerprint
    assert tables(two.dataset_dir) == tables(one.dataset_dir)
    assert len({row["instruction"] for row in tables(one.dataset_dir)["candidates"]}) > 20
