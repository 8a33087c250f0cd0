import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from inversecoder.core.config import DecontaminateConfig, RunConfig, describe_fields, load_config
from inversecoder.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
COMPAT = REPO / "tests" / "data" / "compat-f1ce952"


def test_defaults_are_the_papers():
    config = RunConfig()
    assert config.summarize.num_samples == 10
    assert config.summarize.temperature == 0.8 and config.summarize.repetition_penalty == 1.1
    assert config.summarize.stop == ["```"]
    assert config.train.learning_rate == 5e-5 and config.train.global_batch_size == 512
    assert config.train.optim == "adafactor" and config.train.max_length == 1024
    assert config.evaluate.max_new_tokens == 512


def test_yaml_then_overrides_then_output_dir(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("seed: 1\nsource:\n  path: a.jsonl\n  limit: 5\n")
    config = load_config(
        recipe,
        ["source.limit=7", "generator.endpoints=[http://a:1, http://b:2]", "summarize.temperature=1"],
        output_dir="out",
    )
    assert config.seed == 1 and config.source.path == "a.jsonl" and config.source.limit == 7
    assert config.generator.endpoints == ["http://a:1", "http://b:2"]
    assert config.summarize.temperature == 1.0 and config.output_dir == "out"


@pytest.mark.parametrize(
    "override, message",
    [
        ("source.lmit=3", "unknown config field 'source.lmit' (did you mean 'source.limit'?)"),
        ("source.limit=many", "source.limit: expected int"),
        ("summarize=3", "summarize: expected a mapping"),
        ("nonsense", "must look like section.field=value"),
        ("train.bogus.deep=1", "unknown config field 'train.bogus'"),
    ],
)
def test_bad_overrides_name_the_field(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [override])


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("source: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)


def test_every_field_is_documented_and_fingerprint_tracks_settings():
    rows = describe_fields()
    assert len(rows) > 40
    undocumented = [name for name, _default, doc in rows if not doc]
    assert undocumented == []
    a, b = RunConfig(), RunConfig()
    assert a.fingerprint() == b.fingerprint()
    b.summarize.temperature = 0.5
    assert a.fingerprint() != b.fingerprint()
    assert a.fingerprint("source") == b.fingerprint("source")


def test_how_results_are_fetched_is_not_part_of_any_fingerprint():
    from inversecoder.workflow import fingerprints

    a = load_config(None, ["generator.backend=tgi", "generator.model=org/m", "generator.endpoints=[http://h1:8080]"])
    b = load_config(
        None,
        [
            "generator.backend=tgi",
            "generator.model=org/m",
            "generator.endpoints=[http://h1:8080, http://h2:8080]",
            "generator.concurrency=16",
            "generator.request_timeout=30",
            "generator.max_retries=9",
        ],
    )
    assert a.fingerprint() == b.fingerprint() and fingerprints(a) == fingerprints(b)  # one more server: same build
    # The embedded backend's replica count spreads the same batches over more copies of the model: same results.
    one, two = (load_config(None, ["generator.device=cpu", f"generator.replicas={n}"]) for n in (1, 2))
    assert one.fingerprint() == two.fingerprint() == load_config(None, ["generator.device=cpu"]).fingerprint()
    assert fingerprints(one) == fingerprints(two)
    assert "replicas" in two.to_dict()["generator"]  # saved beside the artifacts all the same
    c = load_config(
        None,
        [
            "generator.backend=tgi",
            "generator.model=org/m",
            "generator.endpoints=[http://h1:8080]",
            "generator.top_n_tokens=2",
        ],
    )
    assert a.fingerprint() != c.fingerprint() and fingerprints(a)["dataset"] != fingerprints(c)["dataset"]
    assert "endpoints" in a.to_dict()["generator"]  # still saved beside the artifacts


# -- every value is checked when the config is read ------------------------------------------------
def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "inversecoder.cli", *args], capture_output=True, text=True, cwd=REPO, timeout=120
    )


