"""The export's helpers around onnxruntime: batched logits, accuracy, the runtime's IR/opset limits.

Sessions come from the runtime's one factory (:func:`mnist_edge.runtime.session.create_session`); files
are checked by the runtime's own reader and load (:mod:`mnist_edge.runtime`), never a second way here.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from mnist_edge.contract import INPUT_NAME, NUM_CLASSES, OUTPUT_NAMES
from mnist_edge.errors import ArtifactError, first_line  # noqa: F401 (first_line: re-exported)

# IR versions above 10 are rejected by onnxruntime releases before 1.20; 10 covers every opset we write.
MAX_IR_VERSION = 10


def make_session(model, *, threads: int = 1):
    """A CPU InferenceSession for a path or serialized bytes (a ``.tflite`` path: the LiteRT session that
    stands in for one, mnist_edge.runtime.litert), from the runtime's one session factory
    (:func:`mnist_edge.runtime.session.create_session`: its options, its typed load errors), one thread.

    One intra-op thread for the gates and the search: these models are tiny, so batch-1 calls are dominated
    by per-call overhead; on this shared 2-core machine two threads made the same loops 10-100x slower
    (measured with torch's pool; onnxruntime's spins the same way).
    """
    from mnist_edge.runtime.session import create_session

    if isinstance(model, bytes):
        data, source = model, "model bytes"
    else:
        try:
            data, source = Path(model).read_bytes(), f"'{model}'"
        except OSError as e:
            raise ArtifactError(f"cannot read '{model}': {e.strerror or e}") from None
    if not isinstance(model, bytes) and Path(model).suffix == ".tflite":  # LiteRT, behind the same surface
        from mnist_edge.runtime.litert import LiteRTSession

        return LiteRTSession(data, source=source, threads=threads)
    session, _, _ = create_session(data, source=source, device="cpu", threads=threads)
    return session


def ort_logits(session, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Logits float32 [N, classes] of uint8 ``images`` [N, 1, 28, 28], run ``batch_size`` at a time."""
    classes = session.get_outputs()[0].shape[-1]
    out = np.empty((len(images), classes if isinstance(classes, int) else NUM_CLASSES), dtype=np.float32)
    run = session.run
    names = [OUTPUT_NAMES[0]]
    for start in range(0, len(images), batch_size):
        out[start:start + batch_size] = run(names, {INPUT_NAME: images[start:start + batch_size]})[0]
    return out


def ort_outputs(session, images: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(logits, probabilities), float32 [N, classes] each, of uint8 ``images``, ``batch_size`` at a time."""
    parts = [session.run(list(OUTPUT_NAMES), {INPUT_NAME: images[start:start + batch_size]})
             for start in range(0, len(images), batch_size)]
    return tuple(np.concatenate([p[i] for p in parts]).astype(np.float32) for i in range(2))


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
