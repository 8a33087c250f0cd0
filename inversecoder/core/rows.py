"""Row records shared by every stage: keyed by content-derived ids, never by position."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


def short_hash(*parts: str) -> str:
    """16 hex digits of sha256 over the parts (NUL-separated): stable ids that survive reruns."""
    return hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:16]


@dataclass(frozen=True)
class Rejected:
    """An item a stage could not use, and why: written to the dataset's `rejected` config."""

    stage: str
    reason: str
    source_index: int | None = None
    row_id: str | None = None
    detail: str = ""

    def to_row(self) -> dict:
        return {
            "source_index": self.source_index,
            "row_id": self.row_id,
            "stage": self.stage,
            "reason": self.reason,
            "detail": self.detail,
        }
