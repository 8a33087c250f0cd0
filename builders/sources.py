"""Step 0: read the instruction corpus, validate every row, give each a stable content id.

A file (.jsonl, .json, .parquet), a local folder of such files, or a Hub dataset id (through `load_dataset`).
A Hub dataset is read at one commit: `source.revision` (default main) is resolved to its sha first, and
that sha is loaded and recorded (offline: the sha of the cached copy, when its cache folder names it).
A folder's files (those `datasets` would pick for the split) are read one after another like one file, so
a broken line or a value of another type in one of them is a rejected row, not a failed build; a folder
whose card names its files (`configs:`) or that holds other formats is read by `load_dataset`.
An unusable configuration (missing file, unknown column, no rows) is a `ConfigError`; an unusable row
(bad JSON or UTF-8, null, non-string or empty fields, exact duplicate) becomes a `Rejected` record; with
`source.duplicates: keep` (the paper's corpus as published) an exact duplicate stays, under an id of its own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inversecoder.builders.stage import StageResult
from inversecoder.core.config import SourceConfig
from inversecoder.core.errors import ConfigError
from inversecoder.core.files import file_sha256
from inversecoder.core.hub_refs import NOT_RESOLVED_OFFLINE, hub_endpoint, is_commit_sha, tree_url
from inversecoder.core.rows import Rejected, short_hash

STAGE = "source"
READ_BATCH_ROWS = 4096


@dataclass(frozen=True)
class SourceRow:
    row_id: str  # short hash of (instruction, response)
    source_index: int  # position in the source, for people; joins use row_id
    instruction: str
    response: str
    repeats: int | None = None  # `source.duplicates: keep`: the source index of the earlier row this one repeats


@dataclass
class SourceData:
    rows: list[SourceRow]
    rejected: list[Rejected]
    info: dict[str, Any] = field(default_factory=dict)  # path, kind, revision, sha256: for the card


class _BadRecord:
    """A record that could not even be parsed (kept so that it becomes a rejected row)."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        self.detail = detail


