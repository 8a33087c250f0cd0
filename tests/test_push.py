"""Publishing to the Hub, end to end against the Hub-protocol server of `hub_server.py`.

The suite runs with HF_HUB_OFFLINE=1 (conftest), and huggingface_hub / datasets read HF_ENDPOINT and
the offline flags once, at import. So every client side runs in a subprocess with its own environment
(HF_ENDPOINT=the server, HF_HUB_OFFLINE=0, HF_HUB_DISABLE_XET=1, HF_TOKEN, a private HF_HOME): the real
push code (`inversecoder push`) and the real
readers (`load_dataset`, `snapshot_download`, `AutoModelForCausalLM.from_pretrained`, `ModelCard.load`).
The server runs in this process, so the tests look at what it stores and inject failures.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import subprocess
import sys
import textwrap
import time
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
from huggingface_hub import ModelCard

from inversecoder.builders.pipeline import build_dataset
from inversecoder.core.config import load_config
from inversecoder.core.errors import UserError
from inversecoder.core.manifest import differences, read_manifest, write_manifest
from inversecoder.hub_cards.dataset_card import write_dataset_card
from inversecoder.hub_cards.model_card import render_model_card
from inversecoder.hub_cards.push import HUB_RECORD, check_push_config, read_hub_record

TOKEN = "hf_test" + secrets.token_hex(12)  # unique, so that grepping for it finds only leaks
READ_TOKEN = "hf_read" + secrets.token_hex(12)
USER, ORG = "alice", "inverse-org"
DATASET_REPO, MODEL_REPO = f"{ORG}/tiny-ds", f"{ORG}/tiny-coder"
OUTPUTS: list[str] = []  # every stdout/stderr of the client processes, checked for the token at the end


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    tokens = {TOKEN: Token(USER, orgs=(ORG,)), READ_TOKEN: Token(USER, role="read", orgs=(ORG,))}
    with HubServer(tmp_path_factory.mktemp("hub"), tokens) as server:
        yield server


@pytest.fixture(scope="module")
def client_env(hub, tmp_path_factory) -> dict[str, str]:
    return client_environment(hub.url, TOKEN, tmp_path_factory.mktemp("hf_home"))


def run_push(env: dict[str, str], kind: str, folder: Path, repo_id: str, *extra: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "inversecoder.cli", "push", kind, str(folder), "--repo-id", repo_id, *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    OUTPUTS.append(result.stdout + result.stderr)
    return result


def run_client(env: dict[str, str], code: str) -> dict:
    """Run `code` (which prints one JSON line last) in a fresh interpreter with the client environment."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=300
    )
    OUTPUTS.append(result.stdout + result.stderr)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def build(tiny_model_dir: Path, out: Path, seed: int, license: str | None = "apache-2.0") -> Path:
    """A dataset built offline from local files: no card states its inputs' licenses, so `dataset.license` does."""
    recipe = {
        "seed": seed,
        "source": {"path": str(SAMPLE), "limit": 10},
        "generator": {"model": str(tiny_model_dir)},
        "summarize": {"num_samples": 2, "max_new_tokens": 8},
        "decontaminate": {"enabled": False},
        "dataset": {"name": "tiny-ds", "version": "v1.0", "license": license},
        "push": {"dataset_repo_id": DATASET_REPO},
    }
    (out / "r.yaml").write_text(yaml.safe_dump(recipe))
    config = load_config(out / "r.yaml", output_dir=str(out / "run"))
    return build_dataset(config, progress=False, write_card=write_dataset_card).dataset_dir


@pytest.fixture(scope="module")
def dataset_dir(tiny_model_dir, tmp_path_factory) -> Path:
    return build(tiny_model_dir, tmp_path_factory.mktemp("build"), seed=1)


def rows(folder: Path, config_dir: str) -> list[dict]:
    return pq.read_table(next((folder / config_dir).glob("*.parquet"))).to_pylist()


def new_requests(hub: HubServer, since: int) -> list[tuple[str, str, int]]:
    return hub.requests[since:]


# -- token -----------------------------------------------------------------------------------------


def test_missing_or_invalid_token_fails_clearly_before_any_work(hub, client_env, dataset_dir, tmp_path):
    since = len(hub.requests)
    no_token = {k: v for k, v in client_env.items() if k != "HF_TOKEN"} | {"HF_HOME": str(tmp_path / "empty")}
    result = run_push(no_token, "dataset", dataset_dir, f"{ORG}/never")
    assert result.returncode == 2
    assert "no Hugging Face token: set HF_TOKEN or run `hf auth login`" in result.stderr
    assert "Traceback" not in result.stderr

    for token, message in (("hf_not_a_valid_token", "was rejected by"), (READ_TOKEN, "is read-only")):
        result = run_push(client_env | {"HF_TOKEN": token}, "dataset", dataset_dir, f"{ORG}/never")
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert token not in result.stdout + result.stderr and "Traceback" not in result.stderr
    paths = {path for _, path, _ in new_requests(hub, since)} - {"/api/agent-harnesses"}  # the client's telemetry
    assert paths == {"/api/whoami-v2"}  # nothing else was attempted
    assert hub.repo("dataset", f"{ORG}/never") is None


