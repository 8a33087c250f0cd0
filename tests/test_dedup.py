"""Deduplication: exact (normalized) and near (MinHash LSH) duplicates, rates and removals."""

from __future__ import annotations

import random

import pytest

from inversecoder.builders.dedup import code_units, deduplicate, duplicate_rates, instruction_units, scan
from inversecoder.builders.stages import Pair
from inversecoder.core.config import DedupConfig


def pair(i: int, instruction: str, response: str = "```python\nx = 1\n```") -> Pair:
    return Pair(
        row_id=f"r{i}",
        source_index=i,
        candidate_id=f"r{i}-0",
        instruction=instruction,
        response=response,
        language="python",
        score=0.5,
    )


def words(rng: random.Random, n: int) -> list[str]:
    vocabulary = [f"w{k}" for k in range(5000)]
    return [rng.choice(vocabulary) for _ in range(n)]


def test_exact_duplicates_are_found_after_normalization():
    texts = ["Write a function that reverses a list.", "write a FUNCTION that reverses a list!!", "Sort a list."]
    result = scan([instruction_units(t) for t in texts], DedupConfig())
    assert list(result.exact_of) == [-1, 0, -1]
    assert result.rates([0.6])["exact"] == pytest.approx(1 / 3)


def test_near_duplicate_rates_follow_the_jaccard_similarity():
    rng = random.Random(0)
    base = [words(rng, 60) for _ in range(40)]
    rows = list(base)
    for i in range(20):  # a copy of row i with a few words changed: Jaccard of 3-gram sets well above 0.6
        copy = list(base[i])
        for position in rng.sample(range(60), 2):
            copy[position] = "changed"
        rows.append(copy)
    rates = scan(rows, DedupConfig()).rates([0.6, 0.7, 0.8, 0.99])
    assert rates["exact"] == 0
    assert rates["0.6"] == pytest.approx(20 / 60, abs=0.02)  # the 20 edited copies, and none of the originals
    assert rates["0.6"] >= rates["0.7"] >= rates["0.8"] >= rates["0.99"]
    assert rates["0.99"] < 0.05


def test_unrelated_texts_are_not_near_duplicates():
    rng = random.Random(1)
    rates = scan([words(rng, 40) for _ in range(200)], DedupConfig()).rates([0.6])
    assert rates == {"exact": 0.0, "0.6": 0.0}


def test_code_keeps_names_but_ignores_comments_and_layout():
    a = "```python\ndef area(w, h):\n    return w * h  # rectangle\n```"
    b = "Here:\n```python\ndef area(w,h):\n\n    return w*h\n```"
    c = "```python\ndef area(width, height):\n    return width * height\n```"
    assert code_units(a) == code_units(b) != code_units(c)
    rates = duplicate_rates(["x", "y", "z"], [a, b, c], DedupConfig())
    assert rates["code"]["exact"] == pytest.approx(1 / 3)
    assert rates["instruction"]["exact"] == 0


def test_generated_pairs_with_a_repeated_instruction_are_removed_and_kept_in_rejected():
    pairs = [
        pair(0, "Write a python function to add two numbers."),
        pair(1, "Write a python function to sort a list."),
        pair(2, "write a Python function to add two numbers"),
        pair(3, "Something else entirely, about graphs."),
    ]
    kept, rejected = deduplicate(pairs, DedupConfig())
    assert [p.row_id for p in kept] == ["r0", "r1", "r3"]
    assert len(rejected) == 1 and rejected[0].row_id == "r2" and rejected[0].stage == "dedup-generated"
    assert rejected[0].reason == "exact duplicate instruction of pair r0"

    assert deduplicate(pairs, DedupConfig(remove_exact=False)) == (pairs, [])
    assert deduplicate(pairs, DedupConfig(enabled=False)) == (pairs, [])


