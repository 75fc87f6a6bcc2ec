"""Why int8 lost accuracy or speed: per-tensor SQNR, per-op time, and what the optimizer left unfused.

- :func:`tensor_errors`: for every activation the quantizer put a QuantizeLinear/DequantizeLinear pair on,
  the signal-to-quantization-noise ratio (dB, higher is better) of the fp32 model's tensor put through
  that pair's scale and zero point ("local": the damage this tensor's range alone does, e.g. clipping
  from a range calibrated on the wrong images) and of the int8 run's tensor against the fp32 model's
  ("accumulated" through every layer above it). Local is computed on the fp32 values, not on the int8
  graph's input to Q, because the quantizer folds a ReLU into the Q that follows a Conv or MaxPool.
  Ranked by local SQNR, worst first; each row names the nodes around the tensor as selectors ("Conv[0]")
  that :class:`~mnist_edge.int8.quantize.QuantizeOptions.keep_float` accepts. Same idea as
  onnxruntime's ``qdq_loss_debug``, without its intermediate files. QDQ format only.
- :func:`op_profile`: milliseconds per call by op type from onnxruntime's own profiler.
- :func:`optimized_ops`: the op types left after onnxruntime's optimizer (Q/DQ/Transpose that did not fuse
  are the usual reason int8 is slower than fp32 on a small model).

Needs onnx and onnxruntime, never torch.
"""

from __future__ import annotations

import bisect
import collections
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from mnist_edge.contract import INPUT_NAME

SQNR_CAP_DB = 200.0  # identical tensors: report a finite number (JSON has no infinity)
_Q_SUFFIX = "_QuantizeLinear_Input"  # onnxruntime renames a graph output it quantizes to this


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """10 log10(signal power / noise power) of ``test`` against ``reference``."""
    ref = np.asarray(reference, np.float64).ravel()
    noise = float(((ref - np.asarray(test, np.float64).ravel()) ** 2).sum())
    signal = float((ref ** 2).sum())
    if noise == 0.0:
        return SQNR_CAP_DB
    if signal == 0.0:
        return -SQNR_CAP_DB
    return round(min(SQNR_CAP_DB, 10.0 * np.log10(signal / noise)), 2)


def fake_quant(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray) -> np.ndarray:
    """QuantizeLinear then DequantizeLinear in numpy (round half to even, saturate), per-tensor."""
    info = np.iinfo(zero_point.dtype)
    zp = zero_point.astype(np.float64)
    q = np.clip(np.round(np.asarray(x, np.float64) / scale.astype(np.float64)) + zp, info.min, info.max)
    return (q - zp) * scale.astype(np.float64)


def _session(model_bytes: bytes):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def _with_outputs(model, names):
    """A copy of ``model`` that also outputs the float tensors ``names`` (bytes)."""
    from onnx import TensorProto, helper

    m = type(model)()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names if n not in have)
    return m.SerializeToString()


def _run(model, names, images):
    sess = _session(_with_outputs(model, names))
    return dict(zip(names, sess.run(list(names), {INPUT_NAME: images})))


def _float_activations(model) -> list[str]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in
             list(inferred.graph.value_info) + list(inferred.graph.output)}
    return [o for n in model.graph.node for o in n.output if types.get(o) == onnx.TensorProto.FLOAT]


def _neighbours(model) -> dict[str, list[str]]:
    """tensor -> selectors of the quantizable nodes producing or consuming it (not Cast/Softmax/inputs)."""
    from mnist_edge.int8.quantize import ALWAYS_FLOAT, node_selectors

    names = {v: k for k, v in node_selectors(model).items()}
    skip = set(ALWAYS_FLOAT) | {"Cast", "Div", "Sub", "Pad", "Constant"}  # the contract's pre-processing
    out: dict[str, list[str]] = collections.defaultdict(list)
    for node in model.graph.node:
        if node.op_type in skip:
            continue
        for t in list(node.input) + list(node.output):
            if names[node.name] not in out[t]:
                out[t].append(names[node.name])
    return out


