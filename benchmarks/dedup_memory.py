"""Memory per row and rows/s of one duplicate `Scanner` (MinHash signatures + LSH index), side by side.

A build holds five scanners (generated and original instructions and code, and the deduplicator), each
keeping per row a hash of the normalized text, the 128-value MinHash signature and the LSH index entries:
what grows with the corpus. This feeds `--rows` synthetic instruction-like rows (~30 words from a 3,000-word
vocabulary; 10% are copies of an earlier row with 1-3 words changed, 2% exact copies) to one scanner in shards
of `--shard` rows, as the build does, and prints:

- bytes per row that the scanner keeps (tracemalloc, numpy buffers included; the rows themselves and the scan
  results are not counted), in a first pass;
- rows/s of a second pass without tracemalloc (shingling, MinHash, exact and near lookups: all of `add`);
- the duplicate rates, which must not change between checkouts.

    python benchmarks/dedup_memory.py --rows 50000
    python benchmarks/dedup_memory.py --rows 50000 --baseline /tmp/old-checkout     # before vs this checkout
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def synthetic_rows(count: int, seed: int = 0) -> list[list[str]]:
    rng = random.Random(seed)
    vocabulary = [f"w{k}" for k in range(3000)]
    rows: list[list[str]] = []
    for _ in range(count):
        draw = rng.random()
        if rows and draw < 0.02:
            rows.append(list(rng.choice(rows)))
        elif rows and draw < 0.12:
            row = list(rng.choice(rows))
            for _ in range(rng.randint(1, 3)):
                row[rng.randrange(len(row))] = rng.choice(vocabulary)
            rows.append(row)
        else:
            rows.append([rng.choice(vocabulary) for _ in range(rng.randint(15, 45))])
    return rows


def measure(count: int, shard: int) -> dict:
    import numpy as np

    from inversecoder.builders.dedup import Scanner
    from inversecoder.core.config import DedupConfig

    rows = synthetic_rows(count)
    config = DedupConfig()
    Scanner(config).add(rows[:10])  # imports and first-use allocations, outside the measurement
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    scanner = Scanner(config)
    for start in range(0, count, shard):
        scanner.add(rows[start : start + shard])
    kept, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del scanner
    scanner = Scanner(config)
    started = time.perf_counter()
    found = [scanner.add(rows[start : start + shard]) for start in range(0, count, shard)]
    seconds = time.perf_counter() - started
    best = np.concatenate([f.best_jaccard for f in found])
    exact = np.concatenate([f.exact_of for f in found])
    return {
        "bytes_per_row": (kept - before) / count,
        "peak_bytes_per_row": (peak - before) / count,
        "rows_per_s": count / seconds,
        "rates": {
            "exact": float(np.mean(exact >= 0)),
            **{f"{t:g}": float(np.mean(best >= t)) for t in (0.6, 0.7, 0.8)},
        },
    }


def run(code_dir: Path, count: int, shard: int) -> dict:
    """`measure` in a child process importing `inversecoder` from `code_dir`."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from build_memory import import_root

    code = f"import json, sys; sys.path.insert(0, {str(REPO / 'benchmarks')!r}); import dedup_memory; "
    code += f"print(json.dumps(dedup_memory.measure({count}, {shard})))"
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        env = dict(os.environ, PYTHONPATH=str(import_root(code_dir.resolve(), scratch)))
        # Not in the repository: `python -c` puts the working directory first on sys.path, before PYTHONPATH.
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, cwd=scratch, stdout=subprocess.PIPE, text=True, check=True
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--shard", type=int, default=1000, help="rows per `Scanner.add` call")
    parser.add_argument("--baseline", type=Path, help="another checkout measured first, on the same rows")
    args = parser.parse_args()
    runs = [("baseline", args.baseline)] if args.baseline else []
    runs.append(("this checkout", REPO))
    print(f"{'code':<15} {'bytes/row':>10} {'peak bytes/row':>15} {'rows/s':>8}  rates")
    for label, code_dir in runs:
        result = run(code_dir, args.rows, args.shard)
        print(
            f"{label:<15} {result['bytes_per_row']:>10.0f} {result['peak_bytes_per_row']:>15.0f} "
            f"{result['rows_per_s']:>8.0f}  {result['rates']}",
            flush=True,
        )


if __name__ == "__main__":
    main()
