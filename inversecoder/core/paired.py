"""Is a delta between two models on the same benchmark tasks more than chance? Paired statistics.

Two models scored on the same tasks agree on most of them; what a delta rests on is the few tasks where
they differ. On 164 tasks, one task is 0.6 points, so a +1.2 point gain can be two tasks' luck. Two views
of the same per-task scores (a task's pass@1: 0 or 1 for one greedy sample, passed/n for n samples):

- a paired bootstrap over tasks: tasks resampled with replacement (the same draw for both models), the
  percentile interval of the resampled mean deltas. numpy draws the indices from a seeded
  `default_rng`, so the interval is the same on every machine and scipy version; its endpoints are
  resampled deltas (quantile method `inverted_cdf`, not interpolated), so 0 is never blurred into +0.0;
- an exact two-sided sign test on the tasks where the scores differ (`scipy.stats.binomtest`, p = 1/2):
  for pass/fail scores this is McNemar's exact test on the discordant tasks.

A delta is called significant only when both agree: p < 1 - confidence and the interval excludes 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

BOOTSTRAP_SAMPLES = 10_000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95
_CHUNK = 1_000  # resamples drawn at once: 1,000 x 378 MBPP+ tasks is 3 MB of indices

METHOD = {
    "bootstrap": f"paired, over tasks, {BOOTSTRAP_SAMPLES:,} resamples (numpy default_rng seed {BOOTSTRAP_SEED}), "
    f"{CONFIDENCE:.0%} percentile interval",
    "test": "exact two-sided sign test on the tasks where the two scores differ "
    "(McNemar's exact test for pass/fail), scipy.stats.binomtest",
    "significant": f"p < {1 - CONFIDENCE:.2f} and the interval excludes 0",
}


@dataclass(frozen=True)
class PairedDelta:
    """One comparison, in points (percent of tasks): `ours - theirs` over the same `tasks`."""

    tasks: int
    ours: float  # mean per-task score, points
    theirs: float
    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    better: int  # tasks where ours scores higher
    worse: int  # tasks where theirs does
    significant: bool

    @property
    def verdict(self) -> str:
        if not self.significant:
            return "not significant"
        return "significant gain" if self.delta > 0 else "significant loss"

    def record(self) -> dict[str, Any]:
        """For a JSON file: points to 2 decimals (finer than the card's 1), the p-value to 4 significant digits."""
        values = asdict(self)
        for key in ("ours", "theirs", "delta", "ci_low", "ci_high"):
            values[key] = round(values[key], 2) + 0.0  # + 0.0: no -0.0
        values["p_value"] = float(f"{self.p_value:.4g}")
        return values | {"verdict": self.verdict}


def bootstrap_interval(
    differences: Sequence[float],
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> tuple[float, float]:
    """The percentile interval of the mean of `differences` over `samples` resamples of its tasks."""
    import numpy as np

    values = np.asarray(differences, dtype=float)
    if values.size == 0:
        raise ValueError("no tasks to resample")
    rng = np.random.default_rng(seed)
    means = np.concatenate(
        [
            values[rng.integers(0, values.size, size=(min(_CHUNK, samples - start), values.size))].mean(axis=1)
            for start in range(0, samples, _CHUNK)
        ]
    )
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail], method="inverted_cdf")
    return float(low), float(high)


def sign_test(better: int, worse: int) -> float:
    """Two-sided exact p-value of `better` wins against `worse` losses under "either is as likely"; ties
    carry no information and are not counted. No differing task: p = 1."""
    if better + worse == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(better, better + worse, 0.5).pvalue)


def paired_delta(
    ours: Sequence[float],
    theirs: Sequence[float],
    *,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> PairedDelta:
    """Per-task scores (in [0, 1]) of two models on the same tasks, in the same order."""
    if len(ours) != len(theirs):
        raise ValueError(f"paired scores need the same tasks: {len(ours)} vs {len(theirs)}")
    if not ours:
        raise ValueError("no tasks to compare")
    differences = [a - b for a, b in zip(ours, theirs, strict=True)]
    better, worse = sum(d > 0 for d in differences), sum(d < 0 for d in differences)
    low, high = bootstrap_interval(differences, samples, seed, confidence)
    p_value = sign_test(better, worse)
    n, alpha = len(differences), round(1 - confidence, 12)  # 1 - 0.95 is 0.050000000000000044
    return PairedDelta(
        tasks=n,
        ours=100 * sum(ours) / n,
        theirs=100 * sum(theirs) / n,
        delta=100 * sum(differences) / n,
        ci_low=100 * low,
        ci_high=100 * high,
        p_value=p_value,
        better=better,
        worse=worse,
        significant=p_value < alpha and (low > 0 or high < 0),
    )
