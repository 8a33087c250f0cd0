"""The dataset folder's data, written as the build streams: one parquet file per shard per config.

`DatasetWriter` takes each shard's rows of each config as they are made and writes them to a parquet
file straight away, so a build holds one shard of rows at a time, never a whole table. Rows of a
config may come in ordered groups (the contamination report lists the source rows' matches before
the generated pairs'): `finish` orders the files by group, then by arrival, and names them
`DIR/train-00000-of-000NN.parquet`, so `load_dataset(DIR, config)` reads the rows in build order.

The folder is written under a scratch name next to its final place and renamed into it (see
`inversecoder.core.files.atomic_path`), so a crash never leaves a half-written dataset behind.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from inversecoder.core.dataset_files import DATA_DIRS, SCHEMAS, shard_name

#: Rows per record batch when a finished config is read back (content fingerprint).
READ_BATCH_ROWS = 4096
#: A config's shard files are joined into files of about this many rows (a new file starts once one holds
#: at least this many): a build that fits one shard writes one file per config, as a single-table write did.
FILE_ROWS = 200_000


@dataclass
class _ColumnSize:
    rows: int = 0
    nulls: int = 0
    data: int = 0  # bytes of string values


@dataclass
class _Config:
    parts: list[tuple[int, int, Path, int]] = field(default_factory=list)  # (group, arrival, scratch file, rows)
    rows: int = 0
    columns: dict[str, _ColumnSize] = field(default_factory=dict)


def table_nbytes(schema: pa.Schema, columns: dict[str, _ColumnSize]) -> int:
    """What `pa.Table.from_pylist(all rows).nbytes` is for the config's rows in one chunk, from per-file
    column sizes (the card's `dataset_info` sizes do not depend on how the rows were sharded)."""
    total = 0
    for column in schema:
        size = columns.get(column.name, _ColumnSize())
        n = size.rows
        total += math.ceil(n / 8) if size.nulls else 0  # validity bitmap
        if pa.types.is_string(column.type):
            total += 4 * n + size.data  # arrow counts n offsets (not n + 1) in nbytes
        elif pa.types.is_boolean(column.type):
            total += math.ceil(n / 8)
        else:
            total += n * (column.type.bit_width // 8)
    return total


class DatasetWriter:
    """Parquet files of the configs `names` under `folder`, appended shard by shard."""

    def __init__(self, folder: Path, names: Iterable[str]):
        self.folder = Path(folder)
        self.configs = {name: _Config() for name in names}
        self._arrivals = 0

    def add(self, name: str, rows: list[dict[str, Any]], group: int = 0) -> None:
        """Write `rows` of config `name` (in `group`) as one file; an empty list writes nothing."""
        if name not in self.configs or not rows:
            return
        state = self.configs[name]
        table = pa.Table.from_pylist(rows, schema=SCHEMAS[name])
        path = self.folder / DATA_DIRS[name] / f".part-{group:03d}-{self._arrivals:06d}.parquet"
        self._arrivals += 1
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        state.parts.append((group, len(state.parts), path, table.num_rows))
        state.rows += table.num_rows
        for column in table.schema:
            values = table.column(column.name)
            size = state.columns.setdefault(column.name, _ColumnSize())
            size.rows += len(values)
            size.nulls += values.null_count
            if pa.types.is_string(column.type):
                size.data += pc.sum(pc.binary_length(values)).as_py() or 0

    def finish(self) -> dict[str, Any]:
        """Name the files in row order; returns, per non-empty config, its files, rows, size and columns,
        the empty configs (left out: `datasets` cannot load a config without rows) and the content
        fingerprint of every row."""
        tables, empty = {}, []
        for name, state in self.configs.items():
            if not state.rows:
                empty.append(name)
                continue
            runs: list[list[tuple]] = []
            for part in sorted(state.parts):
                if not runs or sum(p[3] for p in runs[-1]) >= FILE_ROWS:
                    runs.append([])
                runs[-1].append(part)
            files = []
            for index, run in enumerate(runs):
                relative = shard_name(name, index, len(runs))
                _join([p[2] for p in run], self.folder / relative, SCHEMAS[name])
                files.append(relative)
            tables[name] = {
                "rows": state.rows,
                "num_bytes": table_nbytes(SCHEMAS[name], state.columns),
                "columns": SCHEMAS[name].names,
                "files": files,
            }
        return {"tables": tables, "empty_configs": empty, "fingerprint": content_fingerprint(self.folder, tables)}


def _join(parts: list[Path], target: Path, schema: pa.Schema) -> None:
    """One parquet file with the rows of `parts`, in order, read one part at a time."""
    if len(parts) == 1:
        parts[0].rename(target)
        return
    with pq.ParquetWriter(target, schema) as writer:
        for part in parts:
            writer.write_table(pq.read_table(part, schema=schema))
            part.unlink()


def content_fingerprint(folder: Path, tables: dict[str, dict[str, Any]]) -> str:
    """sha256 of the rows of every config, canonical JSON, read back from the files a batch at a time:
    equal data, equal fingerprint (however the rows were sharded)."""
    digest = hashlib.sha256()
    for name in sorted(tables):
        digest.update(name.encode())
        for relative in tables[name]["files"]:
            for batch in pq.ParquetFile(Path(folder) / relative).iter_batches(batch_size=READ_BATCH_ROWS):
                for row in batch.to_pylist():
                    digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode())
    return digest.hexdigest()[:16]


def rejected_reason_key(row: dict[str, Any]) -> tuple[str, str]:
    """(stage, reason) with decontamination reasons grouped by layer and duplicate reasons by kind (the
    matched task / the duplicated pair are in each row)."""
    return row["stage"], row["reason"].split(" with ")[0].split(" of pair ")[0].split(" (Jaccard")[0]
