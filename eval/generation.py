"""The evaluation prompts and their generation: one `EvalTask` per benchmark problem, `Decoding`
settings, and the completions turned into EvalPlus samples.

Prompts follow Magicoder/InverseCoder's text2code: HumanEval instructs with the stripped problem
prompt and pre-fills the response with it; MBPP+ takes the description and the assertion from the
problem's docstring (a '.' appended to the description when missing) and pre-fills "```python".
Generation stops at the closing fence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from inversecoder.core import prompts
from inversecoder.core.backends.base import CachedModel, GenerationRequest, SamplingParams
from inversecoder.core.benchmarks import Benchmark
from inversecoder.core.errors import ConfigError

FENCE = "```"
CODE_FENCE = "```python"
#: MBPP's response prefix, as in Magicoder's text2code and the paper (no newline after the tag).
MBPP_RESPONSE_PREFIX = CODE_FENCE


@dataclass(frozen=True)
class EvalTask:
    """One benchmark problem as the model sees it; `prefill_code` is the code already written in the
    response, so solution = prefill_code + completion."""

    task_id: str
    instruction: str
    prompt: str  # the full Magicoder prompt, pre-filled response included
    prefill_code: str


# -- prompts ----------------------------------------------------------------------------------------
def humaneval_task(problem: dict[str, Any]) -> EvalTask:
    """The model continues the function it was shown, inside an open ```python block."""
    code = problem["prompt"].strip()
    instruction = prompts.humaneval_instruction(code)
    prompt = prompts.magicoder_prompt(instruction, f"{CODE_FENCE}\n{code}")
    return EvalTask(problem["task_id"], instruction, prompt, code)


def mbpp_text_and_assertion(problem: dict[str, Any]) -> tuple[str, str]:
    """Split the MBPP+ docstring prompt into its description and its (single) assert line.

    The docstring's assertion, not the first line of the `assertion` field: they differ for 19 tasks
    (e.g. Mbpp/2 wraps both sides in set()), and upstream prompts use the docstring's.
    """
    source = problem["prompt"]
    body = source[source.index('"""') + 3 : source.rindex('"""')]
    split = body.index("assert")
    text = body[:split].strip()
    if not text.endswith("."):
        text += "."
    return text, body[split:].strip()


def mbpp_task(problem: dict[str, Any]) -> EvalTask:
    """The model writes the whole program after an opening ```python fence."""
    instruction = prompts.mbpp_instruction(*mbpp_text_and_assertion(problem))
    prompt = prompts.magicoder_prompt(instruction, MBPP_RESPONSE_PREFIX)
    return EvalTask(problem["task_id"], instruction, prompt, "")


def build_tasks(benchmark: Benchmark, limit: int | None = None) -> list[EvalTask]:
    """The paper's prompts for the first `limit` problems (all when None), in dataset order."""
    make = humaneval_task if benchmark.name == "humaneval" else mbpp_task
    problems = list(benchmark.problems.values())
    return [make(problem) for problem in (problems if limit is None else problems[:limit])]


def prompt_templates() -> dict[str, Any]:
    """The templates with placeholders, rendered by the same functions the prompts go through."""
    return {
        "format": prompts.magicoder_prompt("{instruction}", "{response_prefix}"),
        "humaneval": {
            "instruction": prompts.humaneval_instruction("{prompt}"),
            "response_prefix": f"{CODE_FENCE}\n{{prompt}}",
            "prompt": "problem['prompt'].strip()",
        },
        "mbpp": {
            "instruction": prompts.mbpp_instruction("{text}", "{assertion}"),
            "response_prefix": MBPP_RESPONSE_PREFIX,
            "text": "the docstring's description (a '.' appended when missing)",
            "assertion": "the docstring's assert line",
        },
    }


# -- generation -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Decoding:
    """How solutions are drawn: greedy (n_samples 1, temperature 0) or n seeded samples per task."""

    max_new_tokens: int = 512
    n_samples: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0  # sample j of every task uses seed + j

    def __post_init__(self) -> None:
        if self.n_samples < 1:
            raise ConfigError(f"evaluate.n_samples must be >= 1, got {self.n_samples}")
        if self.n_samples > 1 and self.temperature <= 0:
            raise ConfigError(
                "evaluate.n_samples > 1 needs evaluate.temperature > 0 (greedy decoding gives one solution)"
            )

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    def params(self) -> SamplingParams:
        if self.greedy:
            return greedy_params(self.max_new_tokens)
        return SamplingParams(
            temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens, stop=(FENCE,)
        )

    def record(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "greedy": self.greedy,
            "max_new_tokens": self.max_new_tokens,
            "stop": [FENCE],
            "n_samples": self.n_samples,
        }
        if not self.greedy:
            record |= {
                "temperature": self.temperature,
                "top_p": self.top_p,
                "seeds": f"sample j uses seed {self.seed} + j",
            }
        return record


def greedy_params(max_new_tokens: int) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens, stop=(FENCE,))


def _cut_at_fence(text: str) -> str:
    """Backends that return the stop string (or ignore stops) still yield just the code."""
    index = text.find(FENCE)
    return text if index == -1 else text[:index]


def generate_solutions(
    model: CachedModel,
    tasks: Sequence[EvalTask],
    max_new_tokens: int,
    desc: str = "evaluate",
    decoding: Decoding | None = None,
) -> list[dict[str, Any]]:
    """`decoding.n_samples` completions per task (one greedy by default), as evalplus samples (plus
    our raw fields), task by task in order."""
    decoding = decoding or Decoding(max_new_tokens=max_new_tokens)
    seeds = [0] if decoding.greedy else [decoding.seed + j for j in range(decoding.n_samples)]
    requests = [GenerationRequest(task.prompt, seed=seed) for task in tasks for seed in seeds]
    completions = model.generate(requests, decoding.params(), desc=desc)
    samples = []
    for index, completion in enumerate(completions):
        task = tasks[index // len(seeds)]
        failed = completion.error is not None or completion.text is None
        raw = completion.text or ""
        sample: dict[str, Any] = {
            "task_id": task.task_id,
            "solution": "" if failed else task.prefill_code + _cut_at_fence(raw),
            "raw_completion": raw,
            "finish_reason": completion.finish_reason,
            "error": completion.error if failed else None,
        }
        if not decoding.greedy:
            sample["seed"] = seeds[index % len(seeds)]
        samples.append(sample)
    return samples
