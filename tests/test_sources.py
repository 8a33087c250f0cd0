"""Reading corpora: every format, every kind of bad row, clear errors for bad configurations."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from inversecoder.builders.sources import load_source
from inversecoder.core.config import SourceConfig
from inversecoder.core.errors import ConfigError
from inversecoder.core.hub_refs import NOT_RESOLVED_OFFLINE
from inversecoder.hub_cards.card_refs import describe_source

GOOD = {"instruction": "Add two numbers.", "response": "```python\ndef add(a, b):\n    return a + b\n```"}


def write_lines(path, lines: list[bytes]):
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_bad_rows_become_rejected_records_and_good_rows_get_stable_ids(tmp_path):
    lines = [
        json.dumps(GOOD).encode(),
        b'{"instruction": "broken json", ',
        '{"instruction": "caf\u00e9", "response": "ok"}'.encode("latin-1"),  # not UTF-8
        json.dumps({"instruction": "x", "response": None}).encode(),
        json.dumps({"instruction": "x", "response": 42}).encode(),
        json.dumps({"instruction": "x", "response": ["a"]}).encode(),
        json.dumps({"instruction": "x"}).encode(),
        json.dumps({"instruction": "   ", "response": "print(1)"}).encode(),
        json.dumps(["not", "an", "object"]).encode(),
        json.dumps(GOOD).encode(),  # exact duplicate
        json.dumps({"instruction": "Other", "response": "print(2)", "extra": 1}).encode(),
        b'{"instruction": "half a pair \\ud800", "response": "print(3)"}',  # valid JSON, not encodable text
        json.dumps({"instruction": "Huge", "response": "x = 1\n" * 20}).encode(),
    ]
    data = load_source(SourceConfig(path=str(write_lines(tmp_path / "c.jsonl", lines)), max_chars=100))
    assert [r.source_index for r in data.rows] == [0, 10]
    reasons = {r.source_index: r.reason for r in data.rejected}
    assert reasons == {
        1: "not valid JSON",
        2: "not valid UTF-8",
        3: "'response' is null",
        4: "'response' is int, not a string",
        5: "'response' is list, not a string",
        6: "missing field 'response'",
        7: "'instruction' is empty",
        8: "record is list, not an object",
        9: "exact duplicate",
        11: "'instruction' contains a lone surrogate",
        12: "'response' is longer than source.max_chars",
    }
    assert [r.detail for r in data.rejected if r.source_index in (11, 12)] == [
        "'\\ud800' at character 12",
        "120 characters > 100",
    ]
    assert next(r for r in data.rejected if r.source_index == 9).detail == "same as source row 0"
    assert data.info["rows_read"] == 13 and len(data.info["sha256"]) == 64
    again = load_source(SourceConfig(path=str(tmp_path / "c.jsonl"), max_chars=100))
    assert [r.row_id for r in again.rows] == [r.row_id for r in data.rows]


def test_limit_counts_source_rows(tmp_path):
    path = write_lines(
        tmp_path / "c.jsonl", [json.dumps({"instruction": f"i{n}", "response": "print(1)"}).encode() for n in range(10)]
    )
    data = load_source(SourceConfig(path=str(path), limit=4))
    assert len(data.rows) == 4 and data.info["rows_read"] == 4


def test_json_parquet_and_hub_layout_folders(tmp_path):
    rows = [GOOD, {"instruction": "Q", "response": "print('q')"}]
    (tmp_path / "c.json").write_text(json.dumps(rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "c.parquet")
    folder = tmp_path / "repo"
    (folder / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "data" / "train-00000-of-00001.parquet")
    for path in (tmp_path / "c.json", tmp_path / "c.parquet", folder):
        data = load_source(SourceConfig(path=str(path)))
        assert [r.instruction for r in data.rows] == ["Add two numbers.", "Q"], path


def test_custom_columns(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"prompt": "P", "answer": "print(1)"}) + "\n")
    data = load_source(SourceConfig(path=str(path), instruction_column="prompt", response_column="answer"))
    assert data.rows[0].instruction == "P"


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda p: None, "source file not found"),
        (lambda p: p.write_text(""), "has no rows"),
        (
            lambda p: p.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n"),
            "source has no column 'instruction' (available: answer, question)",
        ),
    ],
)
def test_unusable_sources_are_config_errors(tmp_path, setup, message):
    path = tmp_path / "c.jsonl"
    setup(path)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_source(SourceConfig(path=str(path)))


def test_unknown_hub_dataset_offline_is_a_config_error():
    with pytest.raises(ConfigError, match="cannot load source 'nobody/no-such-dataset'"):
        load_source(SourceConfig(path="nobody/no-such-dataset"))


class _Loaded(list):
    """What `datasets.load_dataset` returns, as far as the source reader looks: rows and their cache files."""

    def __init__(self, rows, cache_files):
        super().__init__(rows)
        self.cache_files = cache_files


def test_a_hub_source_read_offline_names_the_cached_commit_or_says_it_is_not_resolved(monkeypatch, tmp_path):
    """Offline (as this suite runs), no Hub call resolves the revision: the sha of the copy `datasets` loads
    from its cache (its folder's name) is recorded, and when there is none the card says so, never `main`."""
    import datasets

    sha = "ab" * 20
    cached = [{"filename": str(tmp_path / "org___corpus" / "default" / "0.0.0" / sha / "corpus-train.arrow")}]
    loaded = {"files": cached}
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: _Loaded([GOOD], loaded["files"]))

    data = load_source(SourceConfig(path="org/corpus"))
    assert data.info["revision"] == sha and data.info["requested_revision"] == "main"
    assert data.info["url"].endswith(f"/datasets/org/corpus/tree/{sha}")
    assert describe_source(data.info).startswith(f"[`org/corpus@{sha}`](")
    with pytest.raises(
        ConfigError, match=f"source.revision is {'cd' * 20} but the offline cache .* holds commit {sha}"
    ):
        load_source(SourceConfig(path="org/corpus", revision="cd" * 20))

    loaded["files"] = []  # an in-memory dataset: no cache folder names the commit
    data = load_source(SourceConfig(path="org/corpus", revision="v1"))
    assert data.info["revision"] == NOT_RESOLVED_OFFLINE and "url" not in data.info
    assert describe_source(data.info) == "`org/corpus` @ `v1` (commit not resolved: read offline from the local cache)"


