"""Decontamination quality: precision and recall of each layer, and of all of them together, on the
labelled set `data/decontamination_calibration.jsonl` (written for this project: HumanEval+/MBPP+
problems paraphrased by hand, some with their canonical solution renamed and reformatted, as positives;
problems on the same topics that are no benchmark task as negatives), plus threshold sweeps for the
two calibrated layers (semantic, code) and the share of the bundled demo sample (written for this
project, no benchmark task but one deliberate HumanEval/0 copy) that each layer would flag.

A positive counts as found when its row is flagged (it would be removed); "right task" says how many
were flagged with the benchmark task they paraphrase. The defaults of `decontaminate.*` are chosen
here: the lowest thresholds that flag no negative, for recall. That makes the precision printed for the
defaults an in-sample figure (1.00 by construction), so the same rule is also cross-validated: thresholds
chosen on 4/5 of the rows, precision and recall counted on the held-out fifth, over 5 folds.

    python benchmarks/decontamination_quality.py                      # ~1 minute on a 2-core CPU
    python benchmarks/decontamination_quality.py --benchmarks-dir DIR decontaminate.semantic_threshold=0.8
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cascade_quality
import numpy as np

from inversecoder.builders.decontaminate import LAYERS, Decontaminator, code_of, load_tasks
from inversecoder.core.config import load_config
from inversecoder.core.data import BENCHMARKS_DIR, DECONTAMINATION_QUALITY

REPO = Path(__file__).resolve().parents[1]
LABELLED = REPO / "data" / "decontamination_calibration.jsonl"
SAMPLE = REPO / "data" / "evol_instruct_sample.jsonl"
KNOWN_COPY = "has_close_elements"  # the sample's one deliberate benchmark copy (HumanEval/0)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def metrics(flagged: list[bool], right_task: list[bool], labels: list[bool]) -> dict:
    tp = sum(f and label for f, label in zip(flagged, labels, strict=True))
    fp = sum(f and not label for f, label in zip(flagged, labels, strict=True))
    positives = sum(labels)
    return {
        "tp": tp,
        "fp": fp,
        "positives": positives,
        "negatives": len(labels) - positives,
        "precision": tp / (tp + fp) if tp + fp else 1.0,
        "recall": tp / positives if positives else 0.0,
        "right_task": sum(r for r, label in zip(right_task, labels, strict=True) if label),
    }


def cross_validated(
    lexical: list[bool], semantic: np.ndarray, code: np.ndarray, labels: list[bool], folds: int = 5, seed: int = 0
) -> dict:
    """Precision and recall of the calibration rule on rows it did not see: per fold, the semantic and code
    thresholds are set just above the highest score of a negative in the other folds; `semantic`/`code`
    hold each row's best score over all tasks, `lexical` whether substring or n-gram flags it."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), dtype=int)
    for value in (True, False):  # stratified: each fold gets its share of positives and of negatives
        members = rng.permutation([i for i, label in enumerate(labels) if label == value])
        fold[members] = np.arange(len(members)) % folds
    labels_array = np.array(labels)
    flagged = np.zeros(len(labels), dtype=bool)
    chosen = []
    for k in range(folds):
        train, test = fold != k, fold == k
        negatives = train & ~labels_array
        thresholds = (semantic[negatives].max() + 1e-6, code[negatives].max() + 1e-6)
        chosen.append(thresholds)
        flagged[test] = np.array(lexical)[test] | (semantic[test] >= thresholds[0]) | (code[test] >= thresholds[1])
    m = metrics(list(flagged), [False] * len(labels), labels)
    return m | {"semantic": [t[0] for t in chosen], "code": [t[1] for t in chosen]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmarks-dir", default=str(BENCHMARKS_DIR))
    parser.add_argument("--cost-rows", type=int, default=400, help="rows of the cost measurement")
    parser.add_argument("--no-write", action="store_true", help=f"do not update {DECONTAMINATION_QUALITY.name}")
    parser.add_argument("overrides", nargs="*", help="decontaminate.FIELD=VALUE overrides of the defaults")
    args = parser.parse_args()
    config = load_config(None, args.overrides).decontaminate
    config.semantic = True  # measured whatever the default
    cache = Path("/tmp/inversecoder-bench-cache")
    tasks, versions = load_tasks(config.benchmarks, args.benchmarks_dir, cache)
    checker = Decontaminator(config, None, cache, tasks=tasks, versions=versions)
    task_index = {task.task_id: i for i, task in enumerate(tasks)}

    rows = read_jsonl(LABELLED)
    labels = [row["label"] == "contaminated" for row in rows]
    pairs = [(row["instruction"], row["response"]) for row in rows]
    per_layer = checker.layer_matches(pairs)
    print(
        f"labelled set: {sum(labels)} positives "
        f"({sum(r['task_id'].startswith('HumanEval') for r in rows if r['task_id'])} "
        f"HumanEval+, {sum(r['task_id'].startswith('Mbpp') for r in rows if r['task_id'])} MBPP+; "
        f"{sum(bool(r['response']) for r in rows if r['task_id'])} with code), {len(labels) - sum(labels)} negatives "
        f"({sum(bool(r['response']) for r in rows if not r['task_id'])} with code); {len(tasks)} tasks"
    )
    print(
        f"thresholds: semantic {config.semantic_threshold}, code {config.code_threshold} "
        f"(solutions >= {config.code_min_tokens} tokens), ngram {config.ngram}, "
        f"substring >= {config.min_substring_words} words\n"
    )
    print(f"{'layer':<10} {'precision':>9} {'recall':>7} {'found':>9} {'right task':>10} {'negatives flagged':>18}")

    def report(name: str, layer_names: tuple[str, ...]) -> None:
        flagged, right = [], []
        for row, layers in zip(rows, per_layer, strict=True):
            hit = {i for layer in layer_names for i in layers[layer]}
            flagged.append(bool(hit))
            right.append(row["task_id"] is not None and task_index[row["task_id"]] in hit)
        m = metrics(flagged, right, labels)
        print(
            f"{name:<10} {m['precision']:>9.3f} {m['recall']:>7.3f} {m['tp']:>4}/{m['positives']:<4} "
            f"{m['right_task']:>10} {m['fp']:>9}/{m['negatives']}"
        )

    for layer in LAYERS:
        report(layer, (layer,))
    report("combined", LAYERS)

    # Sweeps: positives score against their own task, negatives their best task.
    similarity = checker.semantic_scores([row["instruction"] for row in rows], exact=True)
    code = np.stack(
        [checker.code_scores(code_of(row["response"])) if row["response"] else np.zeros(len(tasks)) for row in rows]
    )
    for name, scores, grid, subset in (
        ("semantic", similarity, [0.70, 0.75, 0.78, 0.80, 0.82, 0.83, 0.85, 0.88, 0.90], [True] * len(rows)),
        ("code", code, [0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.9, 1.0], [bool(row["response"]) for row in rows]),
    ):
        own = [scores[i, task_index[r["task_id"]]] for i, r in enumerate(rows) if labels[i] and subset[i]]
        worst = [scores[i].max() for i, r in enumerate(rows) if not labels[i] and subset[i]]
        print(
            f"\n{name} sweep ({len(own)} positives, {len(worst)} negatives; highest negative {max(worst):.3f}, "
            f"positives' median {np.median(own):.3f}):"
        )
        print("  threshold " + " ".join(f"{t:>6.2f}" for t in grid))
        print("  recall    " + " ".join(f"{np.mean(np.array(own) >= t):>6.3f}" for t in grid))
        print("  neg. flag " + " ".join(f"{int(np.sum(np.array(worst) >= t)):>6d}" for t in grid))

    lexical = [bool(layers["substring"] or layers["ngram"]) for layers in per_layer]
    held_out = cross_validated(lexical, similarity.max(axis=1), code.max(axis=1), labels)
    print(
        f"\nheld out (5 folds; semantic and code thresholds chosen on the other folds: semantic "
        f"{min(held_out['semantic']):.3f}-{max(held_out['semantic']):.3f}, code {min(held_out['code']):.3f}-"
        f"{max(held_out['code']):.3f}): precision {held_out['precision']:.3f}, recall {held_out['recall']:.3f} "
        f"({held_out['tp']}/{held_out['positives']} found, {held_out['fp']}/{held_out['negatives']} negatives flagged)"
    )

    sample = [
        r for r in read_jsonl(SAMPLE) if isinstance(r.get("instruction"), str) and isinstance(r.get("response"), str)
    ]
    clean = [r for r in sample if KNOWN_COPY not in r["instruction"]]
    sample_layers = checker.layer_matches([(r["instruction"], r["response"]) for r in clean])
    counts = {layer: sum(bool(found[layer]) for found in sample_layers) for layer in LAYERS}
    flagged = sum(any(found.values()) for found in sample_layers)
    print(
        f"\ndemo sample ({len(clean)} rows without the deliberate copy): flagged {flagged} "
        f"({', '.join(f'{k} {v}' for k, v in counts.items())})"
    )
    for row, layers in zip(clean, sample_layers, strict=True):
        for layer in LAYERS:
            for match in layers[layer].values():
                print(f"  {layer} {match.task_id} {match.score:.3f}: {row['instruction'][:90]!r}")

    print("\n--- the cascade: direct evidence, retrieval, execution (the judge off) ---")
    figures = cascade_quality.measure(args, config, rows, sample)
    if not args.no_write:
        DECONTAMINATION_QUALITY.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
        print(f"\nwritten: {DECONTAMINATION_QUALITY}")


if __name__ == "__main__":
    main()
