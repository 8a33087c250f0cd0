"""Duplicates among the pairs: exact (after normalization) and near (MinHash: `datasketch`; LSH: `minhash_lsh`).

- Exact: two texts are duplicates when their normalized forms are equal (lowercase word tokens for
  instructions; lowercase code tokens, comments and whitespace dropped, for code).
- Near: the Jaccard similarity of the texts' shingle sets (word n-grams of instructions, token
  n-grams of code), estimated from 128-permutation MinHash signatures; candidates come from an LSH
  index built at the lowest reported threshold (`minhash_lsh.MinHashIndex`: datasketch's `MinHashLSH`
  candidates in a tenth of its memory). Of equal best estimates, the earliest row is the one named.

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

import hashlib
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice

import numpy as np

from inversecoder.builders.decontaminate import code_of, code_tokens
from inversecoder.builders.minhash_lsh import MinHashIndex, SortedRuns
from inversecoder.builders.stage import StageResult
from inversecoder.core.config import DedupConfig
from inversecoder.core.rows import Rejected

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


#: Rows are shingled, hashed and looked up this many at a time (bounds the temporary arrays of `add`).
BATCH = 4096
_FIRST = np.dtype([("low", np.uint64), ("row", np.uint32)])


class Scanner:
    """`add` rows, keeping per row only its MinHash signature, the LSH index entries over it (`minhash_lsh`) and,
    for the first row of each normalized text, a 16-byte hash of it: each row is compared with the rows added
    before it (in an earlier `add` or earlier in the same one).

    `best_jaccard` is the highest estimate among the row's LSH candidates, `best_of` the earliest candidate with
    that estimate (the candidates are the earlier rows in the index: not exact copies, nor, with
    `representatives_below`, near duplicates), so scans are deterministic."""

    def __init__(self, config: DedupConfig, code: bool = False, representatives_below: float | None = None):
        self.config = config
        self.n = config.code_ngram if code else config.ngram
        self.representatives_below = representatives_below
        lowest = min(config.thresholds) if config.thresholds else 0.6
        if config.near_threshold is not None:
            lowest = min(lowest, config.near_threshold)
        self.index = MinHashIndex(threshold=max(0.05, lowest - 0.1), num_perm=config.num_perm)
        # First occurrences: the hash's first 8 bytes as the key, its last 8 bytes and the row as the value.
        self.first = SortedRuns()

    def _exact(self, digests: list[bytes]) -> np.ndarray:
        """Per row (the index's next rows), the first row with the same digest, or -1; records first occurrences."""
        start, count = self.index.count, len(digests)
        halves = np.frombuffer(b"".join(digests), dtype=np.uint64).reshape(count, 2)
        exact_of = np.full(count, -1, dtype=np.int64)
        for values, left, right in self.first.ranges(halves[:, 0]):
            for j in np.flatnonzero(right > left).tolist():
                for value in values[left[j] : right[j]]:
                    if value["low"] == halves[j, 1]:
                        exact_of[j] = value["row"]
        seen: dict[bytes, int] = {}
        new: list[int] = []
        for j, digest in enumerate(digests):
            if exact_of[j] >= 0:
                continue
            if digest in seen:
                exact_of[j] = start + seen[digest]
            else:
                seen[digest] = j
                new.append(j)
        records = np.empty(len(new), dtype=_FIRST)
        records["low"], records["row"] = halves[new, 1], start + np.array(new, dtype=np.int64)
        self.first.add(halves[new, 0], records)
        return exact_of

    def add(self, units: Sequence[Sequence[str]]) -> DuplicateScan:
        """Add rows; returns their exact and near duplicates among every row added so far."""
        from datasketch import MinHash

        count = len(units)
        exact_of = np.full(count, -1, dtype=np.int64)
        best = np.zeros(count)
        best_of = np.full(count, -1, dtype=np.int64)
        minhashes = MinHash.generator(
            (shingles(u, self.n) for u in units), num_perm=self.config.num_perm, seed=1, hashfunc=zlib.crc32
        )
        for start in range(0, count, BATCH):
            rows = units[start : start + BATCH]
            signatures = np.empty((len(rows), self.config.num_perm), dtype=np.uint32)
            for j, minhash in enumerate(islice(minhashes, len(rows))):
                signatures[j] = minhash.hashvalues  # datasketch's hash values fit in 32 bits
            exact_of[start : start + len(rows)] = self._exact(
                [hashlib.blake2b(" ".join(t).encode("utf-8", "surrogatepass"), digest_size=16).digest() for t in rows]
            )
            batch = self.index.batch(signatures)
            for j, tokens in enumerate(rows):
                i = start + j
                if not tokens:
                    continue
                if exact_of[i] >= 0:
                    best[i], best_of[i] = 1.0, exact_of[i]
                    continue  # an exact copy adds nothing to the index
                candidates, estimates = batch.query(j)
                if candidates.size:
                    k = int(np.argmax(estimates))  # the first maximum: the earliest row
                    best[i], best_of[i] = estimates[k], candidates[k]
                if self.representatives_below is not None and best[i] >= self.representatives_below:
                    continue  # removed as a near duplicate: later rows are compared with what is kept
                batch.insert(j)
            batch.close()
        return DuplicateScan(exact_of, best, best_of)


def scan(
    units: Sequence[Sequence[str]], config: DedupConfig, code: bool = False, representatives_below: float | None = None
) -> DuplicateScan:
    """Exact and near duplicates of each row among the rows before it; with `representatives_below`, only
    among the earlier rows that are not themselves near duplicates at that Jaccard (the rows a dedup keeps)."""
    return Scanner(config, code, representatives_below).add(units)


class DuplicateRates:
    """Duplicate rates of a table's instructions and code, fed a shard at a time (`duplicate_rates`)."""

    def __init__(self, config: DedupConfig):
        self.config = config
        self.scanners = {"instruction": Scanner(config), "code": Scanner(config, code=True)}
        self.rows = 0
        self.counts = {field: {"exact": 0, **{f"{t:g}": 0 for t in config.thresholds}} for field in self.scanners}

    def add(self, instructions: Sequence[str], responses: Sequence[str]) -> None:
        self.rows += len(instructions)
        for field, texts, units in (("instruction", instructions, instruction_units), ("code", responses, code_units)):
            found = self.scanners[field].add([units(t) for t in texts])
            counts = self.counts[field]
            counts["exact"] += int(np.sum(found.exact_of >= 0))
            for t in self.config.thresholds:
                counts[f"{t:g}"] += int(np.sum(found.best_jaccard >= t))

    def rates(self) -> dict[str, dict[str, float]]:
        n = max(self.rows, 1)
        return {field: {name: count / n for name, count in counts.items()} for field, counts in self.counts.items()}


def duplicate_rates(
    instructions: Sequence[str], responses: Sequence[str], config: DedupConfig
) -> dict[str, dict[str, float]]:
    """Duplicate rates of instructions and of code: {"instruction": {"exact": r, "0.6": r, ...}, "code": {...}}."""
    rates = DuplicateRates(config)
    rates.add(instructions, responses)
    return rates.rates()


class Deduplicator:
    """Removes repeated generated instructions (see the module docstring) a shard at a time: each pair is
    compared with every pair before it, in this shard or an earlier one.

    The near-duplicate comparison is with the kept pairs only (the scanner indexes no removed pair), so which
    of several equally similar pairs a scan names changes no decision, only the pair a rejection names: the
    earliest one."""

    def __init__(self, config: DedupConfig):
        self.config = config
        self.active = config.enabled and (config.remove_exact or config.near_threshold is not None)
        self.scanner = Scanner(config, representatives_below=config.near_threshold) if self.active else None
        self.row_ids: list[str] = []  # of every pair seen, for the rejection's "of pair ..."
        self.kept_index: set[int] = set()

    def add(self, pairs: Sequence) -> tuple[list, list[Rejected]]:
        if not self.active:
            return list(pairs), []
        config = self.config
        offset = len(self.row_ids)
        self.row_ids += [p.row_id for p in pairs]
        assert self.scanner is not None  # made whenever the deduplicator is active
        result = self.scanner.add([instruction_units(p.instruction) for p in pairs])
        kept, rejected = [], []
        for j, pair in enumerate(pairs):
            reason = None
            if config.remove_exact and result.exact_of[j] >= 0:
                reason, other = "exact duplicate instruction", int(result.exact_of[j])
            elif (
                config.near_threshold is not None
                and result.best_jaccard[j] >= config.near_threshold
                and int(result.best_of[j]) in self.kept_index
            ):
                reason, other = (
                    f"near-duplicate instruction (Jaccard {result.best_jaccard[j]:.2f})",
                    int(result.best_of[j]),
                )
            if reason is None:
                kept.append(pair)
                self.kept_index.add(offset + j)
                continue
            rejected.append(
                Rejected(
                    STAGE,
                    f"{reason} of pair {self.row_ids[other]}",
                    pair.source_index,
                    pair.row_id,
                    pair.instruction[:200],
                )
            )
        return kept, rejected


def deduplicate(pairs: list, config: DedupConfig) -> tuple[list, list[Rejected]]:
    """The generated pairs without repeated instructions (see the module docstring), and the rejections."""
    return Deduplicator(config).add(pairs)


# -- the stage ------------------------------------------------------------------------------------------


def dedup_stage(pairs, config, context) -> StageResult:
    """The shard's pairs without the ones that repeat an earlier pair's instruction (this build's, any shard)."""
    if not config.dedup.enabled:
        return StageResult(list(pairs))
    deduplicator = context.state.setdefault("dedup", Deduplicator(config.dedup))
    kept, rejected = deduplicator.add(list(pairs))
    return StageResult(kept, rejected, {"generated pairs removed as duplicates": len(rejected)})


def dedup_summary(config, context, counts: dict[str, int]) -> dict:
    """The card's duplicates section: what was removed and the duplicate rates of the published tables
    (`context.state["rates"]`, fed by the pipeline with the `default` and `original` rows)."""
    settings = config.dedup
    if not settings.enabled:
        return {"enabled": False}
    rates = []
    for data, counter in context.state["rates"].items():
        rates += [
            {"data": data, "field": field, "rows": counter.rows, **values} for field, values in counter.rates().items()
        ]
    removed = counts.get("generated pairs removed as duplicates", 0)
    context.logger.info(
        f"dedup: {removed} generated pairs removed as duplicates; "
        + ", ".join(f"{r['data']} {r['field']} {100 * r['exact']:.1f}% exact" for r in rates)
    )
    return {
        "enabled": True,
        "removed": removed,
        "thresholds": [f"{t:g}" for t in settings.thresholds],
        "rates": rates,
        "remove_exact": settings.remove_exact,
        "near_threshold": settings.near_threshold,
        "ngram": settings.ngram,
        "code_ngram": settings.code_ngram,
        "num_perm": settings.num_perm,
    }
