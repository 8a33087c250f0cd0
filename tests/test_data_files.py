"""The repository carries every data file it needs, byte for byte what its sources published."""

from __future__ import annotations

import hashlib

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
        data.TINY_MODEL_CORPUS,
    ):
        assert path.relative_to(data.DATA_DIR).as_posix() in readme, path
    for license_file in ("LICENSE-Apache-2.0.txt", "LICENSE-MIT-HumanEval.txt", "SOURCES.md"):
        assert (data.BENCHMARKS_DIR / license_file).is_file(), license_file
    assert (data.DATA_DIR / "tgi" / "SOURCES.md").is_file()


def test_a_missing_shipped_file_is_an_error_naming_it(tmp_path):
    import pytest

    with pytest.raises(FileNotFoundError, match=r"missing.*ships it in data/"):
        data.require(tmp_path / "HumanEvalPlus-v0.1.10.jsonl.gz")
