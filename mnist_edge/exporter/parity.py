"""The export's gates run on the files as written: each format against the reference (PyTorch, or the user's
own float ONNX file; int8 against fp32 ONNX), at every batch size, plus the contract and the probabilities;
what each file measured, for the manifest."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mnist_edge import artifacts as A
from mnist_edge.evaluate import gates as G


@dataclass
class GateRun:
    """Inputs of one gate run and what it collects. ``outputs``: file -> {batch size: logits or the
    exception that file raised}; ``sessions``: the onnxruntime sessions of the ONNX files."""

    reference: object  # mnist_edge.exporter.reference: TorchReference or OnnxReference
    folder: Path
    x: np.ndarray  # uint8 [N, 1, 28, 28]
    y: np.ndarray  # int64 [N]
    batch_sizes: tuple
    thresholds: dict
    say: object
    checks: list = field(default_factory=list)
    outputs: dict = field(default_factory=dict)
    sessions: dict = field(default_factory=dict)


def _attempt(fn, *args):
    """Run fn; an exception becomes the value, so a gate can report it as a failed check."""
    try:
        return fn(*args)
    except Exception as e:
        return e


def run_gates(reference, folder: Path, x, y, *, batch_sizes, quantize: bool, thresholds: dict,
              say) -> tuple[list, dict]:
    """(checks, measured): every gate of the files in ``folder``, and per file its accuracy, reference,
    agreement and largest logit difference."""
    run = GateRun(reference, folder, x, y, tuple(batch_sizes), thresholds, say)
    say(f"gates: {reference.label} reference on {len(x):,} test images at batch sizes "
        f"{', '.join(map(str, run.batch_sizes))}")
    run.outputs[reference.name] = {bs: reference.logits(x, bs) for bs in run.batch_sizes}
    ts = _torch_gates(run) if (folder / A.TORCHSCRIPT).is_file() else None
    _onnx_gates(run, A.ONNX)
    if quantize:
        _onnx_gates(run, A.INT8)
    for name in (A.TFLITE, A.TFLITE_INT8):  # written by export --quantize where the litert extra is installed
        if (folder / name).is_file():
            _onnx_gates(run, name)
    _probability_gates(run, ts)
    return run.checks, _measured(run)


def _torch_gates(run: GateRun):
    from mnist_edge.torchrun import load_torchscript, torch_logits, torch_threads

    with torch_threads(1):
        run.say(f"gates: {A.TORCHSCRIPT}")
        ts, _ = load_torchscript(run.folder / A.TORCHSCRIPT)
        run.outputs[A.TORCHSCRIPT] = {bs: _attempt(torch_logits, ts, run.x, bs) for bs in run.batch_sizes}
    run.checks += G.parity_checks(A.TORCHSCRIPT, run.outputs[run.reference.name], run.outputs[A.TORCHSCRIPT],
                                  **run.thresholds["torchscript"])
    return ts


def _onnx_gates(run: GateRun, name: str) -> None:
    """The contract and parity of one runtime file (.onnx, or .tflite through its LiteRT session): fp32 against
    the reference, int8 against fp32 ONNX (the reference's logits standing in where a batch of the fp32 file
    failed)."""
    from mnist_edge.evaluate.ort_eval import make_session, ort_logits
    from mnist_edge.runtime.checks import session_io_problems

    run.say(f"gates: {name}")
    sess = run.sessions[name] = make_session(run.folder / name)
    run.checks.append(G.contract_check(name, session_io_problems(sess)))
    outs = run.outputs[name] = {bs: _attempt(ort_logits, sess, run.x, bs) for bs in run.batch_sizes}
    ref = run.outputs[run.reference.name]
    if name in (A.ONNX, A.TFLITE):  # fp32 files: against the reference, with the fp32 ONNX file's limits
        run.checks += G.parity_checks(name, ref, outs, **run.thresholds["onnx"])
        return
    fp32 = {bs: (o if isinstance(o, np.ndarray) else ref[bs]) for bs, o in run.outputs[A.ONNX].items()}
    run.checks += G.int8_checks(name, fp32, outs, run.y, **run.thresholds["int8"])


def _probability_gates(run: GateRun, ts) -> None:
    """probabilities = softmax(logits / T) in every file, at the largest batch size."""
    from mnist_edge.evaluate.ort_eval import ort_outputs
    from mnist_edge.torchrun import torch_outputs, torch_threads

    acc_bs, t = max(run.batch_sizes), run.reference.temperature
    run.say(f"gates: probabilities = softmax(logits / {t:g}) in every file")
    x_p = run.x[:G.PROBABILITY_IMAGES]
    if ts is not None:
        with torch_threads(1):
            ts_both = _attempt(torch_outputs, ts, x_p, acc_bs)
        run.checks.append(G.probabilities_check(A.TORCHSCRIPT, acc_bs, ts_both, t))
    for name, session in run.sessions.items():
        run.checks.append(G.probabilities_check(name, acc_bs, _attempt(ort_outputs, session, x_p, acc_bs), t))


def _measured(run: GateRun) -> dict:
    """Per file: accuracy at the largest batch size, and against its reference the lowest agreement and
    the largest logit difference over the batch sizes (None where a file failed)."""
    acc_bs, outputs = max(run.batch_sizes), run.outputs
    measured = {name: {"accuracy": round(float((outs[acc_bs].argmax(1) == run.y).mean() * 100), 4)
                       if isinstance(outs[acc_bs], np.ndarray) else None} for name, outs in outputs.items()}
    ref = run.reference.name
    for name, ref_name in ((A.TORCHSCRIPT, ref), (A.ONNX, ref), (A.INT8, A.ONNX), (A.TFLITE, ref),
                           (A.TFLITE_INT8, A.ONNX)):
        if name not in outputs:
            continue
        pairs = [(o, outputs[ref_name][bs]) for bs, o in outputs[name].items()
                 if isinstance(o, np.ndarray) and isinstance(outputs[ref_name][bs], np.ndarray)]
        agree = [float((o.argmax(1) == r.argmax(1)).mean() * 100) for o, r in pairs]
        diffs = [float(np.abs(o - r).max()) for o, r in pairs]
        measured[name].update(reference=ref_name, agreement=round(min(agree), 4) if agree else None,
                              max_abs_diff=max(diffs) if diffs else None)
    return measured
