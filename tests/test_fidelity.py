"""`fidelity: paper | improved`: resolved once when the config is read, and a dataset built with `paper` differs from
one built with `improved` exactly in the ways `core/fidelity.py`'s table lists.

Two pairs of real builds on the bundled sample: the stand-in backend of test_stages (instant; its instructions
repeat, so deduplication has work, and three sample rows match a benchmark task) for what happens to rows, and the
tiny model for the scores (one token id per answer word against the summed spellings, recomputed here from the
model's logits).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO, SAMPLE
from test_stages import StandInBackend, _tables

from inversecoder.builders import pipeline
from inversecoder.builders.decontaminate import SOURCE_ROW
from inversecoder.builders.extract import extract_code
from inversecoder.builders.sources import KEPT_DUPLICATES
from inversecoder.core.backends import CachedModel
from inversecoder.core.cache import ResultCache
from inversecoder.core.config import RunConfig, TrainConfig, config_yaml, describe_fields, load_config
from inversecoder.core.errors import ConfigError
from inversecoder.core.fidelity import DEVIATIONS, PAPER_SETTINGS, deviations_markdown, setting
from inversecoder.core.rows import short_hash
from inversecoder.hub_cards.dataset_card import write_dataset_card

# -- the switch ------------------------------------------------------------------------------------------------


def _without(data: dict, dotted_names) -> dict:
    data = json.loads(json.dumps(data))
    for dotted in dotted_names:
        section, name = dotted.split(".")
        data[section].pop(name)
    return data


def test_paper_sets_exactly_the_listed_fields():
    improved, paper = load_config(None), load_config(None, ["fidelity=paper"])
    assert improved.fidelity == "improved" and paper.fidelity == "paper"
    assert PAPER_SETTINGS  # the table's fields: what `paper` sets
    for dotted, value in PAPER_SETTINGS.items():
        assert setting(paper, dotted) == value, dotted
        assert setting(improved, dotted) != value, dotted  # `improved` is today's behaviour: another value
    # nothing else moves
    assert _without(paper.to_dict(), PAPER_SETTINGS) | {"fidelity": "improved"} == _without(
        improved.to_dict(), PAPER_SETTINGS
    )
    fields = {name for name, _default, _doc in describe_fields()}
    assert set(PAPER_SETTINGS) <= fields and "fidelity" in fields


def test_fields_set_explicitly_override_the_switch(tmp_path):
    recipe = tmp_path / "paper.yaml"
    recipe.write_text("fidelity: paper\ntrain:\n  packing: auto\nsummarize:\n  language_tag: normalized\n")
    config = load_config(recipe, ["dedup.remove_exact=true"])
    assert (config.train.packing, config.summarize.language_tag, config.dedup.remove_exact) == (
        "auto",
        "normalized",
        True,
    )
    assert (config.generator.answer_tokens, config.source.duplicates) == ("single", "keep")  # the rest: the paper's
    assert config.decontaminate.original_action == "report"
    # A section given as an object: its `model_fields_set` says what was set.
    given = RunConfig.model_validate({"fidelity": "paper", "train": TrainConfig(max_length=2048)})
    assert (given.train.packing, given.train.max_length) == ("false", 2048)
    kept = RunConfig.model_validate({"fidelity": "paper", "train": TrainConfig(packing="auto")})
    assert kept.train.packing == "auto"
    # The resolved config saved beside a build reads back as itself (every field explicit, the switch recorded).
    saved = tmp_path / "saved.yaml"
    saved.write_text(config_yaml(config))
    assert load_config(saved) == config and yaml.safe_load(saved.read_text())["fidelity"] == "paper"
    with pytest.raises(ConfigError, match="fidelity"):
        load_config(None, ["fidelity=exact"])


def test_fingerprints_move_only_when_the_build_does():
    from inversecoder.workflow import fingerprints

    improved, paper = load_config(None), load_config(None, ["fidelity=paper"])
    # At their defaults the fields the switch sets stay out of fingerprints (folders built before them are not
    # rebuilt: tests/test_config.py checks the recorded ones); set, they are in.
    defaults = improved.result_dict()
    assert "fidelity" not in defaults and "language_tag" not in defaults["summarize"]
    assert paper.result_dict()["summarize"]["language_tag"] == "raw"
    before, after = fingerprints(improved), fingerprints(paper)
    assert all(before[step] != after[step] for step in ("generator", "dataset", "train"))
    # `improved` with every paper field set by hand is the same build as `paper`.
    by_hand = load_config(None, [f"{dotted}={json.dumps(value)}" for dotted, value in PAPER_SETTINGS.items()])
    assert fingerprints(by_hand) == after


def test_the_readme_shows_the_deviations_table():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "## Fidelity to the paper" in readme
    assert deviations_markdown() in readme, "README's table differs from core/fidelity.py: paste deviations_markdown()"
    for deviation in DEVIATIONS:
        assert deviation.reason and deviation.paper and deviation.improved and deviation.paper_mode, deviation.topic


# -- builds: rows (stand-in backend) ---------------------------------------------------------------------------


DUPLICATED = 0  # the sample row appended again at the end of the corpus


def _corpus(tmp_path: Path) -> Path:
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join([*lines, lines[DUPLICATED]]) + "\n", encoding="utf-8")
    return corpus


def _stand_in_build(monkeypatch, tmp_path: Path, name: str, benchmarks_dir, **top):
    recipe = {
        "seed": 3,
        "benchmarks_dir": str(benchmarks_dir),
        "source": {"path": str(_corpus(tmp_path))},
        "generator": {"model": "stand-in"},
        "summarize": {"num_samples": 3},
        "decontaminate": {"semantic": False},
        **top,
    }
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(recipe))
    config = load_config(tmp_path / f"{name}.yaml", output_dir=str(tmp_path / name))

    def stand_in(config, *args, **kwargs):
        backend = StandInBackend()
        backend.answer_tokens = config.generator.answer_tokens
        return CachedModel(backend, ResultCache(config.layout.cache / "model_calls.sqlite"), progress=False)

    monkeypatch.setattr(pipeline, "open_model", stand_in)
    return pipeline.build_dataset(config, progress=False, write_card=write_dataset_card)


def _tags() -> dict[str, tuple[str, str]]:
    """row_id -> (the fence's tag as written, the normalized one) for every usable sample row."""
    tags = {}
    for line in SAMPLE.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if isinstance(row.get("instruction"), str) and isinstance(row.get("response"), str):
            found = extract_code(row["response"])
            tags[short_hash(row["instruction"], row["response"])] = (found.tag, found.language)
    return tags


def _code_blocks() -> dict[str, str]:
    """row_id -> the code block the stages summarize and score, for every sample row that has one."""
    blocks = {}
    for line in SAMPLE.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        usable = isinstance(row.get("instruction"), str) and isinstance(row.get("response"), str)
        if usable and (block := extract_code(row["response"]).code_block) is not None:
            blocks[short_hash(row["instruction"], row["response"])] = block
    return blocks


@pytest.fixture(scope="module")
def stand_in_builds(benchmarks_dir, tmp_path_factory):
    monkeypatch = pytest.MonkeyPatch()
    try:
        tmp = tmp_path_factory.mktemp("fidelity")
        improved = _stand_in_build(monkeypatch, tmp, "improved", benchmarks_dir)
        paper = _stand_in_build(monkeypatch, tmp, "paper", benchmarks_dir, fidelity="paper")
    finally:
        monkeypatch.undo()
    return improved, paper


def test_paper_keeps_and_reports_the_source_rows_improved_removes(stand_in_builds):
    improved, paper = stand_in_builds
    a, b = _tables(improved.dataset_dir), _tables(paper.dataset_dir)
    # The same source rows match a benchmark task in both builds; `improved` removes them, `paper` lists them.
    flagged = {r["row_id"] for r in a["contamination"] if r["where"] == "original"}
    assert flagged and flagged == {r["row_id"] for r in b["contamination"] if r["where"] == "original"}
    assert [r for r in a["contamination"] if r["where"] == "original"] == [
        r for r in b["contamination"] if r["where"] == "original"
    ]
    assert {r["row_id"] for r in a["rejected"] if r["stage"] == "decontaminate-original"} == flagged
    assert not [r for r in b["rejected"] if r["stage"] == "decontaminate-original"]
    # The repeated row: rejected by `improved`, kept by `paper` under an id of its own.
    # The repeated rows (the sample has one, the corpus repeats another at its end): rejected by `improved`,
    # kept by `paper`, each under an id of its own.
    repeated = {r["source_index"]: r["row_id"] for r in a["rejected"] if r["reason"] == "exact duplicate"}
    assert len(SAMPLE.read_text(encoding="utf-8").splitlines()) in repeated and len(repeated) == 2
    assert not [r for r in b["rejected"] if r["reason"] == "exact duplicate"]
    repeat_ids = {r["row_id"] for r in b["original"] if r["source_index"] in repeated}
    assert len(repeat_ids) == 2 and not repeat_ids & set(repeated.values())
    # So `original` differs by exactly those rows.
    assert {r["row_id"] for r in b["original"]} - {r["row_id"] for r in a["original"]} == flagged | repeat_ids
    assert {r["row_id"] for r in a["original"]} <= {r["row_id"] for r in b["original"]}
    assert paper.counts[KEPT_DUPLICATES] == 2 and KEPT_DUPLICATES not in improved.counts
    # Pairs made from a flagged row are listed through it, and removed only on their own evidence.
    inherited = {r["row_id"] for r in b["contamination"] if r["layer"] == SOURCE_ROW}
    assert inherited and inherited <= flagged and not [r for r in a["contamination"] if r["layer"] == SOURCE_ROW]
    removed = {r["row_id"] for r in b["rejected"] if r["stage"] == "decontaminate-generated"}
    own = {r["row_id"] for r in b["contamination"] if r["where"] == "generated" and r["layer"] != SOURCE_ROW}
    assert removed == own
    assert inherited - own <= {p["row_id"] for p in b["default"]}  # listed, not removed for their source row
    card = (paper.dataset_dir / "README.md").read_text()
    assert "**The source corpus is not decontaminated** (`decontaminate.original_action: report`" in card


def test_paper_differs_from_improved_exactly_in_the_listed_ways(stand_in_builds):
    improved, paper = stand_in_builds
    a, b = _tables(improved.dataset_dir), _tables(paper.dataset_dir)
    tags = _tags()
    flagged = {r["row_id"] for r in a["contamination"] if r["where"] == "original"}
    extra = flagged | {r["row_id"] for r in b["original"]} - {r["row_id"] for r in a["original"]}
    retagged = {row_id for row_id, (raw, normalized) in tags.items() if raw != normalized}
    assert len(retagged) >= 4  # the sample's `js`, `c++`, `shell`, `sh`...
    candidates_a = {(c["row_id"], c["k"]): c for c in a["candidates"]}
    candidates_b = {(c["row_id"], c["k"]): c for c in b["candidates"]}
    assert {key for key in candidates_a if key[0] not in retagged} <= set(candidates_b)
    # (a retagged row's other prompts can fail otherwise: the stand-in fails one generation in 23, by prompt)
    assert {row_id for row_id, _ in set(candidates_b) - set(candidates_a)} <= extra | retagged
    for key, c in candidates_a.items():
        d = candidates_b.get(key)
        if d is None:  # (a retagged row's pair can meet another fate in decontamination: its instruction differs)
            continue
        if key[0] in retagged:  # the prefix's tag as the fence spells it, the same verb; so another prompt
            raw, normalized = tags[key[0]]
            assert c["prefix"].endswith(" " + normalized) and d["prefix"] == c["prefix"][: -len(normalized)] + raw
            assert c["seed"] == d["seed"]
        else:
            assert c == d  # same prompt, same seed, same instruction and score, same selection
    # Duplicate instructions: `improved` removes them, `paper` keeps them; every other pair is the same.
    dropped = {r["row_id"] for r in a["rejected"] if r["stage"] == "dedup-generated"}
    assert dropped and improved.counts["generated pairs removed as duplicates"] == len(dropped)
    assert paper.counts["generated pairs removed as duplicates"] == 0
    assert not [r for r in b["rejected"] if r["stage"] == "dedup-generated"]
    pairs_a = {p["row_id"]: p for p in a["default"]}
    pairs_b = {p["row_id"]: p for p in b["default"]}
    for row_id, pair in pairs_a.items():
        if row_id not in retagged:
            assert pairs_b[row_id] == pair
    assert set(pairs_b) - set(pairs_a) <= dropped | extra | retagged
    assert dropped - retagged <= set(pairs_b)
    # Each card says which fidelity built it and what that build did about each deviation.
    for build, mode in ((improved, "improved"), (paper, "paper")):
        card = (build.dataset_dir / "README.md").read_text()
        assert "## Fidelity to the paper" in card and f"Built with `fidelity: {mode}`" in card
        report = json.loads((build.dataset_dir / "build_report.json").read_text())
        assert report["fidelity"] == mode
        assert {row["topic"] for row in report["deviations"]} == {d.topic for d in DEVIATIONS if d.stage == "dataset"}
        for row in report["deviations"]:
            assert row["this_build"] in card.replace("\\|", "|")
    by_topic = {r["topic"]: r for r in json.loads((paper.dataset_dir / "build_report.json").read_text())["deviations"]}
    assert by_topic["Exact duplicates in the source corpus"]["this_build"].startswith("as the paper")


# -- builds: scores (the tiny model) ---------------------------------------------------------------------------

TINY_ROWS = (0, 1, 65, 84, 91)  # python, python, js, shell, c++


def _tiny_build(tiny_model_dir: Path, tmp_path: Path, name: str, **top):
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()
    corpus = tmp_path / "tiny-corpus.jsonl"
    corpus.write_text("\n".join(lines[i] for i in TINY_ROWS) + "\n", encoding="utf-8")
    recipe: dict[str, Any] = {
        "seed": 5,
        "source": {"path": str(corpus)},
        "generator": {"model": str(tiny_model_dir), "device": "cpu"},
        "summarize": {"num_samples": 2, "max_new_tokens": 8},
        "decontaminate": {"enabled": False},
    }
    for key, value in top.items():
        recipe[key] = {**recipe[key], **value} if isinstance(value, dict) else value
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(recipe))
    config = load_config(tmp_path / f"{name}.yaml", output_dir=str(tmp_path / name))
    result = pipeline.build_dataset(config, progress=False, write_card=write_dataset_card)
    report = json.loads((result.dataset_dir / "build_report.json").read_text())
    return _tables(result.dataset_dir), report


