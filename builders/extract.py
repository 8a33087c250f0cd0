"""Step 1: extract the code of a response.

Rules (the paper's, with its known defects fixed):
- a response with a ``` fence: keep the FIRST fenced block, fence and language tag included;
  an unclosed fence keeps everything after it (upstream chopped the last character);
- a response without a fence: keep it only if it parses as Python AND looks like code (upstream
  accepted a bare word such as "Yes"), wrapped as a ```python block.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

# An opening fence: ```, an optional language tag, then the end of the line (anywhere in the text:
# responses often say "Here it is: ```python").
_OPEN_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+#.\-]*)[ \t]*\n")
_CLOSE_FENCE = re.compile(r"^[ \t]*```[ \t]*$", re.MULTILINE)

# Nodes that make a module "code" rather than a lone expression like `Yes` or `Hello world`.
_CODE_NODES = (
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.ClassDef,
    ast.Import,
    ast.ImportFrom,
    ast.Assign,
    ast.AugAssign,
    ast.AnnAssign,
    ast.For,
    ast.AsyncFor,
    ast.While,
    ast.If,
    ast.With,
    ast.AsyncWith,
    ast.Try,
    ast.Return,
    ast.Raise,
    ast.Assert,
    ast.Delete,
    ast.Global,
    ast.Nonlocal,
)

_LANGUAGE_ALIASES = {
    "py": "python",
    "python3": "python",
    "js": "javascript",
    "c++": "cpp",
    "sh": "bash",
    "shell": "bash",
    "ts": "typescript",
    "golang": "go",
    "rs": "rust",
}


@dataclass(frozen=True)
class Extraction:
    """The code block of one response, or why there is none."""

    code_block: str | None  # "```lang\n...\n```", ready to go into prompts and to be the new response
    code: str | None  # the code alone
    language: str  # normalized fence tag ("" when the fence had none)
    reason: str | None = None  # set when code_block is None
    tag: str = ""  # the fence tag as written (`summarize.language_tag: raw`, as the paper's prefix had it)


def normalize_language(tag: str) -> str:
    tag = tag.strip().lower()
    return _LANGUAGE_ALIASES.get(tag, tag)


def looks_like_python_code(text: str) -> bool:
    """True when `text` parses as Python and has at least one statement beyond a bare expression,
    or a call (`print(x)`): a bare word, a number or a sentence fragment is not code."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return any(isinstance(node, (_CODE_NODES, ast.Call)) for node in ast.walk(tree))


def extract_code(response: str) -> Extraction:
    """Extract the first fenced block of `response` (see the module docstring for the rules)."""
    opening = _OPEN_FENCE.search(response)
    if opening is not None:
        tag = opening.group(1)
        body_start = opening.end()
        # A closing fence on its own line; failing that, any ``` (e.g. "return x```"); failing that,
        # the fence is unclosed and the block runs to the end of the response.
        closing = _CLOSE_FENCE.search(response, body_start)
        end = closing.start() if closing else response.find("```", body_start)
        body = response[body_start:end] if end != -1 else response[body_start:]
        body = body.rstrip()
        if not body.strip():
            return Extraction(None, None, "", "empty code block")
        return Extraction(f"```{tag}\n{body}\n```", body, normalize_language(tag), tag=tag)
    text = response.strip()
    if not text:
        return Extraction(None, None, "", "empty response")
    if not looks_like_python_code(text):
        return Extraction(None, None, "", "no code block and not Python code")
    return Extraction(f"```python\n{text}\n```", text, "python", tag="python")