def test_the_token_saved_by_hf_auth_login_is_used(client_env, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "token").write_text(TOKEN)  # what `hf auth login` writes to $HF_HOME/token
    env = {k: v for k, v in client_env.items() if k != "HF_TOKEN"} | {"HF_HOME": str(home)}
    out = run_client(
        env,
        """
        import json
        from inversecoder.hub_cards.push import resolve_token
        print(json.dumps({"ok": bool(resolve_token())}))
    """,
    )
    assert out == {"ok": True}


def test_run_push_config_is_checked_before_any_work(tmp_path):
    with pytest.raises(UserError, match=r"push.dataset_repo_id, push.model_repo_id and/or push.generator_repo_id"):
        check_push_config(load_config(None))
    with pytest.raises(UserError, match=r"^generator.model is set: M is not trained by this run, so there is nothing"):
        check_push_config(load_config(None, ["push.generator_repo_id=org/m", "generator.model=org/base"]))
    with pytest.raises(UserError, match="name the same repo"):
        check_push_config(load_config(None, ["push.generator_repo_id=org/m", "push.model_repo_id=org/m"]))
    with pytest.raises(UserError, match="invalid repo id"):
        check_push_config(load_config(None, ["push.dataset_repo_id=no-namespace"]))
    with pytest.raises(UserError, match=r"train.enabled is false"):
        check_push_config(load_config(None, ["push.model_repo_id=org/m", "train.enabled=false"]))
    with pytest.raises(UserError, match="HF_HUB_OFFLINE"):  # this suite is offline: the token check refuses
        check_push_config(load_config(None, ["push.dataset_repo_id=org/d"]))


# -- dataset ---------------------------------------------------------------------------------------


