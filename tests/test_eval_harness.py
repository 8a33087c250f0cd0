"""The evaluation harness against the real EvalPlus data, evalplus's own checker and our sandbox.

One module (over 500 lines) because its tests share the benchmark data, ground truth and sandbox fixtures.

Correctness anchors: canonical solutions pass (164/164 on HumanEval+ with the HumanEval/32 fix, where
evalplus 0.3.1's own checker gives 163; 378/378 on MBPP+) and wrong solutions score 0. The default
run checks a fast subset (the first tasks and every special oracle); the full anchors take several
minutes (MBPP+'s extreme inputs: Mbpp/599's ground truth alone is over a minute) and run with
`pytest -m slow tests/test_eval_harness.py`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import pickle
import subprocess
import sys

import pytest

from inversecoder.core import checker
from inversecoder.core.backends.base import Backend, BackendInfo, CachedModel, Completion
from inversecoder.core.cache import ResultCache
from inversecoder.core.config import EvalConfig
from inversecoder.core.errors import ConfigError, UserError
from inversecoder.core.sandbox import NAMESPACE_LEVELS, UID_BASE, UID_LEVELS
from inversecoder.eval import generation, harness, scoring

SYSTEM = (
    "You are an exceptionally intelligent coding assistant that consistently delivers accurate and "
    "reliable responses to user instructions."
)
SECRET = "hf_CANARY_harness_test_do_not_leak_9876543210"
SPECIAL_ORACLES = ["Mbpp/2", "Mbpp/558", "Mbpp/581", "Mbpp/737", "Mbpp/787", "Mbpp/794"]


def first_ids(benchmark, n: int = 8) -> list[str]:
    return list(benchmark.problems)[:n]


def canonical(benchmark, task_id: str) -> str:
    """How evalplus itself forms the reference program (get_groundtruth), for both datasets."""
    problem = benchmark.problems[task_id]
    return problem["prompt"] + problem["canonical_solution"]


def returns_none(benchmark, task_id: str) -> str:
    problem = benchmark.problems[task_id]
    if benchmark.name == "humaneval":
        return problem["prompt"] + "    return None\n"
    return f"def {problem['entry_point']}(*args):\n    return None\n"


def check(benchmark, samples, sandbox, **kwargs):
    return scoring.check_solutions(
        benchmark, samples, min_time_limit=1.0, gt_time_limit_factor=4.0, sandbox=sandbox, **kwargs
    )


# -- checking ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["humaneval", "mbpp"])
def test_canonical_solutions_pass(benchmarks, sandbox, name):
    benchmark = benchmarks[name]
    extra = SPECIAL_ORACLES if name == "mbpp" else ["HumanEval/32"]
    ids = first_ids(benchmark) + [t for t in extra if t not in first_ids(benchmark)]
    samples = [{"task_id": t, "solution": canonical(benchmark, t)} for t in ids]
    result = check(benchmark, samples, sandbox)
    assert result["pass@1"] == {"base": 1.0, "plus": 1.0}, {
        t: o for t, o in result["tasks"].items() if not o["passed_plus"]
    }
    assert list(result["tasks"]) == [t for t in benchmark.problems if t in ids]
    for outcome in result["tasks"].values():
        assert outcome["base_status"] == outcome["plus_status"] == "pass"
        assert outcome["passed_base"] and outcome["passed_plus"]
        assert outcome["n"] == 1 and outcome["n_passed_plus"] == 1
    assert result["sandbox"]["level"] == sandbox.level and result["sandbox_errors"] == 0


@pytest.mark.parametrize("name", ["humaneval", "mbpp"])
def test_wrong_solutions_score_zero(benchmarks, sandbox, name):
    benchmark = benchmarks[name]
    ids = first_ids(benchmark, 4)
    samples = [{"task_id": t, "solution": returns_none(benchmark, t)} for t in ids[:2]]
    samples += [{"task_id": t, "solution": "def broken(:\n    return 1\n"} for t in ids[2:]]
    samples.append({"task_id": ids[0], "solution": ""})  # a failed generation
    result = check(benchmark, samples, sandbox)
    assert result["pass@1"] == {"base": 0.0, "plus": 0.0}
    assert all(s["base_status"] == "fail" and not s["passed_plus"] for s in result["samples"])
    assert result["tasks"][ids[0]]["n"] == 2


def test_several_samples_per_task_use_the_unbiased_estimator(benchmarks, sandbox):
    benchmark = benchmarks["humaneval"]
    a, b = first_ids(benchmark, 2)
    samples = [
        {"task_id": a, "solution": canonical(benchmark, a)},
        {"task_id": a, "solution": returns_none(benchmark, a)},
        {"task_id": b, "solution": returns_none(benchmark, b)},
        {"task_id": b, "solution": returns_none(benchmark, b)},
    ]
    result = check(benchmark, samples, sandbox)
    assert result["pass@1"] == {"base": 0.25, "plus": 0.25}  # (1/2 + 0/2) / 2
    assert result["tasks"][a]["n_passed_plus"] == 1 and len(result["tasks"][a]["samples"]) == 2
    assert [r["base_status"] for r in result["eval"][a]] == ["pass", "fail"]  # evalplus format, sample order


def test_pass_at_k_with_n_samples(benchmarks, sandbox):
    """n = 10 per task: pass@1 and pass@10 by 1 - C(n-c, k) / C(n, k), averaged over tasks."""
    benchmark = benchmarks["mbpp"]
    right, wrong = canonical(benchmark, "Mbpp/793"), returns_none(benchmark, "Mbpp/793")
    samples = [{"task_id": "Mbpp/793", "solution": right if i < 3 else wrong} for i in range(10)]
    samples += [{"task_id": "Mbpp/4", "solution": returns_none(benchmark, "Mbpp/4")} for _ in range(9)]
    samples.append({"task_id": "Mbpp/4", "solution": canonical(benchmark, "Mbpp/4")})
    result = check(benchmark, samples, sandbox)

    def estimate(n: int, c: int, k: int) -> float:
        return 1.0 - math.comb(n - c, k) / math.comb(n, k)

    for k in (1, 10):
        expected = (estimate(10, 3, k) + estimate(10, 1, k)) / 2
        assert result[f"pass@{k}"]["plus"] == pytest.approx(expected)
        assert result[f"pass@{k}"]["base"] == pytest.approx(expected)
    assert result["pass@1"]["plus"] == pytest.approx(0.2) and result["pass@10"]["plus"] == 1.0
    assert "pass@100" not in result
    assert result["tasks"]["Mbpp/793"]["n_passed_plus"] == 3 and result["tasks"]["Mbpp/4"]["n"] == 10


def test_humaneval_32_is_fixed_and_evalplus_own_checker_is_not(benchmarks, sandbox):
    """evalplus 0.3.1's find_zero oracle `continue`s before recording a pass: its own checker fails
    every solution of HumanEval/32, the canonical one included. Ours records the pass."""
    import evalplus.evaluate

    benchmark = benchmarks["humaneval"]
    problem, solution = benchmark.problems["HumanEval/32"], canonical(benchmark, "HumanEval/32")
    expected = scoring.expected_outputs(benchmark, ["HumanEval/32"])["HumanEval/32"]
    theirs = evalplus.evaluate.check_correctness("humaneval", 0, problem, solution, expected, fast_check=True)
    assert theirs["base"][0] == theirs["plus"][0] == "fail" and list(theirs["base"][1]) == []
    samples = [{"task_id": "HumanEval/32", "solution": solution}]
    ours = check(benchmark, samples, sandbox)
    assert ours["tasks"]["HumanEval/32"]["passed_plus"] and ours["checker"]["fixes"] == [checker.FIND_ZERO_FIX]
    unfixed = check(benchmark, samples, sandbox, fix_humaneval_32=False)
    assert unfixed["tasks"]["HumanEval/32"]["base_status"] == "fail" and unfixed["checker"]["fixes"] == []
    wrong = check(
        benchmark, [{"task_id": "HumanEval/32", "solution": returns_none(benchmark, "HumanEval/32")}], sandbox
    )
    assert not wrong["tasks"]["HumanEval/32"]["passed_base"]  # the fix does not pass everything
    assert checker.find_zero_fix_applies()  # evalplus 0.3.1 still has the bug: the fix is needed


def test_subset_ground_truth_is_cached_under_its_own_hash(benchmarks, sandbox, tmp_path, monkeypatch):
    import evalplus.evaluate

    monkeypatch.setattr(evalplus.evaluate, "CACHE_DIR", str(tmp_path))
    benchmark = benchmarks["mbpp"]
    ids = first_ids(benchmark, 2)
    samples = [{"task_id": t, "solution": canonical(benchmark, t)} for t in ids]
    result = check(benchmark, samples, sandbox)
    subset_hash = result["groundtruth_hash"]
    assert subset_hash.startswith(benchmark.hash + "-") and subset_hash != benchmark.hash
    assert sorted(os.listdir(tmp_path)) == [f"{subset_hash}.pkl"]
    assert not (tmp_path / f"{benchmark.hash}.pkl").exists()
    assert scoring.groundtruth_hash(benchmark, reversed(ids)) == subset_hash  # order does not matter
    assert scoring.groundtruth_hash(benchmark, benchmark.problems) == benchmark.hash  # the full set shares evalplus's

    # a cache file truncated by a killed run (evalplus writes it in place) is recomputed, not trusted
    path = tmp_path / f"{subset_hash}.pkl"
    good = pickle.loads(path.read_bytes())
    path.write_bytes(path.read_bytes()[:100])
    recomputed = scoring.expected_outputs(benchmark, ids)
    assert {t: (o["base"], o["plus"]) for t, o in recomputed.items()} == {
        t: (o["base"], o["plus"]) for t, o in good.items()
    }
    assert pickle.loads(path.read_bytes()).keys() == good.keys() and sorted(os.listdir(tmp_path)) == [path.name]


def test_unknown_task_ids_are_rejected(benchmarks):
    with pytest.raises(UserError, match="not in MBPP"):
        scoring.check_solutions(benchmarks["mbpp"], [{"task_id": "Mbpp/1", "solution": ""}])


# -- hostile programs through the real checking path ------------------------------------------------
ATTACKS = {
    # each raises when blocked (the task fails) and returns when it got through (the task would pass)
    "infinite_loop": (
        "while True:\n    try:\n        while True:\n            pass\n    except BaseException:\n        pass"
    ),
    "fork_bomb": (
        "import posix\nforked = 0\nfor _ in range(64):\n    if posix.fork() == 0:\n"
        "        while True:\n            pass\n    forked += 1"
    ),
    "memory_bomb": "hoard = bytearray(2 ** 36)",
    "write_outside": (
        "import io\nwith io.open({canary!r} + '/written.txt', 'w') as handle:\n    handle.write('pwned')"
    ),
    "delete_files": (
        "import os, posix\nif os.path.exists({canary!r} + '/keep.txt'):\n    posix.unlink({canary!r} + '/keep.txt')"
    ),
    "read_secret": (  # looks for the variable, not the value: the value must never reach the results
        "import io, os\nfound = 'HF_TOKEN' in os.environ\nfor pid in os.listdir('/proc'):\n    try:\n"
        "        with io.open('/proc/' + pid + '/environ', 'rb') as handle:\n"
        "            found = found or b'HF_TOKEN=' in handle.read()\n    except OSError:\n        pass\n"
        "if not found:\n    raise LookupError('no secret in sight')"
    ),
    "socket": "import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1).close()",
    "kill_parent": (
        "import os, posix, signal, time\nparent = os.getppid()\nposix.kill(parent, signal.SIGKILL)\n"
        "posix.kill(-1, signal.SIGKILL)\ntime.sleep(0.2)\ntry:\n    posix.kill(parent, 0)\n"
        "except ProcessLookupError:\n    parent = None\n"
        "if parent is not None:\n    raise RuntimeError('parent survived')"
    ),
}
# what each isolation level guarantees to stop (sandbox.py's table)
STOPPED_AT = {
    "infinite_loop": NAMESPACE_LEVELS + UID_LEVELS + ("rlimits",),
    "memory_bomb": NAMESPACE_LEVELS + UID_LEVELS + ("rlimits",),
    "fork_bomb": UID_LEVELS,
    "write_outside": NAMESPACE_LEVELS,
    "delete_files": NAMESPACE_LEVELS,
    "read_secret": NAMESPACE_LEVELS + UID_LEVELS,
    "socket": NAMESPACE_LEVELS,
    "kill_parent": NAMESPACE_LEVELS + UID_LEVELS,
}


def hostile_solution(benchmark, task_id: str, attack: str, **values) -> str:
    """The canonical solution, with the attack run first on every call."""
    entry = benchmark.problems[task_id]["entry_point"]
    body = "\n".join("    " + line for line in ATTACKS[attack].format(**values).splitlines())
    return (
        f"{canonical(benchmark, task_id)}\n\n__real = {entry}\n\ndef __attack():\n{body}\n\n"
        f"def {entry}(*args):\n    __attack()\n    return __real(*args)\n"
    )


def test_hostile_solutions_fail_harm_nothing_and_the_evaluation_finishes(benchmarks, canary, listener, monkeypatch):
    """Each attack fails its task; the canary, the listener and the harness are untouched; the other
    samples in the same run are scored normally."""
    monkeypatch.setenv("HF_TOKEN", SECRET)  # the user's token, in the harness's environment
    benchmark = benchmarks["mbpp"]
    port, accepted = listener
    with scoring.open_sandbox(parallel=2) as box:
        attacks = [a for a, levels in STOPPED_AT.items() if box.level in levels]
        samples = [
            {
                "task_id": "Mbpp/793",
                "solution": hostile_solution(benchmark, "Mbpp/793", attack, canary=str(canary), port=port),
            }
            for attack in attacks
        ]
        samples += [{"task_id": t, "solution": canonical(benchmark, t)} for t in ("Mbpp/2", "Mbpp/3")]
        result = check(benchmark, samples, box)
        zygotes = []
        for worker in box._workers:
            assert worker is not None  # an open sandbox holds a started worker in every slot
            zygotes.append(worker.process.pid)
        for pid in zygotes:
            os.kill(pid, 0)  # every worker survived
        assert box.errors == 0
    outcomes = dict(zip(attacks, result["samples"], strict=False))  # the canonical samples follow the attacks
    assert {a: o["base_status"] for a, o in outcomes.items()} == {
        a: "timeout" if a == "infinite_loop" else "fail" for a in attacks
    }
    assert result["tasks"]["Mbpp/2"]["passed_plus"] and result["tasks"]["Mbpp/3"]["passed_plus"]
    assert result["tasks"]["Mbpp/793"]["n_passed_base"] == 0
    assert sorted(p.name for p in canary.iterdir()) == ["keep.txt"] and (canary / "keep.txt").read_text() == "precious"
    assert accepted == []
    assert [pid for pid in os.listdir("/proc") if pid.isdigit() and _uid(pid) >= UID_BASE] == []
    assert SECRET not in json.dumps(result, default=repr)
    skipped = sorted(set(ATTACKS) - set(attacks))
    assert not skipped or box.level not in NAMESPACE_LEVELS, skipped


def _uid(pid: str) -> int:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return -1


def test_evalplus_own_checker_lets_the_same_programs_through(benchmarks, canary, listener, monkeypatch):
    """Why the sandbox: under evalplus's own `check_correctness` these attacks succeed (against the
    test's own canaries), and their tasks pass."""
    import evalplus.evaluate

    monkeypatch.setenv("HF_TOKEN", SECRET)
    benchmark = benchmarks["mbpp"]
    port, accepted = listener
    problem = benchmark.problems["Mbpp/793"]
    expected = scoring.expected_outputs(benchmark, ["Mbpp/793"])["Mbpp/793"]
    for attack in ("read_secret", "socket", "write_outside", "delete_files"):
        solution = hostile_solution(benchmark, "Mbpp/793", attack, canary=str(canary), port=port)
        result = evalplus.evaluate.check_correctness("mbpp", 0, problem, solution, expected, fast_check=True)
        assert result["base"][0] == "pass", attack
    assert accepted and (canary / "written.txt").exists() and not (canary / "keep.txt").exists()


