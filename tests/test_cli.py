"""The console script as a user runs it: help, one-line errors, exit codes."""

import subprocess
import sys

import pytest

COMMANDS = ["build-dataset", "train", "evaluate", "run", "show-config", "make-tiny-model", "push"]


def cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "inversecoder.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help(command):
    result = cli(command, "--help")
    assert result.returncode == 0 and "usage: inversecoder " + command in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["build-dataset", "missing.yaml"], "config file not found: missing.yaml"),
        (
            ["build-dataset", "configs/demo.yaml", "source.lmit=3"],
            "unknown config field 'source.lmit' (did you mean 'source.limit'?)",
        ),
        (["build-dataset", "configs/demo.yaml", "source.path=nowhere.jsonl"], "source file not found: nowhere.jsonl"),
        (
            ["build-dataset", "configs/demo.yaml", "generator.backend=vllm"],
            "generator.backend: must be one of transformers, tgi; got 'vllm'",
        ),
        (["build-dataset", "configs/demo.yaml", "source.response_column=answer"], "source has no column 'answer'"),
        (["train", "configs/demo.yaml", "--output-dir", "/nonexistent/run"], "no dataset at /nonexistent/run/dataset"),
        (["run", "configs/demo.yaml", "--from", "nope", "--output-dir", "/tmp/never"], "unknown step 'nope'"),
        (
            ["run", "configs/demo.yaml", "--from", "evaluate", "--until", "dataset", "--output-dir", "/tmp/never"],
            "--from evaluate comes after --until dataset",
        ),
        (["run", "configs/demo.yaml", "generator.model=null", "train.base_model=null"], "set generator.model"),
        (
            ["run", "configs/demo.yaml", "train.base_model=nowhere/absent-model", "--output-dir", "/tmp/never"],
            "cannot get model 'nowhere/absent-model' from the Hub",
        ),
    ],
)
def test_configuration_errors_are_one_line_with_exit_2(args, message, tiny_model_dir):
    from conftest import REPO

    if args[0] == "build-dataset":  # a generator that exists, so only the error under test can fail the build
        args = [*args, f"generator.model={tiny_model_dir}"]
    result = cli(*args, cwd=REPO)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("inversecoder: error:")]
    assert len(lines) == 1 and message in lines[0]


def test_show_config_applies_overrides_and_output_dir():
    from conftest import REPO

    result = cli("show-config", "configs/demo.yaml", "summarize.num_samples=3", "--output-dir", "elsewhere", cwd=REPO)
    assert result.returncode == 0
    assert "num_samples: 3" in result.stdout and "output_dir: elsewhere" in result.stdout


def test_evaluate_scores_an_evalplus_samples_file(benchmarks_dir, tmp_path):
    import gzip
    import json

    with gzip.open(benchmarks_dir / "HumanEvalPlus-v0.1.10.jsonl.gz", "rt") as lines:
        problems = [json.loads(line) for line in lines][:3]
    samples = tmp_path / "samples.jsonl"
    rows = [{"task_id": p["task_id"], "solution": p["prompt"] + p["canonical_solution"]} for p in problems[:2]]
    rows.append({"task_id": problems[2]["task_id"], "completion": "    return None\n"})  # evalplus's other format
    samples.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = cli(
        "evaluate",
        "--samples",
        str(samples),
        "--benchmark",
        "humaneval",
        f"benchmarks_dir={benchmarks_dir}",
        "--output-dir",
        str(tmp_path / "out"),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "pass@1 base 0.667" in result.stdout
    saved = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert saved["benchmarks"]["humaneval"]["subset"] is True
    missing = cli("evaluate", "--samples", str(samples))
    assert missing.returncode == 2 and "--samples needs --benchmark" in missing.stderr
