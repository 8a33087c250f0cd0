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
