"""The cards as a Hub user reads and acts on them (issue #20), against the Hub-protocol server of `hub_server.py`.

A dataset is built from a corpus and a generator M that live on the server (each with a card declaring its
license), published, and its card is read back from the server the way someone with only the Hub page would:
its license follows the corpus's and M's, its Reproduce block runs as written in a clean folder (the package is
already importable, so its `pip install` line is checked, not run) and rebuilds the same content fingerprint,
its load snippets pin the revision and run, and every link resolves on the server and every number is in a
published file. The model card's license follows its base model's (CodeLlama's `llama2`, DeepSeek-Coder's
`other` + `license_name` + a link) unless `push.model_license` states one; offline, an unread license is
`unknown` with the reason, never apache-2.0.

As in test_push.py, every client runs in a subprocess with HF_ENDPOINT set to the server (huggingface_hub reads
it at import; this suite's own process is offline).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import SAMPLE
from hub_server import HubServer, Token, client_environment
from huggingface_hub import DatasetCard, ModelCard

from inversecoder.builders.pipeline import build_dataset
from inversecoder.core.config import load_config
from inversecoder.core.fidelity import DEVIATIONS
from inversecoder.core.licenses import card_license
from inversecoder.core.manifest import differences, read_manifest
from inversecoder.hub_cards.dataset_card import write_dataset_card
from inversecoder.hub_cards.model_card import model_license, render_model_card
from inversecoder.hub_cards.reproduce import link_code

REPO = Path(__file__).resolve().parents[1]
TOKEN = "hf_cards" + secrets.token_hex(12)
USER, ORG = "bob", "cards-org"
CORPUS, M, LLAMA, DEEPSEEK = f"{ORG}/corpus", f"{ORG}/tiny-m", f"{ORG}/llama-like", f"{ORG}/deepseek-like"
DATASET, MODEL = f"{ORG}/cards-ds", f"{ORG}/cards-coder"
CODE_URL = "https://github.com/example/inversecoder"
DEEPSEEK_CARD = "---\nlicense: other\nlicense_name: deepseek\nlicense_link: LICENSE\n---\n# DeepSeek-like\n"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with HubServer(tmp_path_factory.mktemp("hub"), {TOKEN: Token(USER, orgs=(ORG,))}) as server:
        yield server


@pytest.fixture(scope="module")
def client_env(hub, tmp_path_factory) -> dict[str, str]:
    env = client_environment(hub.url, TOKEN, tmp_path_factory.mktemp("hf_home"))
    return env | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"}  # inversecoder, hf, python


def run(env: dict[str, str], *command: str, cwd: Path | None = None) -> str:
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert TOKEN not in result.stdout + result.stderr
    return result.stdout


def run_python(env: dict[str, str], code: str) -> Any:
    """`code` (which prints one JSON line last) in a fresh interpreter with the client environment."""
    return json.loads(run(env, sys.executable, "-c", textwrap.dedent(code)).strip().splitlines()[-1])


def upload(env: dict[str, str], repo_id: str, repo_type: str, folder: Path) -> str:
    """`folder` as one commit of a new Hub repo; returns the commit sha."""
    return run_python(
        env,
        f"""
        import json
        from huggingface_hub import HfApi
        api = HfApi()
        api.create_repo("{repo_id}", repo_type="{repo_type}")
        print(json.dumps(api.upload_folder(folder_path="{folder}", repo_id="{repo_id}", repo_type="{repo_type}").oid))
    """,
    )


def model_repo(tiny_model_dir: Path, folder: Path, card: str, license_text: str | None = None) -> Path:
    shutil.copytree(tiny_model_dir, folder)
    (folder / "README.md").write_text(card)
    if license_text:
        (folder / "LICENSE").write_text(license_text)
    return folder


@pytest.fixture(scope="module")
def inputs(hub, client_env, tiny_model_dir, tmp_path_factory) -> dict[str, str]:
    """On the server: the corpus (apache-2.0), M (DeepSeek-Coder's terms) and two base models whose cards say
    what CodeLlama's and DeepSeek-Coder's do. Returns their commit shas."""
    root = tmp_path_factory.mktemp("inputs")
    corpus = root / "corpus"
    (corpus / "data").mkdir(parents=True)
    (corpus / "data" / "train.jsonl").write_text("\n".join(SAMPLE.read_text().splitlines()[:12]) + "\n")
    (corpus / "README.md").write_text("---\nlicense: apache-2.0\n---\n# A tiny instruction corpus\n")
    return {
        CORPUS: upload(client_env, CORPUS, "dataset", corpus),
        M: upload(client_env, M, "model", model_repo(tiny_model_dir, root / "m", DEEPSEEK_CARD, "DeepSeek terms")),
        LLAMA: upload(
            client_env, LLAMA, "model", model_repo(tiny_model_dir, root / "llama", "---\nlicense: llama2\n---\n# L\n")
        ),
        DEEPSEEK: upload(
            client_env, DEEPSEEK, "model", model_repo(tiny_model_dir, root / "ds", DEEPSEEK_CARD, "DeepSeek terms")
        ),
    }


RECIPE = {
    "seed": 3,
    "source": {"path": CORPUS, "limit": 8},
    "generator": {"model": M},
    "summarize": {"num_samples": 2, "max_new_tokens": 8},
    "decontaminate": {"enabled": False},
    "dataset": {"name": "cards-ds", "version": "v1.0"},
    "push": {"code_url": CODE_URL},
}


@pytest.fixture(scope="module")
def published(hub, client_env, inputs, tmp_path_factory) -> Path:
    """The dataset built from the Hub inputs with `inversecoder build-dataset`, pushed with `push dataset`;
    returns the build's output folder."""
    root = tmp_path_factory.mktemp("published")
    (root / "r.yaml").write_text(yaml.safe_dump(RECIPE))
    env = client_env | {"HF_HOME": str(root / "hf_home")}
    run(env, "inversecoder", "build-dataset", str(root / "r.yaml"), "--output-dir", str(root / "out"))
    run(env, "inversecoder", "push", "dataset", str(root / "out" / "dataset"), "--repo-id", DATASET)
    return root


def card_of(hub: HubServer, repo_type: str, repo_id: str, revision: str = "v1.0") -> str:
    return hub.files(repo_type, repo_id, revision)["README.md"].decode()


def code_blocks(card: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", card, flags=re.DOTALL)


def section(card: str, title: str) -> str:
    return card.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0].strip()


def licensed(card: DatasetCard | ModelCard) -> tuple:
    """A card's license metadata: (license, license_name, license_link)."""
    return tuple(card.data.get(key) for key in ("license", "license_name", "license_link"))


def git_head() -> str:
    return subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()


# -- licenses --------------------------------------------------------------------------------------


def test_the_dataset_license_follows_the_corpus_and_m(hub, inputs, published):
    card = DatasetCard(card_of(hub, "dataset", DATASET))
    assert card.data.get("license") == ["apache-2.0", "other"]  # both apply: the corpus's code, M's instructions
    assert card.data.get("license_name") == "deepseek"
    # M's card says `license_link: LICENSE`, relative to M's repo: carried over as M's file at its commit
    assert card.data.get("license_link") == f"{hub.url}/{M}/blob/{inputs[M]}/LICENSE"
    text = section(card.text, "License")
    assert f"**source corpus** (`{CORPUS}`): `apache-2.0`, from [its card]" in text
    assert f"({hub.url}/datasets/{CORPUS}/blob/{inputs[CORPUS]}/README.md)" in text
    assert (
        f"**generator M** (`{M}`): `other` (`deepseek`, [license text]({card.data.get('license_link')})), from" in text
    )
    info = json.loads(hub.files("dataset", DATASET, "v1.0")["build_info.json"])
    assert info["license"]["license"] == ["apache-2.0", "other"]  # the card's license is the build's record


def test_a_models_card_was_downloaded_with_it_so_its_license_reads_offline(client_env, published):
    offline = client_env | {"HF_HOME": str(published / "hf_home"), "HF_HUB_OFFLINE": "1"}
    read = run_python(
        offline,
        f"""
        import json
        from inversecoder.core.licenses import card_license
        print(json.dumps(card_license("{M}", "model")))
    """,
    )
    assert read["license"] == "other" and read["license_name"] == "deepseek"


def test_a_dataset_license_stated_in_the_config_overrides_and_an_unreadable_one_is_unknown(tiny_model_dir, tmp_path):
    """Offline, from a local corpus file and a local M without a card: `unknown` with each reason (never
    apache-2.0); `dataset.license` then states it, and the card still shows what the inputs say."""
    recipe = {
        "source": {"path": str(SAMPLE), "limit": 3},
        "generator": {"model": str(tiny_model_dir)},
        "summarize": {"num_samples": 1, "max_new_tokens": 4},
        "decontaminate": {"enabled": False},
        "dedup": {"enabled": False},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    config = load_config(tmp_path / "r.yaml", output_dir=str(tmp_path / "out"))
    folder = build_dataset(config, progress=False, write_card=write_dataset_card).dataset_dir
    card = DatasetCard.load(folder / "README.md")
    assert card.data.get("license") == "unknown"
    text = section(card.text, "License")
    assert f"**source corpus** (`{SAMPLE}`): unknown: a local file: it has no card" in text
    assert f"**generator M** (`{tiny_model_dir}`): unknown: the local folder has no card (README.md)" in text
    assert "**A license is unknown**" in text and "`dataset.license` states the license" in text

    link = "https://example.org/terms"
    stated = load_config(
        tmp_path / "r.yaml",
        ["dataset.license=other", "dataset.license_name=my-terms", f"dataset.license_link={link}"],
        output_dir=str(tmp_path / "out"),
    )
    again = build_dataset(stated, progress=False, write_card=write_dataset_card)
    assert again.model_calls == 0  # the license changes the card, not the data
    card = DatasetCard.load(folder / "README.md")
    assert (card.data.get("license"), card.data.get("license_name"), card.data.get("license_link")) == (
        "other",
        "my-terms",
        link,
    )
    text = section(card.text, "License")
    assert text.startswith(f"`other` (`my-terms`, [license text]({link})), as `dataset.license` states.")
    assert "unknown: a local file: it has no card" in text and "**A license is unknown**" not in text


def test_an_unreadable_base_model_license_is_unknown_and_says_why():
    """This suite runs offline: a Hub base model whose card is not cached cannot be read."""
    record = card_license("someone/not-cached-anywhere", "model")
    assert record["license"] is None and "not in the local cache" in record["why"]
    config = load_config(None, ["train.base_model=someone/not-cached-anywhere"])
    card = render_model_card(
        model_name="m",
        base_model="someone/not-cached-anywhere",
        license=model_license(config),
        datasets=[],
        eval_results=None,
        repo_id="<org>/m",
        dataset={"path": "out/dataset", "version": "v1.0", "fingerprint": "0" * 16},
        generator={"model": "org/m", "revision": "main"},
        source={"path": "org/corpus"},
        chat_format="",
        train={"mode": "two-stage"},
        stages=[],
        seed=0,
        versions={},
    )
    assert card.data.get("license") == "unknown"
    assert "**base model** (`someone/not-cached-anywhere`): unknown: its card is not in the local cache" in card.text
    assert "`push.model_license` states the license when you know it" in card.text
    stated = load_config(None, ["train.base_model=someone/not-cached-anywhere", "push.model_license=mit"])
    assert model_license(stated)["license"] == "mit"


# -- the model card --------------------------------------------------------------------------------

WRITE_MODEL_CARDS = """
    import json
    from inversecoder.core.config import load_config
    from inversecoder.hub_cards.model_card import write_model_card
    cards = {{}}
    for name, overrides in {variants!r}.items():
        config = load_config("{recipe}", overrides, output_dir="{out}")
        cards[name] = write_model_card(config).read_text()
    print(json.dumps(cards))
"""


@pytest.fixture(scope="module")
def model_cards(hub, client_env, tiny_model_dir, published, tmp_path_factory) -> dict[str, str]:
    """InverseCoder's card (`write_model_card`) on the published dataset, for base models under CodeLlama's and
    DeepSeek-Coder's terms and with `push.model_license`; the first is pushed (tag v1.0)."""
    root = tmp_path_factory.mktemp("model-run")
    out = root / "out"
    shutil.copytree(published / "out" / "dataset", out / "dataset")  # with the hub.json its push left
    shutil.copytree(tiny_model_dir, out / "model")
    recipe = RECIPE | {"train": {"base_model": LLAMA}, "push": {"model_repo_id": MODEL, "model_tag": "v1.0"}}
    (root / "r.yaml").write_text(yaml.safe_dump(recipe))
    variants = {
        "stated": ["push.model_license=other", "push.model_license_name=ours", "push.model_license_link=https://x.y/l"],
        "deepseek": [f"train.base_model={DEEPSEEK}"],
        "paper": ["fidelity=paper", "evaluate.fix_humaneval_32=false"],
        "llama": [],  # last: the card left in the folder, pushed
    }
    cards = run_python(client_env, WRITE_MODEL_CARDS.format(variants=variants, recipe=root / "r.yaml", out=out))
    run(client_env, "inversecoder", "push", "model", str(out / "model"), "--repo-id", MODEL, "--tag", "v1.0")
    return cards


def test_the_model_license_follows_the_base_models_card_unless_stated(hub, inputs, model_cards):
    llama = ModelCard(card_of(hub, "model", MODEL))
    assert llama.content == model_cards["llama"]  # what was written is what the Hub serves
    assert llama.data.get("license") == "llama2" and llama.data.get("license_name") is None
    assert (
        f"**base model** (`{LLAMA}`): `llama2`, from [its card]({hub.url}/{LLAMA}/blob/{inputs[LLAMA]}/README.md)"
        in (llama.text)
    )
    deepseek = ModelCard(model_cards["deepseek"])
    assert (deepseek.data.get("license"), deepseek.data.get("license_name")) == ("other", "deepseek")
    assert deepseek.data.get("license_link") == f"{hub.url}/{DEEPSEEK}/blob/{inputs[DEEPSEEK]}/LICENSE"
    stated = ModelCard(model_cards["stated"])
    assert (stated.data.get("license"), stated.data.get("license_name"), stated.data.get("license_link")) == (
        "other",
        "ours",
        "https://x.y/l",
    )
    assert "as `push.model_license` states" in stated.text and f"`{LLAMA}`): `llama2`" in stated.text


def test_the_model_card_lists_the_dataset_the_corpus_and_m(hub, inputs, published, model_cards):
    card = ModelCard(card_of(hub, "model", MODEL))
    assert card.data.get("datasets") == [DATASET, CORPUS]  # the Hub's `datasets` metadata holds datasets only ...
    assert card.data.get("base_model") == LLAMA
    dataset_commit = hub.tags("dataset", DATASET)["v1.0"]
    assert f"**Training data:** [`{DATASET}`]({hub.url}/datasets/{DATASET}/commit/{dataset_commit})" in card.text
    assert f"**Generator model:** [`{M}@{inputs[M]}`]({hub.url}/{M}/tree/{inputs[M]})" in card.text  # ... M is here
    assert f"**Source corpus:** [`{CORPUS}@{inputs[CORPUS]}`]" in card.text
    assert "**Training data's license:** `apache-2.0`, `other` (`deepseek`)" in card.text


def test_the_model_card_says_how_its_training_and_evaluation_differ_from_the_paper(published, model_cards):
    """pass@1 depends on how the model was trained and evaluated: the card lists those deviations (the
    `training` and `evaluation` rows of `core/fidelity.py`, as this config ran them) and links the README's
    whole table at the code's commit; the dataset's rows are the dataset card's."""
    code = json.loads((published / "out" / "dataset" / "build_info.json").read_text())["code"]
    wanted = [d for d in DEVIATIONS if d.stage in ("training", "evaluation")]
    assert wanted and len(wanted) < len(DEVIATIONS)
    for name, fidelity in (("llama", "improved"), ("paper", "paper")):
        text = section(model_cards[name], "Fidelity to the paper")
        assert text.startswith(f"Trained and evaluated with `fidelity: {fidelity}`")
        assert f"]({CODE_URL}/blob/{code['commit']}/README.md#fidelity-to-the-paper)" in text
        rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
        assert [row[0].removeprefix("| ") for row in rows] == [d.topic for d in wanted]
        cells = {row[0].removeprefix("| "): row[2] for row in rows}
        packing = cells["Training batches"]
        assert packing.endswith("(`train.packing`)")
        assert packing.startswith("as the paper: unpacked" if fidelity == "paper" else "on a GPU (`train.packing")
        fixed = cells["HumanEval/32 checker"]
        assert fixed.startswith(
            "evalplus as is" if fidelity == "paper" else "evalplus with HumanEval/32's checker fixed"
        )
    assert "## Fidelity to the paper\n" in (REPO / "README.md").read_text()  # the anchor the link names


# -- what a reader does with the cards ---------------------------------------------------------------


def test_the_reproduce_block_rebuilds_the_same_dataset_from_the_hub(hub, client_env, inputs, published, tmp_path):
    """The block as the card on the server has it, in an empty folder with an empty Hub cache: only its
    `pip install` line is not run (the package is importable here); it is checked to name the code and commit."""
    card = card_of(hub, "dataset", DATASET)
    (block,) = code_blocks(section(card, "Reproduce"), "bash")
    lines = [line for line in block.splitlines() if line.strip()]
    assert lines[0].startswith(f'pip install "git+{CODE_URL}@{git_head()}"')
    clean = tmp_path / "clean"
    clean.mkdir()
    env = client_env | {"HF_HOME": str(tmp_path / "empty-hf-home")}
    output = run(env, "bash", "-euo", "pipefail", "-c", "\n".join(lines[1:]), cwd=clean)

    published_info = json.loads(hub.files("dataset", DATASET, "v1.0")["build_info.json"])
    printed = output.strip().splitlines()[-1]
    assert printed == published_info["fingerprint"] == lines[-1].rsplit("# ", 1)[1]
    assert sorted(p.name for p in clean.iterdir()) == [".cache", "rebuilt", "reproduce.yaml"]
    config = yaml.safe_load((clean / "reproduce.yaml").read_text())
    assert config["source"]["path"] == CORPUS and config["source"]["revision"] == inputs[CORPUS]
    assert config["generator"]["model"] == M and config["generator"]["revision"] == inputs[M]
    assert not [value for value in _leaves(config) if isinstance(value, str) and value.startswith(("/", "~", "."))]
    assert "Not everything it was built from is on the Hub" not in card


def _leaves(data):
    if isinstance(data, dict):
        for value in data.values():
            yield from _leaves(value)
    elif isinstance(data, list):
        for value in data:
            yield from _leaves(value)
    else:
        yield data


def test_every_load_snippet_pins_its_revision_and_runs(hub, client_env, published, model_cards):
    dataset_card, model_card = card_of(hub, "dataset", DATASET), card_of(hub, "model", MODEL)
    calls = [
        call
        for card in (dataset_card, model_card)
        for block in code_blocks(card, "python")
        for call in re.findall(r"(?:load_dataset|from_pretrained)\(.*", block)
    ]
    assert len(calls) >= 6 and all("revision=" in call for call in calls), calls
    (load,) = code_blocks(section(dataset_card, "How to load"), "python")
    out = run_python(client_env, load + "\nimport json\nprint(json.dumps({'pairs': len(pairs)}))")
    info = json.loads(hub.files("dataset", DATASET, "v1.0")["build_info.json"])
    assert out["pairs"] == info["counts"]["final pairs (default config)"]
    usage = code_blocks(section(model_card, "Usage"), "python")[0].split("messages =")[0]
    out = run_python(client_env, usage + "\nimport json\nprint(json.dumps({'model': type(model).__name__}))")
    assert out["model"] == "LlamaForCausalLM"


def links(card: str) -> list[str]:
    """Every link of a card: markdown links and images in the body, and the metadata's license link."""
    found = re.findall(r"\]\(([^)\s]+)\)", card.split("\n---\n", 1)[1])
    metadata = yaml.safe_load(card.split("---\n", 2)[1])
    return found + ([metadata["license_link"]] if metadata.get("license_link") else [])


@pytest.mark.parametrize("kind", ["dataset", "model"])
def test_every_link_in_the_cards_resolves_on_the_hub(hub, published, model_cards, kind):
    repo_id = DATASET if kind == "dataset" else MODEL
    card = card_of(hub, kind, repo_id)
    metadata = yaml.safe_load(card.split("---\n", 2)[1])
    targets = links(card) + [f"{hub.url}/datasets/{name}" for name in metadata.get("datasets", [])]
    targets += [f"{hub.url}/{metadata['base_model']}"] if metadata.get("base_model") else []
    checked = []
    for target in targets:
        if target.startswith(hub.url):
            with urllib.request.urlopen(target, timeout=30) as answer:  # a 404 raises
                checked.append(answer.status)
        elif "://" not in target:  # relative: a file of the repo itself
            assert target in hub.files(kind, repo_id, "v1.0"), target
            checked.append(200)
        elif target.startswith(f"{CODE_URL}/blob/"):  # the code at a commit: that file there, with that heading
            commit, rest = target.removeprefix(f"{CODE_URL}/blob/").split("/", 1)
            path, anchor = rest.split("#")
            shown = subprocess.run(["git", "-C", str(REPO), "show", f"{commit}:{path}"], capture_output=True, text=True)
            assert shown.returncode == 0, target
            headings = [
                re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
                for line in shown.stdout.splitlines()
                if line.startswith("#")
            ]
            assert anchor in headings, target
            checked.append(200)
        else:
            assert target.startswith("https://arxiv.org/abs/2407.05700"), target  # the paper, the only other site
    assert len(checked) >= (6 if kind == "dataset" else 7) and set(checked) == {200}
    with pytest.raises(urllib.error.HTTPError, match="404"):  # the server does tell a missing file
        urllib.request.urlopen(f"{hub.url}/{M}/blob/main/NO-SUCH-FILE", timeout=30)


def test_every_number_of_the_dataset_card_is_in_a_published_file(hub, published):
    files = hub.files("dataset", DATASET, "v1.0")
    card, info, report = (
        card_of(hub, "dataset", DATASET),
        json.loads(files["build_info.json"]),
        json.loads(files["build_report.json"]),
    )
    counts = dict(re.findall(r"^\| ([a-z][^|]*?) \| (\d+) \|$", section(card, "Counts per stage"), flags=re.M))
    assert counts == {name: str(value) for name, value in info["counts"].items()}
    tables = re.findall(r"^\| `(\w+)` \| (\d+) \|", section(card, "Configs and schema"), flags=re.M)
    assert {name: int(rows) for name, rows in tables} == {n: t["rows"] for n, t in report["tables"].items()}
    head = card.split("## How to load")[0]
    for value in (info["version"], info["fingerprint"], info["config_fingerprint"], info["code"]["commit"]):
        assert f"`{value}`" in head
    settings = section(card, "How it was built")
    for value in (report["num_samples"], report["summarize"]["temperature"], report["seed"]):
        assert str(value) in settings
    scores = sorted(
        s
        for path in report["tables"]["default"]["files"]
        for s in pq.read_table(pa.BufferReader(files[path])).column("score").to_pylist()
    )
    summary = section(card, "Score distribution")
    assert f"{len(scores)} pairs: min {scores[0]:.3f}" in summary and f"max {scores[-1]:.3f}" in summary
    assert f"mean {sum(scores) / len(scores):.3f}" in summary


def test_a_code_url_set_after_the_build_is_recorded_before_the_push(published, tmp_path):
    """`run --push` calls `link_code` before the dataset push: push settings are in no step's fingerprint."""
    out = tmp_path / "out"
    shutil.copytree(published / "out" / "dataset", out / "dataset", ignore=shutil.ignore_patterns("hub.json"))
    config = load_config(None, ["push.code_url=https://example.org/fork.git"], output_dir=str(out))
    assert link_code(config)
    card = (out / "dataset" / "README.md").read_text()
    assert f'pip install "git+https://example.org/fork.git@{git_head()}"' in card
    assert (
        json.loads((out / "dataset" / "build_info.json").read_text())["code"]["url"] == "https://example.org/fork.git"
    )
    assert differences(out / "dataset", read_manifest(out / "dataset") or {}) == []
    assert not link_code(config)  # recorded: nothing to do
