"""`run --dry-run`: what the loop would do, and what it would cost, before anything runs.

Token counts come from the generator's tokenizer over the actual corpus (the prompts the stages would
send); generated lengths are estimated from the corpus's own instructions (what a summary of the code
should be like), with the `max_new_tokens` ceiling shown too. Time and GPU-hours divide the work by
throughput figures (`plan.*`: measured on our benchmarks, or set for your hardware), scaled by model size, and by
the devices that do it: the embedded backend's replicas (the GPUs visible here, or `generator.replicas`, or the
CPU), vllm-local's engine, or `plan.gpus` for served backends (the fleet is the user's) and for training.
"""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass

from inversecoder.core.config import RunConfig
from inversecoder.core.config_checks import SERVED_BACKENDS
from inversecoder.core.errors import ConfigError


@dataclass
class PlannedStep:
    name: str
    action: str  # run | skip | disabled
    work: str  # what it does, in numbers
    hours: float | None = 0.0  # wall-clock estimate on the step's devices (None: its work could not be counted)
    gpus: int = 0  # GPUs the step keeps busy (0: it runs on the CPU): GPU-hours = hours x gpus


@dataclass(frozen=True)
class Devices:
    """What a step's model calls run on: `count` devices share the work, `gpus` of them GPUs."""

    count: int
    gpus: int
    where: str  # for the header and the notes
    caveat: str = ""  # for the notes

    def described(self) -> str:
        return f"{self.where}{self.caveat}"


CPU_NOTE = "plan.* figures are GPU throughput: a CPU is far slower than this estimate"


def embedded_devices(config: RunConfig, cuda_count: int | None = None) -> Devices:
    """The replicas the embedded backend will load (`generator.device`, `generator.replicas` and the GPUs visible
    to this process, or `cuda_count`). CPU replicas share the CPU's cores: they count as one device."""
    from inversecoder.core.backends.replicas import describe_devices, replica_devices

    if cuda_count is None:
        import torch

        cuda_count = torch.cuda.device_count()
    generator = config.generator
    try:
        devices = replica_devices(generator.device, generator.replicas, cuda_count)
    except ConfigError:  # generator.device: cuda where no GPU is visible (a login node): the run's GPUs are unknown
        gpus = config.plan.gpus
        return Devices(gpus, gpus, f"plan.gpus ({gpus}) GPU(s)", " (generator.device is cuda; no GPU is visible here)")
    copies = f"{len(devices)} replicas" if len(devices) > 1 else "1 replica"
    where = f"{copies} on {describe_devices(devices)}"
    if devices[0] in ("cpu", "mps"):
        return Devices(1, 0, where, f"; {CPU_NOTE}" if devices[0] == "cpu" else "")
    return Devices(len(devices), len(devices), where, " (the GPUs visible here; generator.replicas caps them)")


def generator_devices(config: RunConfig, notes: list[str], cuda_count: int | None = None) -> tuple[Devices, Devices]:
    """(the generator's devices, the embedded backend's: it runs the models the servers do not serve), with notes."""
    generator = config.generator
    embedded = embedded_devices(config, cuda_count)
    if generator.backend in SERVED_BACKENDS:
        gpus = config.plan.gpus
        notes.append(
            f"generation and scoring on the {generator.backend} servers: divided over plan.gpus ({gpus}), the GPUs "
            "behind generator.endpoints"
        )
        notes.append(
            f"models the servers do not serve (the trained one, the base) run embedded: {embedded.described()}"
        )
        return Devices(gpus, gpus, f"plan.gpus ({gpus}) GPU(s) behind the endpoints"), embedded
    if generator.backend == "vllm-local":
        if embedded.gpus:
            args = generator.vllm_args
            count = _positive(args.get("tensor_parallel_size")) * _positive(args.get("pipeline_parallel_size"))
            engine = Devices(count, count, f"vLLM's engine on {count} GPU(s)", " (vllm_args' tensor x pipeline size)")
        else:
            engine = Devices(1, 0, "vLLM's engine on the CPU", f"; {CPU_NOTE}")
        notes.append(f"generation and scoring in {engine.described()}")
        notes.append(f"other models (the trained one, the base) run embedded: {embedded.described()}")
        return engine, embedded
    notes.append(f"generation and scoring run embedded (transformers): {embedded.described()}")
    return embedded, embedded