def test_dataset_push_is_one_tagged_commit_that_load_dataset_pins(hub, client_env, dataset_dir):
    result = run_push(client_env, "dataset", dataset_dir, DATASET_REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    history = hub.history("dataset", DATASET_REPO)
    assert len(history) == 2  # the Hub's initial .gitattributes commit + exactly one commit for the push
    assert hub.tags("dataset", DATASET_REPO) == {"v1.0": history[0]}
    assert f"{hub.url}/datasets/{DATASET_REPO}/commit/{history[0]}" in result.stdout
    record = read_hub_record(dataset_dir)
    assert record is not None
    assert record["repo_id"] == DATASET_REPO and record["commit"] == history[0] and record["tag"] == "v1.0"
    stored = hub.files("dataset", DATASET_REPO, "v1.0")
    assert HUB_RECORD not in stored and "build_info.json" in stored
    assert hub.repo("dataset", DATASET_REPO)["commits"][history[0]]["tree"]["data/train-00000-of-00001.parquet"]["lfs"]

    out = run_client(
        client_env,
        f"""
        import json
        from datasets import load_dataset
        from huggingface_hub import DatasetCard, snapshot_download
        pinned = load_dataset("{DATASET_REPO}", split="train", revision="v1.0")
        latest = load_dataset("{DATASET_REPO}")
        candidates = load_dataset("{DATASET_REPO}", "candidates", split="train", revision="{history[0]}")
        card = DatasetCard.load("{DATASET_REPO}", repo_type="dataset")
        folder = snapshot_download("{DATASET_REPO}", repo_type="dataset", revision="v1.0")
        print(json.dumps({{"pinned": pinned.to_list(), "latest": list(latest), "n_latest": latest["train"].num_rows,
                          "candidates": candidates.num_rows, "text": card.text,
                          "configs": [c["config_name"] for c in card.data.configs], "folder": folder}}))
    """,
    )
    local = rows(dataset_dir, "data")
    assert out["pinned"] == local and out["n_latest"] == len(local) and out["latest"] == ["train"]
    assert out["candidates"] == len(rows(dataset_dir, "candidates"))
    assert out["configs"][0] == "default" and "candidates" in out["configs"]
    info = json.loads((dataset_dir / "build_info.json").read_text())
    assert "**Version:** `v1.0`" in out["text"] and info["fingerprint"] in out["text"]
    assert f'load_dataset("{DATASET_REPO}", split="train", revision="v1.0")' in out["text"]  # placeholder replaced
    assert "<org>/" not in out["text"]
    for path in ("data/train-00000-of-00001.parquet", "build_info.json", "assets/score_histogram.png"):
        assert (Path(out["folder"]) / path).read_bytes() == (dataset_dir / path).read_bytes()


def test_pushing_the_same_build_again_changes_nothing(hub, client_env, dataset_dir, tmp_path):
    commits, puts = hub.history("dataset", DATASET_REPO), hub.counters.get("lfs_put", 0)
    result = run_push(client_env, "dataset", dataset_dir, DATASET_REPO, "--tag", "v1.0")
    assert result.returncode == 0, result.stderr
    assert "already holds this build" in result.stdout and commits[0] in result.stdout

    # the same data rebuilt later (the card's build time differs) is still the same build
    rebuilt = shutil.copytree(dataset_dir, tmp_path / "rebuilt")
    readme = rebuilt / "README.md"
    readme.write_text(readme.read_text().replace("**Built:**", "**Built:** (again)"))
    assert run_push(client_env, "dataset", rebuilt, DATASET_REPO).returncode == 0
    assert hub.history("dataset", DATASET_REPO) == commits and hub.counters.get("lfs_put", 0) == puts
    assert hub.tags("dataset", DATASET_REPO) == {"v1.0": commits[0]}


def test_run_push_helpers_use_the_config(hub, client_env, dataset_dir):
    """What `inversecoder run CONFIG --push` calls: the config's repo ids, the token checked first."""
    recipe = dataset_dir.parent.parent / "r.yaml"
    out = run_client(
        client_env,
        f"""
        import json
        from inversecoder.core.config import load_config
        from inversecoder.hub_cards.push import check_push_config, push_run_dataset, push_run_model
        config = load_config("{recipe}", output_dir="{dataset_dir.parent}")
        token = check_push_config(config)
        result = push_run_dataset(config, token)
        print(json.dumps({{"commit": result.commit_sha, "tag": result.tag, "model": push_run_model(config, token)}}))
    """,
    )
    assert out == {"commit": hub.tags("dataset", DATASET_REPO)["v1.0"], "tag": "v1.0", "model": None}


def test_a_published_tag_is_never_moved(hub, client_env, tiny_model_dir, tmp_path):
    other = build(tiny_model_dir, tmp_path, seed=2)  # another build, same version v1.0
    commits, tags = hub.history("dataset", DATASET_REPO), hub.tags("dataset", DATASET_REPO)
    result = run_push(client_env, "dataset", other, DATASET_REPO)
    assert result.returncode == 2
    assert "tag v1.0" in result.stderr and "never moved" in result.stderr and "Traceback" not in result.stderr
    result = run_push(client_env, "dataset", other, DATASET_REPO, "--tag", "v2.0")
    assert result.returncode == 2 and "rebuild with dataset.version=v2.0" in result.stderr
    assert hub.history("dataset", DATASET_REPO) == commits and hub.tags("dataset", DATASET_REPO) == tags
    assert not (other / HUB_RECORD).exists()


def changed_copy(dataset_dir: Path, target: Path) -> Path:
    """The build with one instruction of its data changed (build_info.json still names the old fingerprint)."""
    folder = shutil.copytree(dataset_dir, target, ignore=shutil.ignore_patterns(HUB_RECORD))
    path = folder / "data" / "train-00000-of-00001.parquet"
    table = pq.read_table(path).to_pylist()
    table[0]["instruction"] += " (edited)"
    pq.write_table(pa.Table.from_pylist(table, schema=pq.read_schema(path)), path)
    return folder


def test_a_changed_data_file_is_never_published_under_the_existing_tag(hub, client_env, dataset_dir, tmp_path):
    commits, tags = hub.history("dataset", DATASET_REPO), hub.tags("dataset", DATASET_REPO)
    folder = changed_copy(dataset_dir, tmp_path / "changed")
    result = run_push(client_env, "dataset", folder, DATASET_REPO)  # the folder no longer matches its manifest
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not match its manifest.json" in lines[0], result.stderr
    assert "data/train-00000-of-00001.parquet changed" in lines[0]

    write_manifest(folder)  # the manifest made to match: the Hub's tag still holds other files
    result = run_push(client_env, "dataset", folder, DATASET_REPO)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "tag v1.0" in lines[0] and "never moved" in lines[0], result.stderr
    assert "already holds this build" not in result.stdout
    assert hub.history("dataset", DATASET_REPO) == commits and hub.tags("dataset", DATASET_REPO) == tags


def test_a_damaged_dataset_folder_is_refused(hub, client_env, dataset_dir, tmp_path):
    since = len(hub.requests)
    folder = shutil.copytree(dataset_dir, tmp_path / "damaged", ignore=shutil.ignore_patterns(HUB_RECORD))
    shutil.rmtree(folder / "data")
    shutil.rmtree(folder / "candidates")
    result = run_push(client_env, "dataset", folder, f"{ORG}/damaged")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not match its manifest.json" in lines[0]
    assert "data/train-00000-of-00001.parquet missing" in lines[0]
    assert hub.repo("dataset", f"{ORG}/damaged") is None
    assert {path for _, path, _ in new_requests(hub, since)} - {"/api/agent-harnesses"} == {"/api/whoami-v2"}

    (folder / "manifest.json").unlink()  # a folder without its manifest cannot be checked: refused too
    result = run_push(client_env, "dataset", folder, f"{ORG}/damaged")
    assert result.returncode == 2 and "has no manifest.json" in result.stderr, result.stderr


def test_a_hub_that_never_answers_fails_within_the_deadline(client_env, dataset_dir, listener):
    port, accepted = listener
    env = client_env | {"HF_ENDPOINT": f"http://127.0.0.1:{port}", "INVERSECODER_HUB_TIMEOUT": "2"}
    started = time.monotonic()
    result = run_push(env, "dataset", dataset_dir, f"{ORG}/never-answered")
    assert time.monotonic() - started < 60 and accepted  # it connected, then gave up
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "did not answer within 2 s" in lines[0], result.stderr
    assert "INVERSECODER_HUB_TIMEOUT" in lines[0]


@pytest.mark.parametrize(
    "fault, status",
    [("lfs_put", 507), ("commit", 500), ("commit", None)],
    ids=["lfs-upload-fails", "commit-fails", "commit-connection-dropped"],
)
def test_a_failed_upload_leaves_no_tag_and_a_rerun_finishes(hub, client_env, dataset_dir, tmp_path, fault, status):
    folder = shutil.copytree(dataset_dir, tmp_path / "ds", ignore=shutil.ignore_patterns(HUB_RECORD))
    repo = f"{ORG}/flaky-{fault}-{status}"
    hub.fail(fault, times=1, status=status)
    result = run_push(client_env, "dataset", folder, repo)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "failed during the upload" in result.stderr and "no tag was created" in result.stderr
    assert len(hub.history("dataset", repo)) == 1 and hub.tags("dataset", repo) == {}
    assert not (folder / HUB_RECORD).exists()

    puts = hub.counters.get("lfs_put", 0)
    result = run_push(client_env, "dataset", folder, repo)
    assert result.returncode == 0, result.stderr[-3000:]
    history = hub.history("dataset", repo)
    assert len(history) == 2 and hub.tags("dataset", repo) == {"v1.0": history[0]}
    if fault == "commit":  # the LFS files reached the server the first time: not sent again
        assert hub.counters.get("lfs_put", 0) == puts


# -- model -----------------------------------------------------------------------------------------

EVAL_RESULTS = {
    "benchmarks": {
        name: {
            "dataset": dataset,
            "version": version,
            "hash": "0" * 32,
            "n_tasks": n,
            "limit": None,
            "pass@1": {"base": base, "plus": plus},
        }
        for name, dataset, version, n, base, plus in (
            ("humaneval", "HumanEval+", "v0.1.10", 164, 0.5, 0.4625),
            ("mbpp", "MBPP+", "v0.2.0", 378, 0.625, 0.5),
        )
    },
    "settings": {"decoding": {"max_new_tokens": 512}, "backend": {"backend": "transformers", "revision": "local"}},
}


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir, dataset_dir, tmp_path_factory) -> Path:
    """The tiny model with a card rendered the way `write_model_card` does after a dataset push."""
    folder = shutil.copytree(tiny_model_dir, tmp_path_factory.mktemp("model") / "model")
    info = json.loads((dataset_dir / "build_info.json").read_text())
    card = render_model_card(
        model_name="tiny-coder",
        base_model=str(tiny_model_dir),
        base_revision=None,
        license="apache-2.0",
        datasets=[],
        eval_results=EVAL_RESULTS,
        dataset_hub=read_hub_record(dataset_dir),
        repo_id="<org>/tiny-coder",
        dataset={"path": str(dataset_dir), "version": info["version"], "fingerprint": info["fingerprint"]},
        generator=info["generator"],
        source=str(SAMPLE),
        chat_format="@@ Instruction\n{instruction}",
        train={"mode": "two-stage"},
        stages=[],
        seed=1,
        versions={"inversecoder": "0.1.0"},
    )
    card.save(folder / "README.md")
    return folder