def _read_jsonl(path: Path) -> Iterator[Any]:
    """One record per line; a line that is not UTF-8 or not JSON becomes a `_BadRecord`."""
    with path.open("rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                yield _BadRecord("not valid UTF-8", f"line {line_number}: {error.reason} at byte {error.start}")
                continue
            try:
                yield json.loads(text)
            except json.JSONDecodeError as error:
                yield _BadRecord("not valid JSON", f"line {line_number}: {error.msg}")


def _read_json(path: Path) -> Iterator[Any]:
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        yield from _read_jsonl(path)  # many ".json" corpora are JSON Lines
        return
    if isinstance(data, dict):
        lists = [value for value in data.values() if isinstance(value, list)]
        if len(lists) != 1:
            raise ConfigError(f"{path}: a JSON file must hold a list of records (or one key holding it)")
        data = lists[0]
    if not isinstance(data, list):
        raise ConfigError(f"{path}: a JSON file must hold a list of records")
    yield from data


def _read_parquet(path: Path) -> Iterator[Any]:
    import pyarrow.parquet as pq

    try:
        handle = pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises several types for a broken file
        raise ConfigError(f"{path} is not a readable parquet file: {error}") from None
    for batch in handle.iter_batches(batch_size=READ_BATCH_ROWS):  # a batch at a time, not the whole file
        yield from batch.to_pylist()


def _read_dataset(
    config: SourceConfig, revision: str | None = None, info: dict[str, Any] | None = None
) -> Iterator[Any]:
    """A local dataset folder or a Hub id, through `datasets.load_dataset` (offline-aware). For a Hub id
    read offline, `info["revision"]` becomes the commit sha of the cached copy that was loaded."""
    import datasets

    try:
        dataset = datasets.load_dataset(config.path, split=config.split, revision=revision or config.revision)
    except (FileNotFoundError, ValueError, ConnectionError, OSError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"cannot load source '{config.path}' (split {config.split}): {first_line}") from None
    if info is not None and info.get("revision") == NOT_RESOLVED_OFFLINE:
        _record_cached_sha(config, dataset, info)
    yield from dataset


def _resolve_hub_revision(config: SourceConfig) -> str:
    """The commit sha `source.revision` (default main) of a Hub dataset points to now, asked of the Hub with
    the endpoint and token `load_dataset` uses (HF_ENDPOINT, HF_TOKEN or the saved login)."""
    from huggingface_hub import HfApi, constants

    requested = config.revision or "main"
    try:
        return HfApi(endpoint=constants.ENDPOINT).dataset_info(config.path, revision=requested, timeout=60).sha or ""
    except Exception as error:  # not found, no access, no connection: huggingface_hub and httpx errors
        detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ConfigError(
            f"cannot resolve revision {requested} of source '{config.path}' on {hub_endpoint()}: "
            f"{type(error).__name__}{': ' + detail if detail else ''}"
        ) from None


def _record_cached_sha(config: SourceConfig, dataset: Any, info: dict[str, Any]) -> None:
    """Offline, `datasets` loads its latest cached copy of a Hub dataset, whatever revision is asked: its
    cache folder is named by the commit sha it was downloaded at (`.../<config>/0.0.0/<sha>/`)."""
    folders = {Path(entry["filename"]).parent.name for entry in getattr(dataset, "cache_files", None) or []}
    sha = next(iter(folders)) if len(folders) == 1 and is_commit_sha(next(iter(folders))) else None
    if sha is None:
        return
    if is_commit_sha(config.revision) and config.revision != sha:
        raise ConfigError(
            f"source.revision is {config.revision} but the offline cache of '{config.path}' holds commit {sha}: "
            "load it once online at that revision (or unset HF_HUB_OFFLINE)"
        )
    info["revision"] = sha
    info["url"] = tree_url(config.path, "dataset", sha)


def _hub_source(config: SourceConfig) -> tuple[Iterator[Any], dict[str, Any]]:
    """A Hub dataset read at one commit: `source.revision` (default main) resolved to its sha, which is
    loaded and recorded. Offline, the sha of the cached copy `datasets` loads, or `not resolved (offline)`."""
    from huggingface_hub import constants

    info: dict[str, Any] = {"path": config.path, "kind": "hub", "requested_revision": config.revision or "main"}
    if constants.HF_HUB_OFFLINE:
        info["revision"] = NOT_RESOLVED_OFFLINE
        return _read_dataset(config, None, info), info
    sha = _resolve_hub_revision(config)
    info |= {"revision": sha, "url": tree_url(config.path, "dataset", sha)}
    return _read_dataset(config, sha), info


READERS = {".jsonl": _read_jsonl, ".json": _read_json, ".parquet": _read_parquet}


def _reader(path: Path) -> Callable[[Path], Iterator[Any]] | None:
    return READERS.get(path.suffix.lower())


def _card_names_files(folder: Path) -> bool:
    """Whether the folder's README.md has `configs:` in its YAML header (then `datasets` reads what it names)."""
    card = folder / "README.md"
    if not card.is_file():
        return False
    import yaml

    text = card.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return False
    try:
        header = yaml.safe_load(text.split("---", 2)[1])
    except (yaml.YAMLError, IndexError):
        return False
    return isinstance(header, dict) and "configs" in header


def _folder_files(folder: Path, split: str) -> list[Path] | None:
    """The files `datasets` would read for `split` of a local folder, in its order, when all of them are
    .jsonl, .json or .parquet; None when `load_dataset` must read the folder (a card that names the files,
    other formats, no such split)."""
    from datasets.data_files import DataFilesDict, EmptyDatasetError, get_data_patterns

    if _card_names_files(folder):
        return None
    try:
        patterns = get_data_patterns(str(folder))
        files = DataFilesDict.from_patterns(patterns, base_path=str(folder))
    except (EmptyDatasetError, FileNotFoundError, ValueError):
        return None
    chosen = [Path(name) for name in files.get(split, [])]
    if not chosen or not all(_reader(name) for name in chosen):
        return None
    return chosen


def _read_files(folder: Path, files: list[Path]) -> Iterator[Any]:
    """The records of every file in turn; a bad record's detail names its file."""
    for path in files:
        reader = _reader(path)
        assert reader is not None  # _folder_files keeps only files it has a reader for
        for record in reader(path):
            if isinstance(record, _BadRecord):
                record.detail = f"{path.relative_to(folder)} {record.detail}".strip()
            yield record


def _records(config: SourceConfig) -> tuple[Iterator[Any], dict[str, Any]]:
    path = Path(config.path).expanduser()
    if path.is_file():
        info: dict[str, Any] = {"path": str(config.path), "kind": "file", "sha256": file_sha256(path)}
        reader = _reader(path)
        if reader is None:
            raise ConfigError(f"source file {path} must be .jsonl, .json or .parquet")
        return reader(path), info
    if path.is_dir():
        files = _folder_files(path, config.split)
        if files is None:
            return _read_dataset(config), {"path": str(config.path), "kind": "folder"}
        digest = hashlib.sha256()
        for name in files:
            digest.update(f"{name.relative_to(path)}\0{file_sha256(name)}\n".encode())
        info = {
            "path": str(config.path),
            "kind": "folder",
            "files": len(files),
            "sha256": digest.hexdigest(),
        }
        return _read_files(path, files), info
    if config.path.startswith((".", "/", "~")) or Path(config.path).suffix in (".jsonl", ".json", ".parquet"):
        raise ConfigError(f"source file not found: {config.path}")
    return _hub_source(config)


def _field(record: dict, column: str, source_index: int, max_chars: int) -> tuple[str | None, Rejected | None]:
    if column not in record:
        return None, Rejected(STAGE, f"missing field '{column}'", source_index)
    value = record[column]
    if value is None:
        return None, Rejected(STAGE, f"'{column}' is null", source_index)
    if not isinstance(value, str):
        return None, Rejected(STAGE, f"'{column}' is {type(value).__name__}, not a string", source_index)
    if not value.strip():
        return None, Rejected(STAGE, f"'{column}' is empty", source_index)
    if "\x00" in value:
        return None, Rejected(STAGE, f"'{column}' contains NUL characters", source_index)
    if len(value) > max_chars:
        return None, Rejected(
            STAGE,
            f"'{column}' is longer than source.max_chars",
            source_index,
            detail=f"{len(value)} characters > {max_chars}",
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:  # a JSON escape of half a surrogate pair: no tokenizer or parquet takes it
        return None, Rejected(
            STAGE,
            f"'{column}' contains a lone surrogate",
            source_index,
            detail=f"{value[error.start]!r} at character {error.start}",
        )
    return value, None


class SourceStream:
    """The source's rows one at a time: `(source_index, SourceRow or Rejected)` for every record read (up
    to `config.limit`). Memory holds each row's id, not its text. `info` (path, kind, sha256, and
    `rows_read` once the stream is exhausted) is for the card. A source with no rows or without the
    configured columns is a `ConfigError`, raised when the stream ends (no row was usable, so no work
    was done on it)."""

    def __init__(self, config: SourceConfig):
        if config.limit is not None and config.limit < 0:
            raise ConfigError("source.limit must be >= 0")
        if config.max_chars < 1:
            raise ConfigError(f"source.max_chars must be >= 1, got {config.max_chars}")
        self.config = config
        self._records, self.info = _records(config)

    def __iter__(self) -> Iterator[tuple[int, SourceRow | Rejected]]:
        config = self.config
        first_seen: dict[str, int] = {}
        repeats: dict[str, int] = {}
        columns_seen: set[str] = set()
        total = 0
        for source_index, record in enumerate(self._records):
            if config.limit is not None and source_index >= config.limit:
                break
            total += 1
            if isinstance(record, _BadRecord):
                yield source_index, Rejected(STAGE, record.reason, source_index, detail=record.detail)
                continue
            if not isinstance(record, dict):
                yield source_index, Rejected(STAGE, f"record is {type(record).__name__}, not an object", source_index)
                continue
            columns_seen.update(record)
            instruction, problem = _field(record, config.instruction_column, source_index, config.max_chars)
            if problem is None:
                response, problem = _field(record, config.response_column, source_index, config.max_chars)
            if problem is not None:
                yield source_index, problem
                continue
            assert instruction is not None and response is not None  # _field gives a value or a problem
            row_id = short_hash(instruction, response)
            if row_id in first_seen and config.duplicates == "remove":
                yield (
                    source_index,
                    Rejected(
                        STAGE, "exact duplicate", source_index, row_id, f"same as source row {first_seen[row_id]}"
                    ),
                )
                continue
            if row_id in first_seen:  # `duplicates: keep`: the repeat stays, under an id of its own
                repeats[row_id] = repeats.get(row_id, 0) + 1
                repeat_id = short_hash(instruction, response, f"repeat {repeats[row_id]}")
                yield source_index, SourceRow(repeat_id, source_index, instruction, response, first_seen[row_id])
                continue
            first_seen[row_id] = source_index
            yield source_index, SourceRow(row_id, source_index, instruction, response)
        if total == 0:
            raise ConfigError(f"source '{config.path}' has no rows")
        for column in (config.instruction_column, config.response_column):
            if columns_seen and column not in columns_seen:
                available = ", ".join(sorted(map(str, columns_seen)))
                raise ConfigError(
                    f"source has no column '{column}' (available: {available}); "
                    "set source.instruction_column / source.response_column"
                )
        self.info["rows_read"] = total


def load_source(config: SourceConfig) -> SourceData:
    """Read, validate and id every row (up to `config.limit`), all in memory (see `SourceStream`)."""
    stream = SourceStream(config)
    rows: list[SourceRow] = []
    rejected: list[Rejected] = []
    for _, item in stream:
        if isinstance(item, SourceRow):
            rows.append(item)
        else:
            rejected.append(item)
    return SourceData(rows, rejected, stream.info)


#: The report's count of the repeated rows `source.duplicates: keep` keeps.
KEPT_DUPLICATES = "source rows repeating an earlier row (kept)"


def source_stage(items, config, context) -> StageResult:
    """The shard's records: usable rows go on, unusable ones are rejected."""
    items = list(items)
    rows = [item for _, item in items if isinstance(item, SourceRow)]
    rejected = [item for _, item in items if not isinstance(item, SourceRow)]
    report = {"source rows read": len(items), "usable source rows": len(rows)}
    if config.source.duplicates == "keep":
        report[KEPT_DUPLICATES] = sum(row.repeats is not None for row in rows)
    return StageResult(rows, rejected, report)
