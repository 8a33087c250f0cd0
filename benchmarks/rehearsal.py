"""The paper's build at scale, on this machine: a synthetic corpus, a simulated vLLM fleet, the real build.

110K source rows x K=10 is 1.1M generations and 1.1M scorings (plus the decontamination judge's calls).
The fleet is what publishers bring; the one client process, its cache and its passes over the data are
ours. This script measures them against a simulated fleet on 127.0.0.1 (`benchmarks/fleet.py`: 16
endpoints x 128 concurrent requests, lognormal latency with a 2 s mean, 1% errors, one endpoint killed
and restarted midway) with the real `inversecoder build-dataset` in a child process (decontamination
and dedup on), and prints side by side:

- wall time vs the fleet's ideal (requests / (endpoints x concurrency / mean latency)): the share of the
  fleet's capacity the build used, whole and during its generation stages;
- the client's CPU per request (user + system of the build process, all of it counted against requests);
- peak memory (the build's max RSS), the cache's size on disk, the parquet files written;
- seconds and rows/s of each stage (`build_report.json`'s `stage_seconds`);
- a finished rerun (`run --until dataset`: verified and skipped) as a share of the build;
- a build killed (SIGKILL) at 50% of its requests and resumed: the resumed build's time and whether its
  content fingerprint equals the uninterrupted build's.

The semantic decontamination layer (MiniLM embeddings) is skipped by default, with the reason printed:
on a 2-core CPU it runs ~80 rows/s (README, "semantic decontamination"), ~45 min for the full build's
220K rows, competing with the client for the same cores; `--semantic` turns it on.

    python benchmarks/rehearsal.py                 # a 10% slice (11K rows): minutes
    python benchmarks/rehearsal.py --full          # the paper's size, once (its table is in the README)
    python benchmarks/rehearsal.py --full --no-kill  # without the second, killed-and-resumed build
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fleet import Fleet  # (benchmarks/ is not a package: its folder is on the path)
from synthetic_corpus import write_corpus

PAPER_ROWS = 110_000
ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def recipe(corpus: Path, model: Path, urls: list[str], output: Path, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "output_dir": str(output),
        "seed": 0,
        "source": {"path": str(corpus)},
        "generator": {
            "backend": "vllm",
            "model": str(model),
            "endpoints": urls,
            "concurrency": args.concurrency,
            "request_timeout": 120.0,
            "max_retries": 5,
            "retry_backoff": 0.2,
            "retry_backoff_max": 5.0,
            "health_interval": 2.0,
            "retry_rounds": 2,
        },
        "summarize": {"num_samples": 10, "max_new_tokens": 512},
        "decontaminate": {"semantic": args.semantic},
        "dedup": {"enabled": True},
        "train": {"enabled": False},
        "evaluate": {"enabled": False},
    }


class Build:
    """`inversecoder CMD CONFIG` in a child process: wall time, CPU and peak RSS from wait4's rusage."""

    def __init__(self, command: str, config: Path, log: Path):
        self.started = time.monotonic()
        self.log = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "inversecoder.cli", command, str(config)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=os.environ | ENV,
        )

    def wait(self) -> dict[str, float]:
        _, status, usage = os.wait4(self.process.pid, 0)
        self.process.returncode = os.waitstatus_to_exitcode(status)
        self.log.close()
        return {
            "code": self.process.returncode,
            "wall": time.monotonic() - self.started,
            "cpu": usage.ru_utime + usage.ru_stime,
            "peak_mib": usage.ru_maxrss / 1024,  # KiB on Linux
        }


