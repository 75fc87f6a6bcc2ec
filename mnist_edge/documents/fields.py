"""Typed documents from parsed JSON: dataclass fields that say how each value is checked, one parser that
checks every field it fills (type, finite numbers, ranges) and one writer back to plain JSON.

A document's dataclass declares each field with :func:`spec` (a :class:`Check`, or a nested dataclass, or a
list of them). :func:`parse` fills the dataclass from a JSON object and raises the caller's error class
(default ArtifactError) naming the file and the field path (``'r.json': results[3].p50_ms is [None],
expected a positive finite number``); keys it does not know are kept in the ``extra`` field, so a document
written by a newer version of the same schema (fields may be added within a version) reads and writes back
unchanged. :func:`dump` writes the fields in declaration order, then ``extra``.

Standard library only: the runtime, bench, the cards and verify read their documents through it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable

from mnist_edge.errors import ArtifactError

EXTRA = "extra"  # the dataclass field that keeps unknown keys


@dataclass(frozen=True)
class Check:
    """A test of one JSON value and the words for what it expects."""

    ok: Callable[[Any], bool]
    expected: str
    item: "Check | None" = None  # a list's or an object's check of each item: an error names the bad one
    container: type | None = None  # list or dict: the type whose items ``item`` checks

    def __call__(self, v) -> bool:
        return self.ok(v)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


TEXT = Check(lambda v: isinstance(v, str), "a string")
FLAG = Check(lambda v: isinstance(v, bool), "true or false")
FINITE = Check(_number, "a finite number")
POSITIVE = Check(lambda v: _number(v) and v > 0, "a positive finite number")
NONNEG = Check(lambda v: _number(v) and v >= 0, "a finite number >= 0")
PERCENT = Check(lambda v: _number(v) and 0 <= v <= 100, "a percentage from 0 to 100")
SCALAR = Check(lambda v: v is None or isinstance(v, (str, bool)) or _number(v), "a string, number, boolean or null")


def count(lo: int = 0, hi: int | None = None) -> Check:
    if hi is None:
        return Check(lambda v: _int(v) and v >= lo, f"an integer >= {lo}")
    return Check(lambda v: _int(v) and lo <= v <= hi, f"an integer from {lo} to {hi:,}")


def between(lo: float, hi: float, what: str = "a number") -> Check:
    """A finite number from ``lo`` to ``hi``: bounds that keep every ratio and sum computed from it finite."""
    return Check(lambda v: _number(v) and lo <= v <= hi, f"{what} from {lo:g} to {hi:g}")


# Times in milliseconds as a clock measures them: 1 ns (perf_counter_ns's step) to 11 days. A ratio of two
# such times stays below 1e15, so no table or card shows inf.
MS = between(1e-6, 1e9, "a positive finite number of ms")
MS0 = between(0, 1e9, "a finite number of ms")  # a duration that may round to 0 (a spread, a load)
RATIO = between(1e-6, 1e6, "a ratio")  # one time over another
def _file_path(v) -> bool:
    if not isinstance(v, str) or not 0 < len(v) <= 4096 or "\0" in v:
        return False
    try:
        parts = v.encode("utf-8").split(b"/")  # a lone surrogate ("\ud800") has no bytes to name a file by
    except UnicodeEncodeError:
        return False
    return all(len(part) <= 255 for part in parts)


# A file name or path as a report records it: the card joins it to a folder and looks the file up, and a NUL
# byte, a lone surrogate or a 256-byte name there is an error of the operating system, not ours.
PATH = Check(_file_path, "a file name (UTF-8, no NUL, at most 255 bytes a part)")


def one_of(*values) -> Check:
    return Check(lambda v: isinstance(v, str) and v in values, "one of " + ", ".join(map(repr, values)))


def optional(check: Check) -> Check:
    return Check(lambda v: v is None or check(v), f"{check.expected} or null", check.item, check.container)


def list_of(check: Check, length: int | None = None) -> Check:
    size = f" of {length}" if length is not None else ""
    return Check(lambda v: isinstance(v, list) and (length is None or len(v) == length) and all(map(check, v)),
                 f"a list{size}, each item {check.expected}", check, list)


def dict_of(check: Check) -> Check:
    return Check(lambda v: isinstance(v, dict) and all(isinstance(k, str) and check(x) for k, x in v.items()),
                 f"an object, each value {check.expected}", check, dict)


def _plain(v, depth: int) -> bool:
    if isinstance(v, dict):
        return depth > 0 and all(isinstance(k, str) and _plain(x, depth - 1) for k, x in v.items())
    if isinstance(v, list):
        return depth > 0 and all(_plain(x, depth - 1) for x in v)
    return SCALAR(v)


def record(depth: int = 3) -> Check:
    """An object of scalars, lists and objects nested at most ``depth`` deep: a recorded blob (a Pi's clock
    state, a library's versions) that is shown, never computed with."""
    return Check(lambda v: isinstance(v, dict) and _plain(v, depth), f"an object of plain values (depth <= {depth})")


def interval(check: Check) -> Check:
    """``[low, high]``, both passing ``check``, low <= high."""
    return Check(lambda v: isinstance(v, list) and len(v) == 2 and all(map(check, v)) and v[0] <= v[1],
                 f"[low, high], each {check.expected}, low <= high")


INTERVAL = interval(POSITIVE)


def spec(check: Check | type | None = None, *, many: bool = False, required: bool = False,
         omit_none: bool = False, default=None, factory=None):
    """A dataclass field read by :func:`parse`: ``check`` a Check or a nested document dataclass (``many``:
    a list of them); ``required``: a missing key is an error (else the default); ``omit_none``: not written
    when None (a key older documents lack and newer ones only sometimes carry)."""
    meta = {"check": check, "many": many, "required": required, "omit_none": omit_none}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def extra_field():
    """The field that keeps keys the dataclass does not declare."""
    return dataclasses.field(default_factory=dict, repr=False, metadata={"check": None})


class Where:
    """The file and the field path being read: what an error names."""

    def __init__(self, source, path: str = "", error: type[Exception] = ArtifactError):
        self.source, self.path, self.error = str(source), path, error

    def at(self, key) -> "Where":
        step = f"[{key}]" if isinstance(key, int) else (f".{key}" if self.path else str(key))
        return Where(self.source, self.path + step, self.error)

    def fail(self, problem: str) -> Exception:
        where = f"{self.path} " if self.path else ""
        return self.error(f"'{self.source}': {where}{problem}")

    def bad(self, value, expected: str) -> Exception:
        return self.fail(f"is {_short(value)}, expected {expected}")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse(cls, obj, where: Where):
    """An instance of document dataclass ``cls`` from the JSON object ``obj``; every field checked."""
    if not isinstance(obj, dict):
        raise where.bad(obj, "a JSON object")
    values, known = {}, set()
    for f in dataclasses.fields(cls):
        known.add(f.name)
        if f.name == EXTRA:
            continue
        meta = f.metadata
        if f.name not in obj:
            if meta.get("required"):
                raise where.at(f.name).fail("is missing")
            continue  # the dataclass default
        values[f.name] = _value(meta, obj[f.name], where.at(f.name))
    if any(f.name == EXTRA for f in dataclasses.fields(cls)):
        values[EXTRA] = {k: v for k, v in obj.items() if k not in known}
    doc = cls(**values)
    rules = getattr(doc, "validate", None)
    if rules is not None:
        rules(where)  # rules across fields (percentiles in order, ...)
    return doc


def _value(meta, value, where: Where):
    check = meta["check"]
    if isinstance(check, type):  # a nested document, or a list of them
        if value is None and not meta.get("required"):
            return None
        if meta.get("many"):
            if not isinstance(value, list):
                raise where.bad(value, "a list of objects")
            return [parse(check, v, where.at(i)) for i, v in enumerate(value)]
        return parse(check, value, where)
    if check is not None and not check(value):
        raise _first_bad(check, value, where)
    return value


def _first_bad(check: Check, value, where: Where) -> Exception:
    """The error for ``value``: at its first bad item when ``check`` is a list's or an object's whose shape
    is right (``results[0].accuracy.clean is -1``), else at ``value`` itself."""
    if check.item is not None and isinstance(value, check.container):
        for key, item in (enumerate(value) if isinstance(value, list) else value.items()):
            if not check.item(item):
                return _first_bad(check.item, item, where.at(key))
    return where.bad(value, check.expected)


def dump(doc) -> dict:
    """The plain JSON object of a document dataclass: declared fields in order, then ``extra``."""
    out = {}
    omit = doc.omitted() if hasattr(doc, "omitted") else ()
    for f in dataclasses.fields(doc):
        if f.name == EXTRA or f.name in omit:
            continue
        v = getattr(doc, f.name)
        if v is None and f.metadata.get("omit_none"):
            continue
        out[f.name] = _plain_value(v)
    out.update(getattr(doc, EXTRA, None) or {})
    return out


def _plain_value(v):
    if dataclasses.is_dataclass(v):
        return dump(v)
    if isinstance(v, list):
        return [_plain_value(x) for x in v]
    return v
