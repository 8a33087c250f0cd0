"""The decontamination cascade on real benchmark data: retrieval, execution in the real sandbox, the judge.

Rows are rewrites the direct layers miss (a canonical solution renamed, behind an instruction that does not
state the task): the execution tier must find them and say how (tier, rank, tests passed); generic one-liners
that solve a trivial task must not count. The judge's plumbing runs on the tiny model (its answers are
noise); its decision rule is checked with scores set by hand.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from inversecoder.builders.cascade import Cascade
from inversecoder.builders.decontaminate import Decontaminator, load_tasks
from inversecoder.core.backends import CachedModel, open_model
from inversecoder.core.backends.base import YesNoScore
from inversecoder.core.config import DecontaminateConfig, load_config
from inversecoder.core.layout import Layout

#: HumanEval/0's canonical solution, renamed, behind an instruction that does not say what it does
RENAMED_HE0 = """Here is the refactored version:

```python
def readings_too_close(readings, eps):
    for first_index, first in enumerate(readings):
        for second_index, second in enumerate(readings):
            if first_index != second_index:
                gap = abs(first - second)
                if gap < eps:
                    return True
    return False
```
"""
#: the same, its parameters reordered and wrapped in a class
CLASS_HE0 = """```python
class ProximityChecker:
    def check(self, eps, readings):
        for first_index, first in enumerate(readings):
            for second_index, second in enumerate(readings):
                if first_index != second_index and abs(first - second) < eps:
                    return True
        return False
```"""
GENERIC = "```python\ndef add(a, b):\n    return a + b\n```"
GENERIC_MAX = "```python\ndef maximum(xs):\n    return max(xs)\n```"
HANGS = "```python\ndef spin(numbers, threshold):\n    while True:\n        pass\n```"
NEUTRAL = "Can you make this function easier to read?"


@pytest.fixture(scope="module")
def tasks(benchmarks_dir, tmp_path_factory):
    return load_tasks(["humaneval", "mbpp"], str(benchmarks_dir), tmp_path_factory.mktemp("bench"))


@pytest.fixture(scope="module")
def checker(tasks):
    return Decontaminator(DecontaminateConfig(), None, Path("."), tasks=tasks[0], versions=tasks[1])


def cascade(checker, tmp_path: Path, benchmarks_dir, model: CachedModel | None = None, **settings) -> Cascade:
    config = DecontaminateConfig(**settings)
    checker.config = config
    return Cascade(
        checker,
        config,
        Layout(tmp_path),
        model,
        benchmark_source=(str(benchmarks_dir), tmp_path / "benchmarks"),
    )


def test_a_renamed_solution_behind_a_neutral_instruction_is_found_by_execution(checker, tmp_path, benchmarks_dir):
    screen = cascade(checker, tmp_path, benchmarks_dir, judge=False)
    try:
        rows = [(NEUTRAL, RENAMED_HE0), (NEUTRAL, CLASS_HE0), ("Add two numbers.", GENERIC), (NEUTRAL, HANGS)]
        direct = checker.check_rows(rows)
        assert not direct[0] and not direct[1]  # the direct layers miss both rewrites
        renamed, wrapped, generic, hangs = screen.check_rows(rows)
        for found in (renamed, wrapped):
            best = found[0]
            assert (best.task_id, best.layer, best.tier) == ("HumanEval/0", "execution", "execution")
            assert best.tests_total is not None and best.tests_passed == best.tests_total >= 3
            assert best.rank is not None and best.similarity is not None and 1 <= best.rank <= 5
        assert "ProximityChecker().check" in wrapped[0].text
        assert generic == [] and hangs == []  # too short to be evidence; a hanging row is simply no match
        assert screen.counts.sandbox_runs >= 3 and screen.counts.removed["execution"] == 2
    finally:
        screen.close()


def test_a_rerun_reuses_every_verdict_and_runs_nothing(checker, tmp_path, benchmarks_dir):
    rows = [(NEUTRAL, RENAMED_HE0), (NEUTRAL, HANGS)]
    first = cascade(checker, tmp_path, benchmarks_dir, judge=False)
    try:
        before = first.check_rows(rows)
    finally:
        first.close()
    again = cascade(checker, tmp_path, benchmarks_dir, judge=False)
    try:
        assert again.check_rows(rows) == before
        assert again.counts.sandbox_runs == 0 and again.counts.executed == 0
        assert again.counts.executions_cached == first.counts.executed > 0
        assert again.sandbox_level() is None  # never even opened
    finally:
        again.close()


def test_the_execution_tier_off_sends_its_candidates_to_the_judge(checker, tmp_path, benchmarks_dir, tiny_model_dir):
    config = load_config(None, [f"generator.model={tiny_model_dir}"], output_dir=str(tmp_path / "run"))
    judge = open_model(config, progress=False)
    screen = cascade(
        checker, tmp_path, benchmarks_dir, model=judge, execution=False, judge_threshold=1e-9, judge_min_mass=0.0
    )
    try:
        rows = [(NEUTRAL, RENAMED_HE0)]
        (found,) = screen.check_rows(rows)
        # threshold ~0: whatever the tiny model says, every candidate is judged "same problem", with its P(Yes)
        assert found and all(m.layer == "judge" and m.p_yes is not None and 0 <= m.p_yes <= 1 for m in found)
        assert "HumanEval/0" in {m.task_id for m in found}
        assert screen.counts.judged == len(found) and screen.counts.sandbox_runs == 0
        calls = judge.computed
        assert screen.check_rows(rows) == [found] and judge.computed == calls  # the judge's calls are cached
    finally:
        screen.close()


@pytest.mark.parametrize(
    ("score", "mass", "flagged"),
    [(0.95, 0.9, True), (0.9, 0.5, True), (0.89, 0.9, False), (0.99, 0.1, False), (None, None, False)],
)
def test_the_judges_decision_rule(score, mass, flagged):
    config = DecontaminateConfig()  # threshold 0.9, Yes + No at least half the first token's probability
    assert Cascade.judged_same(YesNoScore(score, mass), config) is flagged


QUICKSORT = """```python
def quicksort(items):
    if len(items) <= 1:
        return items
    pivot = items[len(items) // 2]
    left = [x for x in items if x < pivot]
    middle = [x for x in items if x == pivot]
    right = [x for x in items if x > pivot]
    return quicksort(left) + middle + quicksort(right)
```"""


def test_what_generic_code_solves_is_left_to_the_direct_layers(checker, tmp_path, benchmarks_dir):
    screen = cascade(checker, tmp_path, benchmarks_dir, judge=False)
    index = {task.task_id: i for i, task in enumerate(checker.tasks)}
    try:
        # any sort passes the tests of "sort with shell sort" (Mbpp/428); `a + b` those of HumanEval/53
        assert screen.generic(index["Mbpp/428"]) == "sorted" and screen.generic(index["HumanEval/53"]) == "add"
        assert screen.generic(index["HumanEval/0"]) is None and screen.generic(index["HumanEval/61"]) is None
        rows = [("Implement quicksort in Python.", QUICKSORT), ("Return the largest item of a list.", GENERIC_MAX)]
        quicksort, paraphrase = screen.check_rows(rows)
        assert quicksort == []  # it passes four MBPP sort tasks' tests, as `sorted` does: no evidence
        # the direct layers still see those tasks: this instruction paraphrases HumanEval/35's statement
        assert [(m.task_id, m.layer) for m in paraphrase] == [("HumanEval/35", "semantic")]
    finally:
        screen.close()


def _he0_with(prelude: str) -> str:
    """HumanEval/0 renamed, with `prelude` run first in the function (the code shape stays: it is retrieved)."""
    body = RENAMED_HE0.split("```python\n")[1].split("```")[0]
    head, rest = body.split("\n", 1)
    return (
        "```python\nimport os\n"
        + head
        + "\n"
        + "".join(f"    {line}\n" for line in prelude.splitlines())
        + rest
        + "```"
    )


def test_hostile_rows_never_stop_a_build_and_the_card_counts_the_tiers(benchmarks_dir, tmp_path, monkeypatch):
    import json

    import yaml
    from test_stages import stand_in_model

    from inversecoder.builders import pipeline
    from inversecoder.hub_cards.dataset_card import write_dataset_card

    hostile = {
        "hangs": "while True:\n    pass",
        "forks": "while True:\n    os.fork()",
        "reads": "open('/etc/passwd').read()\nopen(os.path.expanduser('~/.bashrc')).read()",
        "prints": "print('x' * 50_000_000)\nraise SystemExit",
    }
    rows = [{"instruction": NEUTRAL, "response": _he0_with(code)} for code in hostile.values()]
    rows.append({"instruction": NEUTRAL, "response": RENAMED_HE0})
    source = tmp_path / "hostile.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    recipe = {
        "benchmarks_dir": str(benchmarks_dir),
        "source": {"path": str(source)},
        "generator": {"model": "stand-in"},
        "summarize": {"num_samples": 2},
        "decontaminate": {"judge": False},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    config = load_config(tmp_path / "r.yaml", output_dir=str(tmp_path / "out"))
    monkeypatch.setattr(pipeline, "open_model", lambda config, *a, **k: stand_in_model(config.layout.cache))
    result = pipeline.build_dataset(config, progress=False, write_card=write_dataset_card)
    assert result.counts["source pairs removed by decontamination"] == 1  # the clean rewrite, by execution
    assert result.counts["usable source rows"] == 5
    card = (result.dataset_dir / "README.md").read_text()
    assert (
        "| execution | 0 | 1 |" in card and "verified by execution" in card and "no judge (decontaminate.judge" in card
    )
    report = json.loads((result.dataset_dir / "build_report.json").read_text())["decontamination"]["cascade"]
    assert report["executed"] >= 5 and report["execution"]["sandbox"].startswith("namespaces")