def _expected_scores(tiny_model_dir: Path, prompts: list[str], answers: dict[str, list[int]]) -> list[float]:
    """P(Yes) / (P(Yes) + P(No)) at the first response token, computed here from the model's logits."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    scores = []
    with torch.inference_mode():
        for prompt in prompts:
            ids = torch.tensor([tokenizer.encode(prompt, add_special_tokens=True)])
            probs = torch.softmax(model(ids).logits[0, -1].double(), dim=-1)
            yes, no = probs[answers["yes"]].sum().item(), probs[answers["no"]].sum().item()
            scores.append(yes / (yes + no))
    return scores


def test_paper_scores_one_token_id_per_word(tiny_model_dir, tmp_path, one_torch_thread):
    from transformers import AutoTokenizer

    from inversecoder.core import prompts

    a, improved = _tiny_build(tiny_model_dir, tmp_path, "improved")
    b, paper = _tiny_build(tiny_model_dir, tmp_path, "paper", fidelity="paper")
    c, explicit = _tiny_build(
        tiny_model_dir, tmp_path, "explicit", fidelity="paper", summarize={"language_tag": "normalized"}
    )
    # The ids: the word's token after the special tokens (the paper's `tokenizer(word)['input_ids'][1]` where a
    # BOS comes first; the tiny tokenizer has none) against every single-token spelling.
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    vocab = tokenizer.get_vocab()
    for word in ("yes", "no"):
        single = tokenizer(word.capitalize(), add_special_tokens=True)["input_ids"]
        assert paper["answer_tokens"][word] == single == [vocab[word.capitalize()]]
        assert improved["answer_tokens"][word] == sorted([vocab[word.capitalize()], vocab["Ġ" + word.capitalize()]])
    tags, code = _tags(), _code_blocks()
    both = [(x, y) for x, y in zip(a["candidates"], b["candidates"], strict=True)]
    assert [(x["row_id"], x["k"], x["seed"]) for x, _ in both] == [(y["row_id"], y["k"], y["seed"]) for _, y in both]
    same_prompt = [(x, y) for x, y in both if tags[x["row_id"]][0] == tags[x["row_id"]][1]]
    retagged = [(x, y) for x, y in both if tags[x["row_id"]][0] != tags[x["row_id"]][1]]
    assert len(same_prompt) == 4 and len(retagged) == 6
    for x, y in retagged:  # the prefix: the tag as the fence spells it ("js", "shell", "c++")
        raw, normalized = tags[x["row_id"]]
        assert x["prefix"].endswith(" " + normalized) and y["prefix"].endswith(" " + raw)
    # Same prompts and seeds, so the same instructions; only the score differs, each as its ids give it.
    assert [x["instruction"] for x, _ in same_prompt] == [y["instruction"] for _, y in same_prompt]
    score_prompts = [prompts.score_prompt(x["instruction"], code[x["row_id"]]) for x, _ in same_prompt]
    for scores, report, built in ((a, improved, same_prompt), (b, paper, same_prompt)):
        expected = _expected_scores(tiny_model_dir, score_prompts, report["answer_tokens"])
        got = [(x if scores is a else y)["score"] for x, y in built]
        assert got == pytest.approx(expected, abs=1e-4)
    assert all(abs(x["score"] - y["score"]) > 1e-6 for x, y in same_prompt)
    # `fidelity: paper` with the tag set by hand: the improved build's prompts, the paper's scores.
    assert [r["prefix"] for r in c["candidates"]] == [r["prefix"] for r in a["candidates"]]
    assert [r["instruction"] for r in c["candidates"]] == [r["instruction"] for r in a["candidates"]]
    assert explicit["answer_tokens"] == paper["answer_tokens"]
