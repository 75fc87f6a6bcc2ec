"""LiteRT (.tflite) files in the torch-free runtime: their metadata, and a session with onnxruntime's surface.

Needs numpy and ``ai-edge-litert`` only (LiteRT's own interpreter with XNNPACK; no TensorFlow, no torch).

A ``.tflite`` that mnist-edge exports follows the same contract as its ``.onnx`` files (mnist_edge.contract):
raw uint8 pixels in, float32 ``logits`` and ``probabilities`` out, and the same metadata keys, stored as one
JSON object in the flatbuffer's metadata entry named ``mnist_edge`` (:data:`METADATA_NAME`). One difference is
LiteRT's convention: the file's input is NHWC, ``[batch, height, width, channels]`` (the metadata key
``mnist_edge.layout`` says so). :class:`LiteRTSession` takes the contract's NCHW batch like an onnxruntime
session does and transposes it (for one channel that is a reshape), so every caller that runs an
``InferenceSession`` (the classifier, the gates, the self-test, the benchmark) runs a ``.tflite`` unchanged.

LiteRT's ``Interpreter`` is not thread-safe; the session serializes calls with a lock, so
``Classifier.predict`` stays safe to call from many threads (they take turns).
"""

from __future__ import annotations

import contextlib
import json
import threading
from dataclasses import dataclass

import numpy as np

from mnist_edge import contract as C
from mnist_edge.errors import ArtifactError, MissingExtraError, first_line

METADATA_NAME = "mnist_edge"  # the flatbuffer metadata entry holding our metadata, one JSON object
LAYOUT_KEY = "mnist_edge.layout"
RUNTIME_KEY = "mnist_edge.runtime"
PROVIDER = "LiteRT (XNNPACK)"
MAX_METADATA_BYTES = 1 << 20
INSTALL_HINT = "pip install ai-edge-litert (numpy and ai-edge-litert are all a .tflite needs; no TensorFlow)"


def _litert():
    try:
        from ai_edge_litert import interpreter, schema_py_generated
    except ImportError as e:
        raise MissingExtraError(f"running a .tflite file needs ai-edge-litert, which is not installed "
                                f"({first_line(e, 120)}): {INSTALL_HINT}") from None
    return interpreter, schema_py_generated


def read_metadata(data: bytes, source: str) -> dict:
    """The ``mnist_edge`` metadata of a .tflite file's bytes ({} when it has none); ArtifactError when the
    bytes are not a LiteRT model."""
    _, schema = _litert()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ArtifactError(f"{source} is not a LiteRT (.tflite) model: no TFL3 identifier; it may be truncated "
                            "or corrupt")
    try:
        model = schema.Model.GetRootAs(data, 0)
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            if entry.Name() != METADATA_NAME.encode():
                continue
            index = entry.Buffer()
            if not 0 <= index < model.BuffersLength():
                raise ValueError(f"metadata buffer {index} out of range")
            raw = model.Buffers(index).DataAsNumpy()
            raw = b"" if isinstance(raw, int) else raw.tobytes()  # flatbuffers returns 0 for an empty vector
            if len(raw) > MAX_METADATA_BYTES:
                raise ValueError(f"metadata of {len(raw):,} bytes")
            meta = json.loads(raw.decode("utf-8"))
            if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                     for k, v in meta.items()):
                raise ValueError("metadata is not an object of strings")
            return meta
    except Exception as e:  # noqa: BLE001 - a corrupt flatbuffer raises struct/index/unicode errors alike
        raise ArtifactError(f"{source}: its LiteRT metadata cannot be read ({type(e).__name__}: "
                            f"{first_line(e, 120)}); the file is corrupt") from None
    return {}


@dataclass(frozen=True)
class _Arg:
    """One input or output, described as onnxruntime's NodeArg is (name, type, shape)."""

    name: str
    type: str
    shape: list


_TYPES = {np.uint8: "tensor(uint8)", np.float32: "tensor(float)", np.int8: "tensor(int8)"}


def _onnx_style(detail: dict, nchw: bool) -> _Arg:
    shape = [int(d) for d in detail.get("shape_signature", detail["shape"])]
    shape = ["batch" if i == 0 and d == -1 else d for i, d in enumerate(shape)]
    if nchw and len(shape) == 4:
        shape = [shape[0], shape[3], shape[1], shape[2]]
    return _Arg(detail["name"], _TYPES.get(detail["dtype"], f"tensor({np.dtype(detail['dtype']).name})"), shape)


