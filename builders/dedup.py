"""Duplicates among the pairs: exact (after normalization) and near (MinHash LSH, `datasketch`).

- Exact: two texts are duplicates when their normalized forms are equal (lowercase word tokens for
  instructions; lowercase code tokens, comments and whitespace dropped, for code).
- Near: the Jaccard similarity of the texts' shingle sets (word n-grams of instructions, token
  n-grams of code), estimated from 128-permutation MinHash signatures; candidates come from an LSH
  index built at the lowest reported threshold.

The duplicate rate at threshold t is the share of rows that have an EARLIER row with estimated Jaccard
>= t (the rows a greedy near-deduplication at t would drop): the measure of the paper's Table 19,
reported at 0.6 / 0.7 / 0.8 for instructions and code of the generated and of the original pairs.

Removal is limited to what is clearly redundant: a generated pair whose normalized instruction repeats
an earlier pair's (`dedup.remove_exact`), and, when `dedup.near_threshold` is set, one whose instruction
is a near duplicate of an earlier kept pair. Every removed pair goes to `rejected` with the id of the
pair it duplicates. Shingles are hashed with crc32 (datasketch mixes it with the MurmurHash3 finalizer)
and permuted with a fixed seed: reruns give the same rates.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from inversecoder.builders.decontaminate import code_of, code_tokens
from inversecoder.core.rows import Rejected
from inversecoder.core.config import DedupConfig

_WORD = re.compile(r"\w+")
STAGE = "dedup-generated"


def instruction_units(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def code_units(text: str) -> list[str]:
    """Code tokens of a response's code blocks, lowercased, names kept (renaming makes a different text)."""
    return [token.lower() for token in code_tokens(code_of(text), rename=False)]


def shingles(units: Sequence[str], n: int) -> list[bytes]:
    if len(units) <= n:
        return [" ".join(units).encode("utf-8")] if units else []
    return list({" ".join(units[i : i + n]).encode("utf-8") for i in range(len(units) - n + 1)})


@dataclass
class DuplicateScan:
    """Per row: the earlier row it exactly repeats (or -1), and its best estimated Jaccard with an
    earlier row (0 when none shares an LSH bucket)."""

    exact_of: np.ndarray
    best_jaccard: np.ndarray
    best_of: np.ndarray

    def rates(self, thresholds: Sequence[float]) -> dict[str, float]:
        n = max(len(self.exact_of), 1)
        rates = {"exact": float(np.sum(self.exact_of >= 0)) / n}
        for t in thresholds:
            rates[f"{t:g}"] = float(np.sum(self.best_jaccard >= t)) / n
        return rates


def scan(units: Sequence[Sequence[str]], config: DedupConfig, code: bool = False,
         representatives_below: float | None = None) -> DuplicateScan:
    """Exact and near duplicates of each row among the rows before it; with `representatives_below`, only
    among the earlier rows that are not themselves near duplicates at that Jaccard (the rows a dedup keeps)."""
    from datasketch import MinHash, MinHashLSH

    count = len(units)
    exact_of = np.full(count, -1, dtype=np.int64)
    first: dict[str, int] = {}
    for i, tokens in enumerate(units):
        key = " ".join(tokens)
        if key in first:
            exact_of[i] = first[key]
        else:
            first[key] = i
    best = np.zeros(count)
    best_of = np.full(count, -1, dtype=np.int64)
    if count < 2:
        return DuplicateScan(exact_of, best, best_of)
    lowest = min(config.thresholds) if config.thresholds else 0.6
    if config.near_threshold is not None:
        lowest = min(lowest, config.near_threshold)
    n = config.code_ngram if code else config.ngram
    lsh = MinHashLSH(threshold=max(0.05, lowest - 0.1), num_perm=config.num_perm)
    signatures = np.zeros((count, config.num_perm), dtype=np.uint64)
    for i, minhash in enumerate(MinHash.generator((shingles(u, n) for u in units), num_perm=config.num_perm, seed=1,
                                                        hashfunc=zlib.crc32)):
        signatures[i] = minhash.hashvalues
        if not units[i]:
            continue
        candidates = np.fromiter(lsh.query(minhash), dtype=np.int64)
        if candidates.size:
            estimates = np.mean(signatures[candidates] == signatures[i], axis=1)
            j = int(np.argmax(estimates))
            best[i], best_of[i] = estimates[j], candidates[j]
        if exact_of[i] >= 0:
            best[i], best_of[i] = 1.0, exact_of[i]
            continue  # an exact copy adds nothing to the index
        if representatives_below is not None and best[i] >= representatives_below:
            continue  # removed as a near duplicate: later rows are compared with what is kept
        lsh.insert(i, minhash)
    return DuplicateScan(exact_of, best, best_of)


def duplicate_rates(instructions: Sequence[str], responses: Sequence[str], config: DedupConfig) -> dict[str, dict[str, float]]:
    """Duplicate rates of instructions and of code: {"instruction": {"exact": r, "0.6": r, ...}, "code": {...}}."""
    return {
        "instruction": scan([instruction_units(t) for t in instructions], config).rates(config.thresholds),
        "code": scan([code_units(t) for t in responses], config, code=True).rates(config.thresholds),
    }


def deduplicate(pairs: list, config: DedupConfig) -> tuple[list, list[Rejected]]:
    """The generated pairs without repeated instructions (see the module docstring), and the rejections."""
    if not config.enabled or not (config.remove_exact or config.near_threshold is not None):
        return pairs, []
    result = scan([instruction_units(p.instruction) for p in pairs], config, representatives_below=config.near_threshold)
    kept, rejected = [], []
    kept_index: set[int] = set()
    for i, pair in enumerate(pairs):
        reason = None
        if config.remove_exact and result.exact_of[i] >= 0:
            reason, other = "exact duplicate instruction", int(result.exact_of[i])
        elif (config.near_threshold is not None and result.best_jaccard[i] >= config.near_threshold
              and int(result.best_of[i]) in kept_index):
            reason, other = f"near-duplicate instruction (Jaccard {result.best_jaccard[i]:.2f})", int(result.best_of[i])
        if reason is None:
            kept.append(pair)
            kept_index.add(i)
            continue
        rejected.append(Rejected(STAGE, f"{reason} of pair {pairs[other].row_id}", pair.source_index, pair.row_id,
                                 pair.instruction[:200]))
    return kept, rejected