def dry_run_client(config: Path, work: Path) -> dict[str, float]:
    """What `run --dry-run` of the same build (into a fresh folder) says the client costs: its "client:" note."""
    recipe = yaml.safe_load(config.read_text()) | {"output_dir": str(work / "dry-run")}
    dry = work / "dry-run.yaml"
    dry.write_text(yaml.safe_dump(recipe))
    shown = subprocess.run(
        [sys.executable, "-m", "inversecoder.cli", "run", str(dry), "--dry-run"],
        capture_output=True,
        text=True,
        env=os.environ | ENV,
        check=True,
    ).stdout
    found = re.search(r"client: ([\d,]+) requests x ([\d.]+) us", shown)
    if not found:
        raise SystemExit(f"the dry-run printed no client note:\n{shown}")
    requests, us = int(found.group(1).replace(",", "")), float(found.group(2))
    return {"requests": requests, "us": us, "seconds": requests * us / 1e6}


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def _when(fleet: Fleet, requests: int, action) -> threading.Thread:
    """Run `action` once the fleet has answered `requests` more requests than now."""
    start = fleet.totals()["requests"]

    def watch() -> None:
        while fleet.totals()["requests"] - start < requests:
            time.sleep(0.5)
        action()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from inversecoder.tiny_model import make_tiny_model

    work = Path(args.work or tempfile.mkdtemp(prefix="rehearsal-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = PAPER_ROWS if args.full else max(1, int(PAPER_ROWS * args.fraction))
    model = work / "model"
    if not (model / "config.json").is_file():
        make_tiny_model(model)
    corpus = work / f"corpus-{rows}.jsonl"
    if not corpus.is_file():
        print(f"writing the synthetic corpus: {rows} rows", flush=True)
        write_corpus(corpus, rows=rows, seed=0)
    if not args.semantic:
        print(
            "semantic decontamination skipped: MiniLM on this CPU runs ~80 rows/s (220K rows: ~45 min) on the cores "
            "the client needs; --semantic turns it on",
            flush=True,
        )
    results: dict[str, Any] = {"rows": rows, "work": str(work)}
    with Fleet(
        n=args.endpoints,
        concurrency=args.concurrency,
        mean_latency=args.latency,
        error_rate=args.error_rate,
        model_dir=model,
        seed=0,
    ) as fleet:
        capacity = args.endpoints * args.concurrency / args.latency  # requests/s
        results["capacity"] = capacity
        results["slots"] = args.endpoints * args.concurrency
        # 1. The uninterrupted build; one endpoint killed and restarted once the build is about half done.
        out = work / "out"
        shutil.rmtree(out, ignore_errors=True)
        config = work / "build.yaml"
        config.write_text(yaml.safe_dump(recipe(corpus, model, fleet.urls, out, args)))
        expected = rows * 2 * 10  # generations + scorings, roughly (the judge adds some)

        def kill_and_restart() -> None:
            fleet.kill(0)
            time.sleep(5)
            fleet.restart(0)

        killer = _when(fleet, expected // 2, kill_and_restart)
        before = fleet.totals()
        print(f"build: {rows} rows on {args.endpoints} x {args.concurrency} slots at {args.latency} s", flush=True)
        build = Build("build-dataset", config, work / "build.log").wait()
        after = fleet.totals()
        killer.join(timeout=0)
        if build["code"] != 0:
            raise SystemExit(f"the build failed (exit {build['code']}): see {work / 'build.log'}")
        requests = int(after["requests"] - before["requests"])
        report = json.loads((out / "dataset" / "build_report.json").read_text())
        info = json.loads((out / "dataset" / "build_info.json").read_text())
        results |= {
            "build": build,
            "requests": requests,
            "errors": after["errors"] - before["errors"],
            "busy": after["busy_seconds"] - before["busy_seconds"],
            "fleet_cpu": after["cpu_seconds"] - before["cpu_seconds"],
            "stage_seconds": report.get("stage_seconds", {}),
            "counts": report["counts"],
            "fingerprint": info["fingerprint"],
            "cache_bytes": _du(out / ".cache"),
            "dataset_bytes": _du(out / "dataset"),
            "parquet_files": sorted(str(p.relative_to(out / "dataset")) for p in (out / "dataset").rglob("*.parquet")),
        }
        results["dry_run"] = dry_run_client(config, work)
        # 2. A finished rerun: every step verified against its record and skipped.
        rerun = Build("run", config, work / "rerun.log")
        # (`run` would go on to train: the recipe disables training and evaluation)
        results["rerun"] = rerun.wait()
        if args.no_kill:
            return results
        # 3. Killed at 50% of its requests, then resumed by the same command.
        killed_out = work / "killed"
        shutil.rmtree(killed_out, ignore_errors=True)
        killed_config = work / "killed.yaml"
        killed_config.write_text(yaml.safe_dump(recipe(corpus, model, fleet.urls, killed_out, args)))
        first = Build("build-dataset", killed_config, work / "killed.log")
        _when(fleet, requests // 2, lambda: first.process.send_signal(signal.SIGKILL))
        results["killed"] = first.wait()
        resumed = Build("build-dataset", killed_config, work / "resumed.log").wait()
        resumed_info = json.loads((killed_out / "dataset" / "build_info.json").read_text())
        results["resumed"] = resumed | {"same": resumed_info["fingerprint"] == info["fingerprint"]}
    return results


def table(results: dict[str, Any]) -> str:
    build, requests, capacity = results["build"], results["requests"], results["capacity"]
    ideal = requests / capacity
    stages = results["stage_seconds"]
    generating = stages.get("summarize", 0) + stages.get("score", 0)
    rows, rerun, resumed = results["rows"], results["rerun"], results.get("resumed")
    measures = [
        ("build wall time", f"{build['wall']:.0f} s (ideal {ideal:.0f} s: {ideal / build['wall']:.0%} of capacity)"),
        ("generation stages (summarize + score)", f"{generating:.0f} s ({ideal / max(generating, 1e-9):.0%})"),
        ("fleet slots busy", f"{results['busy'] / (build['wall'] * results['slots']):.0%} of slot-time"),
        ("client CPU per request", f"{1e6 * build['cpu'] / requests:.0f} us ({build['cpu']:.0f} s in all)"),
        (
            "dry-run's client estimate (`run --dry-run`)",
            f"{results['dry_run']['requests']:,} requests x {results['dry_run']['us']:g} us = "
            f"{results['dry_run']['seconds']:.0f} s of CPU; measured {build['cpu']:.0f} s "
            f"({build['cpu'] / results['dry_run']['seconds']:.2f} x the estimate)",
        ),
        ("fleet CPU per request", f"{1e6 * results['fleet_cpu'] / requests:.0f} us (on this machine's cores too)"),
        ("CPU of client + fleet", f"{(build['cpu'] + results['fleet_cpu']) / build['wall']:.2f} cores"),
        ("peak memory (build process)", f"{build['peak_mib']:,.0f} MiB"),
        ("cache on disk", f"{results['cache_bytes'] / 2**20:,.0f} MiB"),
        (
            "dataset on disk",
            f"{results['dataset_bytes'] / 2**20:,.0f} MiB, {len(results['parquet_files'])} parquet files",
        ),
        ("finished rerun (`run`: verified, skipped)", f"{rerun['wall']:.1f} s ({rerun['wall'] / build['wall']:.1%})"),
    ]
    if resumed:
        measures.append(
            ("killed at 50%, resumed", f"{resumed['wall']:.0f} s; same content as uninterrupted: {resumed['same']}")
        )
    lines = [
        f"rehearsal: {rows:,} source rows, {requests:,} requests ({results['errors']:,} answered with an error), "
        f"fleet capacity {capacity:,.0f} requests/s",
        "",
        "| measure | value |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in measures),
        "",
        "| stage | seconds | source rows/s |",
        "|---|---|---|",
    ]
    for name, seconds in stages.items():
        lines.append(f"| {name} | {seconds:.1f} | {rows / seconds:,.0f} |" if seconds else f"| {name} | 0 | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="the paper's 110K rows (default: --fraction of them)")
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--endpoints", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument("--latency", type=float, default=2.0, help="mean seconds per request (lognormal)")
    parser.add_argument("--error-rate", type=float, default=0.01)
    parser.add_argument("--semantic", action="store_true", help="run the semantic decontamination layer too")
    parser.add_argument(
        "--no-kill", action="store_true", help="skip the killed-and-resumed build (a second build of the same size)"
    )
    parser.add_argument("--work", help="working folder (kept; default: a new temporary folder)")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # 2,048 connections and the fleet's sockets
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    results = measure(args)
    Path(results["work"], "results.json").write_text(json.dumps(results, indent=2))
    print(table(results))


if __name__ == "__main__":
    main()
