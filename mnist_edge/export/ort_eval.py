"""Running and inspecting ONNX files with onnxruntime: batched logits, runtime limits, contract checks.

Torch-free (numpy + onnxruntime; ``onnx`` only where installed), so ``mnist-edge verify`` and the export
gates share one code path.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from mnist_edge.contract import INPUT_NAME, META_KEYS, NUM_CLASSES, OUTPUT_NAMES, REQUIRED_META
from mnist_edge.errors import ArtifactError, ContractError

# IR versions above 10 are rejected by onnxruntime releases before 1.20; 10 covers every opset we write.
MAX_IR_VERSION = 10


def make_session(model, *, threads: int = 1):
    """A CPU InferenceSession for a path or serialized bytes.

    One intra-op thread and no spinning by default: these models are tiny, so batch-1 calls are dominated
    by per-call overhead; on this shared 2-core machine torch's two-thread pool made the same loops 10-100x
    slower (measured), and onnxruntime's pool spins the same way.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3  # errors only: warnings about unused initializers are noise here
    try:
        return ort.InferenceSession(model if isinstance(model, bytes) else os.fspath(model), so,
                                    providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own pybind exception types
        where = "model bytes" if isinstance(model, bytes) else f"'{model}'"
        raise ArtifactError(f"onnxruntime {ort.__version__} cannot load {where}: {first_line(e)}") from None


def ort_logits(session, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Logits float32 [N, 10] of uint8 ``images`` [N, 1, 28, 28], run ``batch_size`` at a time."""
    out = np.empty((len(images), NUM_CLASSES), dtype=np.float32)
    run = session.run
    names = [OUTPUT_NAMES[0]]
    for start in range(0, len(images), batch_size):
        out[start:start + batch_size] = run(names, {INPUT_NAME: images[start:start + batch_size]})[0]
    return out


def accuracy_pct(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(1) == labels).mean() * 100.0)


@functools.lru_cache(maxsize=1)
def runtime_limits() -> tuple[int, int]:
    """(highest IR version, highest default-domain opset) the installed onnxruntime loads.

    onnxruntime publishes neither in Python, so we load a one-node model at decreasing versions
    (about 30 tiny sessions, a few ms each). Needs ``onnx``.
    """
    import onnx
    from onnx import TensorProto, helper

    def loads(ir: int, opset: int) -> bool:
        graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = ir
        try:
            make_session(model.SerializeToString())
            return True
        except ArtifactError:
            return False

    top_opset = onnx.defs.onnx_opset_version()
    max_ir = next((ir for ir in range(onnx.IR_VERSION, 3, -1) if loads(ir, 13)), 0)
    max_opset = next((op for op in range(top_opset, 6, -1) if loads(min(max_ir, MAX_IR_VERSION), op)), 0)
    return max_ir, max_opset


def external_tensors(model) -> list[str]:
    """Names of tensors in ``model`` (a ModelProto) stored as external data."""
    import onnx

    return [t.name for t in _all_initializers(model.graph)
            if t.data_location == onnx.TensorProto.EXTERNAL or len(t.external_data)]


def inspect_onnx(path: str | os.PathLike, *, model_name: str | None = None, data: bytes | None = None) -> dict:
    """Check one ONNX file before running it; returns ``{"ir_version", "opset", "metadata"}``.

    Refuses external data (path-traversal CVEs; our models are tiny), IR or opset newer than the installed
    onnxruntime (quoting both), and metadata missing a contract key. Call only after the hash check, and
    pass the hash-checked ``data`` where you have it so the bytes checked are the bytes parsed.
    Without the ``onnx`` package, returns None and the session's own checks stand in.
    """
    try:
        import onnx
    except ImportError:
        return None
    import onnxruntime as ort

    path = Path(path)
    try:
        model = onnx.load_from_string(data) if data is not None else onnx.load(path, load_external_data=False)
    except Exception as e:
        raise ArtifactError(f"'{path}' is not a readable ONNX file: {first_line(e)}") from None
    external = external_tensors(model)
    if external:
        raise ArtifactError(f"'{path}' stores tensors as external data ({', '.join(external[:3])}); refused: "
                            "mnist-edge models are self-contained single files")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    max_ir, max_opset = runtime_limits()
    if model.ir_version > max_ir or (opset or 0) > max_opset:
        raise ArtifactError(f"'{path}' has IR version {model.ir_version} and opset {opset}; onnxruntime "
                            f"{ort.__version__} loads at most IR {max_ir} and opset {max_opset}")
    meta = {p.key: p.value for p in model.metadata_props}
    missing = [META_KEYS[k] for k in REQUIRED_META if META_KEYS[k] not in meta]
    if missing:
        raise ContractError(f"'{path}' lacks metadata {', '.join(missing)}: not an mnist-edge model")
    if model_name is not None and meta[META_KEYS["model"]] != model_name:
        raise ContractError(f"'{path}' holds model {meta[META_KEYS['model']]!r}, the manifest says {model_name!r}")
    return {"ir_version": model.ir_version, "opset": opset, "metadata": meta}


def _all_initializers(graph):
    yield from graph.initializer
    for sparse in graph.sparse_initializer:  # values and indices are tensors that may point outside too
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            if attr.HasField("sparse_tensor"):
                yield attr.sparse_tensor.values
                yield attr.sparse_tensor.indices
            yield from attr.tensors
            for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _all_initializers(g)


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
