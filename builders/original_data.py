"""Step 0's data: the source corpus's usable, decontaminated pairs, as a one-config dataset folder.

The paper's generator M is the base model fine-tuned on the original corpus; when a run names no
generator, this folder is what M trains on (the same pairs the InverseCoder build calls `original`).
Streamed like the dataset build: a shard of source rows at a time is screened and written.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inversecoder.builders import pipeline
from inversecoder.builders.dataset import DatasetWriter
from inversecoder.builders.decontaminate_stage import (
    ORIGINAL_FLAGGED,
    ORIGINAL_REMOVED,
    decontaminate_summary,
    original_row,
    screen_sources,
    screens_sources,
)
from inversecoder.builders.sources import SourceStream, source_stage
from inversecoder.builders.stage import StageContext, closing_state
from inversecoder.core.config import RunConfig
from inversecoder.core.files import atomic_path
from inversecoder.core.hub_refs import is_commit_sha
from inversecoder.core.layout import BUILD_INFO, BUILD_REPORT
from inversecoder.core.licenses import card_license, combined_license

logger = logging.getLogger(__name__)


def build_original_data(
    config: RunConfig, target: Path, write_card: Callable[[Path, dict[str, Any]], object] | None = None
) -> Path:
    """Write `target` (Hub layout, config `original`); rewritten atomically on every call (cheap).
    `write_card(folder, report)` writes its card before it is published."""
    source = SourceStream(config.source)
    context = StageContext(None, config.layout, logger, progress=True)
    removed = flagged = 0
    target = Path(target)
    with atomic_path(target) as scratch, closing_state(context):
        scratch.mkdir(parents=True)
        writer = DatasetWriter(scratch, ["original"])
        repeats = 0
        for shard in pipeline.shards(source, pipeline.SHARD_SNIPPETS):
            shard_rows = list(source_stage(shard, config, context).kept)
            repeats += sum(row.repeats is not None for row in shard_rows)
            screened = screen_sources(shard_rows, config, context)
            clean = list(screened.kept)
            removed += len(shard_rows) - len(clean)
            flagged += screened.report[ORIGINAL_FLAGGED]
            writer.add("original", [original_row(r) for r in clean])
        summary = (
            decontaminate_summary(config, context, {ORIGINAL_REMOVED: removed, ORIGINAL_FLAGGED: flagged})
            if screens_sources(config)
            else {"enabled": config.decontaminate.enabled, "original": config.decontaminate.original}
        )
        files = writer.finish()
        row_count = files["tables"]["original"]["rows"] if "original" in files["tables"] else 0
        info = {
            "source": config.source.path,
            "source_info": source.info,  # kind, and the commit sha or file sha256 it was read at
            "rows": row_count,
            "decontaminated": removed,
            "flagged": flagged,
            **({"duplicates_kept": repeats} if config.source.duplicates == "keep" else {}),
            "fidelity": config.fidelity,
            "fingerprint": files["fingerprint"],
            "empty_configs": files["empty_configs"],
        }
        (scratch / BUILD_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        keys = ("enabled", "original", "action", "original_action", "cascade", "by_tier")
        screening = {key: summary.get(key) for key in keys}
        revision = source.info.get("revision") if is_commit_sha(source.info.get("revision")) else config.source.revision
        corpus = {"source corpus": card_license(config.source.path, "dataset", revision)}
        report = info | {"license": combined_license(corpus), "tables": files["tables"], "screening": screening}
        (scratch / BUILD_REPORT).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        if write_card is not None:
            write_card(scratch, report)
    logger.info(f"generator data: {row_count} original pairs written to {target}")
    return target
