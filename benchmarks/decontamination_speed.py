"""Decontamination and deduplication speed on a synthetic corpus the size of Magicoder-Evol-Instruct-110K.

The corpus is generated here (seeded): instructions of 15-250 words and fenced Python responses of
5-60 lines, drawn from programming vocabulary and code templates, so that lengths and token mixes are
those of an instruction corpus; a few rows embed real benchmark text so that every layer has matches
to report. Each layer runs alone over the rows against all HumanEval+ and MBPP+ tasks and prints rows/s;
the semantic layer (all-MiniLM-L6-v2, the expensive one) embeds `--semantic-rows` rows on each runtime,
side by side (torch with the old 256-row batches, torch, onnxruntime fp32, the onnxruntime int8 screen with
its fp32 re-scoring), and its 110K time is projected from them. The synthetic instructions sit far from
every benchmark task, so the int8 screen sends none of them to the exact model; the bundled sample's
(programming problems, some close to benchmark tasks) share that it would is printed too. The model's
arithmetic per row and this CPU's fp32 matrix-multiply rate bound what any runtime of this model can do.
Deduplication (MinHash LSH, instructions and code) runs on all rows.

    python benchmarks/decontamination_speed.py                       # 110K rows; ~8 minutes on a 2-core CPU
    python benchmarks/decontamination_speed.py --rows 20000 --semantic-rows 500   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

from inversecoder.builders.decontaminate import Decontaminator, load_tasks
from inversecoder.builders.dedup import code_units, instruction_units, scan
from inversecoder.core.config import DecontaminateConfig, DedupConfig

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "evol_instruct_sample.jsonl"
WORDS = [
    "write",
    "a",
    "function",
    "that",
    "returns",
    "the",
    "list",
    "of",
    "numbers",
    "string",
    "array",
    "integer",
    "sorted",
    "given",
    "input",
    "output",
    "value",
    "element",
    "index",
    "key",
    "dictionary",
    "count",
    "sum",
    "maximum",
    "minimum",
    "first",
    "last",
    "each",
    "every",
    "python",
    "class",
    "method",
    "program",
    "implement",
    "create",
    "check",
    "whether",
    "valid",
    "character",
    "word",
    "sentence",
    "file",
    "data",
    "table",
    "user",
    "request",
    "error",
    "handle",
    "exception",
    "loop",
    "recursion",
    "algorithm",
    "efficient",
    "complexity",
    "time",
    "space",
    "matrix",
    "row",
    "column",
    "node",
    "tree",
    "graph",
    "path",
    "edge",
    "weight",
    "prime",
    "even",
    "odd",
    "digit",
    "binary",
    "number",
    "divisible",
    "average",
    "median",
    "mode",
]
TEMPLATES = [
    (
        "def {f}({a}, {b}):\n"
        "    {c} = []\n"
        "    for {i} in range(len({a})):\n"
        "        if {a}[{i}] % {b} == 0:\n"
        "            {c}.append({a}[{i}])\n"
        "    return {c}\n"
    ),
    (
        "def {f}({a}):\n"
        "    {c} = {{}}\n"
        "    for {i} in {a}:\n"
        "        {c}[{i}] = {c}.get({i}, 0) + 1\n"
        "    return sorted({c}.items(), key=lambda kv: -kv[1])\n"
    ),
    (
        "class {F}:\n"
        "    def __init__(self, {a}):\n"
        "        self.{a} = {a}\n"
        "\n"
        "    def {f}(self, {b}):\n"
        "        return [x for x in self.{a} if x != {b}]\n"
    ),
    (
        "import re\n"
        "\n"
        "def {f}({a}: str) -> list:\n"
        "    # split on anything that is not a word character\n"
        "    return [w.lower() for w in re.split(r'\\W+', {a}) if w]\n"
    ),
    (
        "def {f}({a}, {b}=0):\n"
        "    if not {a}:\n"
        "        return {b}\n"
        "    {c} = {a}[0]\n"
        "    for {i} in {a}[1:]:\n"
        "        {c} = max({c}, {i})\n"
        "    return {c} + {b}\n"
    ),
    (
        "try:\n"
        "    with open({a}) as {c}:\n"
        "        {b} = {c}.read().splitlines()\n"
        "except FileNotFoundError:\n"
        "    {b} = []\n"
        "print(len({b}))\n"
    ),
]
NAMES = [
    "data",
    "items",
    "values",
    "nums",
    "text",
    "result",
    "acc",
    "total",
    "xs",
    "ys",
    "node",
    "edge",
    "key",
    "val",
    "limit",
    "size",
    "count",
]


def synthetic_corpus(rows: int, tasks, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    corpus = []
    for n in range(rows):
        instruction = " ".join(rng.choice(WORDS) for _ in range(int(rng.lognormvariate(3.9, 0.6)) % 250 + 15))
        blocks = []
        for _ in range(rng.randint(1, 6)):
            names = rng.sample(NAMES, 5)
            blocks.append(
                rng.choice(TEMPLATES).format(
                    f=f"func_{rng.randint(0, 999)}",
                    F=f"Cls{rng.randint(0, 99)}",
                    a=names[0],
                    b=names[1],
                    c=names[2],
                    i=names[3],
                )
            )
        if n % 1000 == 7:  # a contaminated row now and then: a benchmark statement inside the instruction
            instruction += " " + rng.choice(tasks).description
        corpus.append(
            (instruction, "Here is the code:\n```python\n" + "\n".join(blocks) + "```\nIt runs in linear time.")
        )
    return corpus


def runtime_spec(text: str) -> tuple[str, int | None]:
    runtime, _, batch = text.partition(":")
    return runtime, int(batch) if batch else None


def gflop_per_row(embedder, texts: list[str]) -> float:
    """Multiply-adds of the embedding model on these texts (linear layers and attention scores), in GFLOP:
    with the rate it puts the semantic layer against what this CPU can compute at all."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(embedder.tokenizer.name_or_path)
    h, layers = config.hidden_size, config.num_hidden_layers
    lengths = [
        len(ids) for ids in embedder.tokenizer(texts, truncation=True, max_length=embedder.max_tokens)["input_ids"]
    ]
    per_token = 2 * layers * (4 * h * h + 2 * h * config.intermediate_size)
    attention = sum(2 * layers * 2 * n * n * h for n in lengths)
    return (per_token * sum(lengths) + attention) / len(texts) / 1e9