def test_near_duplicate_removal_is_optional():
    rng = random.Random(2)
    base = " ".join(words(rng, 50))
    edited = base.replace(base.split()[10], "different", 1)
    pairs = [pair(0, base), pair(1, edited), pair(2, " ".join(words(rng, 50)))]
    assert deduplicate(pairs, DedupConfig())[0] == pairs  # exact only by default
    kept, rejected = deduplicate(pairs, DedupConfig(near_threshold=0.8))
    assert [p.row_id for p in kept] == ["r0", "r2"]
    assert rejected[0].reason.startswith("near-duplicate instruction (Jaccard")


def test_a_near_duplicate_of_a_kept_row_goes_even_when_its_closest_row_was_removed():
    vocabulary = [f"w{i}" for i in range(200)]
    a, b, c = (" ".join(vocabulary[start : start + 100]) for start in (0, 10, 20))  # b near a; c nearer b than a
    pairs = [pair(0, a), pair(1, b), pair(2, c)]
    found = scan([instruction_units(p.instruction) for p in pairs], DedupConfig())
    assert found.best_of[2] == 1 and found.best_jaccard[2] > 0.75 and found.best_jaccard[1] > 0.75
    kept, rejected = deduplicate(pairs, DedupConfig(near_threshold=0.6))  # c is ~0.66 from a, which is kept
    assert [p.row_id for p in kept] == ["r0"]
    assert [r.reason.endswith("of pair r0") for r in rejected] == [True, True]


def test_scans_are_deterministic():
    rng = random.Random(3)
    rows = [words(rng, 30) for _ in range(50)] * 2
    first, second = scan(rows, DedupConfig()), scan(rows, DedupConfig())
    assert (first.best_jaccard == second.best_jaccard).all() and (first.exact_of == second.exact_of).all()


def test_scanning_in_chunks_equals_one_scan():
    import numpy as np

    from inversecoder.builders.dedup import DuplicateRates, Scanner

    config = DedupConfig()
    texts = [
        f"write a function that sorts a list of {w} by {v}"
        for w in ("ints", "words", "ints", "dates")
        for v in ("size", "name", "size")
    ]
    units = [instruction_units(t) for t in texts] + [[]]
    whole = scan(units, config, representatives_below=0.7)
    scanner = Scanner(config, representatives_below=0.7)
    parts = [scanner.add(units[i : i + 5]) for i in range(0, len(units), 5)]
    for field in ("exact_of", "best_jaccard", "best_of"):
        assert np.concatenate([getattr(p, field) for p in parts]).tolist() == getattr(whole, field).tolist()
    rates = DuplicateRates(config)
    for i in range(0, len(texts), 4):
        rates.add(texts[i : i + 4], texts[i : i + 4])
    assert rates.rates() == duplicate_rates(texts, texts, config)


# -- the compact LSH index (#19) gives datasketch's results --------------------------------------------------


