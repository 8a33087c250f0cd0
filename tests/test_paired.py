"""Honest deltas: the M -> InverseCoder comparison carries a paired interval and an exact p-value per benchmark.

The statistics on constructed per-task scores with values known exactly (binomial tails, a constant
difference), then the report through its real path: samples scored by the harness in the sandbox for both
models, `write_report` writing run_summary.{json,md} and the model card.
"""

from __future__ import annotations

import json
import math
import shutil

import pytest
from conftest import REPO
from huggingface_hub import ModelCard

from inversecoder.comparison import comparison, task_scores
from inversecoder.core.paired import METHOD, bootstrap_interval, paired_delta, sign_test


def exact_two_sided(better: int, worse: int) -> float:
    """The sign test's p-value written out: twice the smaller binomial tail (capped at 1)."""
    n, k = better + worse, min(better, worse)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)


# -- the statistics -----------------------------------------------------------------------------------
def test_ten_discordant_tasks_all_in_favour_give_p_2_over_1024():
    result = paired_delta([1] * 10 + [0] * 20, [0] * 30)
    assert result.p_value == 2 / 1024
    assert (result.tasks, result.better, result.worse) == (30, 10, 0)
    assert result.delta == pytest.approx(100 * 10 / 30)
    assert 0 < result.ci_low < result.delta < result.ci_high <= 100 * 20 / 30
    assert result.significant and result.verdict == "significant gain"
    flipped = paired_delta([0] * 30, [1] * 10 + [0] * 20)
    assert flipped.p_value == 2 / 1024 and flipped.verdict == "significant loss"
    assert (flipped.ci_low, flipped.ci_high) == (-result.ci_high, -result.ci_low)  # the same draws, mirrored


def test_an_identical_pair_has_delta_0_interval_0_0_and_p_1():
    scores = [1, 0, 1, 1, 0, 0.5]
    result = paired_delta(scores, scores)
    assert (result.delta, result.ci_low, result.ci_high, result.p_value) == (0, 0, 0, 1)
    assert not result.significant and result.verdict == "not significant"
    record = result.record()
    assert math.copysign(1, record["delta"]) == 1 and math.copysign(1, record["ci_low"]) == 1  # never "-0.0"


def test_a_gain_of_1_2_points_on_164_tasks_is_not_significant():
    """5 tasks gained, 3 lost, 156 the same: +2 tasks of 164 = +1.2 points, p = 186/256."""
    ours = [1] * 5 + [0] * 3 + [1] * 80 + [0] * 76
    theirs = [0] * 5 + [1] * 3 + [1] * 80 + [0] * 76
    result = paired_delta(ours, theirs)
    assert round(result.delta, 1) == 1.2
    assert result.p_value == pytest.approx(186 / 256, abs=1e-12)
    assert result.ci_low < 0 < result.ci_high
    assert not result.significant
    assert result.record()["verdict"] == "not significant"


@pytest.mark.parametrize(("better", "worse"), [(0, 1), (1, 1), (3, 7), (9, 2), (17, 4), (40, 25)])
def test_the_sign_test_is_the_exact_binomial(better, worse):
    assert sign_test(better, worse) == pytest.approx(exact_two_sided(better, worse), rel=1e-9)
    assert sign_test(better, worse) == sign_test(worse, better)
    assert sign_test(0, 0) == 1.0


def test_the_bootstrap_interval_matches_the_normal_approximation_and_its_seed():
    """30 tasks gained, 10 lost of 164: the percentile interval is within one task (0.6 points) of
    mean +/- 1.96 standard errors; the same seed draws the same interval, another one within a task of it."""
    differences = [1] * 30 + [-1] * 10 + [0] * 124
    n = len(differences)
    mean = sum(differences) / n
    se = math.sqrt((sum(d * d for d in differences) / n - mean**2) / n)
    low, high = bootstrap_interval(differences)
    assert low == pytest.approx(mean - 1.96 * se, abs=1 / n)
    assert high == pytest.approx(mean + 1.96 * se, abs=1 / n)
    assert bootstrap_interval(differences) == (low, high)
    other = bootstrap_interval(differences, seed=1)
    assert abs(other[0] - low) <= 1 / n and abs(other[1] - high) <= 1 / n
    assert all(round(v * n, 9).is_integer() for v in (low, high))  # endpoints are resampled deltas: k/164
    assert bootstrap_interval([0.25] * 7) == (0.25, 0.25)


def test_fractional_scores_from_several_samples_count_as_better_or_worse_by_task():
    result = paired_delta([0.5, 1.0, 0.0, 0.3], [0.0, 1.0, 0.5, 0.3])
    assert (result.better, result.worse, result.p_value) == (1, 1, 1.0)
    assert result.delta == pytest.approx(0.0)


def test_one_task_is_never_significant_though_every_resample_favours_it():
    """Both must agree: the interval [100, 100] excludes 0, but one win in one try has p = 1."""
    result = paired_delta([1], [0])
    assert (result.ci_low, result.ci_high, result.p_value) == (100, 100, 1.0)
    assert not result.significant


def test_unpaired_input_is_refused():
    with pytest.raises(ValueError, match="same tasks"):
        paired_delta([1, 0], [1])
    with pytest.raises(ValueError, match="no tasks"):
        paired_delta([], [])


# -- the report, through the harness and write_report --------------------------------------------------
IDS = [f"HumanEval/{i}" for i in range(12)]


