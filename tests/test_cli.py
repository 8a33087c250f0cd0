"""The console script as a user runs it: help, one-line errors, exit codes."""

import contextlib
import os
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
            ["build-dataset", "configs/demo.yaml", "generator.backend=llamacpp"],
            "generator.backend: must be one of transformers, vllm-local, tgi, vllm, sglang, openai; got 'llamacpp'",
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
        (["train", "configs/demo.yaml", "train.max_length=0"], "train.max_length: must be >= 1, got 0"),
        (["build-dataset", "configs/demo.yaml", "--output-dir", "README.md"], "output folder README.md is a file"),
        (
            ["run", "configs/demo.yaml", "--output-dir", "README.md/run"],
            "output folder README.md/run cannot be created: ",
        ),
        (["build-dataset", "configs/demo.yaml", "--output-dir", "/"], "output folder / is the root of the filesystem"),
        (["train", "configs/demo.yaml", "--output-dir", "/"], "output folder / is the root of the filesystem"),
        (
            ["evaluate", "--samples", "README.md", "--benchmark", "humaneval", "--output-dir", "pyproject.toml"],
            "output folder pyproject.toml is a file, not a folder",
        ),
        (["make-tiny-model", "README.md"], "model folder README.md is a file, not a folder"),
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


def test_a_config_file_that_is_not_utf8_is_one_line(tmp_path):
    recipe = tmp_path / "latin1.yaml"
    recipe.write_bytes("dataset:\n  name: caf\u00e9\n".encode("latin-1"))
    result = cli("show-config", str(recipe))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (
        result.stderr.strip()
        == f"inversecoder: error: {recipe} is not UTF-8 text (invalid continuation byte at byte 20): save it as UTF-8"
    )


@contextlib.contextmanager
def tmpfs(folder, *options):
    """A small tmpfs mounted on `folder` (root only: a read-only or full disk that root cannot write either)."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@contextlib.contextmanager
def read_only_folder(folder):
    """chmod 0555 stops a user; root writes through it, so for root the folder is a read-only mount."""
    if os.geteuid() != 0:
        folder.mkdir()
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(0o755)
    else:
        with tmpfs(folder, "ro", "size=1m"):
            yield folder


def one_line_error(result) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("inversecoder: error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_read_only_output_folder_is_one_line(tmp_path, tiny_model_dir):
    from conftest import REPO

    with read_only_folder(tmp_path / "ro") as folder:
        for out in (folder, folder / "run"):
            result = cli(
                "build-dataset",
                "configs/demo.yaml",
                f"generator.model={tiny_model_dir}",
                "--output-dir",
                str(out),
                cwd=REPO,
            )
            line = one_line_error(result)
            assert f"output folder {out} is" in line and ("read-only" in line or "not writable" in line)
        result = cli("make-tiny-model", str(folder / "tiny"))
        assert "model folder" in one_line_error(result)


def test_a_full_disk_is_one_line_before_and_during_a_build(tmp_path, tiny_model_dir):
    from conftest import REPO

    with tmpfs(tmp_path / "full", "size=64k") as disk:
        (disk / "filler").write_bytes(b"")
        with contextlib.suppress(OSError), (disk / "filler").open("wb") as filler:
            filler.write(b"0" * 128 * 1024)  # fills the disk
        args = ["build-dataset", "configs/demo.yaml", f"generator.model={tiny_model_dir}", "source.limit=4"]
        line = one_line_error(cli(*args, "--output-dir", str(disk / "out"), cwd=REPO))
        assert f"no space left on the device of output folder {disk / 'out'}" in line
        (disk / "filler").unlink()  # room to start; the model calls' cache fills it up
        line = one_line_error(cli(*args, "--output-dir", str(disk / "out"), cwd=REPO))
        assert "no space left on the device" in line and "free some space and rerun" in line
