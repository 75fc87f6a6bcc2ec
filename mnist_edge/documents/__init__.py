"""The JSON documents the tool writes and reads: one table of schema names, one strict parser, one bounded
loader.

Every document names itself in ``schema`` (name and major version); fields may be added within a
version, never removed or renamed (that makes the next version). Every JSON document the tool reads back
(manifests, recipes, bench, search, int8 and robustness reports) goes through :func:`load_json`: a
size cap, regular files only (no FIFO, no device), strict JSON (finite numbers, nesting at most MAX_DEPTH),
the expected schema.

Modules: :mod:`~mnist_edge.documents.fields` (typed documents: dataclass fields that say how each value is
checked), :mod:`~mnist_edge.documents.commands` (the `export --json` / `verify --json` documents),
:mod:`~mnist_edge.documents.readers` (the table of every reader of a file the tool reads, JSON or binary).
"""

from __future__ import annotations

import json
import math

from mnist_edge.errors import ArtifactError

# kind -> schema name: every versioned document, written or read, is named here once.
SCHEMAS = {
    "manifest": "mnist-edge-manifest/1",
    "checkpoint": "mnist-edge-checkpoint/1",
    "selftest_bundle": "mnist-edge-selftest/1",  # the header of selftest.bin
    "selftest_report": "mnist-edge-selftest-report/1",  # `verify --self-test --json`
    "export": "mnist-edge-export/1",
    "verify": "mnist-edge-verify/1",
    "bench": "mnist-edge-bench/1",
    "predict": "mnist-edge-predict/1",
    "robustness": "mnist-edge-robustness/1",
    "int8_recipe": "mnist-edge/int8-recipe/1",
}
EXPORT_SCHEMA = SCHEMAS["export"]
VERIFY_SCHEMA = SCHEMAS["verify"]
MAX_DOCUMENT_BYTES = 8 << 20  # ours are at most a few hundred kB
MAX_DEPTH = 32  # lists and objects in lists and objects: ours nest at most 6 deep


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _small_int(text: str) -> int:
    if len(text.lstrip("-")) > 20:
        raise ValueError(f"a {len(text.lstrip('-')):,}-digit integer")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400: float() gives inf where the literal Infinity is refused
        raise ValueError(f"{text[:40]} is out of the range of a finite number")
    return value


def _depth(doc) -> int:
    """How deeply ``doc``'s lists and objects nest, counted without recursion."""
    deepest, todo = 0, [(doc, 0)]
    while todo:
        value, level = todo.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is not None:
            deepest = max(deepest, level + 1)
            todo += [(c, level + 1) for c in children if isinstance(c, (dict, list))]
    return deepest


def parse_json(data: bytes, path) -> object:
    """Strict JSON: UTF-8, finite numbers only (no NaN, Infinity or 1e400), integers of at most 20 digits,
    lists and objects nested at most MAX_DEPTH deep; anything else is an ArtifactError naming ``path``."""
    try:
        doc = json.loads(data.decode("utf-8"), parse_constant=_no_constant, parse_int=_small_int,
                         parse_float=_finite_float)
    except UnicodeDecodeError as e:
        raise ArtifactError(f"'{path}' is not valid JSON: not UTF-8 ({e.reason} at byte {e.start})") from None
    except RecursionError:
        raise ArtifactError(f"'{path}' is not valid JSON for us: nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, NaN/Infinity, huge integers
        raise ArtifactError(f"'{path}' is not valid JSON: {str(e)[:200]}") from None
    # A document that parsed can still be too deep for code that walks it recursively (repr in an error
    # message, json.dumps of kept keys): ours nest 6 deep, so refuse anything past MAX_DEPTH here, once.
    if _depth(doc) > MAX_DEPTH:
        raise ArtifactError(f"'{path}' is not valid JSON for us: nested more than {MAX_DEPTH} deep")
    return doc


def load_json(path, *, kind: str | None = None, limit: int = MAX_DOCUMENT_BYTES, error=None):
    """The parsed JSON document at ``path``: a regular file of at most ``limit`` bytes, strict JSON, and
    (with ``kind``) an object whose ``schema`` is ``SCHEMAS[kind]``. Anything else raises ``error``
    (default ArtifactError) with one line naming the file and what was wrong."""
    from mnist_edge.files import FileTooLargeError, describe_os_error, read_regular

    error = error or ArtifactError
    try:
        data = read_regular(path, limit)
    except FileTooLargeError:
        raise error(f"'{path}' is over {limit:,} bytes: not a document mnist-edge wrote") from None
    except OSError as e:
        raise error(f"cannot read '{path}': {describe_os_error(e)}") from None
    try:
        doc = parse_json(data, path)
    except ArtifactError as e:
        raise error(str(e)) from None
    if kind is not None:
        found = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        if found != SCHEMAS[kind]:
            raise error(f"'{path}' is not a {kind.replace('_', ' ')} document: schema {found!r:.80}, expected "
                        f"{SCHEMAS[kind]!r}")
    return doc