class DatasketchScanner:
    """The `Scanner` before #19, on `datasketch.MinHashLSH`: the reference of the compact index. With `earliest`,
    a tie in the best estimate goes to the earliest row (as `Scanner` does); without it, to the first of
    `lsh.query`'s set order (as the old code did). `tied` marks rows whose best estimate several candidates share."""

    def __init__(self, config: DedupConfig, code: bool = False, representatives_below=None, earliest: bool = True):
        from datasketch import MinHashLSH

        self.config, self.earliest = config, earliest
        self.n = config.code_ngram if code else config.ngram
        self.representatives_below = representatives_below
        lowest = min(config.thresholds) if config.thresholds else 0.6
        if config.near_threshold is not None:
            lowest = min(lowest, config.near_threshold)
        self.lsh = MinHashLSH(threshold=max(0.05, lowest - 0.1), num_perm=config.num_perm)
        self.first: dict[bytes, int] = {}
        self.signatures: list = []
        self.tied: list[bool] = []

    def add(self, units):
        import hashlib
        import zlib

        import numpy as np
        from datasketch import MinHash

        from inversecoder.builders.dedup import DuplicateScan, shingles

        count = len(units)
        exact_of, best, best_of = np.full(count, -1), np.zeros(count), np.full(count, -1)
        minhashes = MinHash.generator(
            (shingles(u, self.n) for u in units), num_perm=self.config.num_perm, seed=1, hashfunc=zlib.crc32
        )
        for j, (tokens, minhash) in enumerate(zip(units, minhashes, strict=True)):
            i = len(self.signatures)
            key = hashlib.blake2b(" ".join(tokens).encode("utf-8", "surrogatepass"), digest_size=16).digest()
            if key in self.first:
                exact_of[j] = self.first[key]
            else:
                self.first[key] = i
            signature = minhash.hashvalues.astype(np.uint32)
            self.signatures.append(signature)
            self.tied.append(False)
            if not tokens:
                continue
            candidates = list(self.lsh.query(minhash))
            if self.earliest:
                candidates.sort()
            if candidates:
                estimates = np.mean(np.stack([self.signatures[c] for c in candidates]) == signature, axis=1)
                k = int(np.argmax(estimates))
                best[j], best_of[j] = estimates[k], candidates[k]
                self.tied[-1] = int(np.sum(estimates == estimates[k])) > 1
            if exact_of[j] >= 0:
                best[j], best_of[j] = 1.0, exact_of[j]
                continue
            if self.representatives_below is not None and best[j] >= self.representatives_below:
                continue
            self.lsh.insert(i, minhash)
        return DuplicateScan(exact_of, best, best_of)


