"""Writing an export folder's self-test bundle (``selftest.bin``): images chosen, references computed, tolerances stated.

The images: 10 per class from the MNIST test set, taken in the order of a seeded permutation, skipping
images on which any file's reference is nearly tied (top-2 logit margin below ``MARGIN_FACTOR`` times that
file's tolerance): such an image could change its label on a device whose outputs are within tolerance,
and a margin above twice the tolerance means a label can only change when some logit moved beyond it.
Within each class, "canaries" come first: images whose int8 output moves by a quantization step when
onnxruntime runs the QDQ graph unfused (float Conv between Dequantize/Quantize, as with graph
optimizations off) instead of its fused int8 kernels. On those, a device whose int8 kernels round
differently shows it (the self-test reports the int8 file as not bit-identical), where most images would
come out the same.
The references: PyTorch eager (the model being exported, one thread) for the fp32 files, this machine's
onnxruntime through the runtime's own session for the int8 file. Tolerances and how they were measured:
docs/self-test.md. The format: :mod:`mnist_edge.evaluate.selftest`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mnist_edge.errors import ExportError
from mnist_edge.evaluate.bundle import BUNDLE_NAME, FORMAT, pack

PER_CLASS = 10
SEED = 0
CANDIDATES = 10_000  # test images (in seeded order) the 100 are picked from: all of them
CHUNK = 500  # images per call while computing references (bounds memory: cnn's activations at 10k are ~1 GB)
CANARIES_PER_CLASS = 3  # at most; each may legitimately move by a step on a device that rounds differently
MOVED_SLACK = 5  # images beyond the canaries that may move by one step
# (batch size, images) per pass: batch-1 and batched kernels can differ; one image at a time on the first 20
# (2 per class) keeps a Pi-class CPU well under a second
RUNS = ((1, 20), (100, 100))
MARGIN_FACTOR = 4.0
# Per kind of file, the largest allowed |logit - reference| and number of changed labels. Measured on the
# nine committed models (docs/self-test.md): fp32 onnxruntime vs PyTorch at most 1.3e-5 on any graph
# optimization level, thread count or batch size (arm64 under qemu: 1.2e-5); TorchScript vs eager 1.1e-5;
# weights scaled by (1 + 1e-4 noise) move logits by 1e-3 or more. int8 logits are multiples of the output's
# quantization step (0.07-0.34): other kernels (unfused QDQ) move 0-1.5% of images by exactly one step,
# one int8 weight in a hundred moved by one step moves 58-98% of them by 1-3 steps.
TOLERANCES = {
    "torchscript": {"max_abs_diff": 1e-4, "label_changes": 0},
    "onnx": {"max_abs_diff": 1e-4, "label_changes": 0},
    "int8": {"max_steps": 1, "label_changes": 0},  # made absolute per model: int8_tolerance
}


# layout role -> tolerance kind: a LiteRT fp32 file is held to the fp32 ONNX file's tolerance against the
# same PyTorch reference; a LiteRT int8 file to one output step against LiteRT on the export machine
KIND_OF_ROLE = {"torchscript": "torchscript", "onnx": "onnx", "int8": "int8", "tflite": "onnx", "tflite_int8": "int8"}


def file_kinds(folder: Path) -> dict[str, str]:
    """{file name: "torchscript" | "onnx" | "int8"} for the model files present in ``folder``."""
    from mnist_edge import artifacts as A

    kinds = {f.name: KIND_OF_ROLE[role] for role, f in A.LAYOUT.items() if f.kind == "model"}  # layout's roles
    return {name: kind for name, kind in kinds.items() if (folder / name).is_file()}


def output_step(path: Path, logits: np.ndarray) -> float:
    """The quantization step of an int8 model's logits: the scale of the DequantizeLinear that produces
    them (read with onnx), else the smallest gap between distinct values in ``logits``."""
    try:
        import onnx
        from onnx import numpy_helper

        m = onnx.load(path)
        inits = {t.name: t for t in m.graph.initializer}
        for node in m.graph.node:
            if node.op_type == "DequantizeLinear" and "logits" in node.output and node.input[1] in inits:
                return float(numpy_helper.to_array(inits[node.input[1]]).reshape(-1)[0])
    except Exception:  # noqa: BLE001 - the empirical estimate below stands in
        pass
    # No DequantizeLinear makes the logits: the recipe kept the last layer in float (e.g. `Gemm[1]`), so
    # the outputs are float and move by float rounding across runtimes, like an fp32 file's; their "step"
    # is never taken below the fp32 tolerance (else every image would count as moved).
    gaps = np.diff(np.unique(logits))
    gaps = gaps[gaps > 1e-6]
    return max(float(gaps.min()) if len(gaps) else 0.0, TOLERANCES["onnx"]["max_abs_diff"])


def int8_tolerance(step: float, canaries: int) -> dict:
    """TOLERANCES["int8"] in logits for an output step ``step`` (half a step of slack for float rounding);
    one step may move the bundle's ``canaries`` and ``MOVED_SLACK`` images more."""
    t = TOLERANCES["int8"]
    return {"max_abs_diff": (t["max_steps"] + 0.5) * step, "step": step, "moved_images": canaries + MOVED_SLACK,
            "label_changes": t["label_changes"]}