def test_model_push_round_trips_with_its_lineage_and_eval_results(hub, client_env, dataset_dir, model_dir):
    dataset_record = read_hub_record(dataset_dir)
    assert dataset_record is not None  # the dataset push left it
    dataset_commit = dataset_record["commit"]
    result = run_push(client_env, "model", model_dir, MODEL_REPO, "--tag", "v1.0", "--private")
    assert result.returncode == 0, result.stderr[-3000:]
    history = hub.history("model", MODEL_REPO)
    assert len(history) == 2 and hub.tags("model", MODEL_REPO) == {"v1.0": history[0]}
    assert hub.repo("model", MODEL_REPO)["private"]
    with pytest.raises(urllib.error.HTTPError, match="404"):  # private: invisible without a token
        urllib.request.urlopen(f"{hub.url}/api/models/{MODEL_REPO}", timeout=10)

    out = run_client(
        client_env,
        f"""
        import json, hashlib, pathlib
        from huggingface_hub import ModelCard, snapshot_download
        from transformers import AutoModelForCausalLM, AutoTokenizer
        model = AutoModelForCausalLM.from_pretrained("{MODEL_REPO}")
        tokenizer = AutoTokenizer.from_pretrained("{MODEL_REPO}", revision="v1.0")
        card = ModelCard.load("{MODEL_REPO}")
        folder = pathlib.Path(snapshot_download("{MODEL_REPO}", revision="v1.0"))
        print(json.dumps({{
            "model": type(model).__name__, "chat": tokenizer.apply_chat_template(
                [{{"role": "user", "content": "Sort a list."}}], tokenize=False, add_generation_prompt=True),
            "datasets": card.data.datasets, "text": card.text,
            "results": {{f"{{r.dataset_name}}/{{r.metric_type}}": r.metric_value for r in card.data.eval_results}},
            "files": {{str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
                      for p in folder.rglob("*") if p.is_file()}},
        }}))
    """,
    )
    assert out["model"] == "LlamaForCausalLM" and "Sort a list." in out["chat"]
    assert out["datasets"] == [DATASET_REPO]  # lineage: repo id in the metadata ...
    assert f"`{DATASET_REPO}`" in out["text"] and dataset_commit in out["text"]  # ... and the commit in the body
    assert f'revision="{dataset_commit}"' in out["text"]
    assert out["results"] == {
        "HumanEval/pass@1": 50.0,
        "HumanEval+/pass@1": 46.2,
        "MBPP/pass@1": 62.5,
        "MBPP+/pass@1": 50.0,
    }
    assert f'AutoModelForCausalLM.from_pretrained("{MODEL_REPO}", revision=revision)' in out["text"]
    for name in ("model.safetensors", "tokenizer.json", "config.json", "chat_template.jinja"):
        assert out["files"][name] == hashlib.sha256((model_dir / name).read_bytes()).hexdigest()
    assert HUB_RECORD not in out["files"]


