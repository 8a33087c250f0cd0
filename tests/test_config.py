import re

import pytest

from inversecoder.core.config import describe_fields, load_config, RunConfig
from inversecoder.core.errors import ConfigError


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
    config = load_config(recipe, ["source.limit=7", "generator.endpoints=[http://a:1, http://b:2]", "summarize.temperature=1"], output_dir="out")
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
    b = load_config(None, ["generator.backend=tgi", "generator.model=org/m", "generator.endpoints=[http://h1:8080, http://h2:8080]",
                           "generator.concurrency=16", "generator.request_timeout=30", "generator.max_retries=9"])
    assert a.fingerprint() == b.fingerprint() and fingerprints(a) == fingerprints(b)  # one more server: same build
    c = load_config(None, ["generator.backend=tgi", "generator.model=org/m", "generator.endpoints=[http://h1:8080]",
                           "generator.top_n_tokens=2"])
    assert a.fingerprint() != c.fingerprint() and fingerprints(a)["dataset"] != fingerprints(c)["dataset"]
    assert "endpoints" in a.to_dict()["generator"]  # still saved beside the artifacts
