"""The LiteRT target of ``export --quantize``: ``model.tflite`` and ``model.int8.tflite``, chosen by gate and time.

Conversion path (measured, docs/litert.md): ``model.onnx`` -> onnx2tf -> TensorFlow Lite converter, in a
worker process (:mod:`mnist_edge.exporter.litert_worker`). It starts from the ONNX file every source already
produces (a zoo network, your own network, a TorchScript file or an ONNX file made elsewhere), so all of
them get LiteRT files through one path; litert-torch would need a torch.export-able ``nn.Module``, which a
TorchScript or ONNX source does not have.

The int8 file is chosen, not assumed: each int8 candidate (:data:`litert_worker.CANDIDATES`) is gated
against the fp32 ONNX file with the int8 gates on the evaluation images, and the candidates that pass are
timed interleaved in this process (1 thread, batch 1); the first (TensorFlow's default recipe) becomes
``model.int8.tflite`` unless another is faster by at least ``PAYS_AT`` (the interval's low end), and the
record says which won and why. When none passes, no int8 file is written and the record says why. The
export's own gates then run on the files as written.

Needs the ``litert`` extra (tensorflow, onnx2tf and its helpers, ai-edge-litert); without it the export
writes everything else and says in one line how to get the LiteRT files.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from mnist_edge import artifacts as A
from mnist_edge.contract import META_KEYS
from mnist_edge.errors import ExportError
from mnist_edge.evaluate import gates as G

# import name -> pip name, for everything the conversion imports
NEEDS = {"tensorflow": "tensorflow", "onnx2tf": "onnx2tf", "tf_keras": "tf-keras",
         "onnx_graphsurgeon": "onnx-graphsurgeon", "sng4onnx": "sng4onnx", "psutil": "psutil",
         "ai_edge_litert": "ai-edge-litert", "flatbuffers": "flatbuffers"}
PREFIX = "@mnist-edge-litert@ "
LITERT_ENV = "MNIST_EDGE_LITERT"  # "0": no LiteRT files unless asked (the test suite's exports stay fast)
TIMEOUT_S = 900
INT8_CANDIDATES = ("int8-per-channel", "int8-per-tensor")
PAYS_AT = 1.03  # a candidate other than the first wins only when the first is at least 3% slower (interval's low end)


def missing() -> str | None:
    """Why LiteRT files cannot be made here (None: they can). Looks for the modules without importing them:
    importing TensorFlow costs seconds and belongs in the worker."""
    absent = [pip for mod, pip in NEEDS.items() if importlib.util.find_spec(mod) is None]
    if not absent:
        return None
    return (f"LiteRT files (model.tflite, model.int8.tflite) need {', '.join(absent)}: "
            "pip install -e '.[litert]' in a checkout (or the wheel's [litert] extra)")


def convert(onnx_path: Path, calibration: np.ndarray, metadata: dict, work: Path) -> tuple[dict, dict]:
    """({candidate: .tflite bytes}, converter versions) for every candidate in ``metadata`` (candidate ->
    its metadata), converted from ``onnx_path`` in a worker process, calibrated on ``calibration`` (uint8
    [N, C, H, W])."""
    np.save(work / "calibration.npy", np.ascontiguousarray(calibration, dtype=np.uint8), allow_pickle=False)
    config = {"onnx": str(onnx_path), "work": str(work), "calibration": str(work / "calibration.npy"),
              "metadata": metadata, "candidates": list(metadata), "prefix": PREFIX}
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="-1")
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    log = work / "worker.log"
    with open(log, "w") as out:
        try:
            proc = subprocess.run([sys.executable, "-m", "mnist_edge.exporter.litert_worker"], input=json.dumps(config),
                                  stdout=subprocess.PIPE, stderr=out, text=True, env=env, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise ExportError(f"the LiteRT conversion took over {TIMEOUT_S} s and was stopped") from None
    result = next((json.loads(line[len(PREFIX):]) for line in proc.stdout.splitlines() if line.startswith(PREFIX)),
                  None)
    if proc.returncode != 0 or result is None:
        tail = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-3:]
        raise ExportError(f"the LiteRT conversion (onnx2tf + TensorFlow Lite) failed with status {proc.returncode}: "
                          + (" | ".join(t.strip()[:200] for t in tail) or "no message"))
    files = {name: Path(path).read_bytes() for name, path in result["written"].items()}
    return files, result["versions"]


def candidate_metadata(base: dict, name: str, calibration: dict) -> dict:
    """The metadata of one candidate file: the ONNX files' keys, its precision, layout and recipe."""
    meta = dict(base)
    meta[META_KEYS["precision"]] = "fp32" if name == "fp32" else "int8"
    meta["mnist_edge.layout"] = "NHWC"
    meta["mnist_edge.runtime"] = "litert"
    if name != "fp32":
        meta[META_KEYS["quantization"]] = json.dumps({"tool": "tf.lite.TFLiteConverter", "recipe": name,
                                                       "calibration": calibration}, sort_keys=True)
    return meta


