"""A compact MinHash LSH index: `datasketch.MinHashLSH`'s candidates in about a tenth of its memory.

Why it exists: a build keeps five duplicate scanners (instructions and code of the generated and of the original
pairs, and the deduplicator), each with an LSH index over every row. `datasketch.MinHashLSH` stores, per row and
band, a Python bytes key in a dict of sets, plus a keys dict: ~8.8 KB per row and index with the signatures
(`benchmarks/dedup_memory.py`), ~9 GB at the paper's 110K generated + 110K original pairs. Here a row costs its
signature (`num_perm` uint32: 512 B) and 12 B per band (25 bands at the default threshold).

Semantics (the same as `datasketch.MinHashLSH(threshold, num_perm)` with its default weights):

- banding: b bands of r signature values, (b, r) = `datasketch.lsh._optimal_param(threshold, num_perm, 0.5, 0.5)`;
- a stored row is a candidate of a query when the two share at least one band exactly (all r values equal).

Bands are looked up by a 64-bit hash of (band number, band values); every row found that way is then checked
against its stored signature, so a hash collision never adds a candidate: the candidates are exactly datasketch's.
They come sorted by row (datasketch returns a set, in no particular order), so `argmax` over their estimates
picks the earliest row among equal estimates.

Layout: the (band hash, row) pairs of indexed rows live in a few sorted numpy runs (`SortedRuns`) merged like a
binary counter, looked up with `searchsorted`; rows are added a batch at a time (`MinHashIndex.batch`), and within a
batch each query also sees the rows of the batch inserted before it, through the batch's groups of equal hashes.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

#: Signatures are stored in blocks of this many rows.
SIGNATURE_BLOCK = 4096


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer, elementwise on uint64 (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def band_keys(signatures: np.ndarray, bands: int, width: int) -> np.ndarray:
    """(rows, bands) uint64: a hash of each band's number and its `width` values."""
    count = len(signatures)
    values = signatures[:, : bands * width].reshape(count, bands, width).astype(np.uint64)
    keys = np.broadcast_to(_mix(np.arange(1, bands + 1, dtype=np.uint64)), (count, bands)).copy()
    for t in range(width):
        keys = _mix(keys ^ values[:, :, t])
    return keys


