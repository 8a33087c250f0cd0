"""Fidelity to the paper: one switch (`fidelity: paper | improved`) and one table of every deviation.

`DEVIATIONS` is the single record of how a build differs from the method as the paper and its code ran it
(InverseCoder, arXiv 2407.05700, and wyt2000/InverseCoder @ 55ef919): what the paper did, what `improved`
(the default: this project's behaviour) does, what `paper` does, and why. The README's "Fidelity to the paper"
section and the dataset card render it (`deviations_markdown`, `deviation_rows`); nothing else states it.

A deviation that a field controls names that field and its value under `fidelity: paper`; `PAPER_SETTINGS`
is made from them, and `RunConfig` applies it when the config is read (fields the config sets itself win),
so the rest of the code reads plain fields and never the switch. Where the paper's code had an artefact
rather than a method (the Yes/No score read from the top 5 logprobs), both settings do it exactly, and the
table says so. This module imports nothing of the config (the config imports it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

FIDELITIES = ("paper", "improved")
AS_THE_PAPER = "as the paper"


@dataclass(frozen=True)
class Deviation:
    """One way a build can differ from the paper. `field`/`paper_value`: the setting `fidelity: paper` gives
    (None: both settings deviate alike, `paper_mode` says how). `stage`: the step it concerns (the dataset card
    lists the `dataset` ones). `this_build(config)`: what a build does, when the field alone does not say."""

    topic: str
    paper: str
    improved: str
    paper_mode: str
    reason: str
    stage: str = "dataset"
    field: str | None = None
    paper_value: Any = None
    this_build: Callable[[Any], str] | None = None


def _source_screening(config: Any) -> str:
    settings = config.decontaminate
    if not (settings.enabled and settings.original):
        return "not screened: the corpus as it is (`decontaminate.enabled` or `decontaminate.original` is false)"
    if settings.source_action == "report":
        return SOURCE_SCREENING.paper_mode
    return SOURCE_SCREENING.improved


def _pair_screening(config: Any) -> str:
    if not config.decontaminate.enabled:
        return "none: decontamination is disabled (`decontaminate.enabled: false`)"
    return PAIR_SCREENING.improved


SOURCE_SCREENING = Deviation(
    "Decontamination of the source corpus",
    "none: the corpus as published (Magicoder decontaminated it by substring before publishing it)",
    "screened by the cascade; a contaminated row leaves the `original` config and M's training data, and nothing "
    "is generated from it",
    "screened by the cascade and reported in `contamination`; every row kept",
    "a corpus row that solves a benchmark task trains M and stage 2 on that task, and its summary can paraphrase "
    "the task",
    field="decontaminate.original_action",
    paper_value="report",
    this_build=_source_screening,
)
PAIR_SCREENING = Deviation(
    "Decontamination of the generated pairs",
    "substring matching, as Magicoder decontaminated the corpus",
    "the cascade: substring, 13-gram, code containment and embeddings, then each remaining row's nearest tasks "
    "verified by execution and by a judge model",
    "the same cascade",
    "a rewritten instruction or renamed code passes a substring test (about 82 HumanEval problems are paraphrased "
    "in Magicoder-Evol-Instruct-110K)",
    this_build=_pair_screening,
)

DEVIATIONS: tuple[Deviation, ...] = (
    Deviation(
        "Language tag in the summarization prefix",
        "the fence's tag as written (`Write a c++`, `Build a JS`)",
        "lowercased, aliases merged (`c++` -> `cpp`, `js` -> `javascript`, `py` -> `python`)",
        AS_THE_PAPER + ": the tag as the fence spells it",
        "one spelling per language: every snippet of a language gets the same prefix, the one in the `language` column",
        field="summarize.language_tag",
        paper_value="raw",
    ),
    Deviation(
        "Yes/No token ids of the self-evaluation score",
        "one id per word: `tokenizer(word)['input_ids'][1]`, the first token after BOS",
        "every single-token spelling of each word summed (`Yes`, ` Yes`, `ĠYes`, `▁Yes`)",
        AS_THE_PAPER + ": the word's first token after the special tokens",
        "a model may start its answer with either spelling; reading one leaves the other's probability out of the "
        "score",
        field="generator.answer_tokens",
        paper_value="single",
    ),
    Deviation(
        "Where the Yes/No score is read",
        "vLLM's top-5 logprobs of the first generated token; a word outside them counts as logprob -100, both "
        "outside give 0.5",
        "the exact logits (or logprobs) of both words, whatever their rank",
        "the same exact scores",
        "an artefact of the code, not the method: outside the top 5 the score is a floor, not P(Yes)",
    ),
    Deviation(
        'A third answer word ("As")',
        '"As" read as No when "No" is not among the top 5',
        "Yes and No only",
        "Yes and No only",
        "an artefact of reading the top 5: with exact scores No is always there",
    ),
    SOURCE_SCREENING,
    Deviation(
        "Exact duplicates in the source corpus",
        "kept: the corpus as published",
        "a row repeating an earlier one's instruction and response is rejected (`exact duplicate`)",
        AS_THE_PAPER + ": kept, each with its own row id, and counted",
        "a repeated row weighs twice in M's and stage 2's training and is summarized twice",
        field="source.duplicates",
        paper_value="keep",
    ),
    PAIR_SCREENING,
    Deviation(
        "Repeated generated instructions",
        "kept: one pair per snippet, no deduplication",
        "a generated pair whose normalized instruction repeats an earlier pair's is removed",
        AS_THE_PAPER + ": kept; the duplicate rates are still reported",
        "pairs with one instruction and different code give the model contradicting targets",
        field="dedup.remove_exact",
        paper_value=False,
    ),
    Deviation(
        "Code extraction defects",
        "a bare word such as `Yes` passes `ast.parse` and becomes a snippet; an unclosed fence loses its last "
        "character",
        "an unfenced response counts only if it is Python code; an unclosed fence keeps all its code",
        "the same fixes",
        "defects of the code, not the method",
    ),
    Deviation(
        "Joining rows",
        "by position (a rerun corrupts the pairing)",
        "by a content id (`row_id`)",
        "the same ids",
        "a defect of the code; the same pairs when nothing goes wrong",
    ),
    Deviation(
        "Seeds",
        "one `random.seed(42)` stream for the verb prefixes; vLLM's sampling unseeded",
        "one seed per candidate (from `seed` and the row's content) for its prefix and its sampling",
        "the same seeds",
        "a rerun, a resumed run or another shard size writes the same candidates",
    ),
    Deviation(
        "Training batches",
        "padded batches of whole examples, no packing",
        "on a GPU (`train.packing: auto`), padding-free best-fit packing with per-document attention; the global "
        "batch of 512 is kept on average (documents per packed row estimated from the corpus)",
        AS_THE_PAPER + ": unpacked",
        "padding spends compute on no token; packing trains on the same documents, but which ones share a step changes",
        stage="training",
        field="train.packing",
        paper_value="false",
    ),
    Deviation(
        "HumanEval/32 checker",
        "EvalPlus (HumanEval+ v0.1.10, MBPP+ v0.2.0); the evalplus release is not stated",
        "evalplus 0.3.1 with HumanEval/32's checker fixed (it fails every solution, the canonical one included)",
        "the same fix (`evaluate.fix_humaneval_32: false` gives evalplus as is)",
        "a check no solution can pass measures nothing",
        stage="evaluation",
        this_build=lambda config: (
            "evalplus with HumanEval/32's checker fixed (it fails every solution, the canonical one included)"
            if config.evaluate.fix_humaneval_32
            else "evalplus as is: HumanEval/32 fails every solution (`evaluate.fix_humaneval_32: false`)"
        ),
    ),
)

#: The fields `fidelity: paper` sets (when the config does not set them itself): dotted name -> value.
PAPER_SETTINGS: dict[str, Any] = {d.field: d.paper_value for d in DEVIATIONS if d.field is not None}


def setting(config: Any, dotted: str) -> Any:
    """The value of a dotted field (`train.packing`) of a config."""
    node = config
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def this_build(deviation: Deviation, config: Any) -> str:
    """What `config` does about `deviation`."""
    if deviation.this_build is not None:
        return deviation.this_build(config)
    if deviation.field is None:  # both settings alike: the `improved` column says what is done
        return deviation.improved
    return deviation.paper_mode if setting(config, deviation.field) == deviation.paper_value else deviation.improved


def deviation_rows(config: Any, stages: Iterable[str] = ("dataset",)) -> list[dict[str, str]]:
    """The deviations of the given stages as this config builds them (what a card shows): topic, paper,
    this build, reason, and the field that controls it ('' when none does)."""
    wanted = set(stages)
    return [
        {
            "topic": d.topic,
            "paper": d.paper,
            "this_build": this_build(d, config),
            "reason": d.reason,
            "field": d.field or "",
        }
        for d in DEVIATIONS
        if d.stage in wanted
    ]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def deviations_markdown() -> str:
    """The whole table, both settings side by side (the README's "Fidelity to the paper" section)."""
    lines = [
        "| what | the paper (and its code) | `improved` (default) | `paper` | field | why |",
        "|---|---|---|---|---|---|",
    ]
    for d in DEVIATIONS:
        field = f"`{d.field}`" if d.field else "-"
        cells = (d.topic, d.paper, d.improved, d.paper_mode, field, d.reason)
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return "\n".join(lines) + "\n"