# -- agreement with evalplus.evaluate ---------------------------------------------------------------
def test_scores_agree_with_evalplus_evaluate(benchmarks, benchmarks_dir, tmp_path):
    """The same samples through `evalplus.evaluate` (on a dataset file cut to these tasks, since it
    insists on every task) and through `score_samples_file`: identical statuses, except HumanEval/32,
    which only our fixed checker passes."""
    benchmark = benchmarks["humaneval"]
    ids = ["HumanEval/0", "HumanEval/2", "HumanEval/32", "HumanEval/39", "HumanEval/55"]
    with gzip.open(benchmarks_dir / "HumanEvalPlus-v0.1.10.jsonl.gz", "rt") as source:
        rows = [line for line in source if json.loads(line)["task_id"] in ids]
    dataset = tmp_path / "HumanEvalPlus-subset.jsonl"
    dataset.write_text("".join(rows))
    samples = tmp_path / "samples.jsonl"
    lines = []
    for task_id in ids:
        problem = benchmark.problems[task_id]
        lines.append({"task_id": task_id, "completion": problem["canonical_solution"]})
        lines.append({"task_id": task_id, "solution": returns_none(benchmark, task_id)})
    lines.append(
        {"task_id": "HumanEval/2", "solution": "def truncate_number(number):\n    return number % 1.0 + 1e-3\n"}
    )
    samples.write_text("".join(json.dumps(line) + "\n" for line in lines))

    script = (
        "import os, sys, evalplus.evaluate as e\n"
        "e.evaluate('humaneval', samples=sys.argv[1], parallel=2)\n"
        "os._exit(0)  # skip the 20 s its stall-checker thread still sleeps\n"
    )
    env = {**os.environ, "HUMANEVAL_OVERRIDE_PATH": str(dataset), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    run = subprocess.run(
        [sys.executable, "-c", script, str(samples)], env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    theirs = json.loads((tmp_path / "samples_eval_results.json").read_text())["eval"]

    ours = harness.score_samples_file(
        samples, "humaneval", str(benchmarks_dir), tmp_path / "data", tmp_path / "ours", parallel=2, progress=False
    )
    raw = json.loads((tmp_path / "ours" / "humaneval_raw_results.json").read_text())["eval"]
    assert sorted(raw) == sorted(theirs)
    for task_id in ids:
        mine = [(r["base_status"], r["plus_status"]) for r in raw[task_id]]
        upstream = [(r["base_status"], r["plus_status"]) for r in theirs[task_id]]
        if task_id == "HumanEval/32":
            assert upstream[0] == ("fail", "fail") and mine[0] == ("pass", "pass")  # the fix
            assert mine[1:] == upstream[1:]
        else:
            assert mine == upstream, task_id
            assert [r["base_fail_tests"] for r in raw[task_id]] == [r["base_fail_tests"] for r in theirs[task_id]]
    assert ours["benchmarks"]["humaneval"]["pass@1"]["plus"] == pytest.approx(
        (4 * 1 / 2 + 1 / 3) / 5
    )  # mean over tasks


# -- pre-generated samples --------------------------------------------------------------------------
def test_score_samples_file_writes_eval_results(benchmarks, benchmarks_dir, tmp_path, caplog):
    benchmark = benchmarks["humaneval"]
    samples = tmp_path / "samples.jsonl.gz"
    rows = [
        {"task_id": "HumanEval/32", "solution": canonical(benchmark, "HumanEval/32")},
        {"task_id": "HumanEval/0", "completion": benchmark.problems["HumanEval/0"]["canonical_solution"]},
        {"task_id": "HumanEval/2", "completion": "    return None\n"},
    ]
    with gzip.open(samples, "wt") as handle:
        handle.write("\n".join(json.dumps(row) for row in rows) + "\n\n")
    out = tmp_path / "eval"
    with caplog.at_level("INFO", logger="inversecoder"):
        results = harness.score_samples_file(
            samples, "humaneval", str(benchmarks_dir), tmp_path / "data", out, parallel=2
        )
    assert "HumanEval+ v0.1.10 (3/164 tasks): pass@1 base 0.667, plus 0.667" in caplog.text
    on_disk = json.loads((out / "eval_results.json").read_text())
    assert on_disk == json.loads(json.dumps(results))
    summary = on_disk["benchmarks"]["humaneval"]
    assert summary["hash"] == "fe585eb4df8c88d844eeb463ea4d0302" and summary["version"] == "v0.1.10"
    assert (summary["n_tasks"], summary["n_tasks_total"], summary["subset"], summary["samples_per_task"]) == (
        3,
        164,
        True,
        1,
    )
    assert list(summary["tasks"]) == ["HumanEval/0", "HumanEval/2", "HumanEval/32"]  # dataset order
    assert summary["pass@1"]["plus"] == pytest.approx(2 / 3)
    settings = on_disk["settings"]
    assert settings["samples"]["sha256"] == hashlib.sha256(samples.read_bytes()).hexdigest()
    assert settings["samples"]["n_samples"] == 3 and settings["decoding"] is None
    assert settings["checker"]["fixes"] == [checker.FIND_ZERO_FIX]
    assert settings["sandbox"]["level"] in ("namespaces+uid", "namespaces", "uid", "rlimits")
    assert on_disk["versions"]["evalplus"] == "0.3.1"
    raw = json.loads((out / "humaneval_raw_results.json").read_text())
    assert raw["eval"]["HumanEval/2"][0]["base_status"] == "fail" and raw["eval"]["HumanEval/2"][0]["base_fail_tests"]
    assert [s["line"] for s in raw["samples"]] == [1, 2, 3]
    assert not list(out.glob("*.tmp"))


def test_score_samples_file_reports_bad_input(benchmarks_dir, tmp_path):
    def score(text: str, benchmark: str = "humaneval"):
        path = tmp_path / "s.jsonl"
        path.write_text(text)
        return harness.score_samples_file(path, benchmark, str(benchmarks_dir), tmp_path / "d", tmp_path / "o")

    with pytest.raises(UserError, match="wrong --benchmark"):
        score('{"task_id": "Mbpp/2", "solution": "x"}\n')
    with pytest.raises(UserError, match=r"s.jsonl:2: not JSON"):
        score('{"task_id": "HumanEval/0", "solution": "x"}\n{oops\n')
    with pytest.raises(UserError, match="'solution' or 'completion'"):
        score('{"task_id": "HumanEval/0", "answer": "x"}\n')
    with pytest.raises(UserError, match="no samples"):
        score("\n")
    with pytest.raises(UserError, match="not found"):
        harness.score_samples_file(
            tmp_path / "missing.jsonl", "mbpp", str(benchmarks_dir), tmp_path / "d", tmp_path / "o"
        )


# -- the full anchors (opt-in) ----------------------------------------------------------------------
@pytest.mark.slow
def test_full_anchors_canonical_all_pass_and_wrong_all_fail(benchmarks, request, monkeypatch):
    """Every canonical solution: 164/164 (evalplus's own checker: 163) and 378/378; `return None`
    for every task: 0. About 8 minutes on 2 busy cores, mostly MBPP+'s ground truth: `-m slow` runs it.

    Mbpp/599's canonical solution alone runs 50-80 s on such a machine, past evalplus's cap on one
    run (EVALPLUS_TIMEOUT_PER_TASK, 60 s), so evalplus's own checker times it out there too; for
    MBPP+ the anchor raises that cap (evalplus's own setting), as one would on a slow machine. (Only
    our checker can: evalplus 0.3.1's compares the variable's string with a float and raises.)"""
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("full canonical anchors take about 8 minutes: run with `pytest -m slow`")
    import evalplus.evaluate

    with scoring.open_sandbox(parallel=0) as box:
        for name, total in (("humaneval", 164), ("mbpp", 378)):
            if name == "mbpp":
                monkeypatch.setenv("EVALPLUS_TIMEOUT_PER_TASK", "300")
            benchmark = benchmarks[name]
            right = [{"task_id": t, "solution": canonical(benchmark, t)} for t in benchmark.problems]
            result = check(benchmark, right, box, progress=True)
            failed = [t for t, o in result["tasks"].items() if not o["passed_plus"]]
            assert (len(result["tasks"]) - len(failed), failed) == (total, [])
            assert result["groundtruth_hash"] == benchmark.hash
            wrong = [{"task_id": t, "solution": returns_none(benchmark, t)} for t in benchmark.problems]
            assert check(benchmark, wrong, box)["pass@1"] == {"base": 0.0, "plus": 0.0}
            if name == "humaneval":  # evalplus's own checker on the same programs: HumanEval/32 fails
                expected = scoring.expected_outputs(benchmark, benchmark.problems)
                theirs = [
                    t
                    for t, problem in benchmark.problems.items()
                    if evalplus.evaluate.check_correctness(
                        name, 0, problem, canonical(benchmark, t), expected[t], fast_check=True
                    )["plus"][0]
                    != "pass"
                ]
                assert theirs == ["HumanEval/32"]


# -- prompts ----------------------------------------------------------------------------------------
HUMANEVAL_0 = '''from typing import List


def has_close_elements(numbers: List[float], threshold: float) -> bool:
    """ Check if in given list of numbers, are any two numbers closer to each other than
    given threshold.
    >>> has_close_elements([1.0, 2.0, 3.0], 0.5)
    False
    >>> has_close_elements([1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3)
    True
    """'''


def test_humaneval_prompt_is_the_papers(benchmarks):
    task = generation.build_tasks(benchmarks["humaneval"])[0]
    assert task.task_id == "HumanEval/0"
    expected = (
        f"{SYSTEM}\n\n@@ Instruction\nWrite a solution to the following problem:\n```python\n{HUMANEVAL_0}\n```\n\n"
        f"@@ Response\n```python\n{HUMANEVAL_0}"
    )
    assert task.prompt == expected
    assert task.prefill_code == HUMANEVAL_0


def test_mbpp_prompt_is_the_papers(benchmarks):
    tasks = {t.task_id: t for t in generation.build_tasks(benchmarks["mbpp"])}
    assert len(tasks) == 378
    expected = (
        f"{SYSTEM}\n\n@@ Instruction\n"
        "Write a function to find the shared elements from the given two lists. "
        "Your code should satisfy the following assertion:\n```python\n"
        "assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))\n```\n\n"
        "@@ Response\n```python"
    )
    assert tasks["Mbpp/2"].prompt == expected
    assert tasks["Mbpp/2"].prefill_code == ""
    # a description without a final period gets one, as upstream does
    assert "has no profit and no loss. Your code should" in tasks["Mbpp/637"].instruction
    assert [t.task_id for t in generation.build_tasks(benchmarks["mbpp"], limit=3)] == ["Mbpp/2", "Mbpp/3", "Mbpp/4"]


# -- generation -------------------------------------------------------------------------------------
class ScriptedBackend(Backend):
    """Answers each prompt with a fixed completion (or an error): the protocol, without a model."""

    def __init__(self, answers: dict[str, Completion]):
        self.answers = answers

    def info(self) -> BackendInfo:
        return BackendInfo("scripted", "scripted", "0", 4096)

    def plan_batches(self, prompts, new_tokens):
        return [list(range(len(prompts)))]

    def generate(self, requests, params):
        assert params.temperature == 0.0 and params.stop == ("```",)
        return [self.answers[r.prompt] for r in requests]

    def score_yes_no(self, prompts):
        raise NotImplementedError


def test_generate_solutions_prefill_fence_and_errors(benchmarks, tmp_path):
    he = generation.build_tasks(benchmarks["humaneval"], limit=1)[0]
    mb = generation.build_tasks(benchmarks["mbpp"], limit=2)
    answers = {
        he.prompt: Completion("\n    return False\n```\nsome prose"),
        mb[0].prompt: Completion("\ndef similar_elements(a, b):\n    return ()\n", "length"),
        mb[1].prompt: Completion(None, "error", error="prompt too long"),
    }
    model = CachedModel(ScriptedBackend(answers), ResultCache(tmp_path / "c.sqlite"), progress=False)
    samples = generation.generate_solutions(model, [he, *mb], max_new_tokens=8)
    assert samples[0]["solution"] == HUMANEVAL_0 + "\n    return False\n"
    assert samples[0]["raw_completion"] == "\n    return False\n```\nsome prose"
    assert samples[1]["solution"].startswith("\ndef similar_elements") and samples[1]["finish_reason"] == "length"
    assert samples[2] == {
        "task_id": "Mbpp/3",
        "solution": "",
        "raw_completion": "",
        "finish_reason": "error",
        "error": "prompt too long",
    }


class SeededBackend(ScriptedBackend):
    """Sampled decoding: the answer depends on the prompt and the request's seed."""

    def __init__(self, answers: dict[tuple[str, int], Completion]):
        super().__init__({})
        self.seeded = answers

    def generate(self, requests, params):
        assert params.temperature == 0.8 and params.top_p == 0.95 and params.stop == ("```",)
        return [self.seeded[(r.prompt, r.seed)] for r in requests]


def test_generate_n_samples_per_task_with_their_own_seeds(benchmarks, tmp_path):
    tasks = generation.build_tasks(benchmarks["mbpp"], limit=2)
    decoding = generation.Decoding(max_new_tokens=8, n_samples=3, temperature=0.8, top_p=0.95, seed=5)
    answers = {(t.prompt, seed): Completion(f"\n# {t.task_id} seed {seed}\n```") for t in tasks for seed in (5, 6, 7)}
    model = CachedModel(SeededBackend(answers), ResultCache(tmp_path / "c.sqlite"), progress=False)
    samples = generation.generate_solutions(model, tasks, 8, decoding=decoding)
    assert [(s["task_id"], s["seed"]) for s in samples] == [(t.task_id, seed) for t in tasks for seed in (5, 6, 7)]
    assert samples[4]["solution"] == f"\n# {tasks[1].task_id} seed 6\n"
    assert decoding.record() == {
        "greedy": False,
        "max_new_tokens": 8,
        "stop": ["```"],
        "n_samples": 3,
        "temperature": 0.8,
        "top_p": 0.95,
        "seeds": "sample j uses seed 5 + j",
    }
    with pytest.raises(ConfigError, match="temperature > 0"):
        generation.Decoding(n_samples=10)
    with pytest.raises(ConfigError, match="n_samples must be >= 1"):
        generation.Decoding(n_samples=0, temperature=0.2)


# -- end to end -------------------------------------------------------------------------------------
def test_evaluate_model_end_to_end(benchmarks_dir, tiny_model_dir, tmp_path, caplog):
    from evalplus.data import load_solutions

    from inversecoder.core.backends.transformers_backend import TransformersBackend

    backend = TransformersBackend(str(tiny_model_dir), batch_tokens=8192)
    cache = ResultCache(tmp_path / "cache.sqlite")
    model = CachedModel(backend, cache, progress=False)
    config = EvalConfig(limit=3, max_new_tokens=16)
    out = tmp_path / "eval"
    with caplog.at_level("INFO", logger="inversecoder"):
        results = harness.evaluate_model(model, config, str(benchmarks_dir), tmp_path / "data", out)
    assert model.computed == 6
    printed = caplog.text

    on_disk = json.loads((out / "eval_results.json").read_text())
    assert on_disk == json.loads(json.dumps(results))
    assert set(on_disk) == {"benchmarks", "settings", "versions"}
    for name, dataset, version, count in (
        ("humaneval", "HumanEval+", "v0.1.10", 164),
        ("mbpp", "MBPP+", "v0.2.0", 378),
    ):
        summary = on_disk["benchmarks"][name]
        assert (summary["dataset"], summary["version"], summary["n_tasks"], summary["limit"]) == (
            dataset,
            version,
            3,
            3,
        )
        assert summary["n_tasks_total"] == count and len(summary["hash"]) == 32
        assert 0.0 <= summary["pass@1"]["plus"] <= summary["pass@1"]["base"] <= 1.0
        assert len(summary["tasks"]) == 3
        rows = [json.loads(line) for line in (out / f"{name}_samples.jsonl").read_text().splitlines()]
        assert [r["task_id"] for r in rows] == list(summary["tasks"])
        assert all({"task_id", "solution", "raw_completion", "finish_reason", "error"} <= set(r) for r in rows)
        assert len(list(load_solutions(str(out / f"{name}_samples.jsonl")))) == 3  # evalplus reads it
        raw = json.loads((out / f"{name}_raw_results.json").read_text())
        assert raw["tasks"] == summary["tasks"] and raw["hash"] == summary["hash"]
        assert f"{dataset} {version} (3/{count} tasks): pass@1 base" in printed
    settings = on_disk["settings"]
    assert settings["decoding"] == {"greedy": True, "max_new_tokens": 16, "stop": ["```"], "n_samples": 1}
    assert settings["sandbox"]["level"] and settings["checker"]["fixes"] == [checker.FIND_ZERO_FIX]
    assert on_disk["benchmarks"]["humaneval"]["checker"]["fixes"] == [checker.FIND_ZERO_FIX]
    assert on_disk["benchmarks"]["mbpp"]["checker"]["fixes"] == []
    assert settings["backend"]["backend"] == "transformers" and settings["backend"]["revision"].startswith("local-")
    assert "Your code should satisfy the following assertion" in settings["prompt_templates"]["mbpp"]["instruction"]
    assert on_disk["versions"]["evalplus"] == "0.3.1"
    assert not list(out.glob("*.tmp"))

    again = CachedModel(backend, cache, progress=False)
    second = harness.evaluate_model(again, config, str(benchmarks_dir), tmp_path / "data", out)
    assert again.computed == 0 and again.reused == 6
    assert second["benchmarks"] == results["benchmarks"]

    # pass@k: n sampled solutions per task
    sampled = harness.evaluate_model(
        CachedModel(backend, cache, progress=False),
        EvalConfig(limit=2, max_new_tokens=8, benchmarks=["mbpp"]),
        str(benchmarks_dir),
        tmp_path / "data",
        tmp_path / "sampled",
        n_samples=3,
        temperature=0.8,
        top_p=0.95,
    )
    summary = sampled["benchmarks"]["mbpp"]
    assert summary["samples_per_task"] == 3 and all(task["n"] == 3 for task in summary["tasks"].values())
    assert sampled["settings"]["decoding"]["n_samples"] == 3 and sampled["settings"]["decoding"]["temperature"] == 0.8
    rows = [json.loads(line) for line in (tmp_path / "sampled" / "mbpp_samples.jsonl").read_text().splitlines()]
    assert [row["seed"] for row in rows] == [0, 1, 2, 0, 1, 2]


@pytest.mark.parametrize("level", ["uid", "rlimits"])
def test_weak_levels_are_refused_without_the_opt_in(benchmarks, level):
    """Without a mount namespace a program can read the user's files: one ConfigError line, unless
    `evaluate.allow_weak_sandbox` is set."""
    samples = [{"task_id": "HumanEval/0", "solution": canonical(benchmarks["humaneval"], "HumanEval/0")}]
    with pytest.raises(ConfigError, match=r"^evaluate\.allow_weak_sandbox: .*'" + level + "'") as caught:
        scoring.check_solutions(benchmarks["humaneval"], samples, parallel=1, isolation=level)
    assert "\n" not in str(caught.value)
    try:
        result = scoring.check_solutions(
            benchmarks["humaneval"], samples, parallel=1, isolation=level, allow_weak_sandbox=True
        )
    except Exception as error:  # the level itself may be unavailable on this kernel
        pytest.skip(f"level {level} unavailable here: {error}")
    assert result["sandbox"]["level"] == level and result["pass@1"]["plus"] == 1.0
    assert EvalConfig().allow_weak_sandbox is False