def tensor_errors(float_path, int8_path, images: np.ndarray) -> list[dict]:
    """Rows ``{tensor, local_sqnr_db, accumulated_sqnr_db, nodes}``, worst local SQNR first.

    ``float_path`` is the graph the quantizer saw (after quant_pre_process, when the recipe used it);
    ``images`` uint8 [N, 1, 28, 28] (a few hundred are plenty). Empty for QOperator models.
    """
    import onnx

    fmodel, qmodel = onnx.load(os.fspath(float_path)), onnx.load(os.fspath(int8_path))
    consumers = collections.defaultdict(list)
    for node in qmodel.graph.node:
        for t in node.input:
            consumers[t].append(node)
    inits = {t.name: t for t in qmodel.graph.initializer}
    pairs = []  # (tensor name in the float graph, int8 tensor after DQ, scale, zero point)
    for node in qmodel.graph.node:
        if node.op_type != "QuantizeLinear" or len(node.input) < 3:
            continue
        dq = next((c for c in consumers[node.output[0]] if c.op_type == "DequantizeLinear"), None)
        scale, zp = inits.get(node.input[1]), inits.get(node.input[2])
        if dq is not None and scale is not None and zp is not None:
            pre = node.input[0]
            name = pre[:-len(_Q_SUFFIX)] if pre.endswith(_Q_SUFFIX) else pre
            pairs.append((name, dq.output[0], onnx.numpy_helper.to_array(scale), onnx.numpy_helper.to_array(zp)))
    if not pairs:
        return []
    images = np.ascontiguousarray(images)
    floats = set(_float_activations(fmodel)) | {o.name for o in fmodel.graph.output}
    ref = _run(fmodel, sorted({p[0] for p in pairs if p[0] in floats}), images)
    got = _run(qmodel, sorted({p[1] for p in pairs}), images)
    around = _neighbours(fmodel)
    rows = [{"tensor": name,
             "local_sqnr_db": sqnr_db(ref[name], fake_quant(ref[name], scale, zp)),
             "accumulated_sqnr_db": sqnr_db(ref[name], got[post]),
             "nodes": around.get(name, [])}
            for name, post, scale, zp in pairs if name in ref and name != INPUT_NAME]
    return sorted(rows, key=lambda r: (r["local_sqnr_db"], r["tensor"]))


def worst_text(rows: list[dict], n: int = 3) -> str:
    """``relu_1 (local 9.1 dB, accumulated 7.9 dB; MaxPool[1], Conv[1]), ...`` for the ``n`` worst."""
    def one(r):
        nodes = f"; {', '.join(r['nodes'])}" if r["nodes"] else ""
        return (f"{r['tensor']} (local {r['local_sqnr_db']:.1f} dB, accumulated "
                f"{r['accumulated_sqnr_db']:.1f} dB{nodes})")

    return ", ".join(one(r) for r in rows[:n]) if rows else "no QuantizeLinear/DequantizeLinear pairs to compare"


def op_profile(path, images: np.ndarray, *, runs: int = 20) -> dict:
    """``{"ms_per_call", "ops": [{op, ms, share}]}``: onnxruntime's profiler, 1 thread, median of ``runs`` calls."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="mnist-edge-profile-") as tmp:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(tmp, "profile")
        sess = ort.InferenceSession(os.fspath(path), so, providers=["CPUExecutionProvider"])
        feed = {INPUT_NAME: np.ascontiguousarray(images)}
        for _ in range(runs + 1):  # the first call allocates and pre-packs weights: not counted
            sess.run(None, feed)
        events = json.loads(Path(sess.end_profiling()).read_text())
    # Each op's time summed per call, then the median over calls: one descheduled call on a busy machine
    # must not make an op look slow.
    starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    per_call: dict[str, list[float]] = collections.defaultdict(lambda: [0.0] * len(starts))
    for e in events:
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"):
            call = bisect.bisect_right(starts, e.get("ts", 0)) - 1
            if call >= 1:  # call 0 allocates and pre-packs weights
                per_call[e.get("args", {}).get("op_name", "?")][call] += e.get("dur", 0) / 1000.0
    per_op = {op: float(np.median(v[1:])) for op, v in per_call.items()}
    total = sum(per_op.values()) or 1.0
    ops = [{"op": op, "ms": round(ms, 5), "share": round(ms / total, 3)}
           for op, ms in sorted(per_op.items(), key=lambda kv: -kv[1])]
    return {"batch": int(len(images)), "runs": runs, "ms_per_call": round(sum(per_op.values()), 5), "ops": ops}


def optimized_ops(path) -> dict[str, int]:
    """Op type counts of the graph onnxruntime actually runs (all optimizations, this CPU)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="mnist-edge-optimized-") as tmp:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.log_severity_level = 3
        so.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
        ort.InferenceSession(os.fspath(path), so, providers=["CPUExecutionProvider"])
        model = onnx.load(so.optimized_model_filepath)
    return dict(sorted(collections.Counter(n.op_type for n in model.graph.node).items()))


def leftovers(ops: dict[str, int]) -> dict[str, int]:
    return {k: ops.get(k, 0) for k in ("QuantizeLinear", "DequantizeLinear", "Transpose")}