def one_line_error(result) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("inversecoder: error: "), result.stderr
    return lines[0].removeprefix("inversecoder: error: ")


@pytest.mark.parametrize("value", ["0", "-3"])
def test_no_candidates_is_refused_by_the_cli(value):
    # Before: an empty dataset and exit 0.
    message = one_line_error(cli("show-config", "configs/demo.yaml", f"summarize.num_samples={value}"))
    assert message == f"summarize.num_samples: must be >= 1, got {value}"


def test_sft_args_typo_is_refused_by_the_cli_with_a_suggestion():
    message = one_line_error(cli("show-config", "configs/demo.yaml", "train.sft_args={hub_tokn: x}"))
    assert message == "train.sft_args.hub_tokn: not a trl.SFTConfig field (did you mean 'hub_token'?)"


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.sft_args={learning_rate: abc}", "train.sft_args.learning_rate: expected float, got 'abc'"),
        ("train.sft_args={packing: maybe}", "train.sft_args.packing: expected bool, got 'maybe'"),
        (
            "train.sft_args={num_train_epochs: -5}",
            "train.sft_args.num_train_epochs: must be > 0.0, got -5 (as train.generated_epochs)",
        ),
        (
            "train.sft_args={per_device_train_batch_size: 100000000}",
            (
                "train.sft_args.per_device_train_batch_size: must be <= 4096, got 100000000 "
                "(as train.per_device_batch_size)"
            ),
        ),
        (
            "train.sft_args={max_length: 100000000000}",
            "train.sft_args.max_length: must be <= 1048576, got 100000000000 (as train.max_length)",
        ),
    ],
)
def test_sft_args_values_are_checked_like_the_fields_they_shadow(override, message):
    assert one_line_error(cli("show-config", "configs/demo.yaml", override)) == message


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.learning_rate=-0.001", "train.learning_rate: must be > 0.0, got -0.001"),
        ("train.learning_rate=1e-4", "write it as 1.0e-5"),  # YAML 1.1 reads 1e-4 as text: say so
        ("evaluate.min_time_limit=-1", "evaluate.min_time_limit: must be > 0.0, got -1"),
        ("generator.request_timeout=0", "generator.request_timeout: must be > 0.0, got 0"),
        ("summarize.temperature=-0.5", "summarize.temperature: must be >= 0.0, got -0.5"),
        ("summarize.top_p=1.5", "summarize.top_p: must be <= 1.0, got 1.5"),
        ("decontaminate.semantic_threshold=1.2", "decontaminate.semantic_threshold: must be <= 1.0, got 1.2"),
        ("dedup.thresholds=[0.6, 7]", "dedup.thresholds[1]: must be <= 1.0, got 7"),
        ("train.global_batch_size=0", "train.global_batch_size: must be >= 1, got 0"),
        ("generator.concurrency=0", "generator.concurrency: must be >= 1, got 0"),
        ("generator.replicas=0", "generator.replicas: must be >= 1, got 0"),
        (
            "generator={device: 'cuda:1', replicas: 2}",
            "generator.replicas: 2 copies need device auto, cuda or cpu; cuda:1 is one device",
        ),
        ("summarize.temperature=.nan", "summarize.temperature: expected a finite number, got nan"),
        # sizes that cannot fit in memory
        ("generator.max_batch_size=1000000000", "generator.max_batch_size: must be <= 4096, got 1000000000"),
        ("summarize.num_samples=1000", "summarize.num_samples: must be <= 256, got 1000"),
        ("summarize.max_new_tokens=2000000", "summarize.max_new_tokens: must be <= 1048576, got 2000000"),
        # enumerations, with a suggestion when one is close
        (
            "train.mode=two-stag",
            "train.mode: must be one of two-stage, mix, original; got 'two-stag' (did you mean 'two-stage'?)",
        ),
        (
            "train.optim=adamw_torh",
            (
                "train.optim: not a transformers optim name (OptimizerNames); got 'adamw_torh' "
                "(did you mean 'adamw_torch'?)"
            ),
        ),
        ("train.lr_scheduler_type=cosin", "(did you mean 'cosine'?)"),
        ("train.bf16=maybe", "train.bf16: must be one of auto, true, false; got 'maybe'"),
        ("train.kernels=ligr", "train.kernels: must be one of auto, liger, none; got 'ligr' (did you mean 'liger'?)"),
        (
            "evaluate.sandbox=namespace",
            (
                "evaluate.sandbox: must be one of auto, namespaces+uid, namespaces, uid, rlimits; got 'namespace' "
                "(did you mean 'namespaces'?)"
            ),
        ),
        (
            "evaluate.benchmarks=[humaneval, mbp]",
            "evaluate.benchmarks[1]: must be one of humaneval, mbpp; got 'mbp' (did you mean 'mbpp'?)",
        ),
        (
            "decontaminate.semantic_runtime=onnx",
            "decontaminate.semantic_runtime: must be one of auto, torch, onnxruntime, onnxruntime-int8",
        ),
        ("generator.dtype=fp16", "generator.dtype: must be one of auto, bfloat16, float16, float32; got 'fp16'"),
        (
            "generator.backend=llamacpp",
            "generator.backend: must be one of transformers, vllm-local, tgi, vllm, sglang, openai; got 'llamacpp'",
        ),
        # what training or a backend would only have found hours later
        ("train.sft_args={output_dir: elsewhere}", "train.sft_args.output_dir: set by the recipe"),
        ("train.attn_implementation=flash", "train.attn_implementation: must be one of auto, eager, sdpa"),
        ("evaluate.n_samples=10", "evaluate.n_samples: 10 solutions per task need evaluate.temperature > 0"),
        ("generator.endpoints=[h1:8080]", "generator.endpoints[0]: 'h1:8080' is not an http(s)://host:port URL"),
        (
            "generator.endpoints=[http://h1:8080, http://h1:8080/]",
            "generator.endpoints[1]: 'http://h1:8080/' is listed twice",
        ),
    ],
)
def test_ranges_and_enumerations_are_one_line_errors(override, message):
    with pytest.raises(ConfigError) as caught:
        load_config(None, [override])
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_unknown_sft_args_keys_name_the_closest_field():
    with pytest.raises(
        ConfigError,
        match=re.escape("train.sft_args.learning_rat: not a trl.SFTConfig field (did you mean 'learning_rate'?)"),
    ):
        load_config(None, ["train.sft_args={learning_rat: 0.1}"])
    assert load_config(None, ["train.sft_args={weight_decay: 0.1}"]).train.sft_args == {"weight_decay": 0.1}


