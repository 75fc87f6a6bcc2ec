"""Measure how far each exported file's logits move across onnxruntime settings (the self-test tolerances).

For every model folder given (default: all of exported/), on the first 1,000 test images of the self-test
bundle's seeded order: PyTorch eager from the checkpoint is the reference for
model.pt and model.onnx; onnxruntime at ORT_ENABLE_ALL, 1 thread, one batch is the reference for int8.
Each ONNX file is run at every graph optimization level x threads {1, 2} x batch {1, 100}; prints the
largest |Δ logits| per file and setting, the int8 output's quantization step, and how far slightly
perturbed weights move the outputs (what the self-test must catch). Needs torch and onnx.

    MNIST_EDGE_DATA=... .venv/bin/python scripts/experiments/measure_selftest_tolerances.py [exported/NAME ...] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def perturbed(data: bytes, rel: float, int8_steps: int, seed: int = 0) -> bytes:
    """The model with every float weight (>= 2 dims) scaled by (1 + rel * N(0,1)); int8 weights moved by
    ``int8_steps`` on 1% of their entries."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load_from_string(data)
    rng = np.random.default_rng(seed)
    for t in m.graph.initializer:
        a = numpy_helper.to_array(t)
        if a.ndim < 2:
            continue
        if a.dtype == np.float32 and rel:
            a = (a * (1 + rel * rng.standard_normal(a.shape))).astype(np.float32)
        elif a.dtype == np.int8 and int8_steps:
            hit = rng.random(a.shape) < 0.01
            a = np.clip(a.astype(np.int16) + hit * int8_steps, -127, 127).astype(np.int8)
        else:
            continue
        t.CopyFrom(numpy_helper.from_array(a, t.name))
    return m.SerializeToString()


def session(data: bytes, level: str, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    so.intra_op_num_threads = threads
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def run(sess, x, bs):
    return np.concatenate([sess.run(["logits"], {"image": x[i:i + bs]})[0] for i in range(0, len(x), bs)])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="*")
    p.add_argument("--json")
    args = p.parse_args(argv)
    from mnist_edge.training.checkpoint import load_checkpoint
    from mnist_edge.data.mnist import load_mnist
    from mnist_edge.exporter import selftest_bundle as B
    from mnist_edge.exporter.torchscript import load_torchscript, torch_logits, torch_threads
    from mnist_edge.zoo.networks import build_edge_model
    from mnist_edge.zoo.registry import get_spec

    folders = [Path(f) for f in args.folders] or sorted(p.parent for p in Path("exported").glob("*/manifest.json"))
    x, y = load_mnist("test")
    order = np.random.default_rng(B.SEED).permutation(len(x))[:1000]
    xc = np.ascontiguousarray(x[order][:, None])
    levels = ("ORT_DISABLE_ALL", "ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_ALL")
    out = {}
    for folder in folders:
        net, ckpt = load_checkpoint(folder / "checkpoint.pt")
        edge = build_edge_model(get_spec(ckpt["model"]), net).eval()
        with torch_threads(1):
            eager = torch_logits(edge, xc, len(xc))
            ts, _ = load_torchscript(folder / "model.pt")
            rows = {"model.pt": {f"torch batch {bs}": float(np.abs(torch_logits(ts, xc, bs) - eager).max())
                                 for bs in (1, 100)}}
        fp32 = (folder / "model.onnx").read_bytes()
        rows["model.onnx"] = {f"{lv} t{t} b{bs}": float(np.abs(run(session(fp32, lv, t), xc, bs) - eager).max())
                              for lv in levels for t in (1, 2) for bs in (1, 100)}
        rows["model.onnx"]["perturbed 1e-4"] = float(np.abs(run(session(perturbed(fp32, 1e-4, 0), "ORT_ENABLE_ALL", 1), xc, 100) - eager).max())
        rows["model.onnx"]["perturbed 1e-3"] = float(np.abs(run(session(perturbed(fp32, 1e-3, 0), "ORT_ENABLE_ALL", 1), xc, 100) - eager).max())
        int8_path = folder / "model.int8.onnx"
        if int8_path.is_file():
            q = int8_path.read_bytes()
            ref8 = run(session(q, "ORT_ENABLE_ALL", 1), xc, len(xc))
            steps = np.diff(np.unique(ref8))
            step = float(steps[steps > 1e-6].min())

            def moved(z):  # (max |Δ| in output steps, rows with any logit moved, of len(xc))
                d = np.abs(z - ref8)
                return [round(float(d.max()) / step, 2), int((d.max(1) > step / 2).sum())]

            rows["model.int8.onnx"] = {f"{lv} t{t} b{bs}": moved(run(session(q, lv, t), xc, bs))
                                       for lv in levels for t in (1, 2) for bs in (1, 100)}
            for steps in (1, 2):
                z = run(session(perturbed(q, 0, steps), "ORT_ENABLE_ALL", 1), xc, 100)
                rows["model.int8.onnx"][f"perturbed int8 +{steps} on 1%"] = moved(z)
            rows["model.int8.onnx"]["output step"] = step
            top2 = np.sort(ref8, 1)[:, -2:]
            rows["model.int8.onnx"]["margin <= 4 steps"] = int(((top2[:, 1] - top2[:, 0]) <= 4 * step).sum())
        out[folder.name] = rows
        print(folder.name, json.dumps(rows, indent=1), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
