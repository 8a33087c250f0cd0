"""The `inversecoder` command: one console script, one subcommand per step.

    inversecoder run CONFIG [--output-dir DIR] [section.field=value ...]

Configuration problems print one line and exit with status 2 (no traceback); an interrupted run
exits with 130 and resumes where it stopped when run again.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from inversecoder import __version__
from inversecoder.core.errors import UserError
from inversecoder.core.files import check_writable_folder, storage_problem
from inversecoder.core.ranks import is_main_rank

OVERRIDES_HELP = "override any config field, e.g. source.limit=20 summarize.num_samples=4 generator.model=PATH"


def _config_command(sub, name: str, help: str, description: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help, description=description)
    parser.add_argument("config", help="YAML recipe (see configs/); every field has a default")
    parser.add_argument("overrides", nargs="*", metavar="section.field=value", help=OVERRIDES_HELP)
    parser.add_argument("--output-dir", help="where artifacts go (overrides output_dir)")
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inversecoder",
        description="Build Inverse-Instruct datasets and InverseCoder models (arXiv 2407.05700).",
    )
    parser.add_argument("--version", action="version", version=f"inversecoder {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _config_command(
        sub,
        "build-dataset",
        "extract, summarize, self-evaluate, select, decontaminate, write the dataset",
        "Build the Inverse-Instruct dataset folder (OUTPUT/dataset). Model calls are cached in "
        "OUTPUT/.cache: an interrupted build resumes, a finished one reruns for free.",
    )
    _config_command(
        sub,
        "train",
        "two-stage SFT (generated pairs, then original pairs) with TRL",
        "Fine-tune the base model on OUTPUT/dataset into OUTPUT/model; resumes from the last checkpoint.",
    )
    evaluate = sub.add_parser(
        "evaluate",
        help="EvalPlus HumanEval+ / MBPP+, greedy pass@1",
        description="Evaluate OUTPUT/model (or evaluate.model) with EvalPlus into OUTPUT/eval; or, "
        "with --samples, score pre-generated samples in EvalPlus's format.",
    )
    evaluate.add_argument("config", nargs="?", help="YAML recipe (optional with --samples)")
    evaluate.add_argument("overrides", nargs="*", metavar="section.field=value", help=OVERRIDES_HELP)
    evaluate.add_argument("--output-dir", help="where artifacts go (overrides output_dir)")
    evaluate.add_argument(
        "--samples", help="a .jsonl of {task_id, solution|completion}: score it instead of generating"
    )
    evaluate.add_argument("--benchmark", choices=["humaneval", "mbpp"], help="the benchmark of --samples")
    evaluate.add_argument("--limit", type=int, help="only the first N tasks of each benchmark (evaluate.limit)")
    evaluate.add_argument("--model", help="model to evaluate (evaluate.model)")
    run = _config_command(
        sub,
        "run",
        "the whole loop: [generator], build-dataset, train, evaluate, report",
        "Run the paper's loop as resumable steps: generator (only when generator.model is unset: "
        "M = the base model fine-tuned on the corpus), dataset, train, evaluate, evaluate-generator, "
        "evaluate-base (optional), report. A step whose output exists with the same fingerprint is "
        "skipped; a changed setting reruns that step and the ones after it.",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (steps, rows, model calls, tokens, time, GPU-hours) and exit",
    )
    run.add_argument("--from", dest="start", metavar="STEP", help="first step to run")
    run.add_argument("--until", metavar="STEP", help="last step to run")
    run.add_argument(
        "--push",
        action="store_true",
        help="publish the dataset and the model to push.dataset_repo_id / push.model_repo_id (token checked first)",
    )
    from inversecoder.hub_cards.push import add_arguments

    add_arguments(
        sub.add_parser(
            "push",
            help="publish a dataset or model folder to the Hugging Face Hub",
            description="One commit to ORG/NAME (created if missing), tagged; the token comes from "
            "HF_TOKEN or `hf auth login` and is checked before anything is sent.",
        )
    )
    _config_command(
        sub,
        "check-endpoints",
        "health and served model of every endpoint in the config (TGI, vLLM, SGLang, OpenAI)",
        "Print each endpoint's health and what it serves: TGI's /info (model id and sha, token limits, "
        "max_top_n_tokens, max_best_of, max_concurrent_requests, version), or /v1/models, /version and a "
        "tokenizer check for vLLM, SGLang and other OpenAI-compatible servers.",
    )
    show = _config_command(
        sub, "show-config", "print the resolved configuration", "Print the config after defaults and overrides."
    )
    show.set_defaults(resolved_only=True)
    tiny = sub.add_parser(
        "make-tiny-model",
        help="build the tiny offline model used by the demo and tests",
        description="Build a small random-weight Llama model with a locally trained tokenizer "
        "and the Magicoder chat template, offline and deterministically.",
    )
    tiny.add_argument("dir", help="output folder")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--hidden-size", type=int, default=128)
    tiny.add_argument("--layers", type=int, default=2)
    return parser


def _load(args: argparse.Namespace):
    from inversecoder.core.config import load_config

    overrides = list(args.overrides)
    if getattr(args, "limit", None) is not None:
        overrides.append(f"evaluate.limit={args.limit}")
    if getattr(args, "model", None):
        overrides.append(f"evaluate.model={args.model}")
    return load_config(args.config, overrides, output_dir=args.output_dir)


def _score_samples(args: argparse.Namespace) -> None:
    """`evaluate --samples FILE --benchmark NAME`: EvalPlus-format samples, scored in our sandbox."""
    from pathlib import Path

    from inversecoder.core.config import load_config
    from inversecoder.core.lock import output_lock

    if not args.benchmark:
        raise UserError("--samples needs --benchmark humaneval|mbpp")
    samples = Path(args.samples)
    if not samples.is_file():
        raise UserError(f"samples file not found: {samples}")
    config = load_config(args.config, list(args.overrides), output_dir=args.output_dir)
    output = Path(args.output_dir) if args.output_dir else samples.parent / f"{samples.stem}-eval"
    check_writable_folder(output)
    with output_lock(output):
        results = _score(args, samples, config, output)
    bench = results["benchmarks"][args.benchmark]
    print(
        f"{bench['dataset']}: pass@1 base {bench['pass@1']['base']:.3f}, plus {bench['pass@1']['plus']:.3f} "
        f"({bench['n_tasks']} tasks); results in {output / 'eval_results.json'}"
    )


def _score(args: argparse.Namespace, samples: Any, config: Any, output: Any) -> dict[str, Any]:
    from inversecoder.eval.harness import score_samples_file

    return score_samples_file(
        samples,
        args.benchmark,
        config.benchmarks_dir,
        config.layout.benchmark_cache,
        output,
        config.evaluate.parallel,
        min_time_limit=config.evaluate.min_time_limit,
        gt_time_limit_factor=config.evaluate.gt_time_limit_factor,
        fix_humaneval_32=config.evaluate.fix_humaneval_32,
        isolation=config.evaluate.sandbox,
        require_isolation=config.evaluate.require_isolation,
        allow_weak_sandbox=config.evaluate.allow_weak_sandbox,
    )


WRITERS = ("build-dataset", "train", "evaluate", "run")
"""The commands that write into the output folder: it is checked (a folder, writable, not full) before any work."""


def _dispatch(args: argparse.Namespace) -> None:
    if args.command == "make-tiny-model":
        from inversecoder.tiny_model import make_tiny_model

        check_writable_folder(args.dir, "model folder")
        path = make_tiny_model(args.dir, hidden_size=args.hidden_size, num_layers=args.layers, seed=args.seed)
        print(f"tiny model written to {path}")
        return
    if args.command == "push":
        from inversecoder.hub_cards.push import run_command

        run_command(args)
        return
    if args.command == "evaluate" and args.config and _OVERRIDE.match(args.config):
        args.overrides, args.config = [args.config, *args.overrides], None  # `evaluate --samples F key=value`
    if args.command == "evaluate" and args.samples:
        _score_samples(args)
        return
    if args.command == "evaluate" and not args.config:
        raise UserError("evaluate needs a CONFIG (or --samples FILE --benchmark NAME)")
    config = _load(args)
    if args.command in WRITERS and not getattr(args, "dry_run", False):
        check_writable_folder(config.output_dir)
    if args.command == "check-endpoints":
        if config.generator.backend in ("vllm", "sglang", "openai"):
            from inversecoder.core.backends.openai_check import check_endpoints, format_endpoint_report
        else:
            from inversecoder.core.backends.tgi_check import check_endpoints, format_endpoint_report

        rows = check_endpoints(config.generator)
        print(format_endpoint_report(rows))
        down = [row["url"] for row in rows if not row.get("healthy")]
        if down:
            raise UserError(f"{len(down)} of {len(rows)} endpoints unreachable or unhealthy: {', '.join(down)}")
        if any(row.get("consistent") is False for row in rows):
            raise UserError("the endpoints serve different models or revisions: a build would refuse them")
        return
    if args.command == "show-config":
        from inversecoder.core.config import config_yaml

        print(config_yaml(config), end="")
        return
    from inversecoder import workflow

    if args.command == "run":
        if args.dry_run:
            from inversecoder.plan import dry_run

            print(dry_run(config))
        else:
            workflow.run_all(config, args.start, args.until, push=args.push)
        return
    steps: dict[str, Callable] = {
        "build-dataset": workflow.build,
        "train": workflow.train,
        "evaluate": workflow.evaluate,
    }
    result = steps[args.command](config)
    if result is not None and not isinstance(result, dict):
        print(f"done: {result}")


_OVERRIDE = re.compile(r"^[A-Za-z_]\w*(\.\w+)*=")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Like `parse_args`, but `section.field=value` overrides may also come after options
    (`run CONFIG --output-dir X seed=3 --dry-run`), which argparse alone rejects."""
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    overrides = [arg for arg in extras if _OVERRIDE.match(arg)]
    unknown = [arg for arg in extras if not _OVERRIDE.match(arg)]
    if unknown or (overrides and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or overrides)}")
    if overrides:
        args.overrides = list(args.overrides) + overrides
    return args


class _PlainFormatter(logging.Formatter):
    """Progress lines as they are; a warning or an error says so first."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        return message if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {message}"


def configure_logging() -> None:
    """One handler: the `inversecoder` loggers' lines, plain, on stdout (other libraries' loggers are left
    alone). Configuration errors are not logged: `main` prints them as one line on stderr."""
    package = logging.getLogger("inversecoder")
    if package.handlers:
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_PlainFormatter("%(message)s"))
    package.addHandler(handler)
    # In a launched training job the main process reports progress; the others only warnings and errors.
    package.setLevel(logging.INFO if is_main_rank() else logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        _dispatch(args)
    except UserError as error:
        print(f"inversecoder: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a disk that fills up (or turns read-only) during the run
        problem = storage_problem(error)
        if problem is None:
            raise
        print(f"inversecoder: error: {problem}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninversecoder: interrupted; finished work is saved, rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