def test_the_config_accepts_exactly_the_sft_args_the_recipe_accepts():
    import dataclasses

    import trl

    from inversecoder.core.config import RECIPE_SFT_ARGS, RESERVED_SFT_ARGS
    from inversecoder.trainers.recipe import InverseCoderSFTConfig

    ours = {f.name for f in dataclasses.fields(InverseCoderSFTConfig) if f.init}
    theirs = {f.name for f in dataclasses.fields(trl.SFTConfig) if f.init}
    assert ours - theirs == set(RECIPE_SFT_ARGS) | {"stage"} and set(RESERVED_SFT_ARGS) <= ours


def test_defaults_are_valid_and_transformers_knows_the_default_optimizer_and_schedule():
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    defaults = RunConfig()
    assert RunConfig.model_validate(defaults.to_dict()) == defaults
    assert defaults.train.optim in {o.value for o in OptimizerNames}
    assert defaults.train.lr_scheduler_type in {s.value for s in SchedulerType}
    for name in RunConfig.model_fields:
        section = getattr(defaults, name)
        if hasattr(section, "SECTION"):
            assert name == section.SECTION  # errors of a section made on its own name it as in the file


def test_yaml_booleans_and_numbers_are_read_as_text_where_text_is_expected(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  bf16: true\n  packing: false\n  learning_rate: 1\ndataset:\n  version: 1.0\n")
    config = load_config(recipe)
    assert (config.train.bf16, config.train.packing, config.dataset.version) == ("true", "false", "1.0")
    assert config.train.learning_rate == 1.0 and type(config.to_dict()["train"]["learning_rate"]) is float
    assert type(config.to_dict()["seed"]) is int
    with pytest.raises(ConfigError, match=re.escape("train.enabled: expected bool (true or false), got 'yes please'")):
        load_config(None, ["train.enabled=yes please"])


def test_sections_made_in_code_and_assignments_are_checked_too():
    from inversecoder.core.config import DecontaminateConfig, GeneratorConfig, TrainConfig

    assert DecontaminateConfig(semantic=False).semantic is False
    yaml_true: dict[str, Any] = {"packing": True}  # a bool, as YAML reads `true` (past mypy)
    assert TrainConfig(**yaml_true).packing == "true"
    misspelt: dict[str, Any] = {"bakend": "tgi"}
    with pytest.raises(
        ConfigError, match=re.escape("unknown config field 'generator.bakend' (did you mean 'generator.backend'?)")
    ):
        GeneratorConfig(**misspelt)
    config = RunConfig()
    config.train.mode = "original"
    typo: Any = "orig"  # not a mode: assignments are checked at run time (past mypy)
    with pytest.raises(
        ConfigError,
        match=re.escape("train.mode: must be one of two-stage, mix, original; got 'orig' (did you mean 'original'?)"),
    ):
        config.train.mode = typo
    copy = config.model_copy(deep=True)
    copy.generator.model = "elsewhere"
    assert config.generator.model is None and copy.train.mode == "original"
    assert config.layout.dataset == Path("outputs/run/dataset") and config.output == Path("outputs/run")


def alias_bomb(levels: int) -> str:
    """Anchors referencing anchors, each a list of the previous one 10 times: 1 KB that expands 10**levels times."""
    lines = ["train:", "  sft_args:", "    l1: &l1 [" + ", ".join(["lol"] * 10) + "]"]
    for level in range(2, levels + 1):
        lines.append(f"    l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def test_a_yaml_alias_bomb_is_refused_in_one_line(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(alias_bomb(5))  # before: accepted, and each saved copy of the config took ~2 MB
    assert bomb.stat().st_size < 1024
    with pytest.raises(ConfigError) as caught:
        load_config(bomb)
    message = str(caught.value)
    assert "\n" not in message and "more than 50000 values once its YAML aliases are expanded" in message
    flow = ", ".join(
        [f"&l1 [{', '.join(['lol'] * 10)}]"] + [f"&l{n} [{', '.join([f'*l{n - 1}'] * 10)}]" for n in range(2, 6)]
    )
    with pytest.raises(ConfigError, match="more than 50000 values"):  # the same, as a command-line override
        load_config(None, [f"decontaminate.allow_list=[{flow}]"])
    long_list = "[" + ", ".join(["x"] * 10_001) + "]"
    with pytest.raises(
        ConfigError, match=re.escape("decontaminate.allow_list: must hold at most 10000 items, got 10001")
    ):
        load_config(None, ["decontaminate.allow_list=" + long_list])


def test_saved_configs_hold_plain_values(tmp_path):
    from inversecoder.core.config import save_config

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "decontaminate:\n  benchmarks: &b [humaneval]\nevaluate:\n  benchmarks: *b\n"
        "train:\n  bf16: true\n  sft_args: {weight_decay: 0.1}\n"
    )
    config = load_config(recipe)
    save_config(config, tmp_path / "saved.yaml")
    text = (tmp_path / "saved.yaml").read_text()
    assert "&" not in text and "*" not in text and "!!" not in text  # no anchors, aliases or Python tags
    assert yaml.safe_load(text) == config.to_dict()
    assert load_config(tmp_path / "saved.yaml") == config


#: Decontamination settings added by the cascade (issue #16), with their defaults: they change what a build
#: removes, so the dataset step of a folder built before them reruns (and what follows it).
CASCADE_FIELDS: dict[str, Any] = {
    "action": "remove",
    "original": True,
    "retrieval_top_k": 5,
    "retrieval_floor": DecontaminateConfig().retrieval_floor,
    "retrieval_code_floor": DecontaminateConfig().retrieval_code_floor,
    "execution": True,
    "execution_min_tokens": DecontaminateConfig().execution_min_tokens,
    "sandbox": "auto",
    "allow_weak_sandbox": False,
    "judge": True,
    "judge_model": None,
    "judge_threshold": DecontaminateConfig().judge_threshold,
    "judge_min_mass": DecontaminateConfig().judge_min_mass,
}


#: Sections added since (issue #20: `preferences`, the DPO pairs), with their defaults: a folder built before
#: them lacks their config, so its dataset step reruns too.
ADDED_SECTIONS: dict[str, dict[str, Any]] = {"preferences": {"enabled": True, "min_margin": 0.2, "rejected": "lowest"}}


#: The dataset's license fields (issue #20), with their defaults: unset, the license follows the corpus's and
#: M's cards instead of a default apache-2.0, so the card (the dataset step's output) changes.
LICENSE_FIELDS: dict[str, Any] = {"license": None, "license_name": None, "license_link": None}
OLD_LICENSE = "apache-2.0"


def without_cascade_fields(monkeypatch) -> None:
    """Make fingerprints as the config before the cascade did (its fields, and the sections added since, left
    out of the config and of the steps), and before the dataset's license followed its inputs
    (`dataset.license: apache-2.0`, no name or link)."""
    from inversecoder import workflow

    result_dict = RunConfig.result_dict

    def older(self):
        data = result_dict(self)
        for name in CASCADE_FIELDS:
            data["decontaminate"].pop(name)
        for name in ADDED_SECTIONS:
            data.pop(name)
        for name in LICENSE_FIELDS:
            data["dataset"].pop(name, None)  # (license_name and license_link: left out at their defaults)
        data["dataset"]["license"] = self.dataset.license or OLD_LICENSE
        return data

    monkeypatch.setattr(RunConfig, "result_dict", older)
    steps = [
        dataclasses.replace(step, sections=tuple(s for s in step.sections if s not in ADDED_SECTIONS))
        for step in workflow.STEPS
    ]
    monkeypatch.setattr(workflow, "STEPS", tuple(steps))


def test_fingerprints_of_existing_output_folders_change_only_through_the_cascade_and_the_license(monkeypatch):
    """tests/data/compat-f1ce952 was built by the dataclass config: its step fingerprint and its saved
    config come out the same but for the cascade's settings, which change what the build removes, and the
    sections added since (`preferences`), which add a config to the dataset, and the dataset's license, which
    now follows the corpus's and M's cards."""
    from inversecoder.core.config import DATASET_SECTIONS, config_yaml
    from inversecoder.workflow import fingerprints

    config = load_config(COMPAT / "config.yaml")  # output_dir and paths are plain strings: any cwd
    assert config.output_dir == "out"
    recorded = json.loads((COMPAT / "out" / "steps.json").read_text())
    assert fingerprints(config)["dataset"] != recorded["dataset"] == "a6fdcaad98f7fea3"
    with monkeypatch.context() as patch:
        without_cascade_fields(patch)
        assert fingerprints(config)["dataset"] == recorded["dataset"]
    # The saved config is the old one plus the fields added since (each with its default).
    # (`fidelity` and its fields, issue #20, stay out of fingerprints at their defaults: asserted above)
    added: dict[str, dict[str, Any]] = {
        "evaluate": {"allow_weak_sandbox": False},
        "decontaminate": CASCADE_FIELDS | {"execution_workers": 0, "original_action": None},
        "generator": {
            "vllm_args": {},
            "replicas": None,
            "max_failed_fraction": 0.001,
            "retry_rounds": 2,
            "answer_tokens": "variants",
        },
        "train": {"num_processes": None, "strategy": "auto"},
        "push": {
            "generator_repo_id": None,
            "code_url": None,
            "code_revision": None,
            "model_license": None,
            "model_license_name": None,
            "model_license_link": None,
        },
        "plan": {"gpu_memory_gb": 80.0, "client_us_per_request": 1300.0},
        "source": {"duplicates": "remove"},
        "summarize": {"language_tag": "normalized"},
        "dataset": {"license_name": None, "license_link": None},
    }
    saved = yaml.safe_load(config_yaml(config))
    assert saved.pop("fidelity") == "improved"
    for section, fields in added.items():
        assert {name: saved[section].pop(name) for name in fields} == fields
    assert {name: saved.pop(name) for name in ADDED_SECTIONS} == ADDED_SECTIONS
    assert saved["dataset"]["license"] is None  # changed: was apache-2.0, now follows the inputs' cards
    saved["dataset"]["license"] = OLD_LICENSE
    assert saved == yaml.safe_load((COMPAT / "out" / "run_config.yaml").read_text())
    # The dataset's build_config.yaml now holds only the sections that built it (the old one held them all).
    built = yaml.safe_load((COMPAT / "out" / "dataset" / "build_config.yaml").read_text())
    now = yaml.safe_load(config_yaml(config, DATASET_SECTIONS))
    assert now.pop("fidelity") == "improved"
    for section in ("decontaminate", "generator", "source", "summarize", "dataset"):
        for name in added[section]:
            now[section].pop(name)
    now["dataset"]["license"] = OLD_LICENSE
    assert {name: now.pop(name) for name in ADDED_SECTIONS} == ADDED_SECTIONS
    assert now == {k: built[k] for k in DATASET_SECTIONS if k not in ADDED_SECTIONS and k != "fidelity"}


def test_fingerprints_of_the_shipped_recipes_are_those_of_the_dataclass_config(monkeypatch):
    # Computed with the dataclass config (487bc64) for the same files and overrides, the cascade's fields aside.
    without_cascade_fields(monkeypatch)
    demo = load_config(REPO / "configs" / "demo.yaml", ["generator.model=/some/path"])
    assert demo.fingerprint() == "e70f22979ba29e1b"
    assert RunConfig().fingerprint() == "c5d45692f9f93c93"
    # The paper recipe now asks for `fidelity: paper` and pins the corpus (issue #20): without them, the old one.
    paper = REPO / "configs" / "paper-cl-7b.yaml"
    assert load_config(paper, ["fidelity=improved", "source.revision=null"]).fingerprint() == "ad040eb38446212f"
    assert load_config(paper).fingerprint() != "ad040eb38446212f"


def test_the_preferences_config_and_the_cards_license_rebuild_the_dataset_but_retrain_nothing():
    from inversecoder.workflow import CHAINED_DATASET_LICENSE, fingerprints

    base = fingerprints(load_config(None, output_dir="/tmp/x"))
    for overrides in (
        ["preferences.min_margin=0.5"],
        ["preferences.enabled=false"],
        [f"dataset.license={CHAINED_DATASET_LICENSE}"],  # what any license chains as
        ["dataset.license=llama2"],  # as a push of an unknown license asks: it must not retrain
        ["dataset.license_name=deepseek", "dataset.license_link=https://example.org/LICENSE"],
    ):
        changed = fingerprints(load_config(None, overrides, output_dir="/tmp/x"))
        assert changed["dataset"] != base["dataset"], overrides
        assert {k: v for k, v in changed.items() if k != "dataset"} == {
            k: v for k, v in base.items() if k != "dataset"
        }, overrides
    other = fingerprints(load_config(None, ["dataset.include_original=false"], output_dir="/tmp/x"))
    assert other["train"] != base["train"]  # what training reads still chains