def stage(plan, tmp: Path) -> None:
    """The export's LiteRT stage: the files when asked (``options.litert``) and possible, recorded in
    ``plan.litert``; an absent extra is one line, not a failure (an explicit ``litert=True`` makes it one)."""
    from mnist_edge.errors import MissingExtraError

    asked = plan.options.litert
    if asked is False or (asked is None and os.environ.get(LITERT_ENV) == "0"):
        return
    why = missing()
    if why is None:
        plan.litert = write_litert(plan, tmp)
        return
    if asked:
        raise MissingExtraError(why)
    plan.litert = {"skipped": why}
    plan.say(f"skipping LiteRT: {why}")


def write_litert(plan, tmp: Path) -> dict:
    """Write ``model.tflite`` and (where a candidate passes the int8 gates) ``model.int8.tflite`` into ``tmp``;
    returns the manifest's ``litert`` record."""
    from mnist_edge.evaluate.ort_eval import make_session, ort_logits

    images, source = plan.calibration
    names = ("fp32",) + INT8_CANDIDATES
    meta = {n: candidate_metadata(plan.metadata, n, {"images": len(images), **source}) for n in names}
    plan.say(f"writing {A.TFLITE} and int8 candidates {', '.join(INT8_CANDIDATES)} (onnx2tf + TensorFlow Lite, "
             f"{len(images)} {source['split']} images)")
    with tempfile.TemporaryDirectory(prefix="mnist-edge-litert-") as work:
        files, versions = convert(tmp / A.ONNX, images[:, None] if images.ndim == 3 else images, meta, Path(work))
    (tmp / A.TFLITE).write_bytes(files["fp32"])
    batch = max(plan.options.batch_sizes)
    fp32 = {batch: ort_logits(make_session(tmp / A.ONNX), plan.x_eval, batch)}
    rows = [_gate_candidate(n, files[n], fp32, plan, batch) for n in INT8_CANDIDATES]
    passed = {r["candidate"]: files[r["candidate"]] for r in rows if r["passed"]}
    record = {"path": "onnx2tf + tf.lite.TFLiteConverter (mnist_edge.exporter.litert_worker)", "versions": versions,
              "candidates": rows}
    if not passed:
        record["int8"] = None
        record["why"] = "no int8 candidate passed the int8 gates: only model.tflite (fp32) is written"
        plan.say(record["why"])
        return record
    timing = _time_candidates(passed, plan.x_eval) if len(passed) > 1 else None
    # the winner when it is faster by a margin that matters (the runner-up's interval above PAYS_AT), else
    # the first that passed: TensorFlow's default recipe, per-channel, the more accurate one
    w = timing["winner"] if timing else None
    chosen = w["file"] if w and w["margin"] and w["margin"][1] >= PAYS_AT else next(iter(passed))
    (tmp / A.TFLITE_INT8).write_bytes(passed[chosen])
    record.update(int8=chosen, timing=timing, why=_why(chosen, rows, timing))
    plan.say(f"{A.TFLITE_INT8}: {record['why']}")
    return record


def _gate_candidate(name: str, data: bytes, fp32: dict, plan, batch: int) -> dict:
    from mnist_edge.evaluate.ort_eval import ort_logits
    from mnist_edge.runtime.litert import LiteRTSession

    try:
        logits = {batch: ort_logits(LiteRTSession(data, source=name, threads=1), plan.x_eval, batch)}
    except Exception as e:  # noqa: BLE001 - a candidate that cannot run fails its gate, with the reason
        return {"candidate": name, "passed": False, "failed": [f"does not run: {str(e)[:200]}"]}
    checks = G.int8_checks(name, fp32, logits, plan.y_eval, **plan.options.thresholds["int8"])
    acc = float((logits[batch].argmax(1) == plan.y_eval).mean() * 100)
    agree = float((logits[batch].argmax(1) == fp32[batch].argmax(1)).mean() * 100)
    return {"candidate": name, "passed": all(c.passed for c in checks), "accuracy": round(acc, 4),
            "agreement": round(agree, 4), "bytes": len(data), "failed": [c.describe() for c in checks if not c.passed]}


def _time_candidates(passed: dict, x: np.ndarray) -> dict:
    """The passing candidates raced at batch 1 (1 thread): rows by p50 and the winner."""
    from mnist_edge.bench.race import race_files
    from mnist_edge.runtime.litert import LiteRTSession

    sessions = {n: LiteRTSession(d, source=n, threads=1) for n, d in passed.items()}
    return {"batch": 1, "threads": 1, **race_files(sessions, x, ((1, 20),))["by_batch"]["1"]}


def _why(chosen: str, rows: list, timing: dict | None) -> str:
    row = next(r for r in rows if r["candidate"] == chosen)
    text = f"{chosen} ({row['accuracy']:.2f}% accuracy, {row['agreement']:.2f}% agreement with model.onnx)"
    if timing is None:
        return text + ", the only candidate that passed the int8 gates"
    w = timing["winner"]
    if w["file"] == chosen and w["margin"][1] >= PAYS_AT:
        return text + f", fastest at batch 1: the runner-up {w['runner_up']} is {w['margin'][0]:.2f}x its p50 " \
                      f"[{w['margin'][1]:.2f}, {w['margin'][2]:.2f}]"
    other = w["runner_up"] if w["file"] == chosen else w["file"]
    return text + f", the first candidate (TensorFlow's default recipe): {other} is not {PAYS_AT:.2f}x faster at " \
                  f"batch 1 ({w['margin'][0]:.2f}x [{w['margin'][1]:.2f}, {w['margin'][2]:.2f}] between them)"