class SortedRuns:
    """A multiset of (uint64 key, value) pairs: sorted runs of keys with their values, merged like a binary
    counter (a run is merged into the one before it while that one is at most twice its size), so that a key
    is in O(log n) runs' `searchsorted` and each pair is moved O(log n) times."""

    def __init__(self) -> None:
        self.runs: list[tuple[np.ndarray, np.ndarray]] = []

    def add(self, keys: np.ndarray, values: np.ndarray) -> None:
        if not keys.size:
            return
        order = np.argsort(keys, kind="stable")
        self.runs.append((keys[order], values[order]))
        while len(self.runs) > 1 and self.runs[-2][0].size <= 2 * self.runs[-1][0].size:
            newer_keys, newer_values = self.runs.pop()
            older_keys, older_values = self.runs.pop()
            at = np.searchsorted(older_keys, newer_keys, side="right")  # equal keys: older pairs first
            self.runs.append((np.insert(older_keys, at, newer_keys), np.insert(older_values, at, newer_values)))

    def ranges(self, queries: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per run: its values, and for each query the run's slice [left, right) of pairs with that key."""
        for keys, values in self.runs:
            yield values, np.searchsorted(keys, queries, side="left"), np.searchsorted(keys, queries, side="right")

    @property
    def nbytes(self) -> int:
        return sum(keys.nbytes + values.nbytes for keys, values in self.runs)


class MinHashIndex:
    """Every row's MinHash signature (row numbers count from 0 in arrival order) and an LSH index over the rows
    inserted (see the module docstring)."""

    def __init__(self, threshold: float, num_perm: int):
        from datasketch.lsh import _optimal_param

        self.num_perm = num_perm
        self.bands, self.width = _optimal_param(threshold, num_perm, 0.5, 0.5)
        self.blocks: list[np.ndarray] = []
        self.count = 0
        self.buckets = SortedRuns()

    def signatures(self, rows: np.ndarray) -> np.ndarray:
        """The stored signatures of `rows` (sorted row numbers)."""
        blocks = rows // SIGNATURE_BLOCK
        if blocks[0] == blocks[-1]:
            return self.blocks[int(blocks[0])][rows % SIGNATURE_BLOCK]
        return np.concatenate([self.blocks[int(b)][rows[blocks == b] % SIGNATURE_BLOCK] for b in np.unique(blocks)])

    def _store(self, signatures: np.ndarray) -> None:
        done = 0
        while done < len(signatures):
            if self.count % SIGNATURE_BLOCK == 0:
                self.blocks.append(np.zeros((SIGNATURE_BLOCK, self.num_perm), dtype=np.uint32))
            at = self.count % SIGNATURE_BLOCK
            take = min(SIGNATURE_BLOCK - at, len(signatures) - done)
            self.blocks[-1][at : at + take] = signatures[done : done + take]
            done += take
            self.count += take

    def batch(self, signatures: np.ndarray) -> Batch:
        """Stores `signatures` (uint32, one row each) as the next rows; query and insert them with the batch,
        in order, then `close` it."""
        return Batch(self, signatures)


class Batch:
    """Rows `start` .. `start + len(signatures) - 1` of a `MinHashIndex`, queried (and inserted or not) in order:
    a row's query sees the rows the index held before the batch and the rows of the batch inserted before it."""

    def __init__(self, index: MinHashIndex, signatures: np.ndarray):
        self.index = index
        self.start = index.count
        self.signatures = signatures
        index._store(signatures)
        count, bands = len(signatures), index.bands
        self.keys = band_keys(signatures, bands, index.width)
        flat = self.keys.ravel()
        # Earlier rows: for each row, the (run, left, right) slices of the runs holding one of its band keys.
        run_values: list[np.ndarray] = []
        found: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        for values, left, right in index.buckets.ranges(flat):
            hits = np.flatnonzero(right > left)
            run = np.full(hits.size, len(run_values))
            found.append((hits // bands, run, left[hits], right[hits]))
            run_values.append(values)
        self.run_values = run_values
        rows, runs, lefts, rights = (
            (np.concatenate(column) for column in zip(*found, strict=True)) if found else (np.zeros(0, int),) * 4
        )
        order = np.argsort(rows, kind="stable")
        self.hit_bounds = np.searchsorted(rows[order], np.arange(count + 1)).tolist()
        self.hits = list(zip(runs[order].tolist(), lefts[order].tolist(), rights[order].tolist(), strict=True))
        # This batch's rows: the groups of equal band keys that more than one of its rows fall in.
        order = np.argsort(flat, kind="stable")
        ordered = flat[order]
        first = np.ones(flat.size, dtype=bool)
        first[1:] = ordered[1:] != ordered[:-1]
        group = np.empty(flat.size, dtype=np.int64)
        group[order] = np.cumsum(first) - 1
        shared = np.flatnonzero(np.bincount(group)[group] > 1)
        self.group_bounds = np.searchsorted(shared // bands, np.arange(count + 1)).tolist()
        self.groups = group[shared].tolist()
        self.members: dict[int, list[int]] = {}
        self.inserted = np.zeros(count, dtype=bool)

    def query(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Row `start + j`'s candidates (sorted row numbers) and their estimated Jaccard similarities with it
        (the share of equal signature values)."""
        parts: list = [
            self.run_values[run][left:right]
            for run, left, right in self.hits[self.hit_bounds[j] : self.hit_bounds[j + 1]]
        ]
        for g in self.groups[self.group_bounds[j] : self.group_bounds[j + 1]]:
            members = self.members.get(g)
            if members:
                parts.append(members)
        if not parts:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        index = self.index
        rows = np.unique(np.concatenate(parts)).astype(np.int64)
        equal = index.signatures(rows) == self.signatures[j]
        banded = equal[:, : index.bands * index.width].reshape(len(rows), index.bands, index.width)
        shares = banded.all(axis=2).any(axis=1)  # a band hash's collision is not a shared band
        estimates = np.mean(equal, axis=1)
        if not shares.all():
            rows, estimates = rows[shares], estimates[shares]
        return rows, estimates

    def insert(self, j: int) -> None:
        """Index row `start + j` (after its query): later queries find it."""
        self.inserted[j] = True
        row = self.start + j
        for g in self.groups[self.group_bounds[j] : self.group_bounds[j + 1]]:
            self.members.setdefault(g, []).append(row)

    def close(self) -> None:
        """Moves the batch's inserted rows into the index."""
        rows = np.flatnonzero(self.inserted)
        keys = self.keys[rows].ravel()
        self.index.buckets.add(keys, np.repeat((self.start + rows).astype(np.uint32), self.index.bands))
