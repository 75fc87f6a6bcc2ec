"""Card sections on int8: how the file was quantized, the recipe the search chose with its verdict and
measured ratios, and where the time goes (onnxruntime's profiler). Drawn from ``manifest.json``, the
search's ``int8_recipe.json`` beside it (the evidence: chosen trial, ratios, machine; see
:func:`load_search`) and ``int8_report.json``; :mod:`mnist_edge.cards.card` assembles them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mnist_edge import artifacts as A
from mnist_edge.documents.fields import (FINITE, FLAG, TEXT, Check, Where, count, extra_field, optional, parse, record,
                                         spec)
from mnist_edge.int8.quantize import QuantizeOptions
from mnist_edge.int8.result import RESULT_FILE, Fields, Ratio, SearchResult, parse_ratios

FORMAT_NAMES = {"qdq": "QDQ", "qoperator": "QOperator"}  # onnxruntime's QuantFormat names
OPT_TEXT = optional(TEXT)
OBJECT = optional(Check(lambda v: isinstance(v, dict), "a JSON object"))


@dataclass
class CalibrationSource:
    images: int = spec(count(1), required=True)
    split: str = spec(TEXT, required=True)
    seed: int = spec(count(0), required=True)
    extra: dict = extra_field()


@dataclass
class Quantization:
    """The manifest's ``settings.quantization``: what the card's int8 paragraph says."""

    tool: str = spec(TEXT, required=True)
    quant_format: str = spec(TEXT, required=True)
    calibration_method: str = spec(TEXT, required=True)
    calibration_source: CalibrationSource = spec(CalibrationSource, required=True)
    weight_type: str = spec(TEXT, required=True)
    activation_type: str = spec(TEXT, required=True)
    per_channel: bool = spec(FLAG, required=True)
    extra: dict = extra_field()


@dataclass
class FileQuantization:
    """The int8 file's own ``quantization`` record: older manifests may lack any key (the card's defaults)."""

    quant_format: str | None = spec(OPT_TEXT)
    calibration_method: str | None = spec(OPT_TEXT)
    activation_type: str | None = spec(OPT_TEXT)
    weight_type: str | None = spec(OPT_TEXT)
    per_channel: bool | None = spec(optional(FLAG))
    percentile: float | None = spec(optional(FINITE))
    extra: dict = extra_field()


@dataclass
class RecipeRecord:
    """The manifest's ``int8_recipe`` (Int8Recipe.record), with the evidence older manifests carried."""

    source: str = spec(TEXT, required=True)
    recommended: str = spec(TEXT, required=True)
    verdict: str | None = spec(OPT_TEXT)
    summary: str | None = spec(OPT_TEXT)
    machine: dict | None = spec(optional(record(2)))
    chosen: dict | None = spec(OBJECT)
    search: dict | None = spec(optional(record(2)))
    extra: dict = extra_field()


def check_records(manifest: dict, source) -> None:
    """Check the manifest's records the int8 paragraphs read (ArtifactError naming the field otherwise)."""
    where = Where(source)
    q = (manifest.get("settings") or {}).get("quantization")
    if q:
        parse(Quantization, q, where.at("settings").at("quantization"))
    rec = manifest.get("int8_recipe")
    if rec:
        parse(RecipeRecord, rec, where.at("int8_recipe"))
        entry = manifest["files"].get(A.INT8)
        if not isinstance(entry, dict) or not isinstance(entry.get("quantization"), dict):
            raise where.at("files").at(A.INT8).fail("lacks the quantization record its int8_recipe describes")
    if isinstance(manifest["files"].get(A.INT8), dict) and manifest["files"][A.INT8].get("quantization"):
        parse(FileQuantization, manifest["files"][A.INT8]["quantization"],
              where.at("files").at(A.INT8).at("quantization"))


def format_name(q: dict) -> str:
    """onnxruntime's name for the quantization record ``q``'s format: QDQ or QOperator."""
    return FORMAT_NAMES.get(q.get("quant_format", "qdq"), q.get("quant_format"))


def load_search(folder: str | os.PathLike) -> SearchResult | None:
    """The search result in ``folder`` (``mnist-edge quantize --out DIR`` wrote it), None when it has none (a
    FIFO or a device in its place is an error, not an absent file)."""
    path = Path(folder) / RESULT_FILE
    return SearchResult.from_json(path) if path.exists() else None


