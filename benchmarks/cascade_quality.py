"""The decontamination cascade measured: recall per family of rephrasing, precision, the sample's flags, cost.

Imported by `decontamination_quality.py` (which prints the per-layer figures of the calibration set first);
the figures the dataset card quotes are written to `data/decontamination_quality.json`.

- Recall: `data/decontamination_rephrased.jsonl` (built by `make_rephrased.py`: canonical solutions renamed,
  loops rewritten, no-ops inserted, lines reordered, arguments reordered / merged / wrapped in a class, behind
  instructions that do not state the task; hand-written statement-only and other-language items) and the
  calibration set's positives, with the judge off: direct evidence, retrieval and execution alone.
- Precision: every MBPP+ problem (statement + canonical solution) against HumanEval+ alone, and the unrelated
  negatives of both sets (utilities of common arities, generic one-liners that solve trivial tasks).
- The bundled demo sample's flagged rows, per task.
- Cost: what the cascade did per row of the demo sample (an Evol-Instruct-like corpus), its time on this
  machine, extrapolated to the paper's 110K source rows and their 110K generated pairs, next to the
  generation step's time on the paper's node (the `plan` section's throughput figures, as `run --dry-run`).
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from inversecoder.builders.cascade import Cascade
from inversecoder.builders.decontaminate import Decontaminator, benchmark_task, load_tasks
from inversecoder.core.benchmarks import load_benchmark
from inversecoder.core.config import DecontaminateConfig, PlanConfig
from inversecoder.core.layout import Layout

REPO = Path(__file__).resolve().parents[1]
PROGRAM_FAMILIES = (
    "renamed",
    "for-to-while",
    "noop",
    "reordered",
    "args-reordered",
    "args-merged",
    "class-wrapped",
)
TEXT_FAMILIES = ("statement-only", "other-language")
#: The paper's scale: source rows, candidates per snippet, and what one generation / one judge call holds.
PAPER_ROWS, PAPER_K, GENERATED_TOKENS, PAPER_PARAMS_B = 111_183, 10, 200, 13.0
#: MBPP+ problems that are a HumanEval problem (the same inputs and outputs, in other words): flagging them is
#: right, since a corpus row solving one solves the other; the benchmark prints both statements of each.
SAME_PROBLEM = {
    "Mbpp/68": "HumanEval/57",  # is the array monotonic / are the list's elements monotonic
    "Mbpp/433": "HumanEval/52",  # is the number greater than every element / is every element below t
    "Mbpp/572": "HumanEval/26",  # keep the numbers that occur once / remove the ones that occur more than once
    "Mbpp/605": "HumanEval/31",  # is the number prime
    "Mbpp/755": "HumanEval/90",  # the second smallest element (None without one)
}
PAPER_NODE_CORES = 64  # CPU cores of an 8x A100 node given to the sandbox (such nodes have 64-128)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def open_cascade(config: DecontaminateConfig, tasks, versions, benchmarks_dir: str, cache: Path, work: Path):
    checker = Decontaminator(config, None, cache, tasks=tasks, versions=versions)
    return Cascade(checker, config, Layout(work), None, progress=False, benchmark_source=(benchmarks_dir, cache))


def measure(args: Any, settings: DecontaminateConfig, rows_labelled: list[dict], sample: list[dict]) -> dict[str, Any]:
    """Run every measurement (`settings` with the judge off); print the tables; return the figures for the card."""
    config = settings.model_copy(update={"judge": False, "semantic": True})
    cache = Path(tempfile.gettempdir()) / "inversecoder-bench-cache"
    work = Path(tempfile.mkdtemp(prefix="inversecoder-cascade-"))  # a fresh verdict cache: real executions
    tasks, versions = load_tasks(config.benchmarks, args.benchmarks_dir, cache)
    cascade = open_cascade(config, tasks, versions, args.benchmarks_dir, cache, work)
    try:
        rephrased = read_jsonl(REPO / "data" / "decontamination_rephrased.jsonl")
        items = [r | {"set": "rephrased"} for r in rephrased] + [
            r | {"set": "calibration", "family": f"calibration {r['style']}"} for r in rows_labelled
        ]
        found = cascade.check_rows([(r["instruction"], r["response"]) for r in items])
        families = family_table(items, found)
        retrieval = retrieval_table(cascade, items)
        negatives = [(r, f) for r, f in zip(items, found, strict=True) if r["label"] != "contaminated"]
        flagged_negatives = [(r, f) for r, f in negatives if f]
        print(f"\nnegatives flagged: {len(flagged_negatives)} of {len(negatives)}")
        for row, matches in flagged_negatives:
            print(f"  {row['id']} {row['family']}: {matches[0].describe()} {matches[0].text[:80]!r}")
        mbpp = mbpp_precision(args, config, cache, work)
        flagged_sample = sample_flags(cascade, sample)
        cost = cost_table(args, config, tasks, versions, cache, sample)
    finally:
        cascade.close()
    programs = [f for f in families if f["family"] in PROGRAM_FAMILIES]
    positives = sum(f["items"] for f in programs)
    recall_programs = sum(f["found"] for f in programs) / max(positives, 1)
    print(
        f"\nrecall on rephrased programs (judge off): {recall_programs:.3f} "
        f"({sum(f['found'] for f in programs)}/{positives}; target >= 0.90)"
    )
    print(
        f"precision: MBPP+ flagged as HumanEval {mbpp['flagged']}/{mbpp['total']} "
        f"({mbpp['flagged'] / mbpp['total']:.1%}), not the same problem {mbpp['coincidences']}/{mbpp['total']} "
        f"({mbpp['coincidences'] / mbpp['total']:.1%}; "
        f"target <= 1%); negatives {len(flagged_negatives)}/{len(negatives)} "
        f"({len(flagged_negatives) / max(len(negatives), 1):.1%}; target <= 2%)"
    )
    return {
        "measured": datetime.date.today().isoformat(),
        "commit": _commit(),
        "positives": sum(f["items"] for f in families if f["family"] in PROGRAM_FAMILIES + TEXT_FAMILIES),
        "negatives": len(negatives),
        "recall_programs": round(recall_programs, 4),
        "families": [
            {"family": f["family"], "items": f["items"], "recall": round(f["recall"], 4)}
            for f in families
            if f["family"] in PROGRAM_FAMILIES + TEXT_FAMILIES
        ],
        "retrieval": retrieval,
        "mbpp_flagged": mbpp["flagged"],
        "mbpp_not_same_problem": mbpp["coincidences"],
        "mbpp_same_problem": sorted(f"{k} = {v}" for k, v in SAME_PROBLEM.items()),
        "mbpp_total": mbpp["total"],
        "negatives_flagged": len(flagged_negatives),
        "sample_flagged": flagged_sample,
        "cost": cost,
    }


def family_table(items: list[dict], found: list[list]) -> list[dict]:
    """Recall per family (flagged at all; by the direct tier; the right task among the matches)."""
    per: dict[str, Counter] = defaultdict(Counter)
    for row, matches in zip(items, found, strict=True):
        if row["label"] != "contaminated":
            continue
        counts = per[row["family"]]
        counts["items"] += 1
        counts["found"] += bool(matches)
        counts["direct"] += bool(matches) and matches[0].tier == "direct"
        counts["execution"] += bool(matches) and matches[0].tier == "execution"
        counts["right"] += row["task_id"] in {m.task_id for m in matches}
    print(f"\n{'family':<28} {'items':>5} {'recall':>7} {'direct':>7} {'execution':>9} {'right task':>10}")
    table = []
    for family, counts in sorted(per.items(), key=lambda item: (item[0].startswith("calibration"), item[0])):
        recall = counts["found"] / counts["items"]
        print(
            f"{family:<28} {counts['items']:>5} {recall:>7.3f} {counts['direct']:>7} {counts['execution']:>9} "
            f"{counts['right']:>10}"
        )
        table.append({"family": family, **counts, "recall": recall})
    return table


def retrieval_table(cascade: Cascade, items: list[dict]) -> dict[str, float]:
    """Where retrieval ranks each positive's own task (instruction and code, the better rank)."""
    positives = [r for r in items if r["label"] == "contaminated" and r["task_id"]]
    pairs = [(r["instruction"], r["response"]) for r in positives]
    similarity = cascade.checker.instruction_similarity([p[0] for p in pairs])
    candidates = cascade.retrieve(pairs, similarity)
    index = {task.task_id: i for i, task in enumerate(cascade.checker.tasks)}
    ranks = []
    for row, found in zip(positives, candidates, strict=True):
        rank = next((c.rank for c in found if c.task == index[row["task_id"]]), None)
        ranks.append(rank)
    eligible = [r for r in positives if cascade.eligible[index[r["task_id"]]]]
    share = {
        "top1": sum(r == 1 for r in ranks) / len(ranks),
        f"top{cascade.config.retrieval_top_k}": sum(r is not None for r in ranks) / len(ranks),
        "eligible_tasks": len(eligible) / len(positives),
    }
    print(
        f"\nretrieval of the positives' own task (k={cascade.config.retrieval_top_k}, floor "
        f"{cascade.config.retrieval_floor}): top-1 {share['top1']:.3f}, within top-k "
        f"{share[f'top{cascade.config.retrieval_top_k}']:.3f}; {share['eligible_tasks']:.3f} of positives are of a "
        f"task long enough to be verified (>= {cascade.config.execution_min_tokens} tokens)"
    )
    return {key: round(value, 4) for key, value in share.items()}


