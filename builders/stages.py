"""Steps 1-3 of the method: extract, summarize (K candidates), self-evaluate, select.

Every stage maps keyed items to keyed items plus `Rejected` records; model calls go through
`CachedModel`, so a stage interrupted at any point resumes without repeating finished calls.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from inversecoder.core import prompts
from inversecoder.core.backends import CachedModel, GenerationRequest, SamplingParams
from inversecoder.builders.extract import extract_code
from inversecoder.core.rows import Rejected, short_hash
from inversecoder.builders.sources import SourceRow
from inversecoder.core.config import SummarizeConfig


@dataclass(frozen=True)
class Snippet:
    row_id: str
    source_index: int
    code_block: str  # the first fenced block: the new training response
    language: str


@dataclass
class Candidate:
    row_id: str
    k: int  # 0..K-1: the candidate's index for its snippet (ties in selection go to the lowest)
    seed: int
    prefix: str
    instruction: str | None = None
    finish_reason: str = ""
    score: float | None = None
    yes_no_mass: float | None = None
    selected: bool = False

    @property
    def candidate_id(self) -> str:
        return f"{self.row_id}-{self.k}"


@dataclass(frozen=True)
class Pair:
    """One selected (instruction, code) pair: a row of the dataset's `default` config."""

    row_id: str
    source_index: int
    candidate_id: str
    instruction: str
    response: str
    language: str
    score: float


def extract(rows: list[SourceRow]) -> tuple[list[Snippet], list[Rejected]]:
    snippets, rejected = [], []
    for row in rows:
        found = extract_code(row.response)
        if found.code_block is None:
            rejected.append(Rejected("extract", found.reason or "no code", row.source_index, row.row_id))
        else:
            snippets.append(Snippet(row.row_id, row.source_index, found.code_block, found.language))
    return snippets, rejected


def candidate_seed(run_seed: int, row_id: str, k: int) -> int:
    """A per-candidate seed derived from the run seed and the candidate's identity (not its position)."""
    return int(short_hash(str(run_seed), row_id, str(k)), 16) % (2**31 - 1)


def summarize(
    model: CachedModel, snippets: list[Snippet], config: SummarizeConfig, run_seed: int
) -> tuple[list[Candidate], list[Rejected]]:
    """K candidate instructions per snippet; each candidate has its own seeded prefix and sampling seed."""
    candidates: list[Candidate] = []
    requests: list[GenerationRequest] = []
    for snippet in snippets:
        for k in range(config.num_samples):
            seed = candidate_seed(run_seed, snippet.row_id, k)
            prefix = prompts.summarize_prefix(random.Random(seed), snippet.language)
            candidates.append(Candidate(snippet.row_id, k, seed, prefix))
            requests.append(GenerationRequest(prompts.summarize_prompt(snippet.code_block, prefix), seed))
    params = SamplingParams(
        temperature=config.temperature,
        top_p=config.top_p,
        repetition_penalty=config.repetition_penalty,
        max_new_tokens=config.max_new_tokens,
        stop=tuple(config.stop),
    )
    completions = model.generate(requests, params, desc="summarize")
    by_row = {s.row_id: s for s in snippets}
    kept, rejected = [], []
    for candidate, completion in zip(candidates, completions):
        if completion.error is not None:
            source_index = by_row[candidate.row_id].source_index
            rejected.append(Rejected("summarize", completion.error, source_index, candidate.row_id, f"candidate {candidate.k}"))
            continue
        candidate.instruction = (candidate.prefix + completion.text).strip()
        candidate.finish_reason = completion.finish_reason
        kept.append(candidate)
    return kept, rejected


def score(model: CachedModel, candidates: list[Candidate], snippets: list[Snippet]) -> list[Rejected]:
    """Self-evaluation: P(Yes) of "Is the answer correct?" for each (candidate instruction, code)."""
    by_row = {s.row_id: s for s in snippets}
    score_prompts = [prompts.score_prompt(c.instruction, by_row[c.row_id].code_block) for c in candidates]
    results = model.score_yes_no(score_prompts, desc="self-evaluate")
    rejected = []
    for candidate, result in zip(candidates, results):
        if result.error is not None:
            source_index = by_row[candidate.row_id].source_index
            rejected.append(Rejected("score", result.error, source_index, candidate.row_id, f"candidate {candidate.k}"))
        candidate.score = result.score
        candidate.yes_no_mass = result.yes_no_mass
    return rejected


def select(candidates: list[Candidate], snippets: list[Snippet]) -> tuple[list[Pair], list[Rejected]]:
    """The best-scoring candidate per snippet (ties: the lowest k); no threshold, as in the paper."""
    best: dict[str, Candidate] = {}
    for candidate in candidates:
        if candidate.score is None:
            continue
        current = best.get(candidate.row_id)
        if current is None or (candidate.score, -candidate.k) > (current.score, -current.k):
            best[candidate.row_id] = candidate
    pairs, rejected = [], []
    for snippet in snippets:
        chosen = best.get(snippet.row_id)
        if chosen is None:
            rejected.append(Rejected("select", "no candidate could be generated and scored", snippet.source_index, snippet.row_id))
            continue
        chosen.selected = True
        pairs.append(Pair(snippet.row_id, snippet.source_index, chosen.candidate_id, chosen.instruction, snippet.code_block, snippet.language, chosen.score))
    return pairs, rejected
