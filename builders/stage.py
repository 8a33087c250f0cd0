"""The one shape of a dataset stage: `(rows, config, context) -> StageResult(kept, rejected, report)`.

A stage reads the rows the previous stage kept and returns new records: it never edits its inputs
(records are frozen; a changed record is a `dataclasses.replace` copy). `rejected` says what it dropped
and why (the dataset's `rejected` config), `report` is a few counts for the card, and `tables` are rows
the stage adds to other configs of the dataset (`candidates`, `original`, `contamination`, `preferences`).

The pipeline runs the stages shard by shard (a few thousand snippets at a time), so a stage sees one
shard's rows; what must outlive a shard (the benchmark index, the duplicate index) lives in the
`StageContext`, which also carries the shard's contaminated source rows and its candidates to the decontamination
and the preference pairs.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from inversecoder.core.layout import Layout
from inversecoder.core.rows import Rejected

if TYPE_CHECKING:
    from inversecoder.core.backends import CachedModel
    from inversecoder.core.config import RunConfig


@dataclass(frozen=True)
class StageResult:
    kept: Iterable[Any]
    rejected: list[Rejected] = field(default_factory=list)
    report: dict[str, int] = field(default_factory=dict)
    #: config name (with an optional ":group", see DatasetWriter.add) -> rows for that config
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


@dataclass
class StageContext:
    """What the stages share across shards: the model, the caches, and state that spans the corpus."""

    model: CachedModel | None
    layout: Layout
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("inversecoder.builders"))
    progress: bool = True
    #: source row_id -> the benchmark matches of the shard's contaminated source rows (their pairs go with them)
    contaminated: dict[str, list] = field(default_factory=dict)
    #: the shard's `candidates` rows, from the select stage to the decontamination (which drops removed rows')
    #: and on to the preferences stage (which pairs those of the final pairs, then clears them)
    candidates: list[dict[str, Any]] = field(default_factory=list)
    #: the shard's pairs the decontamination flagged but kept (`action: report`): no preference pair for them
    flagged: set[str] = field(default_factory=set)
    #: per-stage state that outlives a shard (the decontaminator, the duplicate index), by stage name
    state: dict[str, Any] = field(default_factory=dict)
    #: models the stages opened besides `model` (a separate judge): their failed calls count too
    other_models: list[CachedModel] = field(default_factory=list)


StageFunction = Callable[[Iterable[Any], "RunConfig", StageContext], StageResult]


@dataclass(frozen=True)
class Stage:
    name: str
    run: StageFunction
    #: the stage's summary for the card once every shard has run (from its state in the context)
    summary: Callable[[RunConfig, StageContext, dict[str, int]], dict[str, Any]] | None = None


@contextlib.contextmanager
def closing_state(context: StageContext) -> Iterator[StageContext]:
    """Close what the stages left in `context.state` (the decontamination's sandbox) when the build ends."""
    try:
        yield context
    finally:
        for value in context.state.values():
            closer = getattr(value, "close", None)
            if callable(closer):
                closer()


def add_counts(total: Counter, report: dict[str, int]) -> None:
    for key, value in report.items():
        total[key] += value