def mbpp_precision(args: Any, config: DecontaminateConfig, cache: Path, work: Path) -> dict[str, Any]:
    """Every MBPP+ problem, statement and canonical solution, screened against HumanEval+ only."""
    humaneval_only = config.model_copy(update={"benchmarks": ["humaneval"]})
    tasks, versions = load_tasks(["humaneval"], args.benchmarks_dir, cache)
    cascade = open_cascade(humaneval_only, tasks, versions, args.benchmarks_dir, cache, work / "mbpp")
    try:
        problems = load_benchmark("mbpp", args.benchmarks_dir, cache).problems
        rows = []
        for problem in problems.values():
            task = benchmark_task("mbpp", problem)
            rows.append((task.description, f"```python\n{problem['canonical_solution'].strip()}\n```"))
        found = cascade.check_rows(rows)
    finally:
        cascade.close()
    flagged = [(task_id, m) for task_id, m in zip(problems, found, strict=True) if m]
    statements = {task.task_id: task.description for task in tasks}
    coincidences = [(t, m) for t, m in flagged if SAME_PROBLEM.get(t) not in {x.task_id for x in m}]
    print(
        f"\nMBPP+ problems flagged as a HumanEval task: {len(flagged)} of {len(problems)}, of which "
        f"{len(flagged) - len(coincidences)} are the same problem (both statements below) and {len(coincidences)} "
        "are not"
    )
    for task_id, matches in flagged:
        best = matches[0]
        same = "same problem" if SAME_PROBLEM.get(task_id) == best.task_id else "NOT the same problem"
        print(f"  {task_id} -> {best.task_id} ({best.layer}, {best.score:.3f}; {same}): {best.text[:70]!r}")
        print(f"      {task_id}: {rows[list(problems).index(task_id)][0][:110]!r}")
        print(f"      {best.task_id}: {' '.join(statements[best.task_id].split())[:110]!r}")
    return {"flagged": len(flagged), "coincidences": len(coincidences), "total": len(problems)}


