"""The `preferences` config: DPO pairs for the code -> instruction summarizer, from the candidates already scored.

Inverse-Instruct asks M for K instructions per code snippet and keeps the one M itself judges best; the others
are scored too. That is a preference dataset for the step M performs, summarizing code into an instruction:

- `prompt`: the summarization request exactly as M was given it (`prompts.summarize_prompt(code, "")`, the
  Magicoder format up to "@@ Response\\n"). The seeded verb prefix ("Write a python") differs per candidate, so
  it belongs to each completion, not to the shared prompt: `prompt + chosen` is the text M scored.
- `chosen`: the best-scored candidate, i.e. the `default` config's instruction; `rejected`: the lowest-scored
  candidate with a different text (or, with `preferences.rejected: random`, one drawn among those at least
  `min_margin` below), with `score_chosen` / `score_rejected`.

It is TRL's standard preference form (`DPOTrainer` adds the EOS token and tokenizes `prompt + chosen`). Pairs
are made for the final pairs only: a snippet removed by decontamination or dedup has none (under
`decontaminate.action: report` the flagged pairs stay in `default`, listed in `contamination`, but get none
here: only what survived decontamination becomes a pair). A snippet without a second candidate, whose margin
is below `min_margin` or that was flagged gets no pair: it is counted by reason in the report, not rejected
(its `default` pair stays).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable
from typing import Any

from inversecoder.builders.stage import StageContext, StageResult
from inversecoder.builders.stages import Pair
from inversecoder.core import prompts
from inversecoder.core.config import PreferencesConfig
from inversecoder.core.rows import short_hash

MADE = "preference pairs (preferences config)"
NO_OTHER = "no other scored candidate with a different instruction"
BELOW_MARGIN = "score margin below preferences.min_margin"
#: the report's count of each reason a snippet got no pair
FLAGGED = "flagged by decontamination (kept in default under action: report)"
NOT_MADE = {reason: f"no preference pair: {reason}" for reason in (NO_OTHER, BELOW_MARGIN, FLAGGED)}


def _rejected_candidate(
    pair: Pair, candidates: list[dict[str, Any]], config: PreferencesConfig, seed: int
) -> tuple[dict[str, Any] | None, str]:
    """The candidate to reject for `pair` (None and the reason when there is none)."""
    others = [
        c
        for c in candidates
        if c["candidate_id"] != pair.candidate_id
        and c["score"] is not None
        and c["instruction"] is not None
        and c["instruction"] != pair.instruction
    ]
    if not others:
        return None, NO_OTHER
    eligible = sorted(
        (c for c in others if pair.score - c["score"] >= config.min_margin), key=lambda c: (c["score"], c["k"])
    )
    if not eligible:
        return None, BELOW_MARGIN
    if config.rejected == "lowest":
        return eligible[0], ""
    rng = random.Random(int(short_hash(str(seed), pair.row_id, "preferences"), 16))
    return rng.choice(sorted(eligible, key=lambda c: c["k"])), ""


def preference_rows(
    pairs: Iterable[Pair], candidates: Iterable[dict[str, Any]], config: PreferencesConfig, seed: int
) -> tuple[list[dict[str, Any]], Counter[str]]:
    """One `preferences` row per pair that has a rejected candidate, and the count of pairs without one by reason."""
    by_row: dict[str, list[dict[str, Any]]] = {}
    for candidate in candidates:
        by_row.setdefault(candidate["row_id"], []).append(candidate)
    rows, missing = [], Counter[str]()
    for pair in pairs:
        rejected, reason = _rejected_candidate(pair, by_row.get(pair.row_id, []), config, seed)
        if rejected is None:
            missing[reason] += 1
            continue
        rows.append(
            {
                "prompt": prompts.summarize_prompt(pair.response, ""),
                "chosen": pair.instruction,
                "rejected": rejected["instruction"],
                "score_chosen": pair.score,
                "score_rejected": rejected["score"],
                "language": pair.language,
                "row_id": pair.row_id,
                "source_index": pair.source_index,
                "chosen_id": pair.candidate_id,
                "rejected_id": rejected["candidate_id"],
            }
        )
    return rows, missing


def preferences_stage(pairs, config, context: StageContext) -> StageResult:
    """After dedup: keeps every pair; writes the `preferences` rows of the shard's final pairs from the
    candidates the decontamination left in `context.candidates` (the shard's surviving candidates)."""
    pairs = list(pairs)
    candidates, context.candidates = context.candidates, []
    flagged, context.flagged = context.flagged, set()
    if not config.preferences.enabled:
        return StageResult(pairs)
    rows, missing = preference_rows(
        [p for p in pairs if p.row_id not in flagged], candidates, config.preferences, config.seed
    )
    missing[FLAGGED] = sum(p.row_id in flagged for p in pairs)
    margins = context.state.setdefault("preferences", {"sum": 0.0, "min": None})
    for row in rows:
        margin = row["score_chosen"] - row["score_rejected"]
        margins["sum"] += margin
        margins["min"] = margin if margins["min"] is None else min(margins["min"], margin)
    report = {MADE: len(rows)} | {NOT_MADE[reason]: missing[reason] for reason in NOT_MADE}
    return StageResult(pairs, [], report, {"preferences": rows})


def preferences_summary(config, context: StageContext, counts: dict[str, int]) -> dict[str, Any]:
    """The card's account: the settings, the pairs made, the snippets without one by reason, the margins."""
    settings = config.preferences
    made = counts.get(MADE, 0)
    margins = context.state.get("preferences", {"sum": 0.0, "min": None})
    return {
        "enabled": settings.enabled,
        "min_margin": settings.min_margin,
        "rejected": settings.rejected,
        "pairs": made,
        "not_made": [{"reason": reason, "count": counts.get(key, 0)} for reason, key in NOT_MADE.items()],
        "mean_margin": round(margins["sum"] / made, 4) if made else None,
        "min_observed_margin": round(margins["min"], 4) if margins["min"] is not None else None,
    }
