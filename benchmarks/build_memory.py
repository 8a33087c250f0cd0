"""Peak memory and wall time of `build-dataset` on a synthetic corpus, with no model work: the orchestrator.

Makes a synthetic corpus (instruction + a fenced Python response of realistic length), fills the run's
result cache with a synthetic answer for every generation and every self-evaluation the build will ask
for (keys computed exactly as `CachedModel` computes them), then runs the build in a child process and
prints the child's peak RSS (its `getrusage(RUSAGE_SELF).ru_maxrss` at exit) and wall time. The build makes zero
model calls (it checks), so the numbers are the pipeline's: sources, stages, decontamination (lexical and
code layers; the semantic layer is OFF here), dedup, parquet and card writing.

    python benchmarks/build_memory.py --rows 100000 --samples 10          # the paper's scale: 1M candidates
    python benchmarks/build_memory.py --rows 100000 --samples 2 --baseline /tmp/old-checkout   # side by side

`--baseline` first runs the build from another checkout of this repository (e.g. before a change), with the
same corpus and cache, then this one, and prints both with their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"builders": "builders", "trainers": "trainers", "eval": "eval", "hub_cards": "hub_cards", "data": "data"}
WORDS = (
    "list",
    "string",
    "number",
    "matrix",
    "graph",
    "tree",
    "file",
    "date",
    "prime",
    "sum",
    "sort",
    "count",
    "word",
    "path",
    "cache",
    "queue",
    "stack",
    "parse",
    "merge",
    "filter",
    "average",
    "maximum",
    "window",
    "key",
)


def corpus(path: Path, rows: int, seed: int = 0) -> None:
    """`rows` Evol-Instruct-like rows: a one-sentence task and a ~25-line fenced Python answer."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as handle:
        for i in range(rows):
            a, b, c = rng.sample(WORDS, 3)
            body = "\n".join(
                f"    {a}_{j} = [x * {j + i % 7} for x in range({b}_size) if x % {j + 2}]  # {c} step {j}"
                for j in range(rng.randint(10, 30))
            )
            code = (
                f'def {a}_{b}_{i}({a}, {b}_size={rng.randint(2, 99)}):\n    """Return the {c} of a {a}."""\n{body}\n'
                f"    return sorted({a}_0)[:{rng.randint(1, 9)}]\n\n\nprint({a}_{b}_{i}([3, 1, 2]))"
            )
            record = {
                "instruction": f"Write a Python function that computes the {c} of a {a} of {b}s (case {i}).",
                "response": f"Here is a solution:\n\n```python\n{code}\n```\n\nIt runs in linear time.",
            }
            handle.write(json.dumps(record) + "\n")


def prefill(config_path: Path, output: Path) -> int:
    """Store a synthetic result for every model call the build will make; returns how many."""
    from inversecoder.builders.extract import extract_code
    from inversecoder.builders.sources import load_source
    from inversecoder.builders.stages import candidate_seed
    from inversecoder.core import prompts
    from inversecoder.core.backends.base import SamplingParams
    from inversecoder.core.backends.transformers_backend import TransformersBackend
    from inversecoder.core.cache import ResultCache, cache_key
    from inversecoder.core.config import load_config

    config = load_config(config_path, output_dir=str(output))
    assert config.generator.model is not None, "the recipe names generator.model"
    info = TransformersBackend(config.generator.model, revision=config.generator.revision, device="cpu").info()
    identity = {"backend_model": info.model, "revision": info.revision}
    s = config.summarize
    params = SamplingParams(
        temperature=s.temperature,
        top_p=s.top_p,
        repetition_penalty=s.repetition_penalty,
        max_new_tokens=s.max_new_tokens,
        stop=tuple(s.stop),
    ).__dict__
    cache = ResultCache(output / ".cache" / "model_calls.sqlite")
    stored, batch = 0, {}
    for row in load_source(config.source).rows:
        found = extract_code(row.response)
        if found.code_block is None:
            continue
        for k in range(s.num_samples):
            seed = candidate_seed(config.seed, row.row_id, k)
            prefix = prompts.summarize_prefix(random.Random(seed), found.language)
            prompt = prompts.summarize_prompt(found.code_block, prefix)
            rng = random.Random(seed)
            text = (
                " function that "
                + " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 20)))
                + f" ({row.row_id} {k})."
            )
            batch[cache_key(op="generate", prompt=prompt, seed=seed, params=params, **identity)] = {
                "text": text,
                "finish_reason": "stop",
                "prompt_tokens": 0,
                "generated_tokens": 0,
                "error": None,
                "retryable": False,
            }
            instruction = (prefix + text).strip()
            score = (zlib.crc32(instruction.encode()) % 1000) / 1000
            batch[
                cache_key(op="score_yes_no", prompt=prompts.score_prompt(instruction, found.code_block), **identity)
            ] = {"score": score, "yes_no_mass": 0.9, "prompt_tokens": 0, "error": None, "retryable": False}
        if len(batch) >= 20000:
            cache.put_many(batch)
            stored += len(batch)
            batch = {}
    cache.put_many(batch)
    cache.close()
    return stored + len(batch)


def import_root(code_dir: Path, scratch: Path) -> Path:
    """A folder to put first on PYTHONPATH so that `inversecoder.*` imports from `code_dir` (the repository
    maps builders/, trainers/, ... into the package, as pyproject.toml's package-dir does)."""
    root = scratch / "import-root"
    package = root / "inversecoder"
    shutil.rmtree(root, ignore_errors=True)
    package.mkdir(parents=True)
    for entry in (code_dir / "inversecoder").iterdir():
        (package / entry.name).symlink_to(entry.resolve())
    for name, folder in PACKAGES.items():
        if (code_dir / folder).is_dir() and not (package / name).exists():
            (package / name).symlink_to(code_dir / folder)
    return root


