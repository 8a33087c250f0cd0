"""Code as identifier-normalized tokens: what the decontamination's code layer and the execution tier
both measure code by (in the core, so that builders and the core's execution matcher share one
definition of a "token")."""

from __future__ import annotations

import builtins
import keyword
import re

_CODE_TOKEN = re.compile(
    r"""(?P<str>[rRbBuUfF]{0,2}(?:\"\"\"[\s\S]*?\"\"\"|'''[\s\S]*?'''|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'))"""
    r"""|(?P<comment>(?:\#|//)[^\n]*)"""
    r"""|(?P<num>\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"""
    r"""|(?P<name>[^\W\d]\w*)"""
    r"""|(?P<op>\*\*=?|//=?|==|!=|<=|>=|->|:=|<<|>>|[-+*/%&|^@]=|[^\s\w])"""
)
_KEEP_NAMES = frozenset(keyword.kwlist) | frozenset(keyword.softkwlist) | frozenset(dir(builtins))
_IMPORT_LINE = re.compile(r"^[ \t]*(?:from[ \t]+[\w.]+[ \t]+)?import[ \t][^\n]*$", re.MULTILINE)
_OPEN, _CLOSE = {"(", "[", "{"}, {")", "]", "}"}


def code_tokens(code: str, rename: bool = True) -> list[str]:
    """Identifier-normalized tokens: names that are not keywords, builtins or attributes become ID
    (unless `rename` is false), strings STR; numbers and operators stay; comments go."""
    out: list[str] = []
    for match in _CODE_TOKEN.finditer(code):
        kind = match.lastgroup
        if kind == "comment":
            continue
        if kind == "str":
            out.append("STR")
        elif kind == "name":
            name = match.group()
            out.append(name if not rename or name in _KEEP_NAMES or (out and out[-1] == ".") else "ID")
        else:
            out.append(match.group())
    return out


def canonical_tokens(code: str) -> list[str]:
    """`code_tokens` without what a rewrite changes and the program does not: import lines, type
    annotations and return types of `def` headers, docstrings, parentheses and line continuations.
    Token-level (no parsing), so it works the same on any code and costs little."""
    tokens = code_tokens(_IMPORT_LINE.sub("", code))
    out: list[str] = []
    i, count = 0, len(tokens)
    while i < count:
        token = tokens[i]
        if token in ("def", "class"):
            out.append(token)
            i += 1
            depth = 0
            while i < count:  # the header, up to the ':' that ends it
                token = tokens[i]
                if token in _OPEN:
                    depth += 1
                elif token in _CLOSE:
                    depth -= 1
                elif token == ":" and depth == 1:  # an annotation: skip to the next ',' '=' or ')' of the list
                    i += 1
                    inner = 0
                    while i < count and not (inner == 0 and tokens[i] in (",", "=", ")")):
                        inner += 1 if tokens[i] in _OPEN else -1 if tokens[i] in _CLOSE else 0
                        i += 1
                    continue
                elif token == "->" and depth == 0:
                    while i < count and tokens[i] != ":":
                        i += 1
                    continue
                elif token == ":" and depth == 0:
                    out.append(token)
                    i += 1
                    if i < count and tokens[i] == "STR":  # a docstring
                        i += 1
                    break
                out.append(token)
                i += 1
            continue
        out.append(token)
        i += 1
    return [t for t in out if t not in ("(", ")", "\\")]