def training_devices(config: RunConfig, notes: list[str]) -> Devices:
    """The training job `run` will launch here (`trainers/distribution.py`: processes, DDP / FSDP2 / ZeRO-3
    and why); where no GPU is visible, also the job on plan.gpus GPUs of plan.gpu_memory_gb each."""
    from inversecoder.trainers import distribution
    from inversecoder.trainers.recipe import base_model

    try:
        model, revision = base_model(config)
    except ConfigError:
        notes.append("training: no model to fine-tune is named")
        return Devices(config.plan.gpus, config.plan.gpus, f"plan.gpus ({config.plan.gpus}) GPU(s)")
    shape = distribution.model_shape(model, revision)
    here = distribution.visible_devices()
    try:
        job = distribution.choose(config.train, shape, here)
    except ConfigError as error:
        notes.append(f"training: {error}")
        return Devices(1, 0, "a training setting that cannot run here")
    notes.append(f"training: {job.describe()}" + ("" if shape else " (model size unknown)"))
    if here.kind != "cuda":
        node = distribution.Devices("cuda", config.plan.gpus, int(config.plan.gpu_memory_gb * 1e9))
        with contextlib.suppress(ConfigError):
            planned = distribution.choose(config.train.model_copy(update={"num_processes": None}), shape, node)
            notes.append(
                f"no GPU visible here; on plan.gpus ({config.plan.gpus}) GPUs of {config.plan.gpu_memory_gb:g} GB "
                f"training would be {planned.describe()}"
            )
        return Devices(1, 0, f"{job.processes} {here.kind} process(es)", f"; {CPU_NOTE}")
    return Devices(job.processes, job.processes, f"{job.processes} GPU(s), {job.strategy}")


def _positive(value: object) -> int:
    return value if isinstance(value, int) and value > 0 else 1


def _tokenizer(config: RunConfig):
    """The generator's tokenizer (or the base model's, when step 0 makes the generator) and its name; else None
    and the names tried (offline, a Hub model counts only when its tokenizer is in the local cache)."""
    from transformers import AutoTokenizer

    tried = []
    for name, revision in ((config.generator.model, config.generator.revision), (config.train.base_model, None)):
        if not name:
            continue
        revision = revision or (config.train.base_revision if name == config.train.base_model else None)
        try:
            return AutoTokenizer.from_pretrained(name, revision=revision), name
        except (OSError, ValueError):
            tried.append(name)
    return None, ", ".join(tried)


def _corpus_note(config: RunConfig, error: Exception) -> str:
    return (
        f"the corpus {config.source.path} cannot be read here ({error}): its rows, snippets and tokens are not "
        "counted, so the generator, dataset and train steps have no estimate (run it where the corpus can be read, "
        "or point source.path at a local copy)"
    )


def _params_billions(config: RunConfig) -> float | None:
    """Exact parameter count from the model's config (an empty model on the meta device: no weights read)."""
    if config.plan.model_params_b:
        return config.plan.model_params_b
    from inversecoder.trainers.distribution import model_shape

    for name in (config.train.base_model, config.generator.model):
        if name and (shape := model_shape(name)) is not None:
            return shape.parameters / 1e9
    return None


def _hours(tokens: float, per_gpu_per_s: float, devices: int, scale: float) -> float:
    return tokens / (per_gpu_per_s / scale * devices) / 3600


