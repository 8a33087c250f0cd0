"""`inversecoder run` end to end, as a user runs it: the paper's loop at tiny scale (generator M trained
from the base model, dataset, two-stage SFT, EvalPlus for both models, cards with the comparison)."""

import json
import subprocess
import sys

import pytest
import yaml
from conftest import REPO, SAMPLE
from huggingface_hub import ModelCard
from transformers import AutoModelForCausalLM, AutoTokenizer

from inversecoder.core import prompts


@pytest.fixture(scope="module")
def finished_run(tiny_model_dir, benchmarks_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    recipe = {
        "benchmarks_dir": str(benchmarks_dir),
        "source": {"path": str(SAMPLE), "limit": 24},
        "generator": {"model": None},  # step 0 trains M from the base model
        "summarize": {"num_samples": 2, "max_new_tokens": 8},
        "train": {
            "base_model": str(tiny_model_dir),
            "global_batch_size": 8,
            "per_device_batch_size": 4,
            "warmup_steps": 1,
            "max_length": 512,
            "original_epochs": 1,
        },
        "evaluate": {"limit": 3, "max_new_tokens": 16},
    }
    (root / "r.yaml").write_text(yaml.safe_dump(recipe))
    out = root / "out"
    result = subprocess.run(
        [sys.executable, "-m", "inversecoder.cli", "run", str(root / "r.yaml"), "--output-dir", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, result.stdout


def test_run_prints_where_every_artifact_is(finished_run):
    out, stdout = finished_run
    for name in ("generator/model", "dataset", "model", "eval/eval_results.json", "run_summary.md"):
        assert str(out / name) in stdout
        assert (out / name).exists()


def test_model_folder_loads_with_its_chat_template_and_eos(finished_run):
    out, _ = finished_run
    tokenizer = AutoTokenizer.from_pretrained(out / "model")
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Sort a list."}], tokenize=False, add_generation_prompt=True
    )
    assert rendered == prompts.magicoder_prompt("Sort a list.")
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    stages = json.loads((out / "model" / "training_config.json").read_text())["stages"]
    assert [s["stage"] for s in stages] == ["stage1", "stage2"]


def test_model_card_eval_results_parse_back_from_eval_results_json(finished_run):
    out, _ = finished_run
    results = json.loads((out / "eval" / "eval_results.json").read_text())
    card = ModelCard.load(out / "model" / "README.md")
    parsed = {(r.dataset_type, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert len(parsed) == 4
    for name, plus_type in (("humaneval", "evalplus/humanevalplus"), ("mbpp", "evalplus/mbppplus")):
        assert parsed[(plus_type, "pass@1")] == round(100 * results["benchmarks"][name]["pass@1"]["plus"], 1)
        assert results["benchmarks"][name]["limit"] == 3
    assert all("(first 3 tasks)" in r.dataset_name for r in card.data.eval_results)
    assert "not comparable with published full-benchmark scores" in card.text
    for name in ("humaneval", "mbpp"):
        samples = (out / "eval" / f"{name}_samples.jsonl").read_text().splitlines()
        assert len(samples) == 3 and all("solution" in json.loads(line) for line in samples)


def test_the_generator_is_compared_with_inversecoder_in_the_card_and_summary(finished_run):
    out, stdout = finished_run
    assert [line for line in stdout.splitlines() if line.startswith("[")] == [
        "[generator] running",
        "[dataset] running",
        "[train] running",
        "[evaluate] running",
        "[evaluate-generator] running",
    ]
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["generator"] == str(out / "generator" / "model")
    assert [row["benchmark"] for row in summary["comparison"]] == ["HumanEval", "HumanEval+", "MBPP", "MBPP+"]
    ours = json.loads((out / "eval" / "eval_results.json").read_text())
    theirs = json.loads((out / "eval-generator" / "eval_results.json").read_text())
    first = summary["comparison"][1]
    assert first["inversecoder"] == round(100 * ours["benchmarks"]["humaneval"]["pass@1"]["plus"], 1)
    assert first["generator"] == round(100 * theirs["benchmarks"]["humaneval"]["pass@1"]["plus"], 1)
    card_text = (out / "model" / "README.md").read_text()
    assert "## Compared with its generator model" in card_text
    for row, (name, suite) in zip(
        summary["comparison"], [(n, s) for n in ("humaneval", "mbpp") for s in ("base", "plus")], strict=True
    ):
        # the delta is paired over the 3 tasks both models were evaluated on, from their per-task outcomes
        mine, other = ours["benchmarks"][name]["tasks"], theirs["benchmarks"][name]["tasks"]
        assert list(mine) == list(other) and row["paired"]["tasks"] == len(mine) == 3
        better = sum(mine[t][f"passed_{suite}"] > other[t][f"passed_{suite}"] for t in mine)
        worse = sum(mine[t][f"passed_{suite}"] < other[t][f"passed_{suite}"] for t in mine)
        assert (row["paired"]["better"], row["paired"]["worse"]) == (better, worse)
        assert row["paired"]["ci_low"] <= row["delta"] <= row["paired"]["ci_high"]
        assert not row["paired"]["significant"]  # 3 tasks can never be enough
        ci = f"[{row['paired']['ci_low']:+.1f}, {row['paired']['ci_high']:+.1f}]"
        assert (
            f"| {row['benchmark']} | 3 | {row['generator']} | {row['inversecoder']} | {row['delta']:+.1f} | {ci} |"
            in card_text
        )
    generator_card = ModelCard.load(out / "generator" / "model" / "README.md")
    assert len(generator_card.data.eval_results) == 4
    assert f"**Dataset it generated:** `{out / 'dataset'}`" in generator_card.text  # the cards link each other
    assert f"**InverseCoder trained on that dataset:** `{out / 'model'}`" in generator_card.text
    assert str(out / "generator" / "model") in (out / "model" / "README.md").read_text()
    assert str(out / "generator" / "model") in (out / "dataset" / "README.md").read_text()
    generator_training = json.loads((out / "generator" / "model" / "training_config.json").read_text())
    assert [stage["stage"] for stage in generator_training["stages"]] == ["original"]


def test_a_second_run_skips_every_step_and_a_changed_setting_reruns_only_what_follows(finished_run):
    out, _ = finished_run
    command = [sys.executable, "-m", "inversecoder.cli", "run", str(out.parent / "r.yaml"), "--output-dir", str(out)]
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    steps = [line.split("]")[0][1:] for line in again.stdout.splitlines() if line.startswith("[")]
    assert steps == ["generator", "dataset", "train", "evaluate", "evaluate-generator"]
    assert all("up to date" in line for line in again.stdout.splitlines() if line.startswith("["))

    plan = subprocess.run(
        [*command, "evaluate.max_new_tokens=12", "--dry-run"], capture_output=True, text=True, timeout=600
    )
    assert plan.returncode == 0, plan.stderr[-2000:]
    actions = {
        line.split()[0]: line.split()[1]
        for line in plan.stdout.splitlines()
        if line.split() and line.split()[0] in ("generator", "dataset", "train", "evaluate", "evaluate-generator")
    }
    assert actions == {
        "generator": "skip",
        "dataset": "skip",
        "train": "skip",
        "evaluate": "run",
        "evaluate-generator": "run",
    }


def test_a_run_that_trains_nothing_evaluates_only_what_exists(tiny_model_dir, tmp_path):
    """With train.enabled false there is no InverseCoder to evaluate (before: the run failed with "no trained
    model" after building the dataset); naming evaluate.model brings the step back."""
    from inversecoder.core.config import load_config
    from inversecoder.workflow import step_status

    overrides = [f"generator.model={tiny_model_dir}", "train.enabled=false"]
    config = load_config(REPO / "configs" / "demo.yaml", overrides, output_dir=str(tmp_path / "out"))
    assert step_status(config)["evaluate"] == "disabled"
    named = load_config(REPO / "configs" / "demo.yaml", [*overrides, f"evaluate.model={tiny_model_dir}"])
    assert step_status(named)["evaluate"] == "run"


def test_the_trained_model_folder_answers_on_vllm_through_its_chat_template(finished_run, tmp_path):
    """What a publisher's users do with the pushed model: serve the folder with vLLM and chat with it."""
    import json
    import urllib.request

    from transformers import AutoTokenizer
    from vllm_server import VLLMServer

    folder = finished_run[0] / "model"
    messages = [{"role": "user", "content": "Write a function that adds two numbers."}]
    with VLLMServer(folder, tmp_path) as server:

        def post(path: str, body: dict) -> dict:
            request = urllib.request.Request(
                f"{server.url}{path}", json.dumps(body).encode(), {"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=120) as response:
                return json.loads(response.read())

        # vLLM renders the folder's chat template (the Magicoder format) exactly as transformers does
        served = post("/tokenize", {"model": server.model, "messages": messages, "add_generation_prompt": True})
        tokenizer = AutoTokenizer.from_pretrained(folder)
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert isinstance(text, str)
        assert text.endswith("@@ Instruction\nWrite a function that adds two numbers.\n\n@@ Response\n")
        assert served["tokens"] == tokenizer(text, add_special_tokens=False)["input_ids"]
        answer = post("/v1/chat/completions", {"model": server.model, "messages": messages, "max_tokens": 8})
        assert answer["choices"][0]["message"]["content"] and answer["usage"]["completion_tokens"] > 0
