"""The paper's prompt templates, verbatim (InverseCoder, arXiv 2407.05700, and its released code).

Blank lines matter: the model was trained on exactly this Magicoder format, so every prompt we send
(summarize, self-evaluate, evaluate) and every training example goes through these functions.
"""

from __future__ import annotations

import random

SYSTEM = (
    "You are an exceptionally intelligent coding assistant that consistently delivers accurate and "
    "reliable responses to user instructions."
)

#: Verb prefixes the summarizer's response starts with (one is drawn per candidate, seeded).
PREFIXES: tuple[str, ...] = (
    "Write a",
    "Create a",
    "Implement a",
    "Develop a",
    "Design a",
    "Build a",
    "I want a",
)


def magicoder_prompt(instruction: str, response_prefix: str = "") -> str:
    """The training/inference format, up to and including the (optional) start of the response."""
    return f"{SYSTEM}\n\n@@ Instruction\n{instruction}\n\n@@ Response\n{response_prefix}"


def summarize_prompt(code_block: str, prefix: str) -> str:
    """Step 2: ask for the problem description of a fenced code block, response seeded with `prefix`."""
    instruction = (
        f"This is a response code snippet to a programming problem, please give the problem description:\n{code_block}"
    )
    return magicoder_prompt(instruction, prefix)


def summarize_prefix(rng: random.Random, language: str) -> str:
    """A seeded verb prefix plus the fence's language tag ("Write a python"), as upstream does."""
    verb = rng.choice(PREFIXES)
    return f"{verb} {language}" if language else verb


def score_prompt(instruction: str, code_block: str) -> str:
    """Step 3: the self-evaluation question; the score is P(Yes) at the first response token."""
    question = (
        f"Here is a programming problem:\n{instruction}\n\n"
        f"Here is the answer code to the problem:\n{code_block}\n"
        "Is the answer correct? Your reply should begin with Yes or No."
    )
    return magicoder_prompt(question)


def same_problem_prompt(row_text: str, task_statement: str) -> str:
    """The decontamination judge's question (not the paper's: its own addition); the verdict is P(Yes) at the
    first response token, scored exactly like the self-evaluation."""
    question = (
        f"Here is a programming task from a training set:\n{row_text}\n\n"
        f"Here is a programming problem from a benchmark:\n{task_statement}\n\n"
        "Do both ask for the same program (the same inputs and the same outputs), whatever their wording, "
        "names or language? Your reply should begin with Yes or No."
    )
    return magicoder_prompt(question)


def humaneval_instruction(prompt: str) -> str:
    return f"Write a solution to the following problem:\n```python\n{prompt}\n```"


def mbpp_instruction(text: str, assertion: str) -> str:
    return f"{text} Your code should satisfy the following assertion:\n```python\n{assertion}\n```"


#: The Magicoder format as a chat template (single turn; system messages rejected, as upstream).
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' -%}"
    "{{ raise_exception('System messages are not supported: the Magicoder format has a fixed preamble.') }}"
    "{%- endif -%}"
    "{{ bos_token if bos_token else '' }}"
    "{{ '" + SYSTEM + "\\n\\n' }}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}"
    "{{ '@@ Instruction\\n' + message['content'] + '\\n\\n' }}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{ '@@ Response\\n' }}{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '@@ Response\\n' }}{%- endif -%}"
)