def diagnose(float_path, int8_path, images: np.ndarray, *, batch_sizes=(1, 64), runs: int = 20) -> dict:
    """Everything above for one fp32/int8 pair: the ``--report`` of ``mnist-edge quantize``."""
    images = np.ascontiguousarray(images)
    ops = {"fp32": optimized_ops(float_path), "int8": optimized_ops(int8_path)}
    return {
        "tensors": tensor_errors(float_path, int8_path, images[:256]),
        "profile": {str(bs): {"fp32": op_profile(float_path, images[:bs], runs=runs),
                              "int8": op_profile(int8_path, images[:bs], runs=runs)} for bs in batch_sizes},
        "optimized_ops": ops,
        "left_after_optimization": leftovers(ops["int8"]),
    }


def format_diagnosis(d: dict, top: int = 8) -> str:
    lines = ["per-tensor SQNR (int8 vs fp32, worst first; local = this tensor's own Q/DQ):"]
    for r in d["tensors"][:top]:
        lines.append(f"  {r['tensor']:<28} local {r['local_sqnr_db']:>6.1f} dB  "
                     f"accumulated {r['accumulated_sqnr_db']:>6.1f} dB  "
                     f"{', '.join(r['nodes'])}")
    if not d["tensors"]:
        lines.append("  (no Q/DQ pairs: SQNR needs the QDQ format)")
    left = d["left_after_optimization"]
    lines.append(f"left after onnxruntime's optimizer (int8): {left['QuantizeLinear']} QuantizeLinear, "
                 f"{left['DequantizeLinear']} DequantizeLinear, {left['Transpose']} Transpose; int8 ops: "
                 + ", ".join(f"{k} {v}" for k, v in d["optimized_ops"]["int8"].items()))
    for bs, prof in d["profile"].items():
        lines.append(f"profile at batch {bs} (ms per call, 1 thread): fp32 {prof['fp32']['ms_per_call']:.4f}, "
                     f"int8 {prof['int8']['ms_per_call']:.4f}")
        for name in ("fp32", "int8"):
            ops = ", ".join(f"{o['op']} {o['ms']:.4f}" for o in prof[name]["ops"][:6])
            lines.append(f"  {name}: {ops}")
    return "\n".join(lines)


def gate_failure_hint(model: str, fp32_path, int8_path, options, images: np.ndarray) -> str:
    """``"; worst int8 tensors: ...; try ..."`` for a failed int8 gate (never raises: it explains an error)."""
    from mnist_edge.int8.quantize import float_graph

    try:
        with tempfile.TemporaryDirectory(prefix="mnist-edge-diagnose-") as tmp:
            rows = tensor_errors(float_graph(fp32_path, options, tmp), int8_path, images[:256])
        worst = worst_text(rows)
    except Exception as e:  # noqa: BLE001 - the gate failure is the error to report
        worst = f"(diagnosis failed: {type(e).__name__}: {e})"
    return (f"; worst int8 tensors: {worst}; search a recipe that passes with: mnist-edge quantize --model {model} "
            f"--search")


def profile_markdown(report: dict) -> list[str]:
    """Markdown lines for a model card from a ``--report`` diagnosis: per-op time of fp32 and int8 (ms per
    call, onnxruntime's profiler) at each batch size profiled, and the Q/DQ/Transpose nodes left after
    optimization. [] when the report has no profile."""
    profile = report.get("profile") or {}
    if not profile:
        return []
    batches = sorted(profile, key=int)
    ops = list(dict.fromkeys(op["op"] for b in batches for fmt in ("fp32", "int8")
                             for op in profile[b][fmt]["ops"]))

    def ms(b, fmt, op):
        row = next((o for o in profile[b][fmt]["ops"] if o["op"] == op), None)
        return f"{row['ms']:.3f}" if row else "-"

    head = " | ".join(f"fp32 b{b} | int8 b{b}" for b in batches)
    lines = ["| op | " + head + " |", "|---|" + "---|" * (2 * len(batches))]
    lines += [f"| {op} | " + " | ".join(f"{ms(b, 'fp32', op)} | {ms(b, 'int8', op)}" for b in batches) + " |"
              for op in ops]
    lines.append("| **per call** | " + " | ".join(f"**{profile[b]['fp32']['ms_per_call']:.3f}** | "
                                               f"**{profile[b]['int8']['ms_per_call']:.3f}**" for b in batches) + " |")
    left = report.get("left_after_optimization") or {}
    kept = ", ".join(f"{n} {op}" for op, n in sorted(left.items())) or "none"
    return lines + ["", f"Left after onnxruntime's optimizer in the int8 graph: {kept}. Profiled times include "
                        "the profiler's own cost of a few microseconds per node, so at batch 1 they overstate "
                        "every node alike; the ratios above are timed without it."]
