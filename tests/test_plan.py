"""`run --dry-run`: generation is divided over the devices the run will use, training over plan.gpus."""

from __future__ import annotations

import pytest
from conftest import REPO

from inversecoder.core.config import load_config
from inversecoder.core.data import DEMO_SAMPLE
from inversecoder.plan import format_plan, generator_devices, plan_run

# (a client that costs nothing: these plans are bound by the fleet; the client's bound is tested below)
SERVED = ["generator.backend=tgi", "generator.endpoints=[http://h1:8080]", "plan.client_us_per_request=0.000001"]


def devices(overrides: list[str], gpus_visible: int) -> tuple[tuple[int, int], tuple[int, int], list[str]]:
    notes: list[str] = []
    generator, embedded = generator_devices(load_config(None, overrides), notes, gpus_visible)
    return (generator.count, generator.gpus), (embedded.count, embedded.gpus), notes


def test_embedded_generation_uses_the_replicas_the_run_will_load():
    generator, embedded, notes = devices(["generator.model=m", "plan.gpus=8"], 4)
    assert generator == embedded == (4, 4)  # the 4 GPUs visible here, not plan.gpus
    assert notes == [
        "generation and scoring run embedded (transformers): 4 replicas on cuda:0..3 "
        "(the GPUs visible here; generator.replicas caps them)"
    ]
    assert devices(["generator.model=m", "generator.replicas=2"], 4)[0] == (2, 2)
    assert devices(["generator.model=m", "generator.device=cuda:3"], 4)[0] == (1, 1)
    # On the CPU: one device however many replicas share its cores, no GPU-hours, and a warning on the figures.
    for overrides in (["generator.model=m"], ["generator.model=m", "generator.device=cpu", "generator.replicas=3"]):
        generator, _, notes = devices(overrides, 0)
        assert generator == (1, 0) and "a CPU is far slower than this estimate" in notes[0]
    # device: cuda where no GPU is visible (a login node): the run's GPUs are unknown here, plan.gpus stands in.
    generator, _, notes = devices(["generator.model=m", "generator.device=cuda", "plan.gpus=8"], 0)
    assert generator == (8, 8) and "no GPU is visible here" in notes[0]


def test_served_generation_uses_plan_gpus_and_other_models_run_embedded():
    generator, embedded, notes = devices([*SERVED, "generator.model=org/m", "plan.gpus=16"], 2)
    assert generator == (16, 16) and embedded == (2, 2)
    assert "on the tgi servers: divided over plan.gpus (16)" in notes[0]
    assert "run embedded: 2 replicas on cuda:0..1" in notes[1]
    vllm_local = [
        "generator.backend=vllm-local",
        "generator.model=org/m",
        "generator.vllm_args={tensor_parallel_size: 2}",
    ]
    generator, embedded, _ = devices(vllm_local, 4)
    assert generator == (2, 2) and embedded == (4, 4)


@pytest.fixture(scope="module")
def planned(tiny_model_dir, tmp_path_factory):
    """The real plans of the bundled sample with the tiny model, embedded on this CPU and served, on 1 and 8 GPUs."""
    out = tmp_path_factory.mktemp("plan")
    base = [f"source.path={DEMO_SAMPLE}", "source.limit=30", f"generator.model={tiny_model_dir}", f"output_dir={out}"]
    plans = {}
    for name, extra in (("embedded", ["generator.device=cpu", "generator.replicas=2"]), ("served", SERVED)):
        for gpus in (1, 8):
            config = load_config(None, [*base, *extra, f"plan.gpus={gpus}"])
            steps, notes, generator, trainers = plan_run(config)
            plans[name, gpus] = (
                {step.name: step for step in steps},
                format_plan(config, steps, notes, generator, trainers),
            )
    return plans


