"""The evaluation harness against the real EvalPlus data and evalplus's own checker."""

from __future__ import annotations

import json
import os

import pytest

from inversecoder.builders.backends.base import BackendInfo, CachedModel, Completion
from inversecoder.builders.cache import ResultCache
from inversecoder.config import EvalConfig
from inversecoder.eval import harness
from inversecoder.eval.benchmarks import load_benchmark
from inversecoder.errors import UserError

SYSTEM = (
    "You are an exceptionally intelligent coding assistant that consistently delivers accurate and "
    "reliable responses to user instructions."
)


@pytest.fixture(scope="module")
def benchmarks(benchmarks_dir, tmp_path_factory):
    cache = tmp_path_factory.mktemp("bench-cache")
    return {name: load_benchmark(name, str(benchmarks_dir), cache) for name in ("humaneval", "mbpp")}


def first_ids(benchmark, n: int = 8) -> list[str]:
    return list(benchmark.problems)[:n]


def canonical(benchmark, task_id: str) -> str:
    """How evalplus itself forms the reference program (get_groundtruth), for both datasets."""
    problem = benchmark.problems[task_id]
    return problem["prompt"] + problem["canonical_solution"]


def returns_none(benchmark, task_id: str) -> str:
    problem = benchmark.problems[task_id]
    if benchmark.name == "humaneval":
        return problem["prompt"] + "    return None\n"
    return f"def {problem['entry_point']}(*args):\n    return None\n"


# -- checking ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["humaneval", "mbpp"])
def test_canonical_solutions_pass(benchmarks, name):
    benchmark = benchmarks[name]
    samples = [{"task_id": t, "solution": canonical(benchmark, t)} for t in first_ids(benchmark)]
    result = harness.check_solutions(benchmark, samples, parallel=0, min_time_limit=1.0, gt_time_limit_factor=4.0)
    assert result["pass@1"] == {"base": 1.0, "plus": 1.0}
    assert list(result["tasks"]) == first_ids(benchmark)
    for outcome in result["tasks"].values():
        assert outcome["base_status"] == outcome["plus_status"] == "pass"
        assert outcome["passed_base"] and outcome["passed_plus"]
        assert outcome["n"] == 1 and outcome["n_passed_plus"] == 1


@pytest.mark.parametrize("name", ["humaneval", "mbpp"])
def test_wrong_solutions_score_zero(benchmarks, name):
    benchmark = benchmarks[name]
    ids = first_ids(benchmark, 4)
    samples = [{"task_id": t, "solution": returns_none(benchmark, t)} for t in ids[:2]]
    samples += [{"task_id": t, "solution": "def broken(:\n    return 1\n"} for t in ids[2:]]
    samples.append({"task_id": ids[0], "solution": ""})  # a failed generation
    result = harness.check_solutions(benchmark, samples, parallel=2, min_time_limit=1.0, gt_time_limit_factor=4.0)
    assert result["pass@1"] == {"base": 0.0, "plus": 0.0}
    assert all(s["base_status"] == "fail" and not s["passed_plus"] for s in result["samples"])
    assert result["tasks"][ids[0]]["n"] == 2


def test_several_samples_per_task_use_the_unbiased_estimator(benchmarks):
    benchmark = benchmarks["humaneval"]
    a, b = first_ids(benchmark, 2)
    samples = [
        {"task_id": a, "solution": canonical(benchmark, a)},
        {"task_id": a, "solution": returns_none(benchmark, a)},
        {"task_id": b, "solution": returns_none(benchmark, b)},
        {"task_id": b, "solution": returns_none(benchmark, b)},
    ]
    result = harness.check_solutions(benchmark, samples, parallel=0, min_time_limit=1.0, gt_time_limit_factor=4.0)
    assert result["pass@1"] == {"base": 0.25, "plus": 0.25}  # (1/2 + 0/2) / 2
    assert result["tasks"][a]["n_passed_plus"] == 1 and len(result["tasks"][a]["samples"]) == 2


