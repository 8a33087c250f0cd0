"""Steps 1-3 of the method as stages: extract, summarize (K candidates), self-evaluate, select.

Every stage maps one shard's keyed records to new keyed records plus `Rejected` records (see
`builders/stage.py`); model calls go through `CachedModel`, one call per shard, so a stage interrupted
at any point resumes without repeating finished calls.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable
from dataclasses import dataclass

from inversecoder.builders.extract import extract_code
from inversecoder.builders.sources import SourceRow
from inversecoder.builders.stage import StageContext, StageResult
from inversecoder.core import prompts
from inversecoder.core.backends import CachedModel, GenerationRequest, SamplingParams
from inversecoder.core.config import SummarizeConfig
from inversecoder.core.rows import Rejected, short_hash


@dataclass(frozen=True)
class Snippet:
    row_id: str
    source_index: int
    code_block: str  # the first fenced block: the new training response
    language: str  # the normalized fence tag (the `language` column)
    tag: str = ""  # the fence tag as written


@dataclass(frozen=True)
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

    def to_row(self) -> dict:
        """A row of the dataset's `candidates` config."""
        return {
            "row_id": self.row_id,
            "candidate_id": self.candidate_id,
            "k": self.k,
            "seed": self.seed,
            "prefix": self.prefix,
            "instruction": self.instruction,
            "finish_reason": self.finish_reason,
            "score": self.score,
            "yes_no_mass": self.yes_no_mass,
            "selected": self.selected,
        }


@dataclass(frozen=True)
class SnippetCandidates:
    """A snippet and its generated candidates (none when every generation failed)."""

    snippet: Snippet
    candidates: tuple[Candidate, ...]


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


def extract(rows: Iterable[SourceRow]) -> tuple[list[Snippet], list[Rejected]]:
    snippets, rejected = [], []
    for row in rows:
        found = extract_code(row.response)
        if found.code_block is None:
            rejected.append(Rejected("extract", found.reason or "no code", row.source_index, row.row_id))
        else:
            snippets.append(Snippet(row.row_id, row.source_index, found.code_block, found.language, found.tag))
    return snippets, rejected


def candidate_seed(run_seed: int, row_id: str, k: int) -> int:
    """A per-candidate seed derived from the run seed and the candidate's identity (not its position)."""
    return int(short_hash(str(run_seed), row_id, str(k)), 16) % (2**31 - 1)


def sampling_params(config: SummarizeConfig) -> SamplingParams:
    return SamplingParams(
        temperature=config.temperature,
        top_p=config.top_p,
        repetition_penalty=config.repetition_penalty,
        max_new_tokens=config.max_new_tokens,
        stop=tuple(config.stop),
    )


def summarize(
    model: CachedModel, snippets: list[Snippet], config: SummarizeConfig, run_seed: int
) -> tuple[list[SnippetCandidates], list[Rejected]]:
    """K candidate instructions per snippet; each candidate has its own seeded prefix and sampling seed. The
    prefix carries the normalized language tag, or the fence's own with `language_tag: raw` (the paper's)."""
    drafts: list[Candidate] = []
    requests: list[GenerationRequest] = []
    for snippet in snippets:
        language = snippet.tag if config.language_tag == "raw" else snippet.language
        for k in range(config.num_samples):
            seed = candidate_seed(run_seed, snippet.row_id, k)
            prefix = prompts.summarize_prefix(random.Random(seed), language)
            drafts.append(Candidate(snippet.row_id, k, seed, prefix))
            requests.append(GenerationRequest(prompts.summarize_prompt(snippet.code_block, prefix), seed))
    completions = model.generate(requests, sampling_params(config), desc="summarize") if requests else []
    groups, rejected = [], []
    for i, snippet in enumerate(snippets):
        kept = []
        for j in range(i * config.num_samples, (i + 1) * config.num_samples):
            draft, completion = drafts[j], completions[j]
            if completion.error is not None:
                rejected.append(
                    Rejected("summarize", completion.error, snippet.source_index, draft.row_id, f"candidate {draft.k}")
                )
                continue
            assert completion.text is not None  # a completion without an error has its text
            kept.append(
                dataclasses.replace(
                    draft, instruction=(draft.prefix + completion.text).strip(), finish_reason=completion.finish_reason
                )
            )
        groups.append(SnippetCandidates(snippet, tuple(kept)))
    return groups, rejected


