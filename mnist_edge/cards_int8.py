"""Card sections on int8: how the file was quantized, the recipe the search chose with its verdict and
measured ratios, and where the time goes (onnxruntime's profiler). Drawn from ``manifest.json`` and
``int8_report.json``; :mod:`mnist_edge.cards` assembles them.
"""

from __future__ import annotations

from mnist_edge import artifacts as A
from mnist_edge.export.quantize import QuantizeOptions
from mnist_edge.export.ratio import format_ratio

FORMAT_NAMES = {"qdq": "QDQ", "qoperator": "QOperator"}  # onnxruntime's QuantFormat names


def format_name(q: dict) -> str:
    """onnxruntime's name for the quantization record ``q``'s format: QDQ or QOperator."""
    return FORMAT_NAMES.get(q.get("quant_format", "qdq"), q.get("quant_format"))


def int8_lines(manifest: dict, int8_report: dict | None) -> list[str]:
    """A card's int8 paragraphs (none when the folder has no int8 file)."""
    q = manifest["settings"].get("quantization")
    if not q:
        return []
    src = q["calibration_source"]
    lines = ["", f"int8: `{q['tool']}`, {q['quant_format'].upper()}, {q['calibration_method']} calibration on "
                 f"{src['images']} class-balanced training images ({src['split']} split, seed {src['seed']}), "
                 f"weights {q['weight_type']} {'per channel' if q['per_channel'] else 'per tensor'}, "
                 f"activations {q['activation_type']}."]
    lines += int8_recipe_lines(manifest)
    if (int8_report or {}).get("profile"):
        from mnist_edge.export.diagnose import profile_markdown

        lines += ["", "Where the time goes, for the chosen recipe (`mnist-edge quantize --report`: onnxruntime's "
                      "profiler, ms per call by op type, 1 thread; fp32 is the float graph the quantizer saw, "
                      "after the recipe's rewrites):", ""] + profile_markdown(int8_report)
    return lines


def int8_recipe_lines(manifest: dict) -> list[str]:
    """The int8 recipe the search chose, its verdict and measured ratios (from the manifest)."""
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
    if rec.get("verdict"):
        ratios = (rec.get("chosen") or {}).get("ratios") or {}
        machine, search = rec.get("machine") or {}, rec.get("search") or {}
        lines += ["", f"Verdict: **int8 {rec['verdict']}** on {machine.get('cpu')} (`mnist-edge quantize --search`, "
                      f"{search.get('trials')} trials in {search.get('seconds')} s, load average "
                      f"{machine.get('load_average')}): int8/fp32 p50 at batch 1 {_ratio(ratios.get('1'))}, "
                      f"at batch 64 {_ratio(ratios.get('64'))} (95% intervals, 1 thread)."]
    return lines


def int8_verdict(manifest: dict) -> str:
    """The zoo index's int8 verdict cell: the search's verdict and its ratios at batch 1 / 64."""
    rec = manifest.get("int8_recipe") or {}
    if not rec.get("verdict"):
        return "not searched"
    ratios = (rec.get("chosen") or {}).get("ratios") or {}
    return f"{rec['verdict']} ({_ratio(ratios.get('1'))} / {_ratio(ratios.get('64'))})"


def _ratio(r: dict | None) -> str:
    return format_ratio(r) if r else "-"