def test_model_repush_without_changes_makes_no_commit(hub, client_env, model_dir):
    commits = hub.history("model", MODEL_REPO)
    result = run_push(client_env, "model", model_dir, MODEL_REPO)
    assert result.returncode == 0 and "no new commit" in result.stdout, result.stderr
    result = run_push(client_env, "model", model_dir, MODEL_REPO, "--tag", "v1.0", "--private")
    assert result.returncode == 0 and "already holds this build" in result.stdout, result.stderr
    assert hub.history("model", MODEL_REPO) == commits

    (model_dir / "README.md").write_text((model_dir / "README.md").read_text() + "\nOne more line.\n")
    result = run_push(client_env, "model", model_dir, MODEL_REPO, "--tag", "v1.0")
    assert result.returncode == 2 and "never moved" in result.stderr
    assert hub.history("model", MODEL_REPO) == commits


def test_private_push_to_an_existing_public_repo_is_refused(hub, client_env, dataset_dir):
    result = run_push(client_env, "dataset", dataset_dir, DATASET_REPO, "--private")
    assert result.returncode == 2 and "is public" in result.stderr


# -- lineage: the source corpus at its commit, the generator M pushed first --------------------------

SOURCE_REPO, GENERATOR_REPO = f"{ORG}/tiny-corpus", f"{ORG}/tiny-generator"
READ_SOURCE = """
    import json
    from inversecoder.builders.sources import load_source
    from inversecoder.core.config import SourceConfig
    data = load_source(SourceConfig(path="{repo}", revision={revision!r}, limit=5))
    print(json.dumps({{"info": data.info, "rows": [r.instruction for r in data.rows]}}))
"""


def upload_corpus(env: dict[str, str], repo_id: str, lines: list[str], folder: Path) -> None:
    """A one-file instruction corpus as a Hub dataset repo (created if missing), one commit per call."""
    path = folder / f"{repo_id.replace('/', '--')}-{len(lines)}.jsonl"
    path.write_text("\n".join(lines) + "\n")
    run_client(
        env,
        f"""
        from huggingface_hub import HfApi
        api = HfApi()
        api.create_repo("{repo_id}", repo_type="dataset", exist_ok=True)
        api.upload_file(path_or_fileobj="{path}", path_in_repo="data/train.jsonl", repo_id="{repo_id}",
                        repo_type="dataset")
        print("{{}}")
    """,
    )


@pytest.fixture(scope="module")
def source_repo(hub, client_env, tmp_path_factory) -> str:
    """The sample corpus's first 16 rows as a Hub dataset on the test server; returns its commit sha."""
    upload_corpus(client_env, SOURCE_REPO, SAMPLE.read_text().splitlines()[:16], tmp_path_factory.mktemp("corpus"))
    return hub.history("dataset", SOURCE_REPO)[0]