def unfused_int8_logits(path: Path, images: np.ndarray) -> np.ndarray:
    """The int8 model run with graph optimizations off: QDQ simulated in float, not the fused int8 kernels."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(["logits"], {"image": images[i:i + CHUNK]})[0]
                           for i in range(0, len(images), CHUNK)])


def reference_logits(folder: Path, kinds: dict[str, str], reference, images: np.ndarray) -> dict[str, np.ndarray]:
    """{file: float32 [N, classes]}: the export's reference (PyTorch eager, or the user's own ONNX file) for
    the fp32 files, onnxruntime (runtime session) for int8."""
    from mnist_edge.evaluate.ort_eval import make_session

    out = {}
    eager = reference.logits(images, CHUNK)
    for name, kind in kinds.items():
        if kind in ("torchscript", "onnx"):
            out[name] = eager
        else:  # the runtime's session for the file (LiteRT's for a .tflite)
            session = make_session(folder / name)
            out[name] = np.concatenate([session.run(["logits"], {"image": images[i:i + CHUNK]})[0]
                                        for i in range(0, len(images), CHUNK)]).astype(np.float32)
    return out


def select(labels: np.ndarray, refs: dict[str, np.ndarray], tolerances: dict[str, dict],
           canary: np.ndarray) -> np.ndarray:
    """Indices of the candidates: ``PER_CLASS`` per class, canaries first, skipping near-ties (docstring)."""
    ok = np.ones(len(labels), bool)
    for name, z in refs.items():
        top2 = np.sort(z, axis=1)[:, -2:]
        ok &= (top2[:, 1] - top2[:, 0]) > MARGIN_FACTOR * tolerances[name]["max_abs_diff"]
    per_class = []
    for c in range(10):
        of_class = np.flatnonzero(ok & (labels == c))
        first = of_class[canary[of_class]][:CANARIES_PER_CLASS]
        of_class = np.concatenate([first, of_class[~np.isin(of_class, first)]])[:PER_CLASS]
        if len(of_class) < PER_CLASS:
            raise ExportError(f"self-test bundle: only {len(of_class)} of {len(labels)} candidate test images of "
                              f"class {c} have a clear top-2 margin under every file; expected {PER_CLASS}")
        per_class.append(of_class)
    # interleaved (the first of each class, then the second, ...): any prefix of 10k images is balanced
    return np.stack(per_class, axis=1).reshape(-1)


def write_bundle(folder: str | Path, *, model: str, reference, images: np.ndarray, labels: np.ndarray) -> dict:
    """Write ``folder/selftest.bin`` for the model files in ``folder``; returns its manifest entry.

    ``reference``: the export's oracle (:mod:`mnist_edge.exporter.reference`); ``images`` uint8 [N, 28, 28] or
    [N, 1, 28, 28] and ``labels`` [N]: the MNIST test set.
    """
    from mnist_edge.files import sha256_file, write_bytes_atomic
    from mnist_edge.manifest import file_record

    folder = Path(folder)
    kinds = file_kinds(folder)
    images = np.asarray(images, dtype=np.uint8).reshape(-1, 1, 28, 28)
    labels = np.asarray(labels).astype(np.int64)
    order = np.random.default_rng(SEED).permutation(len(images))[:CANDIDATES]
    cand = np.ascontiguousarray(images[order])
    refs = reference_logits(folder, kinds, reference, cand)
    tolerances = {name: dict(TOLERANCES[kind]) for name, kind in kinds.items()}
    canary = np.zeros(len(order), bool)
    for name, kind in kinds.items():
        if kind == "int8":
            tolerances[name] = int8_tolerance(output_step(folder / name, refs[name]), 0)
            if name.endswith(".onnx"):  # canaries: onnxruntime's unfused kernels (LiteRT has no such switch)
                moved = np.abs(unfused_int8_logits(folder / name, cand) - refs[name]).max(1)
                canary |= moved > tolerances[name]["step"] / 2
    picked = select(labels[order], refs, tolerances, canary)
    idx = order[picked]
    for name, kind in kinds.items():
        if kind == "int8":
            tolerances[name] = int8_tolerance(tolerances[name]["step"], int(canary[picked].sum()))
    arrays = {"images": images[idx], "labels": labels[idx].astype(np.uint8)}
    files = {}
    for name, kind in kinds.items():
        arrays[f"logits/{name}"] = refs[name][picked]
        made_by = ("LiteRT (XNNPACK) on the export machine (CPU, 1 thread)" if kind == "int8" and name.endswith(".tflite")
                   else "onnxruntime on the export machine (CPU, 1 thread, all graph optimizations)" if kind == "int8"
                   else "PyTorch eager on the export machine" if reference.name == "pytorch"
                   else "the source ONNX file, onnxruntime on the export machine")
        files[name] = {"sha256": sha256_file(folder / name), "reference": made_by, "array": f"logits/{name}",
                       "tolerance": tolerances[name],
                       "runs": [{"batch_size": b, "images": n} for b, n in RUNS]}
    header = {"model": model, "images": len(idx), "files": files,
              "selection": {"split": "test", "indices": idx.tolist(), "per_class": PER_CLASS, "seed": SEED,
                            "candidates": CANDIDATES, "margin_factor": MARGIN_FACTOR,
                            "canaries": int(canary[picked].sum())}}
    write_bytes_atomic(folder / BUNDLE_NAME, pack(header, arrays))
    (folder / BUNDLE_NAME).chmod(0o644)
    return dict(file_record(folder / BUNDLE_NAME), kind="selftest", format=FORMAT, images=len(idx),
                covers=sorted(files), tolerances={name: f["tolerance"] for name, f in files.items()})