def score(model: CachedModel, groups: list[SnippetCandidates]) -> tuple[list[SnippetCandidates], list[Rejected]]:
    """Self-evaluation: P(Yes) of "Is the answer correct?" for each (candidate instruction, code)."""
    score_prompts = []
    for group in groups:
        for candidate in group.candidates:
            assert (
                candidate.instruction is not None
            )  # `summarize` keeps only the candidates it wrote an instruction for
            score_prompts.append(prompts.score_prompt(candidate.instruction, group.snippet.code_block))
    results = iter(model.score_yes_no(score_prompts, desc="self-evaluate") if score_prompts else [])
    scored, rejected = [], []
    for group in groups:
        candidates = []
        for candidate in group.candidates:
            result = next(results)
            if result.error is not None:
                rejected.append(
                    Rejected(
                        "score", result.error, group.snippet.source_index, candidate.row_id, f"candidate {candidate.k}"
                    )
                )
            candidates.append(dataclasses.replace(candidate, score=result.score, yes_no_mass=result.yes_no_mass))
        scored.append(SnippetCandidates(group.snippet, tuple(candidates)))
    return scored, rejected


def select(groups: Iterable[SnippetCandidates]) -> tuple[list[Pair], list[Candidate], list[Rejected]]:
    """The best-scoring candidate per snippet (ties: the lowest k); no threshold, as in the paper.
    Returns the pairs, every candidate (the chosen ones marked `selected`) and the rejections."""
    pairs, candidates, rejected = [], [], []
    for group in groups:
        chosen = None
        for candidate in group.candidates:
            if candidate.score is not None and (
                chosen is None or (candidate.score, -candidate.k) > (chosen.score, -chosen.k)
            ):
                chosen = candidate
        snippet = group.snippet
        if chosen is None:
            rejected.append(
                Rejected("select", "no candidate could be generated and scored", snippet.source_index, snippet.row_id)
            )
        else:
            assert chosen.instruction is not None and chosen.score is not None  # only scored candidates are chosen
            pairs.append(
                Pair(
                    snippet.row_id,
                    snippet.source_index,
                    chosen.candidate_id,
                    chosen.instruction,
                    snippet.code_block,
                    snippet.language,
                    chosen.score,
                )
            )
        candidates += [dataclasses.replace(c, selected=True) if c is chosen else c for c in group.candidates]
    return pairs, candidates, rejected


# -- the stages -----------------------------------------------------------------------------------------


def extract_stage(rows, config, context: StageContext) -> StageResult:
    snippets, rejected = extract(rows)
    return StageResult(snippets, rejected, {"code snippets extracted": len(snippets)})


def summarize_stage(rows, config, context: StageContext) -> StageResult:
    assert context.model is not None  # the generating builds open the model before their stages run
    groups, rejected = summarize(context.model, list(rows), config.summarize, config.seed)
    return StageResult(groups, rejected, {"candidates generated": sum(len(g.candidates) for g in groups)})


def score_stage(rows, config, context: StageContext) -> StageResult:
    assert context.model is not None  # the generating builds open the model before their stages run
    groups, rejected = score(context.model, list(rows))
    scored = sum(c.score is not None for g in groups for c in g.candidates)
    return StageResult(groups, rejected, {"candidates scored": scored})


def select_stage(rows, config, context: StageContext) -> StageResult:
    """The best pair per snippet; every candidate goes to `context.candidates` (the decontamination writes them)."""
    pairs, candidates, rejected = select(rows)
    context.candidates = [c.to_row() for c in candidates]
    return StageResult(pairs, rejected, {"pairs selected": len(pairs)})