def int8_lines(manifest: dict, int8_report: dict | None, search: SearchResult | None = None) -> list[str]:
    """A card's int8 paragraphs (none when the folder has no int8 file); ``search``: :func:`load_search`."""
    q = (manifest.get("settings") or {}).get("quantization")
    if not q:
        return []
    src = q["calibration_source"]
    lines = ["", f"int8: `{q['tool']}`, {q['quant_format'].upper()}, {q['calibration_method']} calibration on "
                 f"{src['images']} class-balanced training images ({src['split']} split, seed {src['seed']}), "
                 f"weights {q['weight_type']} {'per channel' if q['per_channel'] else 'per tensor'}, "
                 f"activations {q['activation_type']}."]
    lines += int8_recipe_lines(manifest, search)
    if (int8_report or {}).get("profile"):
        from mnist_edge.int8.diagnose import profile_markdown

        lines += ["", "Where the time goes, for the chosen recipe (`mnist-edge quantize --report`: onnxruntime's "
                      "profiler, ms per call by op type, 1 thread; fp32 is the float graph the quantizer saw, "
                      "after the recipe's rewrites):", ""] + profile_markdown(int8_report)
    return lines


def int8_recipe_lines(manifest: dict, search: SearchResult | None = None) -> list[str]:
    """The int8 recipe the search chose, its verdict and measured ratios (the evidence from ``search``)."""
    rec = manifest.get("int8_recipe")
    if not rec:
        return []
    q = manifest["files"][A.INT8]["quantization"]
    method = q.get("calibration_method", "minmax")
    fmt = format_name(q)
    changes = [f"{fmt}, {q.get('activation_type', 'int8')} activations, "
               f"{q.get('weight_type', 'int8')} weights per {'channel' if q.get('per_channel', True) else 'tensor'}, "
               + (f"percentile {q.get('percentile')}" if method == "percentile" else method) + " calibration"]
    defaults = QuantizeOptions().to_dict()  # a card names only the choices that differ from them
    changes += [f"{k} {q[k]}" for k in ("keep_float", "op_types", "preprocess", "reduce_range", "relu_before_pool",
                                        "nhwc_flatten", "pad_channels", "pad_multiple", "pool_before_activation")
                if k in q and q[k] != defaults[k]]
    lines = ["", f"**int8 recipe** ({rec['source']}): " + ", ".join(changes)
             + f". Recommended file: `{rec['recommended']}`."]
    ev = evidence(rec, search)
    if rec.get("verdict") and ev is not None:
        lines += ["", f"Verdict: **int8 {rec['verdict']}** on {ev.cpu} (`mnist-edge quantize --search`, "
                      f"{ev.trials} trials in {ev.seconds} s, load average "
                      f"{ev.load_average}): int8/fp32 p50 at batch 1 {_ratio(ev.ratios.get(1))}, "
                      f"at batch 64 {_ratio(ev.ratios.get(64))} (95% intervals, 1 thread)."]
    elif rec.get("verdict"):  # the search's result is not beside the files: its conclusion only
        lines += ["", f"Verdict: **int8 {rec['verdict']}**" + (f" ({rec['summary']})." if rec.get("summary") else ".")]
    return lines


def int8_verdict(manifest: dict, search: SearchResult | None = None) -> str:
    """The zoo index's int8 verdict cell: the search's verdict and its ratios at batch 1 / 64."""
    rec = manifest.get("int8_recipe") or {}
    if not rec.get("verdict"):
        return "not searched"
    ev = evidence(rec, search)
    ratios = ev.ratios if ev else {}
    return f"{rec['verdict']} ({_ratio(ratios.get(1))} / {_ratio(ratios.get(64))})"


@dataclass(frozen=True)
class Evidence:
    """What a card shows of the search behind a verdict."""

    ratios: dict  # batch size -> Ratio, the chosen trial's int8/fp32
    cpu: str | None
    load_average: list | None
    trials: int | None
    seconds: float | None


def evidence(rec: dict, search: SearchResult | None) -> Evidence | None:
    """The evidence for the manifest's recipe record ``rec``: from ``search`` when it is the search that
    recipe came from (same verdict and summary; a later search in the folder is not), else from a
    manifest written when the record still carried it; None when neither has it."""
    if search is not None and search.verdict == rec.get("verdict") and search.summary == rec.get("summary"):
        ratios = search.chosen.ratios if search.chosen else {}
        return Evidence(ratios, search.machine.cpu, search.machine.load_average, search.search.trials,
                        search.search.seconds)
    if "machine" not in rec:
        return None
    chosen, machine, info = rec.get("chosen") or {}, rec.get("machine") or {}, rec.get("search") or {}
    f = Fields("manifest.json")  # RecipeRecord checked the three are objects; the ratios are checked here
    ratios = parse_ratios(chosen, "ratios", f, "int8_recipe.chosen") if chosen.get("ratios") is not None else {}
    return Evidence(ratios, machine.get("cpu"), machine.get("load_average"), info.get("trials"), info.get("seconds"))


def _ratio(r: Ratio | None) -> str:
    return r.text() if r else "-"
