"""InverseCoder against its generator M (and the base model): the report's table, with paired statistics.

The paper's claim is that InverseCoder beats M. Both are evaluated by the same harness on the same tasks,
and `eval_results.json` keeps every task's outcome, so the delta is computed task by task (joined by task
id, over the tasks both evaluated) and carries its 95% interval and exact p-value
(`inversecoder.core.paired`): a +1.2 point gain on 164 tasks reads as "not significant", not as a result.
"""

from __future__ import annotations

from typing import Any

from inversecoder.core.paired import METHOD, paired_delta

BENCHMARK_LABELS = {"humaneval": "HumanEval", "mbpp": "MBPP"}
SUITES = (("base", ""), ("plus", "+"))  # evalplus's base tests, and base + plus tests (the "+" score)


def task_scores(bench: dict[str, Any], suite: str) -> dict[str, float] | None:
    """Each task's pass@1 (passed / n: 0 or 1 for one greedy sample) on `suite`, by task id; None for a
    results file without per-task outcomes."""
    tasks = bench.get("tasks")
    if not tasks:
        return None
    return {task_id: task[f"n_passed_{suite}"] / task["n"] for task_id, task in tasks.items()}


def _versus_generator(bench: dict[str, Any], other: dict[str, Any], suite: str) -> dict[str, Any]:
    """The row's M columns: M's score, the delta and the paired statistics over the shared tasks."""
    ours, theirs = task_scores(bench, suite), task_scores(other, suite)
    if ours is None or theirs is None:  # no per-task outcomes: the scores alone, as long as they cover as much
        if other.get("n_tasks") != bench["n_tasks"]:
            return {}
        generator = round(100 * other["pass@1"][suite], 1)
        return {"generator": generator, "delta": round(round(100 * bench["pass@1"][suite], 1) - generator, 1)}
    shared = [task_id for task_id in ours if task_id in theirs]
    if not shared:
        return {}
    paired = paired_delta([ours[t] for t in shared], [theirs[t] for t in shared])
    row: dict[str, Any] = {"paired": paired.record()}  # (its delta unrounded)
    if len(shared) == len(ours) == len(theirs):
        shown = (round(100 * bench["pass@1"][suite], 1), round(100 * other["pass@1"][suite], 1))
        row["generator"] = shown[1]
    else:  # the table compares like with like: both models' scores on the shared tasks
        shown = (round(paired.ours, 1), round(paired.theirs, 1))
        row |= {
            "tasks": len(shared),
            "inversecoder": shown[0],
            "generator": shown[1],
            "shared_only": {"inversecoder_tasks": len(ours), "generator_tasks": len(theirs)},
        }
    row["delta"] = round(shown[0] - shown[1], 1) + 0.0  # the difference of the scores shown beside it
    return row


def comparison(
    ours: dict[str, Any] | None, generator: dict[str, Any] | None, base: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Per benchmark and test set: pass@1 (in %) of InverseCoder, its generator M (and the base model), the
    delta with M and its paired statistics (`paired`: delta, ci_low/ci_high, p_value, better/worse tasks,
    significant, verdict)."""
    rows = []
    for name, bench in ((ours or {}).get("benchmarks") or {}).items():
        for suite, suffix in SUITES:
            row: dict[str, Any] = {
                "benchmark": BENCHMARK_LABELS.get(name, name) + suffix,
                "tasks": bench["n_tasks"],
                "limit": bench.get("limit"),
                "inversecoder": round(100 * bench["pass@1"][suite], 1),
            }
            other = ((generator or {}).get("benchmarks") or {}).get(name)
            if other is not None:
                row |= _versus_generator(bench, other, suite)
            other = ((base or {}).get("benchmarks") or {}).get(name)
            if other is not None and other.get("n_tasks") == bench["n_tasks"]:
                row["base_model"] = round(100 * other["pass@1"][suite], 1)
            rows.append(row)
    return rows


def summary_markdown(title: str, intro: str, rows: list[dict[str, Any]]) -> str:
    """OUTPUT/run_summary.md: the comparison table, each delta with its interval, p-value and verdict."""
    lines = [f"# Run summary: {title}", "", intro, ""]
    if not rows:
        return "\n".join([*lines, "No evaluation yet."]) + "\n"
    has_base = any("base_model" in row for row in rows)
    header = "| benchmark | tasks | M (generator) | InverseCoder | delta | 95% CI | p | significant? |"
    lines += [header + (" base model |" if has_base else ""), "|---|---|---|---|---|---|---|---|" + "---|" * has_base]
    for row in rows:
        tasks = f"{row['tasks']}" + (" (subset)" if row.get("limit") else "")
        if "shared_only" in row:
            tasks += " (both evaluated)"
        delta = f"{row['delta']:+.1f}" if "delta" in row else "n/a"
        paired = row.get("paired")
        ci = f"[{paired['ci_low']:+.1f}, {paired['ci_high']:+.1f}]" if paired else "n/a"
        p_value = f"{paired['p_value']:.3g}" if paired else "n/a"
        verdict = paired["verdict"] if paired else "n/a"
        line = (
            f"| {row['benchmark']} | {tasks} | {row.get('generator', 'n/a')} | {row['inversecoder']} | {delta} "
            f"| {ci} | {p_value} | {verdict} |"
        )
        lines.append(line + (f" {row.get('base_model', 'n/a')} |" if has_base else ""))
    lines += ["", f"Delta: InverseCoder - M in points, over the tasks both evaluated. {method_sentence()}"]
    return "\n".join(lines) + "\n"


def method_sentence() -> str:
    """How the interval and the p-value are computed, and when a delta is called significant."""
    return f"95% CI: {METHOD['bootstrap']}; p: {METHOD['test']}. A delta is significant when {METHOD['significant']}."
