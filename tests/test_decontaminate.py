"""Decontamination against the real HumanEval+ / MBPP+ data through evalplus's loaders."""

import pytest

from inversecoder.builders.decontaminate import Decontaminator
from inversecoder.config import DecontaminateConfig
from inversecoder.eval.benchmarks import load_benchmark


@pytest.fixture(scope="module")
def checker(benchmarks_dir, tmp_path_factory):
    return Decontaminator(DecontaminateConfig(), str(benchmarks_dir), tmp_path_factory.mktemp("bench"))


def test_indexes_every_task_and_records_versions(checker):
    assert checker.task_count == 164 + 378
    assert "fe585eb4df8c88d844eeb463ea4d0302" in checker.versions["humaneval"]  # the standard md5 of the jsonl
    assert "ee43ecabebf20deef4bb776a405ac5b1" in checker.versions["mbpp"]


def test_a_copied_problem_statement_is_caught_with_its_task(checker):
    text = ("Please help: Check if in given list of numbers, are any two numbers closer to each other than\n"
            "    given threshold. I need it in Python.")
    match = checker.check(text)
    assert match is not None and match.task_id == "HumanEval/0" and match.layer == "substring"


def test_a_copied_solution_is_caught_whatever_the_whitespace(checker, benchmarks_dir, tmp_path):
    problem = load_benchmark("mbpp", str(benchmarks_dir), tmp_path).problems["Mbpp/100"]
    reformatted = "\n\n".join(line.strip() for line in problem["canonical_solution"].splitlines())
    match = checker.check("Here is my code:\n" + reformatted.upper())
    assert match is not None and match.task_id == "Mbpp/100"


def test_long_shared_word_sequences_are_caught_by_the_ngram_layer(checker, benchmarks_dir, tmp_path):
    problem = load_benchmark("humaneval", str(benchmarks_dir), tmp_path).problems["HumanEval/10"]
    statement = problem["prompt"].split('"""')[3]  # make_palindrome's docstring (is_palindrome, a helper, comes first)
    words = " ".join(statement.split()[:14])  # 14 words of the statement, punctuation changed
    match = checker.check("Task - " + "; ".join(words.split()))
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
    assert checker.check(problem["canonical_solution"]) is None  # 6 words: min_substring_words is 8