def matmul_gflops(size: int = 2048, repeats: int = 8) -> float:
    """This CPU's fp32 matrix-multiply rate (torch, all threads): the ceiling of an fp32 transformer."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(2):
        a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def timed(label: str, rows: int, work) -> float:
    started = time.perf_counter()
    found = work()
    seconds = time.perf_counter() - started
    print(f"{label:<42} {rows:>7} rows {seconds:>8.1f} s {rows / seconds:>9.0f} rows/s   ({found} rows matched)")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=110_000)
    parser.add_argument("--semantic-rows", type=int, default=2_000)
    parser.add_argument("--benchmarks-dir", default=str(REPO.parent / "shared" / "benchmarks"))
    parser.add_argument(
        "--runtimes",
        type=runtime_spec,
        nargs="+",
        default=[("torch", 256), ("torch", None), ("onnxruntime", None), ("onnxruntime-int8", None)],
        help="semantic runtimes to time, RUNTIME or RUNTIME:BATCH (default batch: by device)",
    )
    args = parser.parse_args()

    config = DecontaminateConfig()
    tasks, versions = load_tasks(config.benchmarks, args.benchmarks_dir, Path("/tmp/inversecoder-bench-cache"))
    started = time.perf_counter()
    checker = Decontaminator(config, None, Path("."), tasks=tasks, versions=versions)
    assert checker.embedder is not None  # the default config has the semantic layer on
    print(
        f"setup: {len(tasks)} tasks indexed, embedding model loaded and tasks embedded in "
        f"{time.perf_counter() - started:.1f} s (device {checker.embedder.device}, runtime {checker.embedder.runtime})"
    )
    corpus = synthetic_corpus(args.rows, tasks)
    words = sum(len(i.split()) for i, _ in corpus) / len(corpus)
    print(
        f"corpus: {len(corpus)} synthetic rows, {words:.0f} instruction words and "
        f"{sum(len(r) for _, r in corpus) / len(corpus):.0f} response characters on average\n"
    )

    texts = [instruction + "\n" + response for instruction, response in corpus]
    total = {}
    total["substring"] = timed("substring", len(corpus), lambda: sum(bool(checker._substring(t)) for t in texts))
    total["ngram"] = timed(
        f"ngram ({config.ngram}-gram)", len(corpus), lambda: sum(bool(checker._ngram(t)) for t in texts)
    )
    total["code"] = timed(
        "code (shingle containment)", len(corpus), lambda: sum(bool(checker._code(r)) for _, r in corpus)
    )
    sample = [instruction for instruction, _ in corpus[: args.semantic_rows]]
    semantic = {}
    for runtime, batch in args.runtimes:
        settings = config.model_copy(update={"semantic_runtime": runtime, "semantic_batch_size": batch}, deep=True)
        semantic_checker = Decontaminator(settings, None, Path("."), tasks=tasks, versions=versions)
        assert semantic_checker.embedder is not None  # the semantic layer is on in every setting timed
        label = f"{semantic_checker.embedder.runtime}, batch {semantic_checker.embedder.batch_size}"
        semantic[label] = timed(
            f"semantic: {label}",
            len(sample),
            lambda semantic_checker=semantic_checker: int(
                (semantic_checker.semantic_scores(sample).max(axis=1) >= config.semantic_threshold).sum()
            ),
        )
        if semantic_checker.embedder.approximate:
            print(f"{'':<42} {semantic_checker.rescored} of them re-scored in fp32 (near the threshold)")
            real = [
                json.loads(line)["instruction"]
                for line in SAMPLE.read_text(encoding="utf-8").splitlines()
                if line.strip()
            ]
            before = semantic_checker.rescored
            semantic_checker.semantic_scores(real)
            print(f"{'':<42} the bundled sample: {semantic_checker.rescored - before} of {len(real)} rows would be")
    fastest = min(semantic, key=lambda label: semantic[label])
    baseline = next(iter(semantic))
    print(f"semantic: {fastest} is {semantic[baseline] / semantic[fastest]:.2f}x {baseline}")
    work = gflop_per_row(checker.embedder, sample)
    peak = matmul_gflops()
    print(
        f"semantic: {work:.2f} GFLOP per row; {fastest} computes {work * len(sample) / semantic[fastest]:.0f} GFLOP/s, "
        f"{baseline} {work * len(sample) / semantic[baseline]:.0f} GFLOP/s; "
        f"this CPU multiplies fp32 matrices at {peak:.0f} GFLOP/s, "
        f"so {len(corpus)} rows take at least {work * len(corpus) / peak / 60:.0f} min of fp32 arithmetic"
    )
    total["semantic"] = semantic[fastest] * len(corpus) / len(sample)
    dedup = DedupConfig()
    total["dedup"] = timed(
        "dedup: instructions + code",
        len(corpus),
        lambda: int(
            (scan([instruction_units(i) for i, _ in corpus], dedup).best_jaccard >= 0.6).sum()
            + (scan([code_units(r) for _, r in corpus], dedup, code=True).best_jaccard >= 0.6).sum()
        ),
    )

    lexical = total["substring"] + total["ngram"] + total["code"]
    print(f"\nload average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (other processes slow every rate)")
    print(
        f"for {len(corpus)} rows on this machine: substring + ngram + code {lexical / 60:.1f} min, "
        f"semantic {total['semantic'] / 60:.1f} min ({fastest}; projected from {len(sample)} rows), "
        f"dedup {total['dedup'] / 60:.1f} min; "
        f"all {sum(total.values()) / 60:.1f} min"
    )


if __name__ == "__main__":
    main()