def sample_variants(count: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """`count` (instruction, response) rows from the demo sample: originals, exact copies (up to case and
    punctuation), edited copies (words or code lines replaced, dropped, added) and copies of copies."""
    import json
    from pathlib import Path

    sample = Path(__file__).resolve().parents[1] / "data" / "evol_instruct_sample.jsonl"
    rows = [json.loads(line) for line in sample.read_text(encoding="utf-8").splitlines()]
    rows = [(r["instruction"], r["response"]) for r in rows if isinstance(r.get("response"), str)]
    rng = random.Random(seed)

    def edit(text: str, separator: str) -> str:
        parts = text.split(separator)
        for _ in range(rng.choice((1, 1, 2, 3, 6))):
            k = rng.randrange(len(parts))
            action = rng.random()
            if action < 0.5:
                parts[k] = rng.choice(("value", "list", "the", "x = 0", "result", "items"))
            elif action < 0.75 and len(parts) > 2:
                del parts[k]
            else:
                parts.insert(k, rng.choice(("also", "please", "# note", "return None", "sorted")))
        return separator.join(parts)

    out: list[tuple[str, str]] = []
    while len(out) < count:
        draw = rng.random()
        if not out or draw < 0.15:
            out.append(rng.choice(rows))
        elif draw < 0.25:
            instruction, response = rng.choice(out)
            out.append((instruction.upper() + "!", response + "\n"))
        else:
            instruction, response = rng.choice(out if draw < 0.6 else rows)
            out.append((edit(instruction, " "), edit(response, "\n") if rng.random() < 0.7 else response))
    return [i for i, _ in out], [r for _, r in out]


@pytest.mark.parametrize("code", [False, True], ids=["instructions", "code"])
@pytest.mark.parametrize("representatives_below", [None, 0.7])
def test_the_compact_index_finds_what_datasketch_finds(code, representatives_below):
    import numpy as np

    from inversecoder.builders.dedup import Scanner

    instructions, responses = sample_variants(2500)
    units = [code_units(r) for r in responses] if code else [instruction_units(t) for t in instructions]
    config = DedupConfig()
    shards = [units[i : i + 700] for i in range(0, len(units), 700)]  # across `add` calls and within one
    new, earliest, set_order = (
        Scanner(config, code, representatives_below),
        DatasketchScanner(config, code, representatives_below),
        DatasketchScanner(config, code, representatives_below, earliest=False),
    )
    results = [[scanner.add(shard) for shard in shards] for scanner in (new, earliest, set_order)]
    ours, reference, old = (
        {
            field: np.concatenate([getattr(r, field) for r in result])
            for field in ("exact_of", "best_jaccard", "best_of")
        }
        for result in results
    )
    assert (ours["exact_of"] >= 0).sum() > 200 and (ours["best_jaccard"] >= 0.7).sum() > 600  # real duplicates
    assert ((ours["best_jaccard"] > 0.3) & (ours["best_jaccard"] < 0.9)).sum() > 200
    for field in ("exact_of", "best_jaccard", "best_of"):
        assert ours[field].tolist() == reference[field].tolist(), field
    # The old order (a set's) gives the same estimates; the row it names differs only where estimates tie.
    assert ours["exact_of"].tolist() == old["exact_of"].tolist()
    assert ours["best_jaccard"].tolist() == old["best_jaccard"].tolist()
    differ = np.flatnonzero(ours["best_of"] != old["best_of"])
    assert all(set_order.tied[i] for i in differ)


def test_band_hash_collisions_and_batches_change_nothing(monkeypatch):
    """With band hashes of 4 bits (nearly every row collides with every other) and batches of 300 rows inside
    one `add`, candidates are still the rows sharing a band: verified against the stored signatures."""
    import numpy as np

    from inversecoder.builders import dedup, minhash_lsh
    from inversecoder.builders.dedup import Scanner

    instructions, _ = sample_variants(1200, seed=2)
    units = [instruction_units(t) for t in instructions]
    band_keys = minhash_lsh.band_keys
    monkeypatch.setattr(minhash_lsh, "band_keys", lambda *args: band_keys(*args) & np.uint64(15))
    monkeypatch.setattr(dedup, "BATCH", 300)
    for representatives_below in (None, 0.7):
        ours = Scanner(DedupConfig(), representatives_below=representatives_below).add(units)
        reference = DatasketchScanner(DedupConfig(), representatives_below=representatives_below).add(units)
        for field in ("exact_of", "best_jaccard", "best_of"):
            assert getattr(ours, field).tolist() == getattr(reference, field).tolist(), field


def test_deduplication_decides_as_with_datasketch(monkeypatch):
    from inversecoder.builders import dedup

    instructions, _ = sample_variants(2000, seed=1)
    pairs = [pair(i, text) for i, text in enumerate(instructions)]
    config = DedupConfig(near_threshold=0.7)
    kept, rejected = deduplicate(pairs, config)
    assert 300 < len(rejected) < 1800
    for earliest in (True, False):
        monkeypatch.setattr(
            dedup,
            "Scanner",
            lambda config, code=False, representatives_below=None, earliest=earliest: DatasketchScanner(
                config, code, representatives_below, earliest
            ),
        )
        old_kept, old_rejected = deduplicate(pairs, config)
        assert old_kept == kept
        assert [r.row_id for r in old_rejected] == [r.row_id for r in rejected]
        if earliest:  # the pair a rejection names too
            assert old_rejected == rejected


def test_a_scanner_keeps_under_a_kilobyte_per_row():
    import tracemalloc

    from inversecoder.builders.dedup import Scanner
    from inversecoder.builders.minhash_lsh import SIGNATURE_BLOCK

    rng = random.Random(4)
    vocabulary = [f"w{k}" for k in range(5000)]
    rows = [rng.choices(vocabulary, k=rng.randint(15, 45)) for _ in range(3 * SIGNATURE_BLOCK)]
    scanner = Scanner(DedupConfig())
    scanner.add(rows[:SIGNATURE_BLOCK])
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for start in range(SIGNATURE_BLOCK, len(rows), 1000):
        scanner.add(rows[start : start + 1000])
    kept = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    per_row = kept / (len(rows) - SIGNATURE_BLOCK)
    assert per_row < 1024, per_row  # 512 B of signature, 25 bands x 12 B, 20 B per distinct text