def test_a_hub_source_is_read_at_the_commit_its_revision_resolves_to(hub, client_env, tmp_path):
    repo = f"{ORG}/moving-corpus"
    lines = SAMPLE.read_text().splitlines()
    upload_corpus(client_env, repo, lines[:6], tmp_path)
    first = hub.history("dataset", repo)[0]
    env = client_env | {"HF_HOME": str(tmp_path / "home")}
    online = run_client(env, READ_SOURCE.format(repo=repo, revision=None))
    info = online["info"]
    assert info["revision"] == first and info["requested_revision"] == "main" and info["kind"] == "hub"
    assert info["url"] == f"{hub.url}/datasets/{repo}/tree/{first}"
    assert len(online["rows"]) == 5

    # Offline, from the cache `datasets` kept: the sha it was downloaded at, never a bare `main`
    offline = run_client(
        env | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}, READ_SOURCE.format(repo=repo, revision=None)
    )
    assert offline["info"]["revision"] == first and offline["rows"] == online["rows"]

    # main moves on: main reads (and names) the new commit, the old sha still reads the old rows
    upload_corpus(client_env, repo, lines[10:13], tmp_path)
    second = hub.history("dataset", repo)[0]
    moved = run_client(env, READ_SOURCE.format(repo=repo, revision=None))
    assert moved["info"]["revision"] == second != first and len(moved["rows"]) == 3
    pinned = run_client(env, READ_SOURCE.format(repo=repo, revision=first))
    assert pinned["info"]["revision"] == first and pinned["info"]["requested_revision"] == first
    assert pinned["rows"] == online["rows"]


def test_the_dataset_names_the_pushed_generator_and_follows_a_changed_one(
    hub, client_env, dataset_dir, tiny_model_dir, tmp_path
):
    """`push_run_generator` + `link_generator` (what `run --push` calls before the dataset push) on a run
    folder whose dataset was generated by the M in OUTPUT/generator/model."""
    out = tmp_path / "out"
    shutil.copytree(dataset_dir, out / "dataset", ignore=shutil.ignore_patterns(HUB_RECORD))
    shutil.copytree(tiny_model_dir, out / "generator" / "model")  # the same weights that generated the dataset
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "dataset": {"name": "tiny-ds"},
                "train": {"base_model": str(tiny_model_dir)},
                "push": {"generator_repo_id": GENERATOR_REPO, "model_license": "apache-2.0"},
            }
        )
    )
    step = f"""
        import json
        from inversecoder.core.config import load_config
        from inversecoder.hub_cards.lineage import link_generator, push_run_generator
        from inversecoder.hub_cards.push import resolve_token
        config = load_config("{recipe}", output_dir="{out}")
        pushed = push_run_generator(config, resolve_token())
        changed = link_generator(config, pushed, resolve_token())
        print(json.dumps({{"commit": pushed.commit_sha, "created": pushed.created_commit, "changed": changed}}))
    """

    def named() -> str:
        return json.loads((out / "dataset" / "build_info.json").read_text())["generator"]["hub"]["commit"]

    first = run_client(client_env, step)
    assert (
        first["created"] and first["changed"] and named() == first["commit"] == hub.history("model", GENERATOR_REPO)[0]
    )
    card = (out / "dataset" / "README.md").read_text()
    assert f"[`{GENERATOR_REPO}@{first['commit']}`]({hub.url}/{GENERATOR_REPO}/tree/{first['commit']})" in card
    assert f"local copy `{tiny_model_dir}`" in card  # the card was re-rendered from the report ...
    assert (out / "dataset" / "assets" / "score_histogram.png").read_bytes() == (
        dataset_dir / "assets" / "score_histogram.png"
    ).read_bytes()
    assert differences(out / "dataset", read_manifest(out / "dataset") or {}) == []  # ... and the manifest too
    report = json.loads((out / "dataset" / "build_report.json").read_text())
    assert report["generator"]["hub"]["commit"] == first["commit"]

    again = run_client(client_env, step)  # nothing changed: no commit, the dataset untouched
    assert again == {"commit": first["commit"], "created": False, "changed": False}

    # M's card changes (its evaluation came in): a new commit of M, but the one the dataset names holds the
    # same weights, so the dataset keeps naming it (a published dataset version stays publishable)
    (out / "eval-generator").mkdir()
    (out / "eval-generator" / "eval_results.json").write_text(json.dumps(EVAL_RESULTS))
    card_only = run_client(client_env, step)
    assert card_only["created"] and not card_only["changed"] and named() == first["commit"]

    # M's files change: the dataset names the new commit
    config_file = out / "generator" / "model" / "generation_config.json"
    config_file.write_text(json.dumps(json.loads(config_file.read_text()) | {"max_new_tokens": 7}))
    changed = run_client(client_env, step)
    assert changed["created"] and changed["changed"] and named() == changed["commit"] != card_only["commit"]
    assert f"`{GENERATOR_REPO}@{changed['commit']}`" in (out / "dataset" / "README.md").read_text()
    pushed_card = hub.files("model", GENERATOR_REPO)["README.md"].decode()
    assert "generator model M" in pushed_card and "HumanEval+" in pushed_card