def test_humaneval_32_checker_rejects_even_the_canonical_solution(benchmarks):
    """evalplus 0.3.1's find_zero oracle `continue`s before recording a pass: nothing can pass it.
    If this starts failing, evalplus fixed it and the expected ceiling of HumanEval+ is 164/164."""
    benchmark = benchmarks["humaneval"]
    samples = [{"task_id": "HumanEval/32", "solution": canonical(benchmark, "HumanEval/32")}]
    result = harness.check_solutions(benchmark, samples, parallel=1, min_time_limit=1.0, gt_time_limit_factor=4.0)
    assert result["tasks"]["HumanEval/32"]["base_status"] == "fail"


def test_subset_ground_truth_is_cached_under_its_own_hash(benchmarks, tmp_path, monkeypatch):
    import evalplus.evaluate

    monkeypatch.setattr(evalplus.evaluate, "CACHE_DIR", str(tmp_path))
    benchmark = benchmarks["mbpp"]
    ids = first_ids(benchmark, 2)
    samples = [{"task_id": t, "solution": canonical(benchmark, t)} for t in ids]
    result = harness.check_solutions(benchmark, samples, parallel=0, min_time_limit=1.0, gt_time_limit_factor=4.0)
    subset_hash = result["groundtruth_hash"]
    assert subset_hash.startswith(benchmark.hash + "-") and subset_hash != benchmark.hash
    assert sorted(os.listdir(tmp_path)) == [f"{subset_hash}.pkl"]
    assert not (tmp_path / f"{benchmark.hash}.pkl").exists()
    assert harness.groundtruth_hash(benchmark, reversed(ids)) == subset_hash  # order does not matter
    assert harness.groundtruth_hash(benchmark, benchmark.problems) == benchmark.hash  # the full set shares evalplus's


def test_unknown_task_ids_are_rejected(benchmarks):
    with pytest.raises(UserError, match="not in MBPP"):
        harness.check_solutions(benchmarks["mbpp"], [{"task_id": "Mbpp/1", "solution": ""}])


# -- prompts ----------------------------------------------------------------------------------------
HUMANEVAL_0 = '''from typing import List


def has_close_elements(numbers: List[float], threshold: float) -> bool:
    """ Check if in given list of numbers, are any two numbers closer to each other than
    given threshold.
    >>> has_close_elements([1.0, 2.0, 3.0], 0.5)
    False
    >>> has_close_elements([1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3)
    True
    """'''


def test_humaneval_prompt_is_the_papers(benchmarks):
    task = harness.build_tasks(benchmarks["humaneval"])[0]
    assert task.task_id == "HumanEval/0"
    expected = (
        f"{SYSTEM}\n\n@@ Instruction\nWrite a solution to the following problem:\n```python\n{HUMANEVAL_0}\n```\n\n"
        f"@@ Response\n```python\n{HUMANEVAL_0}"
    )
    assert task.prompt == expected
    assert task.prefill_code == HUMANEVAL_0


def test_mbpp_prompt_is_the_papers(benchmarks):
    tasks = {t.task_id: t for t in harness.build_tasks(benchmarks["mbpp"])}
    assert len(tasks) == 378
    expected = (
        f"{SYSTEM}\n\n@@ Instruction\n"
        "Write a function to find the shared elements from the given two lists. "
        "Your code should satisfy the following assertion:\n```python\n"
        "assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))\n```\n\n"
        "@@ Response\n```python"
    )
    assert tasks["Mbpp/2"].prompt == expected
    assert tasks["Mbpp/2"].prefill_code == ""
    # a description without a final period gets one, as upstream does
    assert "has no profit and no loss. Your code should" in tasks["Mbpp/637"].instruction
    assert [t.task_id for t in harness.build_tasks(benchmarks["mbpp"], limit=3)] == ["Mbpp/2", "Mbpp/3", "Mbpp/4"]


# -- generation -------------------------------------------------------------------------------------
class ScriptedBackend:
    """Answers each prompt with a fixed completion (or an error): the protocol, without a model."""

    def __init__(self, answers: dict[str, Completion]):
        self.answers = answers

    def info(self) -> BackendInfo:
        return BackendInfo("scripted", "scripted", "0", 4096)

    def plan_batches(self, prompts, new_tokens):
        return [list(range(len(prompts)))]

    def generate(self, requests, params):
        assert params.temperature == 0.0 and params.stop == ("```",)
        return [self.answers[r.prompt] for r in requests]

    def score_yes_no(self, prompts):
        raise NotImplementedError