def _folder_with_damage(folder):
    """Three files: one with a truncated last line, one whose 'response' is a number, a parquet file whose
    'response' column is of another type than the others'."""
    folder.mkdir()
    rows = [{"instruction": f"Task {n}.", "response": f"print({n})"} for n in range(6)]
    write_lines(folder / "a.jsonl", [json.dumps(rows[0]).encode(), json.dumps(rows[1]).encode()[:-9]])
    write_lines(
        folder / "b.jsonl",
        [json.dumps({"instruction": "Number", "response": 7}).encode(), json.dumps(rows[2]).encode()],
    )
    pq.write_table(pa.Table.from_pylist([{"instruction": "Int column", "response": 8}]), folder / "c.parquet")
    (folder / "d.json").write_text(json.dumps(rows[3:]))
    return folder


def test_a_folder_reads_like_one_file_with_bad_rows_rejected(tmp_path):
    folder = _folder_with_damage(tmp_path / "corpus")
    data = load_source(SourceConfig(path=str(folder)))
    assert [r.instruction for r in data.rows] == ["Task 0.", "Task 2.", "Task 3.", "Task 4.", "Task 5."]
    assert [(r.source_index, r.reason) for r in data.rejected] == [
        (1, "not valid JSON"),
        (2, "'response' is int, not a string"),
        (4, "'response' is int, not a string"),
    ]
    assert data.rejected[0].detail.startswith("a.jsonl line 2: ")
    assert data.info["kind"] == "folder" and data.info["files"] == 4 and data.info["rows_read"] == 8
    # the same rows, with the same ids, as one file holding the good lines
    single = tmp_path / "one.jsonl"
    single.write_text(
        "".join(json.dumps({"instruction": r.instruction, "response": r.response}) + "\n" for r in data.rows)
    )
    assert [r.row_id for r in load_source(SourceConfig(path=str(single))).rows] == [r.row_id for r in data.rows]


def test_build_dataset_from_a_damaged_folder_rejects_its_bad_rows(tmp_path, tiny_model_dir):
    from conftest import REPO
    from test_cli import cli

    folder = _folder_with_damage(tmp_path / "corpus")
    out = tmp_path / "out"
    result = cli(
        "build-dataset",
        "configs/demo.yaml",
        f"source.path={folder}",
        f"generator.model={tiny_model_dir}",
        "summarize.num_samples=1",
        "decontaminate.enabled=false",
        "--output-dir",
        str(out),
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "5 usable rows of 8 read" in result.stdout
    rejected = pq.read_table(next((out / "dataset" / "rejected").glob("*.parquet"))).to_pylist()
    reasons = {(r["source_index"], r["reason"]) for r in rejected if r["stage"] == "source"}
    assert reasons == {
        (1, "not valid JSON"),
        (2, "'response' is int, not a string"),
        (4, "'response' is int, not a string"),
    }
