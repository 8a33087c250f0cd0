"""Program outputs as data: a type-preserving encoding of builtin values, decoded defensively.

A sandboxed program hands back its outputs as bytes, never as objects, and the verdict is reached
in the trusted process on what these bytes decode to: builtin values only, whose comparison runs no
code the program wrote. The encoding is `marshal` version 2 (C speed, no references, so the same
value always gives the same bytes) of exactly these types: None, bool, int (any size), float (NaN,
inf and -0.0 survive, bit for bit), complex, str, bytes, tuple, list, dict, set, frozenset, and four
stdlib containers the trusted side rebuilds itself (`collections.Counter`, `OrderedDict`,
`defaultdict` (without its factory) and `deque`), carried as the tuple `(..., name, contents)`
(a bare Ellipsis is not a value we accept, so the marker cannot be confused with one). Anything else,
a user-defined class or a subclass of a builtin (a float whose `__eq__` always says True), is not
encodable: `encode` returns None, and that output fails its input (objects with the buffer
protocol, such as numpy scalars, come back as the bytes they hold: see `encode`).

`decode` is the trusted side: a parser of that subset of marshal written here (never `marshal.loads`,
which is documented as unsafe on hostile bytes), with limits on nesting and sizes; anything else
raises `MalformedValue`. `encode` runs on both sides: in the sandbox on the program's outputs (where
the program could bypass it, which only lets it claim outputs it could have returned), and in the
trusted process on the expected outputs, so that equal values in the same order give equal bytes.
"""

from __future__ import annotations

import cmath
import collections
import marshal
import struct
from typing import Any

MAX_DEPTH = 100  # nesting the decoder accepts (the comparison recurses in C as deep)
_WALK_DEPTH = 200
_I32, _U32, _F64, _C128 = struct.Struct("<i"), struct.Struct("<I"), struct.Struct("<d"), struct.Struct("<dd")
_SCALARS = frozenset({type(None), bool, int, float, complex, str, bytes})
_EXACT_NUMBERS = frozenset({bool, int, float, complex})
_SPECIAL: dict[type, str] = {
    collections.Counter: "Counter",
    collections.OrderedDict: "OrderedDict",
    collections.defaultdict: "defaultdict",
    collections.deque: "deque",
}


class MalformedValue(ValueError):
    """Bytes that are not the encoding of an accepted value."""


class _Unencodable(Exception):
    pass


def encode(value: Any) -> bytes | None:
    """The value's bytes, or None when it is (or holds) anything but the accepted types.

    marshal refuses every subclass and foreign class, except objects with the buffer protocol (a
    numpy scalar, a bytearray), which it writes as bytes: they come back as bytes, never as what they
    were, so a numpy float fails a float comparison as the policy wants, and a bytearray compares as
    the bytes it holds (as it does in Python)."""
    try:
        return marshal.dumps(value, 2)
    except (ValueError, RecursionError):  # unmarshallable (a subclass, a class of its own), or too deep
        pass
    try:  # the stdlib containers, as marked tuples
        return marshal.dumps(_plain(value, 0), 2)
    except (_Unencodable, ValueError, RecursionError):
        return None


def has_nan(value: Any, depth: int = 0) -> bool:
    """Whether a (trusted) value holds a NaN, or anything a decoded copy would not equal (marked containers)."""
    kind = type(value)
    if kind is float or kind is complex:
        return value != value
    if kind in _SCALARS:
        return False
    if depth > _WALK_DEPTH:
        return True
    if kind is list or kind is tuple or kind is set or kind is frozenset:
        kinds = set(map(type, value))
        if kinds <= _EXACT_NUMBERS:
            try:
                return any(map(cmath.isnan, value))  # C speed
            except OverflowError:  # an int beyond floats: only floats and complex can be NaN
                return any(x != x for x in value)
        if kinds <= _SCALARS:
            return any(has_nan(item, depth + 1) for item in value if type(item) is float or type(item) is complex)
        return any(has_nan(item, depth + 1) for item in value)
    if kind is dict:
        return any(has_nan(k, depth + 1) or has_nan(v, depth + 1) for k, v in value.items())
    return True


