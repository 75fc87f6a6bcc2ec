"""The int8 search's result as typed records: what ``int8_recipe.json`` (schema mnist-edge/int8-recipe/1) holds.

:class:`SearchResult` is the whole document: the chosen options, the verdict and the file to recommend,
the machine, the search's settings, and every :class:`Trial` with its :class:`Ratio` s (int8/fp32 p50
with a 95% interval per batch size). ``to_json`` writes today's format exactly; ``from_json`` reads a file
through :func:`mnist_edge.documents.load_json` and checks every field's type, so a malformed or hand-edited
file fails with one line naming the file and the field instead of a ``KeyError`` in a card. A document
written before an option existed keeps its keys (:attr:`Trial.recorded`). Standard library only (plus
the options' module).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from mnist_edge import artifacts as A
from mnist_edge.documents import SCHEMAS
from mnist_edge.errors import ArtifactError, UsageError
from mnist_edge.int8.quantize import QuantizeOptions

SCHEMA = SCHEMAS["int8_recipe"]
RESULT_FILE = "int8_recipe.json"  # beside the artifacts: ``mnist-edge quantize --out DIR`` writes DIR/int8_recipe.json
FP32_FILE, INT8_FILE = A.ONNX, A.INT8
VERDICTS = ("pays", "does not pay", "undetermined", "no recipe passed")
RATIO_VERDICTS = ("faster", "slower", "undetermined")

_KINDS = {  # kind -> (test, how an error names it)
    "string": (lambda v: isinstance(v, str), "a string"),
    "boolean": (lambda v: isinstance(v, bool), "true or false"),
    "integer": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "number": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v), "a finite number"),
    "object": (lambda v: isinstance(v, dict), "a JSON object"),
    "list": (lambda v: isinstance(v, list), "a list"),
    # bounded as the bench report's (mnist_edge.documents.fields): a card divides and formats them
    "ratio": (lambda v: _KINDS["number"][0](v) and 1e-6 <= v <= 1e6, "a ratio from 1e-06 to 1e+06"),
    "ms": (lambda v: _KINDS["number"][0](v) and 1e-6 <= v <= 1e9, "a time in ms from 1e-06 to 1e+09"),
    "count": (lambda v: _KINDS["integer"][0](v) and v >= 0, "an integer >= 0"),
}


class Fields:
    """Typed reads from one document's JSON; every failure names the file and the field's path."""

    def __init__(self, origin: str, error=ArtifactError):
        self.origin, self.error = origin, error

    def fail(self, where: str, what: str, value=None, missing: bool = False):
        got = "it is missing" if missing else f"got {value!r:.80}"
        raise self.error(f"'{self.origin}': field {where} must be {what}, {got}")

    def get(self, d: dict, key: str, kind: str, where: str, *, null: bool = False):
        """``d[key]``, of ``kind`` (see _KINDS), or None when ``null`` allows it."""
        path = _path(where, key)
        test, what = _KINDS[kind]
        if key not in d:
            self.fail(path, what, missing=True)
        value = d[key]
        if value is None and null:
            return None
        if not test(value):
            self.fail(path, what + (" or null" if null else ""), value)
        return value

    def items(self, d: dict, key: str, kind: str, where: str, *, null: bool = False) -> list | None:
        """``d[key]``, a list whose items are all of ``kind``."""
        values = self.get(d, key, "list", where, null=null)
        test, what = _KINDS[kind]
        for i, v in enumerate(values or []):
            if not test(v):
                self.fail(f"{_path(where, key)}[{i}]", what, v)
        return values

    def options(self, d: dict, key: str, where: str) -> tuple[QuantizeOptions, tuple]:
        """(options, the option names the document recorded) from ``d[key]``."""
        raw = self.get(d, key, "object", where)
        source = f"'{self.origin}': field {_path(where, key)}"
        try:
            return QuantizeOptions.from_dict(raw, source), tuple(raw)
        except UsageError as e:  # validate()'s messages name the option, not the file
            raise self.error(str(e) if str(e).startswith(source) else f"{source}: {e}") from None


def _path(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


@dataclass(frozen=True)
class Ratio:
    """int8 p50 / fp32 p50 at one batch size (or challenger / incumbent, head to head), 95% bootstrap interval."""

    ratio: float
    low: float
    high: float
    verdict: str  # "faster", "slower" or "undetermined" for the numerator
    repeats: int
    calls: int
    p50_ms: float
    reference_p50_ms: float

    def text(self) -> str:
        """``0.62x [0.58, 0.67]``"""
        from mnist_edge.bench.ratio import format_ratio

        return format_ratio(self.to_json())

    def to_json(self) -> dict:
        return {"ratio": self.ratio, "low": self.low, "high": self.high, "verdict": self.verdict,
                "repeats": self.repeats, "calls": self.calls, "p50_ms": self.p50_ms,
                "reference_p50_ms": self.reference_p50_ms}

    @classmethod
    def parse(cls, d: dict, f: Fields, where: str) -> "Ratio":
        n = {k: f.get(d, k, "ratio", where) for k in ("ratio", "low", "high")}
        n |= {k: f.get(d, k, "ms", where) for k in ("p50_ms", "reference_p50_ms")}
        verdict = f.get(d, "verdict", "string", where)
        if verdict not in RATIO_VERDICTS:
            f.fail(f"{where}.verdict", f"one of {', '.join(RATIO_VERDICTS)}", verdict)
        if n["low"] > n["high"]:
            f.fail(f"{where}.low", f"at most high ({n['high']})", n["low"])
        return cls(verdict=verdict, repeats=f.get(d, "repeats", "count", where),
                   calls=f.get(d, "calls", "count", where), **n)


def _ratios_to_json(ratios: dict) -> dict:
    return {str(b): r.to_json() for b, r in ratios.items()}


def parse_ratios(d: dict, key: str, f: Fields, where: str) -> dict[int, Ratio]:
    """``d[key]``: {batch size (digits): Ratio}, every ratio checked."""
    raw = f.get(d, key, "object", where)
    out = {}
    for b, r in raw.items():
        if not (b.isascii() and b.isdigit() and len(b) <= 7):  # "²".isdigit() too, and int() refuses it
            f.fail(_path(where, key), "keyed by batch size (digits)", b)
        out[int(b)] = Ratio.parse(f.get(raw, b, "object", _path(where, key)), f, f"{_path(where, key)}.{b}")
    return out


@dataclass
class HeadToHead:
    """A challenger timed against the incumbent trial directly (both int8): challenger / incumbent per batch."""

    trial: str
    ratios: dict[int, Ratio]

    def to_json(self) -> dict:
        return {"trial": self.trial, "ratios": _ratios_to_json(self.ratios)}


@dataclass
class Trial:
    """One recipe tried: gated like the export, and timed against fp32 when it passed.

    ``worst_tensors`` are :func:`mnist_edge.int8.diagnose.tensor_errors` rows, kept as that module's dicts
    (the same rows fill ``int8_report.json``). ``model`` (the int8 file's bytes, for a head to head) lives
    only while the search runs.
    """

    name: str
    stage: str
    options: QuantizeOptions
    passed: bool = False
    accuracy: float | None = None  # percent, int8, at the largest gate batch size
    agreement: float | None = None  # worst over batch sizes, percent
    accuracy_drop_pp: float | None = None
    ratios: dict[int, Ratio] = field(default_factory=dict)  # batch size -> int8/fp32
    error: str | None = None  # the gate or quantizer failure, with the worst tensors
    worst_tensors: list = field(default_factory=list)
    messages: list = field(default_factory=list)  # onnxruntime's quantizer log
    seconds: float = 0.0
    kept: str | None = None  # where keep_failed put this failed candidate
    against: HeadToHead | None = None
    model: bytes | None = field(default=None, repr=False, compare=False)
    recorded: tuple | None = field(default=None, repr=False, compare=False)  # option names a read file held

    @property
    def score(self) -> float:
        """The worse of the int8/fp32 ratios (inf when not timed): lower is better."""
        return max(r.ratio for r in self.ratios.values()) if self.ratios else float("inf")

    def to_json(self) -> dict:
        return {"name": self.name, "stage": self.stage, "changes": self.options.differences(),
                "options": _options_json(self.options, self.recorded), "passed": self.passed,
                "accuracy": self.accuracy, "agreement": self.agreement, "accuracy_drop_pp": self.accuracy_drop_pp,
                "ratios": _ratios_to_json(self.ratios), "error": self.error, "worst_tensors": self.worst_tensors,
                "onnxruntime_messages": self.messages, "seconds": round(self.seconds, 2), "kept": self.kept,
                "against": self.against.to_json() if self.against else None}

    @classmethod
    def parse(cls, d: dict, f: Fields, where: str) -> "Trial":
        options, recorded = f.options(d, "options", where)
        against = f.get(d, "against", "object", where, null=True)
        if against is not None:
            against = HeadToHead(f.get(against, "trial", "string", f"{where}.against"),
                                 parse_ratios(against, "ratios", f, f"{where}.against"))
        f.get(d, "changes", "object", where)  # derived from the options: written back from them
        return cls(name=f.get(d, "name", "string", where), stage=f.get(d, "stage", "string", where),
                   options=options, passed=f.get(d, "passed", "boolean", where),
                   accuracy=f.get(d, "accuracy", "number", where, null=True),
                   agreement=f.get(d, "agreement", "number", where, null=True),
                   accuracy_drop_pp=f.get(d, "accuracy_drop_pp", "number", where, null=True),
                   ratios=parse_ratios(d, "ratios", f, where), error=f.get(d, "error", "string", where, null=True),
                   worst_tensors=f.items(d, "worst_tensors", "object", where),
                   messages=f.items(d, "onnxruntime_messages", "string", where),
                   seconds=f.get(d, "seconds", "number", where), kept=f.get(d, "kept", "string", where, null=True),
                   against=against, recorded=recorded)


def _options_json(options: QuantizeOptions, recorded: tuple | None) -> dict:
    d = options.to_dict()
    return d if recorded is None else {k: d[k] for k in recorded}


@dataclass(frozen=True)
class Machine:
    """Where the search timed: what the verdict holds for."""

    cpu: str | None
    arch: str
    int8_instructions: str | None  # the machine module's note on the CPU's int8 instructions
    usable_cores: int
    load_average: list | None
    onnxruntime: str | None
    threads: int

    def to_json(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def parse(cls, d: dict, f: Fields, where: str = "machine") -> "Machine":
        return cls(cpu=f.get(d, "cpu", "string", where, null=True), arch=f.get(d, "arch", "string", where),
                   int8_instructions=f.get(d, "int8_instructions", "string", where, null=True),
                   usable_cores=f.get(d, "usable_cores", "integer", where),
                   load_average=f.items(d, "load_average", "number", where, null=True),
                   onnxruntime=f.get(d, "onnxruntime", "string", where, null=True),
                   threads=f.get(d, "threads", "integer", where))


@dataclass(frozen=True)
class Timing:
    """How trials were timed against fp32."""

    batch_sizes: list
    repeats: int
    calls_per_block: int
    confirm_repeats: int | None  # None: a single-recipe check has no confirm stage
    threads: int = 1
    order: str = "ABBA blocks, int8 first"
    interval: str = "95% bootstrap"

    def to_json(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def parse(cls, d: dict, f: Fields, where: str) -> "Timing":
        return cls(batch_sizes=f.items(d, "batch_sizes", "integer", where), repeats=f.get(d, "repeats", "integer", where),
                   calls_per_block=f.get(d, "calls_per_block", "integer", where),
                   confirm_repeats=f.get(d, "confirm_repeats", "integer", where, null=True),
                   threads=f.get(d, "threads", "integer", where), order=f.get(d, "order", "string", where),
                   interval=f.get(d, "interval", "string", where))


@dataclass(frozen=True)
class SearchInfo:
    """The search's own record: mode, size, gates, timing and which images calibrated."""

    mode: str  # "search" or "single recipe with fallback"
    trials: int
    seconds: float
    fp32: str  # the fp32 file's name
    eval_images: int
    gate_batch_sizes: list
    gate_thresholds: dict
    timing: Timing
    calibration: dict  # the calibration source record, as the manifest's quantization record holds it

    def to_json(self) -> dict:
        return {**self.__dict__, "timing": self.timing.to_json()}

    @classmethod
    def parse(cls, d: dict, f: Fields, where: str = "search") -> "SearchInfo":
        thresholds = f.get(d, "gate_thresholds", "object", where)
        for k in thresholds:
            f.get(thresholds, k, "number", f"{where}.gate_thresholds")
        return cls(mode=f.get(d, "mode", "string", where), trials=f.get(d, "trials", "integer", where),
                   seconds=f.get(d, "seconds", "number", where), fp32=f.get(d, "fp32", "string", where),
                   eval_images=f.get(d, "eval_images", "integer", where),
                   gate_batch_sizes=f.items(d, "gate_batch_sizes", "integer", where), gate_thresholds=thresholds,
                   timing=Timing.parse(f.get(d, "timing", "object", where), f, f"{where}.timing"),
                   calibration=f.get(d, "calibration", "object", where))


@dataclass
class SearchResult:
    """``int8_recipe.json``: the recipe a search (or a single check) chose, its verdict and the evidence."""

    model: str  # a label: the name the search was run under
    options: QuantizeOptions
    verdict: str  # one of VERDICTS
    recommended: str  # FP32_FILE or INT8_FILE
    summary: str
    chosen: Trial | None
    machine: Machine
    search: SearchInfo
    trials: list[Trial]
    recorded: tuple | None = field(default=None, repr=False, compare=False)  # option names a read file held

    def to_json(self) -> dict:
        return {"schema": SCHEMA, "model": self.model, "options": _options_json(self.options, self.recorded),
                "verdict": self.verdict, "recommended": self.recommended, "summary": self.summary,
                "chosen": self.chosen.to_json() if self.chosen else None, "machine": self.machine.to_json(),
                "search": self.search.to_json(), "trials": [t.to_json() for t in self.trials]}

    def write(self, path: str | os.PathLike) -> Path:
        return write_json(self.to_json(), path)

    @classmethod
    def from_json(cls, path: str | os.PathLike, *, error=ArtifactError) -> "SearchResult":
        """The result in ``path``; ``error`` (a MnistEdgeError class) names the file and the bad field."""
        from mnist_edge.documents import load_json

        return cls.parse(load_json(path, kind="int8_recipe", error=error), Fields(os.fspath(path), error))

    @classmethod
    def parse(cls, d: dict, f: Fields) -> "SearchResult":
        options, recorded = f.options(d, "options", "")
        verdict, recommended = f.get(d, "verdict", "string", ""), f.get(d, "recommended", "string", "")
        if verdict not in VERDICTS:
            f.fail("verdict", f"one of: {', '.join(VERDICTS)}", verdict)
        if recommended not in (FP32_FILE, INT8_FILE):
            f.fail("recommended", f"{FP32_FILE!r} or {INT8_FILE!r}", recommended)
        chosen = f.get(d, "chosen", "object", "", null=True)
        trials = f.items(d, "trials", "object", "")
        return cls(model=f.get(d, "model", "string", ""), options=options, verdict=verdict, recommended=recommended,
                   summary=f.get(d, "summary", "string", ""),
                   chosen=Trial.parse(chosen, f, "chosen") if chosen is not None else None,
                   machine=Machine.parse(f.get(d, "machine", "object", ""), f),
                   search=SearchInfo.parse(f.get(d, "search", "object", ""), f),
                   trials=[Trial.parse(t, f, f"trials[{i}]") for i, t in enumerate(trials)], recorded=recorded)


def write_json(document: dict, path: str | os.PathLike) -> Path:
    """Write ``document`` to ``path`` atomically (temp file, then rename), sorted keys, newline at the end."""
    from mnist_edge.files import write_text_atomic

    write_text_atomic(path, json.dumps(document, indent=2, sort_keys=True) + "\n")
    return Path(path)