def test_a_generator_named_by_hub_id_is_recorded_at_its_resolved_commit(hub, client_env, tmp_path):
    """generator.model = a Hub model (here the M pushed above): the build names it by repo id and the commit
    sha its revision (main) resolved to when it was downloaded, in build_info and the card."""
    recipe = {
        "source": {"path": str(SAMPLE), "limit": 3},
        "generator": {"model": GENERATOR_REPO},
        "summarize": {"num_samples": 1, "max_new_tokens": 4},
        "decontaminate": {"enabled": False},
        "dedup": {"enabled": False},
        "dataset": {"name": "hub-generator"},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    out = run_client(
        client_env | {"HF_HOME": str(tmp_path / "home")},
        f"""
        import json
        from inversecoder.builders.pipeline import build_dataset
        from inversecoder.core.config import load_config
        from inversecoder.hub_cards.dataset_card import write_dataset_card
        config = load_config("{tmp_path / "r.yaml"}", output_dir="{tmp_path / "out"}")
        folder = build_dataset(config, progress=False, write_card=write_dataset_card).dataset_dir
        print(json.dumps({{"info": json.loads((folder / "build_info.json").read_text()),
                          "card": (folder / "README.md").read_text()}}))
    """,
    )
    commit = hub.history("model", GENERATOR_REPO)[0]
    generator = out["info"]["generator"]
    assert generator["model"] == GENERATOR_REPO and generator["revision"] == commit
    assert generator["hub"] == {
        "repo_id": GENERATOR_REPO,
        "repo_type": "model",
        "commit": commit,
        "url": f"{hub.url}/{GENERATOR_REPO}/tree/{commit}",
    }
    assert (
        f"**Generator model:** [`{GENERATOR_REPO}@{commit}`]({hub.url}/{GENERATOR_REPO}/tree/{commit})" in out["card"]
    )


def test_run_push_publishes_the_generator_then_the_dataset_then_the_model(
    hub, client_env, tiny_model_dir, source_repo, tmp_path
):
    """`inversecoder run CONFIG --push` as a user runs it, M trained by step 0 from a Hub corpus: M is pushed
    first, the dataset names it by the sha the Hub returned (and the corpus by its sha), the model card pins
    the dataset and M; a second run with nothing changed makes no commit at all."""
    repos = {"generator": f"{ORG}/run-push-generator", "data": f"{ORG}/run-push-data", "model": f"{ORG}/run-push-model"}
    recipe: dict[str, Any] = {
        "source": {"path": SOURCE_REPO, "limit": 8},
        "generator": {"model": None},  # step 0 trains M
        "summarize": {"num_samples": 2, "max_new_tokens": 8},
        "decontaminate": {"enabled": False},
        "dataset": {"name": "run-push", "version": "v2.0"},
        "train": {
            "base_model": str(tiny_model_dir),
            "global_batch_size": 4,
            "per_device_batch_size": 4,
            "warmup_steps": 1,
            "max_length": 256,
            "original_epochs": 1,
        },
        "evaluate": {"enabled": False},
        "push": {
            "generator_repo_id": repos["generator"],
            "dataset_repo_id": repos["data"],
            "model_repo_id": repos["model"],
            "model_tag": "v2.0",
        },
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    command = [
        sys.executable,
        "-m",
        "inversecoder.cli",
        "run",
        str(tmp_path / "r.yaml"),
        "--output-dir",
        str(tmp_path / "out"),
        "--push",
    ]
    # Neither the corpus nor the local base model has a card: the licenses are unknown and nobody stated them,
    # so nothing is published (not even M, pushed first) and one line says what to set.
    since = len(hub.requests)
    refused = subprocess.run(command, env=client_env, capture_output=True, text=True, timeout=600)
    OUTPUTS.append(refused.stdout + refused.stderr)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-3000:]
    (line,) = [line for line in refused.stderr.splitlines() if "refusing to publish" in line]
    assert "its license is `unknown`" in line and "set dataset.license" in line
    assert not [path for method, path, _ in new_requests(hub, since) if method == "POST"]
    assert all(hub.repo(kind, repos[name]) is None for name, kind in (("generator", "model"), ("data", "dataset")))

    recipe["dataset"] |= {"license": "apache-2.0"}
    recipe["push"] |= {"model_license": "apache-2.0"}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    result = subprocess.run(command, env=client_env, capture_output=True, text=True, timeout=600)
    OUTPUTS.append(result.stdout + result.stderr)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]

    generator_commit = hub.history("model", repos["generator"])[0]
    dataset_commit = hub.tags("dataset", repos["data"])["v2.0"]
    model_commit = hub.tags("model", repos["model"])["v2.0"]
    requests = [path for method, path, _ in hub.requests if method == "POST" and "/commit/" in path]
    assert [p.split("/")[3] + "/" + p.split("/")[4] for p in requests[-3:]] == [
        repos["generator"],
        repos["data"],
        repos["model"],
    ]  # the order: M, the dataset, InverseCoder

    published = hub.files("dataset", repos["data"], "v2.0")
    info = json.loads(published["build_info.json"])
    assert info["generator"]["hub"] == {
        "repo_id": repos["generator"],
        "repo_type": "model",
        "commit": generator_commit,
        "url": f"{hub.url}/{repos['generator']}/tree/{generator_commit}",
    }
    assert info["source"]["revision"] == source_repo and info["source"]["requested_revision"] == "main"
    data_card = published["README.md"].decode()
    assert (
        f"[`{repos['generator']}@{generator_commit}`]({hub.url}/{repos['generator']}/tree/{generator_commit})"
        in data_card
    )
    assert f"[`{SOURCE_REPO}@{source_repo}`]({hub.url}/datasets/{SOURCE_REPO}/tree/{source_repo})" in data_card

    model_card = ModelCard(hub.files("model", repos["model"], "v2.0")["README.md"].decode())
    assert model_card.data.get("datasets") == [repos["data"], SOURCE_REPO]
    assert dataset_commit in model_card.text and f"`{repos['generator']}@{generator_commit}`" in model_card.text
    assert f"**Generator's lineage:** `{tiny_model_dir}` fine-tuned" in model_card.text
    assert f"`{SOURCE_REPO}@{source_repo}`" in model_card.text
    generator_card = ModelCard(hub.files("model", repos["generator"])["README.md"].decode())
    assert (
        generator_card.data.get("datasets") == [SOURCE_REPO] and f"`{SOURCE_REPO}@{source_repo}`" in generator_card.text
    )
    assert f'from_pretrained("{repos["generator"]}", revision=revision)' in generator_card.text
    # The dataset's Reproduce block reads reproduce.yaml: the corpus and the M that was pushed, at their commits
    reproduce = yaml.safe_load(published["reproduce.yaml"])
    assert (reproduce["source"]["path"], reproduce["source"]["revision"]) == (SOURCE_REPO, source_repo)
    assert (reproduce["generator"]["model"], reproduce["generator"]["revision"]) == (
        repos["generator"],
        generator_commit,
    )
    assert f"hf download {repos['data']} reproduce.yaml --repo-type dataset --revision v2.0" in data_card
    assert (read_hub_record(tmp_path / "out" / "generator" / "model") or {}).get("commit") == generator_commit

    histories = {
        name: hub.history(kind, repo)
        for name, kind, repo in (
            ("generator", "model", repos["generator"]),
            ("data", "dataset", repos["data"]),
            ("model", "model", repos["model"]),
        )
    }
    again = subprocess.run(command, env=client_env, capture_output=True, text=True, timeout=600)
    OUTPUTS.append(again.stdout + again.stderr)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    assert all("up to date" in line for line in again.stdout.splitlines() if line.startswith("["))
    assert "no new commit" in again.stdout and "already holds this build" in again.stdout
    assert {
        name: hub.history(kind, repo)
        for name, kind, repo in (
            ("generator", "model", repos["generator"]),
            ("data", "dataset", repos["data"]),
            ("model", "model", repos["model"]),
        )
    } == histories
    assert hub.tags("model", repos["model"]) == {"v2.0": model_commit}