def _plain(value: Any, depth: int) -> Any:
    """`value` with the stdlib containers as marked tuples; raises for anything not accepted."""
    kind = type(value)  # type(), not isinstance or __class__: a subclass is not its base
    if kind in _SCALARS:
        return value
    if depth > _WALK_DEPTH:
        raise _Unencodable
    if kind is list or kind is tuple or kind is set or kind is frozenset:
        if set(map(type, value)) <= _SCALARS:
            return value
        return kind(_plain(item, depth + 1) for item in value)
    if kind is dict:
        return {_plain(k, depth + 1): _plain(v, depth + 1) for k, v in value.items()}
    if kind in _SPECIAL:
        contents: Any = list(value) if kind is collections.deque else dict(value)
        return (..., _SPECIAL[kind], _plain(contents, depth + 1))
    raise _Unencodable


def decode(data: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """The value `data` encodes; `MalformedValue` for anything else (trailing bytes included)."""
    reader = _Reader(bytes(data), max_depth)
    value = reader.value(0)
    if reader.pos != len(reader.data):
        raise MalformedValue("trailing bytes")
    return value


class _Reader:
    def __init__(self, data: bytes, max_depth: int):
        self.data, self.pos, self.max_depth = data, 0, max_depth

    def take(self, size: int) -> bytes:
        end = self.pos + size
        if size < 0 or end > len(self.data):
            raise MalformedValue("truncated")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def count(self) -> int:
        (n,) = _U32.unpack(self.take(4))
        if n > len(self.data) - self.pos:  # every item takes at least one byte
            raise MalformedValue("count beyond the data")
        return n

    def value(self, depth: int) -> Any:
        if depth > self.max_depth:
            raise MalformedValue("nested too deeply")
        code = self.take(1)
        if code == b"N":
            return None
        if code == b"T":
            return True
        if code == b"F":
            return False
        if code == b"i":
            return _I32.unpack(self.take(4))[0]
        if code == b"l":
            return self.long()
        if code == b"g":
            return _F64.unpack(self.take(8))[0]
        if code == b"y":
            return complex(*_C128.unpack(self.take(16)))
        if code == b"s":
            return self.take(self.count())
        if code in (b"u", b"t"):
            try:
                return self.take(self.count()).decode("utf-8", "surrogatepass")
            except UnicodeDecodeError as error:
                raise MalformedValue("bad text") from error
        if code == b"{":
            result = {}
            while self.data[self.pos : self.pos + 1] != b"0":
                key = self.value(depth + 1)
                result[self.hashable(key)] = self.value(depth + 1)
            self.pos += 1
            return result
        if code in (b"(", b"[", b"<", b">"):
            n = self.count()
            if code == b"(" and n == 3 and self.data[self.pos : self.pos + 1] == b".":
                return self.special(depth)
            items = [self.value(depth + 1) for _ in range(n)]
            if code == b"(":
                return tuple(items)
            if code == b"[":
                return items
            try:
                return set(items) if code == b"<" else frozenset(items)
            except TypeError as error:
                raise MalformedValue("unhashable set member") from error
        raise MalformedValue(f"type code {code!r} not accepted")

    def hashable(self, key: Any) -> Any:
        try:
            hash(key)
        except TypeError as error:
            raise MalformedValue("unhashable key") from error
        return key

    def long(self) -> int:
        (n,) = _I32.unpack(self.take(4))
        size = abs(n)
        if 2 * size > len(self.data) - self.pos:
            raise MalformedValue("long beyond the data")
        digits = struct.unpack(f"<{size}H", self.take(2 * size))
        if any(d >= 1 << 15 for d in digits):
            raise MalformedValue("bad long digit")
        # base 2**15 digits, least significant first; a base-2 string converts in linear time
        magnitude = int("".join(f"{d:015b}" for d in reversed(digits)) or "0", 2)
        return -magnitude if n < 0 else magnitude

    def special(self, depth: int) -> Any:
        self.pos += 1  # the Ellipsis marker
        name = self.value(depth + 1)
        contents = self.value(depth + 1)
        if name == "deque" and type(contents) is list:
            return collections.deque(contents)
        if name in ("Counter", "OrderedDict", "defaultdict") and type(contents) is dict:
            if name == "Counter":
                return collections.Counter(contents)
            if name == "OrderedDict":
                return collections.OrderedDict(contents)
            return collections.defaultdict(None, contents)
        raise MalformedValue("unknown marked value")