def _score(benchmark, benchmarks_dir, folder, solved: dict[str, list[bool]]):
    """Score a samples file through `score_samples_file` into `folder`: per task, one sample per entry of
    `solved` (the canonical solution, or one that returns None)."""
    from inversecoder.eval import harness

    problem = benchmark.problems
    rows = [
        {
            "task_id": task_id,
            "solution": problem[task_id]["prompt"]
            + (problem[task_id]["canonical_solution"] if right else "    return None\n"),
        }
        for task_id, outcomes in solved.items()
        for right in outcomes
    ]
    samples = folder.parent / f"{folder.name}-samples.jsonl"
    samples.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return harness.score_samples_file(
        samples, "humaneval", str(benchmarks_dir), folder.parent / "bench-cache", folder, parallel=2, progress=False
    )


@pytest.fixture
def run_config(tiny_model_dir, benchmarks_dir, tmp_path):
    """A run's output folder holding InverseCoder (the tiny model, so the card is written)."""
    from inversecoder.core.config import load_config

    config = load_config(
        REPO / "configs" / "demo.yaml",
        [f"generator.model={tiny_model_dir}", f"benchmarks_dir={benchmarks_dir}"],
        output_dir=str(tmp_path / "out"),
    )
    shutil.copytree(tiny_model_dir, config.layout.model)
    return config


def test_the_card_and_run_summary_carry_each_deltas_interval_p_value_and_verdict(
    benchmarks, benchmarks_dir, run_config
):
    """M solves 4 of 12 HumanEval tasks, InverseCoder 10 (6 gained, none lost): p = 2/64, a significant gain,
    on base and plus tests alike; every number of the card's row is the run summary's."""
    from inversecoder.workflow import write_report

    layout = run_config.layout
    benchmark = benchmarks["humaneval"]
    _score(benchmark, benchmarks_dir, layout.eval_generator, {t: [i < 4] for i, t in enumerate(IDS)})
    _score(benchmark, benchmarks_dir, layout.eval, {t: [i < 10] for i, t in enumerate(IDS)})
    write_report(run_config)

    summary = json.loads(layout.run_summary_json.read_text())
    assert summary["comparison_method"] == METHOD
    rows = summary["comparison"]
    assert [row["benchmark"] for row in rows] == ["HumanEval", "HumanEval+"]
    card = ModelCard.load(layout.model / "README.md")
    markdown = layout.run_summary_md.read_text()
    for row in rows:
        paired = row["paired"]
        assert (row["tasks"], paired["tasks"], paired["better"], paired["worse"]) == (12, 12, 6, 0)
        assert (row["generator"], row["inversecoder"], row["delta"]) == (33.3, 83.3, 50.0)
        assert paired["p_value"] == round(2 / 64, 6)
        assert 0 < paired["ci_low"] < 50 < paired["ci_high"]
        assert paired["significant"] and paired["verdict"] == "significant gain"
        ci = f"[{paired['ci_low']:+.1f}, {paired['ci_high']:+.1f}]"
        assert (
            f"| {row['benchmark']} | 12 | 33.3 | 83.3 | +50.0 | {ci} | 0.0312 | significant gain "
            "(6 tasks better, 0 worse) |" in card.text
        )
        assert f"| {row['benchmark']} | 12 | 33.3 | 83.3 | +50.0 | {ci} | 0.0312 | significant gain |" in markdown
    assert METHOD["bootstrap"] in card.text and METHOD["significant"] in card.text
    # InverseCoder's samples came from a file: the card says its decoding is unknown rather than inventing one
    sha256 = json.loads((layout.eval / "eval_results.json").read_text())["settings"]["samples"]["sha256"]
    assert f"samples generated elsewhere and scored from a file (sha256 `{sha256}`)" in card.text
    assert "max_new_tokens None" not in card.text


def test_models_are_joined_by_task_id_over_the_tasks_both_evaluated(benchmarks, benchmarks_dir, tmp_path):
    """M scored on 8 tasks, InverseCoder on 12 (two samples on one of them: a per-task score of 1/2): the
    delta, its interval and the columns are over the 8 shared tasks, and the row says so."""
    benchmark = benchmarks["humaneval"]
    theirs = _score(benchmark, benchmarks_dir, tmp_path / "m", {t: [i in (0, 1, 5)] for i, t in enumerate(IDS[:8])})
    solved = {t: [i in (0, 1, 2, 3)] for i, t in enumerate(IDS)} | {IDS[4]: [True, False]}
    ours = _score(benchmark, benchmarks_dir, tmp_path / "ic", solved)
    row = comparison(ours, theirs)[0]
    assert row["shared_only"] == {"inversecoder_tasks": 12, "generator_tasks": 8}
    mine, other = (
        task_scores(ours["benchmarks"]["humaneval"], "base"),
        task_scores(theirs["benchmarks"]["humaneval"], "base"),
    )
    assert mine is not None and other is not None and mine[IDS[4]] == 0.5
    expected = paired_delta([mine[t] for t in IDS[:8]], [other[t] for t in IDS[:8]])
    assert row["paired"] == expected.record()
    assert (row["tasks"], row["paired"]["better"], row["paired"]["worse"]) == (8, 3, 1)  # tasks 2, 3, 4 vs 5
    assert row["inversecoder"] == round(100 * 4.5 / 8, 1) and row["generator"] == round(100 * 3 / 8, 1)
    # the delta shown is the difference of the scores shown beside it (56.2 - 37.5), the exact one is paired's
    assert row["delta"] == round(row["inversecoder"] - row["generator"], 1) == 18.7
    assert row["paired"]["verdict"] == "not significant"