class LiteRTSession:
    """A LiteRT interpreter behind onnxruntime's session surface: ``run(names, {"image": nchw_uint8})``,
    ``get_inputs()``, ``get_outputs()`` (contract layout, NCHW) and ``get_providers()``."""

    def __init__(self, data: bytes, *, source: str, threads: int | None = None, probe: bool = False):
        interpreter, _ = _litert()
        self.source = source
        if probe:
            _probe(bytes(data), source)
        try:
            with _quiet_fd2():  # LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate" from C++
                self._it = interpreter.Interpreter(model_content=bytes(data), num_threads=threads or 1)
            self._inputs = self._it.get_input_details()
            self._outputs = self._it.get_output_details()
        except Exception as e:  # noqa: BLE001 - LiteRT raises ValueError/RuntimeError for a bad model
            raise ArtifactError(f"ai-edge-litert cannot load {source}: {first_line(e, 200)}") from None
        self._by_name = {d["name"]: d["index"] for d in self._outputs}
        self._batch = None
        self._lock = threading.Lock()

    def get_inputs(self) -> list:
        return [_onnx_style(d, nchw=True) for d in self._inputs]

    def get_outputs(self) -> list:
        return [_onnx_style(d, nchw=False) for d in self._outputs]

    def get_providers(self) -> list:
        return [PROVIDER]

    def run(self, output_names, feed: dict, run_options=None) -> list:
        """Outputs named ``output_names`` (None: all, in the file's order) for ``feed[image]``, uint8 NCHW."""
        (name, batch), = feed.items()
        batch = np.asarray(batch)
        if name != C.INPUT_NAME or batch.ndim != 4:
            raise ArtifactError(f"{self.source}: input {name!r} of shape {batch.shape}; expected "
                                f"{C.INPUT_NAME!r} [batch, channels, height, width]")
        nhwc = np.ascontiguousarray(batch.transpose(0, 2, 3, 1))
        wanted = [d["index"] for d in self._outputs] if output_names is None else \
            [self._by_name[n] for n in output_names]
        index = self._inputs[0]["index"]
        with self._lock:
            try:
                if self._batch != nhwc.shape:
                    self._it.resize_tensor_input(index, list(nhwc.shape), strict=True)
                    with _quiet_fd2():  # the XNNPACK delegate is applied (and announced) here
                        self._it.allocate_tensors()
                    self._batch = nhwc.shape
                self._it.set_tensor(index, nhwc)
                self._it.invoke()
                return [self._it.get_tensor(i) for i in wanted]
            except Exception as e:  # noqa: BLE001 - LiteRT's ValueError/RuntimeError: a broken graph or input
                self._batch = None
                raise ArtifactError(f"{self.source} failed to run on a batch of {len(batch)}: "
                                    f"{first_line(e, 300)}") from None


@contextlib.contextmanager
def _quiet_fd2():
    """File descriptor 2 pointed at /dev/null for the block (C++ logging bypasses Python's sys.stderr)."""
    import os
    import sys

    try:
        sys.stderr.flush()
        saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    except (OSError, ValueError, AttributeError):  # no fd 2 to redirect (an embedded interpreter): print then
        yield
        return
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def _probe(data: bytes, source: str) -> None:
    """Load, allocate and run ``data`` once in a forked child first. LiteRT's interpreter crashes the process
    (SIGSEGV, in its constructor or ``allocate_tensors``) on some malformed flatbuffers that pass its own
    checks: the fuzzer found them in 2 of 2,000 mutated files. A file whose hash an export's manifest vouches
    for was made and gated by mnist-edge and needs no probe; any other file gets one (a fork: ~5 ms)."""
    import os
    import signal

    if not hasattr(os, "fork"):  # no fork (Windows): load directly, as LiteRT's own tools do
        return
    interpreter, _ = _litert()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the caller's code
        code = 0
        try:
            with _quiet_fd2():
                it = interpreter.Interpreter(model_content=data, num_threads=1)
                detail = it.get_input_details()[0]
                shape = [2, *[max(1, int(d)) for d in detail["shape"][1:]]]
                it.resize_tensor_input(detail["index"], shape, strict=True)
                it.allocate_tensors()
                it.set_tensor(detail["index"], np.zeros(shape, detail["dtype"]))
                it.invoke()
        except BaseException:  # noqa: BLE001 - a Python-level error: the parent meets it again, typed
            code = 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        try:
            name = signal.Signals(os.WTERMSIG(status)).name
        except ValueError:
            name = f"signal {os.WTERMSIG(status)}"
        raise ArtifactError(f"{source}: LiteRT crashed on this file ({name}) when a probe process loaded it: the file "
                            "is corrupt or malformed, and was not loaded here")


def create_litert_session(data: bytes, *, source: str, threads: int | None = None,
                          probe: bool = False) -> LiteRTSession:
    """A session for ``data``; ``probe``: load it in a forked child first (files no manifest vouches for)."""
    return LiteRTSession(data, source=source, threads=threads, probe=probe)
