"""The `preferences` config: DPO pairs for the code -> instruction summarizer, from the scored candidates.

Built with the stand-in backend of test_stages (instant; its scores spread over [0, 1] and some of its
candidates fail, so every reason a snippet gets no pair occurs), streamed over several shards, with the
decontamination and dedup on; then read with `load_dataset` and trained on with TRL's `DPOTrainer`.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from datasets import Dataset, load_dataset
from huggingface_hub import DatasetCard
from test_stages import _build, _config, _tables

from inversecoder.builders.dataset import content_fingerprint
from inversecoder.builders.pipeline import BuildResult
from inversecoder.builders.preferences import BELOW_MARGIN, FLAGGED, MADE, NO_OTHER, NOT_MADE, preference_rows
from inversecoder.builders.stages import Pair
from inversecoder.core import prompts
from inversecoder.core.config import PreferencesConfig
from inversecoder.core.layout import BUILD_REPORT
from inversecoder.core.manifest import read_manifest


def _load(result: BuildResult, name: str) -> list[dict]:
    if name == "default":
        return load_dataset(str(result.dataset_dir), split="train").to_list()
    return load_dataset(str(result.dataset_dir), name, split="train").to_list()


def _settings(tmp: Path, name: str, benchmarks_dir, num_samples: int = 3, action: str = "remove", **preferences):
    config = _config(tmp, name, benchmarks_dir)
    config.summarize.num_samples = num_samples
    config.decontaminate.action = action
    for key, value in preferences.items():
        setattr(config.preferences, key, value)
    return config


@pytest.fixture(scope="module")
def built(benchmarks_dir, tmp_path_factory):
    """The default settings (lowest-scored rejected, min_margin 0.2), three variations of them, and K = 2."""
    monkeypatch = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("preferences")
    settings: dict[str, dict[str, Any]] = {
        "default": {},
        "strict": {"min_margin": 0.5, "rejected": "random"},
        "any": {"min_margin": 0.0},
        "off": {"enabled": False},
        "two": {"num_samples": 2},
        "reported": {"action": "report"},  # decontaminate.action
    }
    try:
        return {
            name: _build(monkeypatch, _settings(tmp, name, benchmarks_dir, **values), shard=7, file_rows=40)
            for name, values in settings.items()
        }
    finally:
        monkeypatch.undo()


def _lowest(pair: dict, candidates: list[dict]) -> dict | None:
    """The candidate `preferences.rejected: lowest` should reject for `pair`, found from the published configs."""
    others = [
        c
        for c in candidates
        if c["row_id"] == pair["row_id"]
        and c["candidate_id"] != pair["candidate_id"]
        and c["score"] is not None
        and c["instruction"] not in (None, pair["instruction"])
    ]
    return min(others, key=lambda c: (c["score"], c["k"])) if others else None


def _check_lowest(result: BuildResult) -> Counter[str]:
    """Check a build's `preferences` (min_margin 0.2, rejected lowest) against its other configs; returns the
    pairs without a preference by reason."""
    preferences, pairs, candidates = (_load(result, name) for name in ("preferences", "default", "candidates"))
    assert len(preferences) == result.counts[MADE] > 0
    by_row = {p["row_id"]: p for p in pairs}
    prefixes = {c["candidate_id"]: c["prefix"] for c in candidates}
    missing: Counter[str] = Counter()
    made = {row["row_id"]: row for row in preferences}
    for pair in pairs:
        lowest = _lowest(pair, candidates)
        if lowest is None:
            missing[NO_OTHER] += 1
        elif pair["score"] - lowest["score"] < 0.2:
            missing[BELOW_MARGIN] += 1
        else:
            row = made[pair["row_id"]]
            assert row["rejected_id"] == lowest["candidate_id"] and row["rejected"] == lowest["instruction"]
            assert row["score_rejected"] == lowest["score"]
        assert (pair["row_id"] in made) == (lowest is not None and pair["score"] - lowest["score"] >= 0.2)
    assert {reason: result.counts[NOT_MADE[reason]] for reason in NOT_MADE} == {r: missing[r] for r in NOT_MADE}
    for row in preferences:
        pair = by_row[row["row_id"]]
        assert row["score_chosen"] - row["score_rejected"] >= 0.2 and row["chosen"] != row["rejected"]
        assert (row["chosen"], row["score_chosen"], row["chosen_id"]) == (
            pair["instruction"],
            pair["score"],
            pair["candidate_id"],
        )
        assert (row["source_index"], row["language"]) == (pair["source_index"], pair["language"])
        # prompt + completion is the text M summarized and scored: the request, then the candidate's own prefix
        assert row["prompt"] == prompts.summarize_prompt(pair["response"], "") and row["prompt"].endswith(
            "@@ Response\n"
        )
        for side in ("chosen", "rejected"):
            assert row[side].startswith(prefixes[row[f"{side}_id"]])
    return missing


def test_pairs_load_with_load_dataset_and_pair_the_best_with_the_lowest_scored(built):
    assert _check_lowest(built["default"])[BELOW_MARGIN] > 0  # K = 3
    # K = 2: a snippet whose other candidate failed (or wrote the same text) has nothing to reject
    assert _check_lowest(built["two"])[NO_OTHER] > 0


def test_only_the_survivors_of_decontamination_and_dedup_become_pairs(built):
    result = built["default"]
    tables = _tables(result.dataset_dir)
    made = {row["row_id"] for row in tables["preferences"]}
    assert made <= {p["row_id"] for p in tables["default"]}
    contaminated = {r["row_id"] for r in tables["contamination"]}
    duplicates = {r["row_id"] for r in tables["rejected"] if r["stage"] == "dedup-generated"}
    assert contaminated and duplicates
    # a duplicate's candidates are published (it was scored), but it is no longer a pair: it makes no preference
    assert duplicates & {c["row_id"] for c in tables["candidates"]}
    assert not made & (contaminated | duplicates)


def test_pairs_flagged_but_kept_under_action_report_make_no_preference(built):
    tables = _tables(built["reported"].dataset_dir)
    flagged = {r["row_id"] for r in tables["contamination"]} & {p["row_id"] for p in tables["default"]}
    assert flagged  # listed in contamination, and kept in default
    assert tables["preferences"] and not flagged & {row["row_id"] for row in tables["preferences"]}
    assert built["reported"].counts[NOT_MADE[FLAGGED]] == len(flagged)


def test_the_config_is_in_the_card_the_report_the_manifest_and_the_fingerprint(built):
    result = built["default"]
    folder = result.dataset_dir
    card = DatasetCard.load(folder / "README.md")
    assert [c["config_name"] for c in card.data.configs][-1] == "preferences"
    sizes = {info["config_name"]: info["splits"][0]["num_examples"] for info in card.data.dataset_info}
    assert sizes["preferences"] == result.counts[MADE]
    assert f"| {MADE} | {result.counts[MADE]} |" in card.text
    assert "**code -> instruction summarizer**" in card.text and '"preferences", split="train"' in card.text
    report = json.loads((folder / BUILD_REPORT).read_text())
    assert report["preferences"]["pairs"] == result.counts[MADE] and report["preferences"]["min_margin"] == 0.2
    assert report["preferences"]["min_observed_margin"] >= 0.2
    files = report["tables"]["preferences"]["files"]
    assert len(files) > 1 and set(files) <= set(read_manifest(folder) or {})  # 40-row files: several
    assert content_fingerprint(folder, report["tables"]) == result.fingerprint
    without = {name: table for name, table in report["tables"].items() if name != "preferences"}
    assert content_fingerprint(folder, without) != result.fingerprint


def test_the_settings_change_the_pairs_and_nothing_else(built):
    tables = {name: _tables(result.dataset_dir) for name, result in built.items()}
    for name in ("strict", "any", "off"):  # (same K as the default build)
        assert {k: v for k, v in tables[name].items() if k != "preferences"} == {
            k: v for k, v in tables["default"].items() if k != "preferences"
        }, name
    counts = {name: result.counts for name, result in built.items()}
    assert counts["any"][MADE] > counts["default"][MADE] > counts["strict"][MADE] > 0
    assert counts["any"][NOT_MADE[BELOW_MARGIN]] == 0
    strict = tables["strict"]["preferences"]
    assert all(row["score_chosen"] - row["score_rejected"] >= 0.5 for row in strict)
    # `random` rejects one of the candidates at least 0.5 below: not always the lowest
    candidates = tables["default"]["candidates"]
    pairs = {p["row_id"]: p for p in tables["default"]["default"]}
    lowest = {row["row_id"]: _lowest(pairs[row["row_id"]], candidates) or {} for row in strict}
    assert any(row["rejected_id"] != lowest[row["row_id"]]["candidate_id"] for row in strict)
    assert not tables["off"]["preferences"] and not (built["off"].dataset_dir / "preferences").exists()
    off = DatasetCard.load(built["off"].dataset_dir / "README.md")
    assert "preferences" not in [c["config_name"] for c in off.data.configs]
    assert "| 7. preference pairs | disabled |" in off.text


def _pair(score: float) -> Pair:
    return Pair("r", 0, "r-0", "Write a function that adds", "```python\nx\n```", "python", score)


def _candidate(k: int, score: float | None, instruction: str | None) -> dict:
    return {"row_id": "r", "candidate_id": f"r-{k}", "k": k, "score": score, "instruction": instruction}


def test_the_rejected_candidate_is_chosen_by_score_text_and_margin():
    chosen = _candidate(0, 0.9, "Write a function that adds")
    same_text = _candidate(1, 0.1, "Write a function that adds")  # the chosen text again: no preference
    unscored = _candidate(2, None, "Create a thing")
    tied = [_candidate(3, 0.3, "Build a parser"), _candidate(4, 0.3, "Design a parser")]
    rows, missing = preference_rows([_pair(0.9)], [chosen, same_text, unscored, *tied], PreferencesConfig(), 7)
    assert [(r["rejected_id"], r["score_rejected"]) for r in rows] == [("r-3", 0.3)] and not missing  # ties: earliest
    rows, missing = preference_rows([_pair(0.9)], [chosen, same_text, unscored], PreferencesConfig(), 7)
    assert rows == [] and missing == Counter({NO_OTHER: 1})
    rows, missing = preference_rows([_pair(0.9)], [chosen, *tied], PreferencesConfig(min_margin=0.61), 7)
    assert rows == [] and missing == Counter({BELOW_MARGIN: 1})
    # random: seeded per snippet, among those at least min_margin below only
    lower = [_candidate(k, 0.1 + k / 100, f"Write a thing {k}") for k in range(1, 9)]
    near = _candidate(9, 0.85, "Write a near copy")
    draws = {
        seed: preference_rows([_pair(0.9)], [chosen, near, *lower], PreferencesConfig(rejected="random"), seed)[0][0][
            "rejected_id"
        ]
        for seed in range(12)
    }
    assert "r-9" not in draws.values() and len(set(draws.values())) > 1
    again = preference_rows([_pair(0.9)], [*reversed(lower), near, chosen], PreferencesConfig(rejected="random"), 3)
    assert again[0][0]["rejected_id"] == draws[3]  # the candidates' order does not matter


def test_dpo_trainer_takes_a_step_on_the_preferences(built, tiny_model_dir, tmp_path, one_torch_thread):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    dataset = load_dataset(str(built["default"].dataset_dir), "preferences", split="train")
    shortest = sorted(range(len(dataset)), key=lambda i: len(dataset[i]["prompt"]))[:4]
    rows = dataset.select(shortest)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    args = DPOConfig(
        output_dir=str(tmp_path / "dpo"),
        max_steps=2,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,  # (TRL's default, gradient_checkpointing=True, warns under its old name)
        seed=0,
    )
    trainer = DPOTrainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer)
    prepared = trainer.train_dataset
    assert isinstance(prepared, Dataset) and len(prepared) == 4  # no row dropped (none is longer than max_length)
    first = prepared[0]
    # the prompt is the request alone; the completions are the instructions (each with its prefix) and EOS
    assert tokenizer.decode(first["chosen_ids"]) == rows[0]["chosen"] + tokenizer.eos_token
    assert tokenizer.decode(first["prompt_ids"]) == rows[0]["prompt"]
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert trainer.state.global_step == 2 and len(losses) == 2 and all(math.isfinite(loss) for loss in losses)
    assert losses[0] == pytest.approx(math.log(2), abs=1e-3)  # policy == reference at the first step
    changed = [name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])]
    assert len(changed) == len(before)