def plan_run(config: RunConfig) -> tuple[list[PlannedStep], list[str], Devices, Devices]:
    """The steps with their actions, work and time estimates, notes on how the figures were made, and the
    devices the generator and the training run on."""
    from inversecoder.builders.extract import extract_code
    from inversecoder.builders.sources import SourceRow, SourceStream
    from inversecoder.core import prompts
    from inversecoder.core.backends.prompt_ids import prompt_token_ids
    from inversecoder.workflow import step_status

    status = step_status(config)
    notes: list[str] = []
    tokenizer, tokenizer_name = _tokenizer(config)
    if tokenizer is None:
        why = f"of {tokenizer_name}: offline and not in the cache, or not found" if tokenizer_name else "no model named"
        notes.append(f"no tokenizer could be loaded ({why}): token counts are characters / 4")

        def count(texts: list[str]) -> int:
            return sum(len(text) // 4 for text in texts)
    else:
        notes.append(f"token counts from the tokenizer of {tokenizer_name}")

        def count(texts: list[str]) -> int:  # (as the served backends count them: the Rust ids when exact)
            return sum(len(ids) for ids in prompt_token_ids(tokenizer, texts))

    k = config.summarize.num_samples
    # The corpus streams through in chunks: memory holds one chunk's prompts, never the corpus.
    code_tokens = instruction_tokens = score_tokens = original_tokens = generated_pair_tokens = 0
    usable = snippet_count = 0
    rows_read: int | None = None
    try:
        source = SourceStream(config.source)
        rows = (row for _, row in source if isinstance(row, SourceRow))
        while chunk := list(itertools.islice(rows, 1024)):
            usable += len(chunk)
            original_tokens += count([prompts.magicoder_prompt(r.instruction, r.response) for r in chunk])
            pairs = [
                (r.instruction, block) for r in chunk if (block := extract_code(r.response).code_block) is not None
            ]
            snippet_count += len(pairs)
            code_tokens += count([prompts.summarize_prompt(code, "Write a") for _, code in pairs])
            instruction_tokens += count([text for text, _ in pairs])
            score_tokens += count([prompts.score_prompt(text, code) for text, code in pairs])
            generated_pair_tokens += count([prompts.magicoder_prompt(text, code) for text, code in pairs])
        rows_read = source.info["rows_read"]
    except ConfigError as error:  # a Hub corpus offline and not cached, a missing file: say so, plan the rest
        notes.append(_corpus_note(config, error))

    params = _params_billions(config)
    scale = (params / config.plan.reference_params_b) if params else 1.0
    notes.append(
        f"throughput per GPU from plan.* (measured on a {config.plan.reference_params_b}B model), scaled x{scale:.2f} "
        f"for a {params:.3g}B model"
        if params
        else "model size unknown (no config.json of the model here; plan.model_params_b sets it): throughput "
        "figures used as they are"
    )
    generator, embedded = generator_devices(config, notes)
    trainers = training_devices(config, notes)
    generated_tokens = k * instruction_tokens
    prefill_tokens = k * code_tokens + k * score_tokens
    generation_hours = _hours(generated_tokens, config.plan.generation_tokens_per_s, generator.count, scale) + _hours(
        prefill_tokens, config.plan.scoring_tokens_per_s, generator.count, scale
    )
    if config.generator.backend in SERVED_BACKENDS and rows_read is not None:
        # One client process sends every request: its CPU per request bounds the rate whatever the fleet.
        requests = 2 * snippet_count * k
        client_hours = requests * config.plan.client_us_per_request / 1e6 / 3600
        notes.append(
            f"client: {requests:,} requests x {config.plan.client_us_per_request:g} us of CPU "
            f"(plan.client_us_per_request, measured by benchmarks/rehearsal.py) = {_duration(client_hours)} of one core"
            + (": the client, not the fleet, bounds the dataset step" if client_hours > generation_hours else "")
        )
        generation_hours = max(generation_hours, client_hours)
    train = config.train
    steps = [
        PlannedStep(
            "generator",
            status["generator"],
            f"fine-tune {train.base_model} on {usable} original pairs x {train.original_epochs} epochs "
            f"= {original_tokens * train.original_epochs:,.0f} tokens",
            _hours(original_tokens * train.original_epochs, config.plan.training_tokens_per_s, trainers.count, scale),
            trainers.gpus,
        ),
        PlannedStep(
            "dataset",
            status["dataset"],
            f"{rows_read} rows, {snippet_count} snippets; {snippet_count * k:,} generations "
            f"(~{generated_tokens:,} tokens expected, at most {snippet_count * k * config.summarize.max_new_tokens:,}) "
            f"+ {snippet_count * k:,} scorings; {prefill_tokens:,} prompt tokens",
            generation_hours,
            generator.gpus,
        ),
        PlannedStep(
            "train",
            status["train"],
            f"{generated_pair_tokens * train.generated_epochs:,.0f} tokens (generated, {train.generated_epochs} epoch) "
            f"+ {original_tokens * train.original_epochs:,.0f} tokens (original, {train.original_epochs} epochs)",
            _hours(
                generated_pair_tokens * train.generated_epochs + original_tokens * train.original_epochs,
                config.plan.training_tokens_per_s,
                trainers.count,
                scale,
            ),
            trainers.gpus,
        ),
    ]
    if rows_read is None:
        uncounted = {
            "generator": f"fine-tune {train.base_model} on the corpus x {train.original_epochs} epochs",
            "dataset": f"{k} generations (<= {config.summarize.max_new_tokens:,} new tokens) + {k} scorings a snippet",
            "train": f"the generated pairs x {train.generated_epochs} epoch + the corpus x {train.original_epochs} "
            "epochs",
        }
        for step in steps:
            if step.name in uncounted:
                step.work, step.hours = f"{uncounted[step.name]}: not counted (the corpus cannot be read here)", None
    tasks = {"humaneval": 164, "mbpp": 378}
    n_tasks = sum(min(tasks.get(b, 0), config.evaluate.limit or 10**9) for b in config.evaluate.benchmarks)
    for name in ("evaluate", "evaluate-generator", "evaluate-base"):
        devices = generator if name == "evaluate-generator" else embedded  # the servers serve the generator only
        steps.append(
            PlannedStep(
                name,
                status[name],
                f"{n_tasks} tasks, greedy, <= {config.evaluate.max_new_tokens} new tokens each",
                _hours(
                    n_tasks * config.evaluate.max_new_tokens, config.plan.generation_tokens_per_s, devices.count, scale
                ),
                devices.gpus,
            )
        )
    return steps, notes, generator, trainers


def _duration(hours: float) -> str:
    if hours >= 1:
        return f"{hours:.1f} h"
    if hours * 60 >= 1:
        return f"{hours * 60:.1f} min"
    return f"{hours * 3600:.0f} s"


def format_plan(
    config: RunConfig, steps: list[PlannedStep], notes: list[str], generator: Devices, trainers: Devices
) -> str:
    lines = [
        f"Plan for {config.output}: training on {trainers.where}, generation on {generator.where}:",
        "",
    ]
    lines.append(f"{'step':<20}{'action':<10}{'time':>9}{'GPU-hours':>11}  work")
    total = total_gpu_hours = 0.0
    unknown = False
    for step in steps:
        counted = step.action == "run"
        if counted and step.hours is None:
            unknown = True
            time, gpu_hours = f"{'?':>9}", f"{'?':>11}"
        elif counted and step.hours is not None:
            total += step.hours
            total_gpu_hours += step.hours * step.gpus
            time, gpu_hours = f"{_duration(step.hours):>9}", f"{step.hours * step.gpus:11.2f}"
        else:
            time, gpu_hours = f"{'-':>9}", f"{'-':>11}"
        lines.append(f"{step.name:<20}{step.action:<10}{time}{gpu_hours}  {step.work}")
    at_least = "at least " if unknown else ""
    total_line = f"total: {at_least}{_duration(total)} wall-clock, {at_least}{total_gpu_hours:.2f} GPU-hours"
    if unknown:
        total_line += " (the steps marked ? are not counted: see below)"
    lines += ["", total_line, ""]
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines)


def dry_run(config: RunConfig) -> str:
    return format_plan(config, *plan_run(config))


__all__ = ["Devices", "PlannedStep", "dry_run", "embedded_devices", "format_plan", "generator_devices", "plan_run"]