def test_generate_solutions_prefill_fence_and_errors(benchmarks, tmp_path):
    he = harness.build_tasks(benchmarks["humaneval"], limit=1)[0]
    mb = harness.build_tasks(benchmarks["mbpp"], limit=2)
    answers = {
        he.prompt: Completion("\n    return False\n```\nsome prose"),
        mb[0].prompt: Completion("\ndef similar_elements(a, b):\n    return ()\n", "length"),
        mb[1].prompt: Completion(None, "error", error="prompt too long"),
    }
    model = CachedModel(ScriptedBackend(answers), ResultCache(tmp_path / "c.sqlite"), progress=False)
    samples = harness.generate_solutions(model, [he, *mb], max_new_tokens=8)
    assert samples[0]["solution"] == HUMANEVAL_0 + "\n    return False\n"
    assert samples[0]["raw_completion"] == "\n    return False\n```\nsome prose"
    assert samples[1]["solution"].startswith("\ndef similar_elements") and samples[1]["finish_reason"] == "length"
    assert samples[2] == {
        "task_id": "Mbpp/3", "solution": "", "raw_completion": "", "finish_reason": "error", "error": "prompt too long"
    }


# -- end to end -------------------------------------------------------------------------------------
def test_evaluate_model_end_to_end(benchmarks_dir, tiny_model_dir, tmp_path, capsys):
    from evalplus.data import load_solutions

    from inversecoder.builders.backends.transformers_backend import TransformersBackend

    backend = TransformersBackend(str(tiny_model_dir), batch_tokens=8192)
    cache = ResultCache(tmp_path / "cache.sqlite")
    model = CachedModel(backend, cache, progress=False)
    config = EvalConfig(limit=3, max_new_tokens=16)
    out = tmp_path / "eval"
    results = harness.evaluate_model(model, config, str(benchmarks_dir), tmp_path / "data", out)
    assert model.computed == 6
    printed = capsys.readouterr().out

    on_disk = json.loads((out / "eval_results.json").read_text())
    assert on_disk == json.loads(json.dumps(results))
    assert set(on_disk) == {"benchmarks", "settings", "versions"}
    for name, dataset, version, count in (("humaneval", "HumanEval+", "v0.1.10", 164), ("mbpp", "MBPP+", "v0.2.0", 378)):
        summary = on_disk["benchmarks"][name]
        assert (summary["dataset"], summary["version"], summary["n_tasks"], summary["limit"]) == (dataset, version, 3, 3)
        assert summary["n_tasks_total"] == count and len(summary["hash"]) == 32
        assert 0.0 <= summary["pass@1"]["plus"] <= summary["pass@1"]["base"] <= 1.0
        assert len(summary["tasks"]) == 3
        rows = [json.loads(line) for line in (out / f"{name}_samples.jsonl").read_text().splitlines()]
        assert [r["task_id"] for r in rows] == list(summary["tasks"])
        assert all({"task_id", "solution", "raw_completion", "finish_reason", "error"} <= set(r) for r in rows)
        assert len(list(load_solutions(str(out / f"{name}_samples.jsonl")))) == 3  # evalplus reads it
        raw = json.loads((out / f"{name}_raw_results.json").read_text())
        assert raw["tasks"] == summary["tasks"] and raw["hash"] == summary["hash"]
        assert f"{dataset} {version} (3/{count} tasks): pass@1 base" in printed
    settings = on_disk["settings"]
    assert settings["decoding"] == {"greedy": True, "max_new_tokens": 16, "stop": ["```"], "n_samples": 1}
    assert settings["backend"]["backend"] == "transformers" and settings["backend"]["revision"].startswith("local-")
    assert "Your code should satisfy the following assertion" in settings["prompt_templates"]["mbpp"]["instruction"]
    assert on_disk["versions"]["evalplus"] == "0.3.1"
    assert not list(out.glob("*.tmp"))

    again = CachedModel(backend, cache, progress=False)
    second = harness.evaluate_model(again, config, str(benchmarks_dir), tmp_path / "data", out)
    assert again.computed == 0 and again.reused == 6
    assert second["benchmarks"] == results["benchmarks"]