CHILD = """
import inspect, json, resource, sys
from inversecoder.builders.pipeline import build_dataset
try:
    from inversecoder.core.config import load_config
except ImportError:  # a checkout from before the core package
    from inversecoder.config import load_config
config = load_config(sys.argv[1], output_dir=sys.argv[2])
kwargs = {"progress": False}
parameters = inspect.signature(build_dataset).parameters
if "write_card" in parameters:
    from inversecoder.hub_cards.dataset_card import write_dataset_card
    kwargs["write_card"] = write_dataset_card
if "log" in parameters:
    kwargs["log"] = lambda line: print(line, file=sys.stderr)
result = build_dataset(config, **kwargs)
print(json.dumps({"counts": result.counts, "model_calls": result.model_calls, "reused": result.reused_calls,
                  "fingerprint": result.fingerprint, "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def measure(code_dir: Path, config_path: Path, filled: Path, work: Path, env: dict[str, str]) -> dict:
    """Run the build from `code_dir` on a copy of the prefilled cache; its counts, peak RSS and wall time."""
    output = work / "run"
    shutil.rmtree(output, ignore_errors=True)
    (output / ".cache").mkdir(parents=True)
    shutil.copy(filled / ".cache" / "model_calls.sqlite", output / ".cache" / "model_calls.sqlite")
    child_env = dict(env, PYTHONPATH=str(import_root(code_dir.resolve(), work)))
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(config_path), str(output)],
        env=child_env,
        cwd=work,  # `python -c` puts the working directory first on sys.path: from the repository, its own code
        stdout=subprocess.PIPE,
        text=True,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"the build from {code_dir} failed (exit {done.returncode})")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["model_calls"]:
        print(
            f"warning: the build from {code_dir} computed model calls: the prefilled cache did not cover it",
            file=sys.stderr,
        )
    return result | {"wall": wall, "peak_mib": result["maxrss_kib"] / 1024}  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=10, help="K candidates per snippet (summarize.num_samples)")
    parser.add_argument("--code-dir", type=Path, default=REPO, help="the checkout whose build is measured")
    parser.add_argument("--baseline", type=Path, help="another checkout measured first, on the same corpus and cache")
    parser.add_argument("--work", type=Path, help="where corpus, model and cache go (kept and reused)")
    parser.add_argument(
        "--no-dedup", action="store_true", help="deduplication off (its MinHash indexes are per-row keys)"
    )
    args = parser.parse_args()
    work = (
        args.work or Path(tempfile.gettempdir()) / f"inversecoder-build-memory-{args.rows}x{args.samples}"
    ).resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    model = work / "tiny-model"
    if not (model / "config.json").is_file():
        subprocess.run(
            [sys.executable, "-m", "inversecoder.cli", "make-tiny-model", str(model)],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
    source = work / "corpus.jsonl"
    if not source.is_file():
        corpus(source, args.rows)
    recipe = {
        "seed": 1,
        "benchmarks_dir": str(REPO / "data" / "benchmarks"),  # for checkouts that did not ship them yet
        "source": {"path": str(source)},
        "generator": {"model": str(model), "device": "cpu"},
        "summarize": {"num_samples": args.samples},
        "decontaminate": {"semantic": False},
        "dedup": {"enabled": not args.no_dedup},
        "train": {"enabled": False},
        "evaluate": {"enabled": False},
    }
    config_path = work / "recipe.yaml"
    config_path.write_text(yaml.safe_dump(recipe))
    filled = work / "filled"
    if not (filled / ".cache" / "model_calls.sqlite").is_file():
        started = time.perf_counter()
        count = prefill(config_path, filled)
        print(f"cache prefilled with {count} synthetic results in {time.perf_counter() - started:.0f} s")
    runs = [("baseline", args.baseline)] if args.baseline else []
    runs.append(("this checkout" if args.code_dir == REPO else "measured", args.code_dir))
    results = []
    for label, code_dir in runs:
        results.append((label, code_dir, measure(code_dir, config_path, filled, work, env)))
        done = results[-1][2]
        print(f"{label}: peak RSS {done['peak_mib']:.0f} MiB, {done['wall']:.0f} s", flush=True)
    counts = results[-1][2]["counts"]
    print(
        f"corpus: {args.rows} rows x {args.samples} samples = {counts['candidates generated']} candidates; "
        f"{counts['final pairs (default config)']} pairs; semantic decontamination off; "
        f"dedup {'off' if args.no_dedup else 'on'}; model calls from the cache"
    )
    print(f"{'code':<15} {'peak RSS (MiB)':>15} {'wall (s)':>9} {'model calls':>12}  fingerprint       folder")
    for label, code_dir, result in results:
        print(
            f"{label:<15} {result['peak_mib']:>15.0f} {result['wall']:>9.0f} {result['model_calls']:>12}  "
            f"{result['fingerprint']}  {code_dir}"
        )
    if len(results) == 2:
        old, new = results[0][2], results[1][2]
        print(
            f"peak RSS: {new['peak_mib'] / old['peak_mib']:.2f}x the baseline's; "
            f"wall time {new['wall'] / old['wall']:.2f}x; "
            f"same dataset: {old['fingerprint'] == new['fingerprint']}"
        )


if __name__ == "__main__":
    main()