def sample_flags(cascade: Cascade, sample: list[dict]) -> list[dict]:
    """The demo sample's flagged rows, per task (one deliberate HumanEval/0 copy among them)."""
    found = cascade.check_rows([(r["instruction"], r["response"]) for r in sample])
    flagged = []
    print(f"\ndemo sample: {sum(bool(m) for m in found)} of {len(sample)} rows flagged")
    for row, matches in zip(sample, found, strict=True):
        for match in matches:
            flagged.append({"task_id": match.task_id, "layer": match.layer, "instruction": row["instruction"][:90]})
            print(f"  {match.task_id} {match.layer} {match.score:.3f}: {row['instruction'][:90]!r}")
    return flagged


def cost_table(args: Any, config: DecontaminateConfig, tasks, versions, cache: Path, sample: list[dict]) -> dict:
    """The cascade per row of an Evol-Instruct-like corpus (the demo sample, repeated to `args.cost_rows` rows
    with its code varied so that no verdict is reused), on this machine and projected to the paper's scale."""
    rows = []
    for i in range(args.cost_rows):
        row = sample[i % len(sample)]
        rows.append((row["instruction"], row["response"].replace("```python\n", f"```python\n_variant = {i}\n", 1)))
    work = Path(tempfile.mkdtemp(prefix="inversecoder-cascade-cost-"))
    cascade = open_cascade(config, tasks, versions, args.benchmarks_dir, cache, work)
    cascade.check_rows(rows[:8])  # warm up: open the sandbox, compute the task suites it needs
    warm = cascade.counts.sandbox_runs
    for key in cascade.counts.seconds:
        cascade.counts.seconds[key] = 0.0
    before = dict(vars(cascade.counts))
    started = time.perf_counter()
    try:
        cascade.check_rows(rows[8:])
    finally:
        workers = cascade._sandbox.workers if cascade._sandbox is not None else 0
        cascade.close()
    wall = time.perf_counter() - started
    done = cascade.counts
    measured = len(rows) - 8
    per_row = {
        "candidates": (done.candidates - before["candidates"]) / measured,
        "sandbox_runs": (done.sandbox_runs - warm) / measured,
        "executions": (done.executed - before["executed"]) / measured,
        "judge_calls": (done.undecided - before["undecided"]) / measured,
    }
    run_seconds = done.seconds["execution"] * max(workers, 1) / max(done.sandbox_runs - warm, 1)  # CPU-s per run
    plan = PlanConfig()
    scale = PAPER_PARAMS_B / plan.reference_params_b
    screened = 2 * PAPER_ROWS  # the source rows, then their generated pairs
    executions = per_row["executions"] * screened
    runs = per_row["sandbox_runs"] * screened
    judge_calls = per_row["judge_calls"] * screened
    judge_tokens = judge_calls * 700  # the judge's prompt: both problems and the row's code (~700 tokens)
    generation_s = PAPER_ROWS * PAPER_K * GENERATED_TOKENS / (plan.generation_tokens_per_s / scale * plan.gpus)
    judge_s = judge_tokens / (plan.scoring_tokens_per_s / scale * plan.gpus)
    execution_node_s = runs * run_seconds / PAPER_NODE_CORES
    execution_here_s = runs * run_seconds / max(os.cpu_count() or 1, 1)
    print(
        f"\ncost, measured on {measured} Evol-Instruct-like rows ({wall:.1f} s here, {workers} sandbox workers): "
        "per row "
        f"{per_row['candidates']:.2f} candidates, {per_row['sandbox_runs']:.2f} sandboxed runs "
        f"({per_row['executions']:.2f} executions), {per_row['judge_calls']:.2f} judge calls; "
        f"{run_seconds * 1000:.0f} ms of CPU per sandboxed run; retrieval {done.seconds['retrieval']:.1f} s "
        f"(code embeddings), execution {done.seconds['execution']:.1f} s"
    )
    print(
        f"paper scale ({screened:,} rows screened: {PAPER_ROWS:,} sources + their pairs): {executions:,.0f} executions "
        f"in {runs:,.0f} sandboxed runs, {judge_calls:,.0f} judge calls\n"
        f"  on this CPU ({os.cpu_count()} cores): executions {execution_here_s / 3600:.2f} h\n"
        f"  on the paper's node (8 GPUs, {PAPER_NODE_CORES} cores for the sandbox, a {PAPER_PARAMS_B:.0f}B judge at "
        f"the plan's scoring rate): executions {execution_node_s / 60:.1f} min, judge {judge_s / 60:.1f} min; "
        "generation "
        f"({PAPER_ROWS * PAPER_K:,} x {GENERATED_TOKENS} tokens at the plan's rate) {generation_s / 3600:.1f} h: "
        f"the cascade is {(execution_node_s + judge_s) / generation_s:.1%} of it (target <= 10%; embeddings on the "
        f"GPU add seconds)"
    )
    return {
        "per_row": {k: round(v, 4) for k, v in per_row.items()},
        "paper_executions": round(executions),
        "paper_judge_calls": round(judge_calls),
        "share_of_generation": round((execution_node_s + judge_s) / generation_s, 4),
    }


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