def test_an_unknown_license_nobody_stated_is_never_published(hub, client_env, tiny_model_dir, model_dir, tmp_path):
    """Built offline, the inputs' cards unread: `push` refuses the dataset and the model in one line each,
    saying what to set, and creates nothing on the Hub."""
    dataset = build(tiny_model_dir, tmp_path, seed=1, license=None)
    assert json.loads((dataset / "build_info.json").read_text())["license"]["license"] == "unknown"
    result = run_push(client_env, "dataset", dataset, f"{ORG}/unlicensed-data")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"refusing to publish {dataset}: its license is `unknown` (source corpus `{SAMPLE}`:" in result.stderr
    assert "set dataset.license" in result.stderr

    model = shutil.copytree(model_dir, tmp_path / "model")
    unread = {"license": None, "why": "a local folder without a card"}
    card = render_model_card(
        model_name="tiny-coder",
        base_model=str(tiny_model_dir),
        license={"license": "unknown", "set_by": None, "inputs": {"base model": {"of": str(tiny_model_dir)} | unread}},
        datasets=[],
        eval_results=EVAL_RESULTS,
        dataset={"path": str(dataset), "version": "v1.0", "fingerprint": "x"},
        generator={"model": str(tiny_model_dir), "revision": "-"},
        source=str(SAMPLE),
        chat_format="@@ Instruction\n{instruction}",
        train={"mode": "two-stage"},
        stages=[],
        seed=1,
        versions={},
    )
    card.save(model / "README.md")
    result = run_push(client_env, "model", model, f"{ORG}/unlicensed-model")
    assert result.returncode == 2 and "its card's license is `unknown`" in result.stderr, result.stderr
    assert "set push.model_license" in result.stderr
    assert (
        hub.repo("dataset", f"{ORG}/unlicensed-data") is None and hub.repo("model", f"{ORG}/unlicensed-model") is None
    )


# -- the token never leaks (last: every client output of the module is checked) ---------------------


def test_the_token_is_never_printed_or_written(hub, dataset_dir, model_dir, client_env):
    assert OUTPUTS and not any(TOKEN in text for text in OUTPUTS)
    places = [hub.root, dataset_dir, model_dir, Path(client_env["HF_HOME"])]
    leaks = [
        str(path)
        for place in places
        for path in Path(place).rglob("*")
        if path.is_file() and TOKEN.encode() in path.read_bytes()
    ]
    assert leaks == []
