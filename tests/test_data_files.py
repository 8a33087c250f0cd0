"""The repository carries every data file it needs, byte for byte what its sources published."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections import Counter

from inversecoder.core import data


def test_shipped_files_match_their_recorded_checksums():
    lines = (data.DATA_DIR / "SHA256SUMS").read_text().splitlines()
    assert len(lines) >= 3
    for line in lines:
        digest, name = line.split()
        path = data.require(data.DATA_DIR / name)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, name


def test_every_shipped_file_has_its_source_and_license_documented():
    readme = (data.DATA_DIR / "README.md").read_text()
    for path in (
        data.BENCHMARKS_DIR / "HumanEvalPlus-v0.1.10.jsonl.gz",
        data.BENCHMARKS_DIR / "MbppPlus-v0.2.0.jsonl.gz",
        data.TGI_OPENAPI,
        data.DEMO_SAMPLE,
        data.CALIBRATION_SET,
        data.REPHRASED_SET,
        data.DECONTAMINATION_QUALITY,
        data.TINY_MODEL_CORPUS,
        data.PAPER_SETTINGS,
    ):
        assert path.relative_to(data.DATA_DIR).as_posix() in readme, path
    for license_file in ("LICENSE-Apache-2.0.txt", "LICENSE-MIT-HumanEval.txt", "SOURCES.md"):
        assert (data.BENCHMARKS_DIR / license_file).is_file(), license_file
    assert (data.DATA_DIR / "tgi" / "SOURCES.md").is_file()
    assert (data.DATA_DIR / "paper" / "SOURCES.md").is_file()


def test_a_missing_shipped_file_is_an_error_naming_it(tmp_path):
    import pytest

    with pytest.raises(FileNotFoundError, match=r"missing.*ships it in data/"):
        data.require(tmp_path / "HumanEvalPlus-v0.1.10.jsonl.gz")


def test_the_rephrased_set_has_every_family_and_only_real_tasks():
    """`decontamination_rephrased.jsonl` (benchmarks/make_rephrased.py): the minimum counts the
    decontamination-quality figures rely on, and task ids that name shipped benchmark tasks."""
    rows = [json.loads(line) for line in data.require(data.REPHRASED_SET).read_text().splitlines()]
    keys = ["id", "label", "task_id", "family", "instruction", "response"]
    assert all(list(row) == keys for row in rows)
    assert len({row["id"] for row in rows}) == len(rows)
    families = Counter(row["family"] for row in rows)
    for family in ("renamed", "for-to-while", "noop", "reordered"):
        assert families[family] >= 20, family
    for family in ("args-reordered", "args-merged", "class-wrapped"):
        assert families[family] >= 30, family
    assert families["statement-only"] >= 30 and families["other-language"] >= 15
    assert families["statement-only"] + families["other-language"] >= 30
    assert families["negative"] >= 80 and families["generic"] >= 10
    tasks = set()
    for name in ("HumanEvalPlus-v0.1.10.jsonl.gz", "MbppPlus-v0.2.0.jsonl.gz"):
        with gzip.open(data.BENCHMARKS_DIR / name, "rt") as lines:
            tasks |= {json.loads(line)["task_id"] for line in lines}
    for row in rows:
        clean = row["family"] in ("negative", "generic")
        assert row["label"] == ("clean" if clean else "contaminated"), row["id"]
        assert (row["task_id"] is None) if clean else (row["task_id"] in tasks), row["id"]
        assert row["instruction"].strip(), row["id"]
        if row["family"] not in ("statement-only",):
            assert "```" in row["response"], row["id"]
        else:
            assert "```" not in row["response"], row["id"]


def test_the_measured_decontamination_quality_holds_what_the_card_quotes():
    quality = data.read_quality(data.require(data.DECONTAMINATION_QUALITY))
    assert quality is not None, "data/decontamination_quality.json does not parse: rerun the quality benchmark"
    for key in ("measured", "positives", "negatives", "recall_programs", "mbpp_flagged", "mbpp_total"):
        assert key in quality, key
    assert quality["families"] and all({"family", "items", "recall"} <= set(row) for row in quality["families"])
    assert data.read_quality(data.DATA_DIR / "no-such-file.json") is None
