"""`configs/paper-*.yaml` against the paper's own settings: a verbatim excerpt kept in `data/paper/`, parsed here
(never retyped), and the Hub revisions `data/paper/SOURCES.md` records."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO

from inversecoder.core import data, prompts
from inversecoder.core.config import RunConfig, load_config
from inversecoder.core.fidelity import PAPER_SETTINGS, setting

PAPER_CONFIGS = sorted((REPO / "configs").glob("paper-*.yaml"))
SHA = re.compile(r"[0-9a-f]{40}")


def _one(pattern: str, text: str) -> str:
    found = re.findall(pattern, text)
    assert len(found) == 1, f"{pattern!r} matches {len(found)} times in the excerpt"
    return found[0]


def _items(text: str) -> list[str]:
    """The excerpt's bullet points, each with its wrapped lines joined."""
    items: list[str] = []
    for line in text.splitlines():
        if line.startswith("- "):
            items.append(line[2:].strip())
        elif line.startswith("  ") and items:
            items[-1] += " " + line.strip()
    return items


def _item(items: list[str], start: str) -> str:
    found = [item for item in items if item.startswith(start)]
    assert len(found) == 1, f"{len(found)} bullet points of the excerpt start with {start!r}"
    return found[0]


def paper_settings() -> dict:
    """The numbers and names of `data/paper/inverse-instruct-settings.md`, by its bullet points and headings."""
    raw = data.require(data.PAPER_SETTINGS).read_text(encoding="utf-8")
    text, items = " ".join(raw.split()), _items(raw)
    sampling = _item(items, "Sampling: ")
    recipe = _item(items, "Adafactor, lr ")
    return {
        "corpus": _one(r"Original corpus: `([^`]+)`", text),
        "rows": int(_one(r"columns `instruction`, `response`; ([\d,]+) rows", text).replace(",", "")),
        "k": int(_one(r"code summarization \(K = (\d+) per snippet\)", text)),
        "temperature": float(_one(r"temperature ([\d.]+)", sampling)),
        "top_p": float(_one(r"top_p ([\d.]+)", sampling)),
        "repetition_penalty": float(_one(r"repetition_penalty ([\d.]+)", sampling)),
        "max_new_tokens": int(_one(r"max_new_tokens (\d+)", sampling)),
        "stop": re.findall(r'"([^"]+)"', _one(r"stop (\[[^\]]*\])", sampling)),
        "prefixes": re.findall(r"`([^`]+)`", _one(r"`\{prefix\}` = random choice of (.*?) \(seeded\)", text)),
        "m_epochs": float(_one(r"the base model fine-tuned (\d+) epochs on the original", text)),
        "stages": tuple(
            float(n) for n in _one(r"(\d+) epochs? on the ~90K generated pairs, then (\d+) epochs on the", text)
        ),
        "optim": _one(r"^(\w+), lr", recipe).lower(),
        "learning_rate": float(_one(r"lr ([\d.e-]+),", recipe)),
        "warmup_steps": int(_one(r"(\d+) warmup steps", recipe)),
        "scheduler": _one(r"warmup steps, (\w+) decay", recipe),
        "global_batch": int(_one(r"global batch (\d+)", recipe)),
        "max_length": int(_one(r"max length (\d+)", recipe)),
        "no_clipping": "no gradient clipping" in recipe,
        "packing": "no packing" not in recipe,
        "gpus": int(_one(r"(\d+)x A100", text)),
        "base_models": _one(r"Base models: ([^ ]+, [^ ]+, [^ ]+)\.", text).split(", "),
        "eval_new_tokens": int(_one(r"- max_new_tokens (\d+)\. EvalPlus", text)),
    }


def hub_revisions() -> dict[str, str | None]:
    """repo -> the commit sha `data/paper/SOURCES.md` records (None: not on record)."""
    text = (data.DATA_DIR / "paper" / "SOURCES.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([^`]+)` \| (?:dataset|model) \| ([^|]+) \|", text, re.MULTILINE)
    assert rows
    return {repo: (cell.strip().strip("`") if SHA.fullmatch(cell.strip().strip("`")) else None) for repo, cell in rows}


def test_the_excerpt_parses_into_the_papers_settings():
    found = paper_settings()
    # what the parse must find for the checks below to mean anything (the paper's K, epochs, batch and models)
    assert found["k"] == 10 and found["stages"] == (1.0, 2.0) and found["m_epochs"] == 2.0
    assert found["rows"] == 111_183 and len(found["base_models"]) == 3 and len(found["prefixes"]) == 7
    assert not found["packing"] and found["no_clipping"]
    assert tuple(found["prefixes"]) == prompts.PREFIXES  # the verb prefixes the summarize prompts draw from


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=lambda p: p.name)
def test_paper_configs_are_the_papers_settings(path: Path):
    paper = paper_settings()
    config = load_config(path)
    assert config.fidelity == "paper"
    for dotted, value in PAPER_SETTINGS.items():  # none of them set otherwise by hand
        assert setting(config, dotted) == value, dotted
    assert config.source.path == paper["corpus"]
    summarize = config.summarize
    assert summarize.num_samples == paper["k"]
    assert (summarize.temperature, summarize.top_p, summarize.repetition_penalty) == (
        paper["temperature"],
        paper["top_p"],
        paper["repetition_penalty"],
    )
    assert summarize.max_new_tokens == paper["max_new_tokens"] and summarize.stop == paper["stop"]
    train = config.train
    assert train.mode == "two-stage" and config.generator.model is None  # step 0 trains M from the base model
    assert (train.generated_epochs, train.original_epochs) == paper["stages"]
    assert train.original_epochs == paper["m_epochs"]  # M: the base model on the corpus, as many epochs
    assert (train.optim, train.learning_rate, train.warmup_steps) == (
        paper["optim"],
        paper["learning_rate"],
        paper["warmup_steps"],
    )
    assert train.lr_scheduler_type == paper["scheduler"]
    assert (train.global_batch_size, train.max_length) == (paper["global_batch"], paper["max_length"])
    assert (train.max_grad_norm == 0) is paper["no_clipping"]
    assert (train.packing != "false") is paper["packing"]
    assert train.base_model in paper["base_models"]
    assert config.evaluate.max_new_tokens == paper["eval_new_tokens"] and config.evaluate.temperature == 0
    assert config.plan.gpus == paper["gpus"]


def test_paper_configs_cover_the_three_base_models_and_pin_what_is_on_record():
    paper, revisions = paper_settings(), hub_revisions()
    configs = [load_config(path) for path in PAPER_CONFIGS]
    assert sorted(c.train.base_model or "" for c in configs) == sorted(paper["base_models"])
    assert revisions[paper["corpus"]] is not None  # the corpus's sha is on record: every config pins it
    for config in configs:
        assert config.source.revision == revisions[paper["corpus"]]
        assert config.train.base_model in revisions
        assert config.train.base_revision == revisions[config.train.base_model]  # None where not on record
    assert any(c.train.base_revision for c in configs)


def test_the_defaults_are_the_papers_numbers_where_the_paper_has_one():
    """Beyond the paper configs: the defaults every recipe starts from (config_sections' docstrings say so)."""
    paper, defaults = paper_settings(), RunConfig()
    assert defaults.summarize.num_samples == paper["k"] and defaults.summarize.temperature == paper["temperature"]
    assert defaults.train.learning_rate == paper["learning_rate"]
    assert (
        defaults.train.global_batch_size == paper["global_batch"] and defaults.train.max_length == paper["max_length"]
    )