def test_dry_run_on_the_cpu_is_not_divided_by_plan_gpus(planned):
    one, text = planned["embedded", 1]
    eight, _ = planned["embedded", 8]
    for step in ("dataset", "evaluate", "evaluate-generator"):
        assert eight[step].hours == one[step].hours > 0 and eight[step].gpus == 0
    # Training runs where this run would train: here, one CPU process (plan.gpus does not change it) ...
    assert eight["train"].hours == one["train"].hours > 0 and eight["train"].gpus == 0
    assert text.splitlines()[0].endswith("training on 1 cpu process(es), generation on 2 replicas on cpu:")
    assert "- training: single on 1 cpu process: one process on cpu (no GPU visible)" in text
    # ... and what it would be on the node the config plans for.
    assert "on plan.gpus (1) GPUs of 80 GB training would be single on 1 cuda process" in text
    _, text8 = planned["embedded", 8]
    assert "on plan.gpus (8) GPUs of 80 GB training would be ddp on 8 cuda processes: one process per visible" in text8
    assert "fits one GPU (72.0 GB usable): DDP" in text8
    assert "- generation and scoring run embedded (transformers): 2 replicas on cpu; plan.* figures" in text


def test_dry_run_with_servers_divides_generation_by_plan_gpus(planned):
    one, _ = planned["served", 1]
    eight, text = planned["served", 8]
    for step in ("dataset", "evaluate-generator"):  # on the servers' fleet
        assert eight[step].hours == pytest.approx(one[step].hours / 8) and eight[step].gpus == 8
    assert eight["evaluate"].hours == one["evaluate"].hours and eight["evaluate"].gpus == 0  # the trained model: here
    assert "generation on plan.gpus (8) GPU(s) behind the endpoints" in text.splitlines()[0]
    dataset = next(line for line in text.splitlines() if line.startswith("dataset"))
    assert f"{eight['dataset'].hours * 8:.2f}" in dataset  # GPU-hours: the fleet's


def test_the_served_dataset_step_takes_at_least_the_clients_cpu(tiny_model_dir, tmp_path):
    base = [
        f"source.path={DEMO_SAMPLE}",
        "source.limit=30",
        f"generator.model={tiny_model_dir}",
        f"output_dir={tmp_path}",
    ]
    config = load_config(None, [*base, "generator.backend=vllm", "generator.endpoints=[http://h1:8000]"])
    steps, notes, _, _ = plan_run(
        config.model_copy(update={"plan": config.plan.model_copy(update={"client_us_per_request": 1e6})})
    )
    dataset = next(step for step in steps if step.name == "dataset")
    requests = int(next(note for note in notes if note.startswith("client: ")).split()[1].replace(",", ""))
    assert requests > 0 and dataset.hours == pytest.approx(requests / 3600)  # one second of CPU per request
    assert any("the client, not the fleet, bounds the dataset step" in note for note in notes)


def test_the_paper_dry_run_works_offline_and_says_what_it_cannot_count(tmp_path, monkeypatch):
    """`run configs/paper-ds-6.7b.yaml --dry-run` with no network and nothing of the paper's in the caches: the
    corpus and the tokenizer cannot be read, so those steps say so and carry no estimate; the rest is planned."""
    import datasets
    from huggingface_hub import constants

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    config = load_config(REPO / "configs" / "paper-ds-6.7b.yaml", output_dir=str(tmp_path / "out"))
    steps, notes, generator, trainers = plan_run(config)
    by_name = {step.name: step for step in steps}
    for name in ("generator", "dataset", "train"):
        assert by_name[name].hours is None and "not counted (the corpus cannot be read here)" in by_name[name].work
    assert by_name["evaluate"].hours and by_name["evaluate"].hours > 0  # 542 tasks: no corpus needed
    corpus_note = next(note for note in notes if note.startswith("the corpus "))
    assert "ise-uiuc/Magicoder-Evol-Instruct-110K cannot be read here" in corpus_note
    assert any("deepseek-ai/deepseek-coder-6.7b-base" in note and "characters / 4" in note for note in notes)
    text = format_plan(config, steps, notes, generator, trainers)
    dataset = next(line for line in text.splitlines() if line.startswith("dataset"))
    assert dataset.split()[2:4] == ["?", "?"]
    assert "total: at least " in text and "the steps marked ? are not counted" in text
