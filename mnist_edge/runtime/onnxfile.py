"""Read what the runtime must know about an .onnx file before onnxruntime sees it, without the onnx package.

The runtime installs only numpy and onnxruntime, so this is a ~100-line reader of the protobuf wire format
for the few ModelProto fields we need: IR version, opset imports, ``metadata_props``, and whether any
tensor anywhere in the model (initializers, Constant attributes, subgraphs, functions) points at external
data. Field numbers are those of onnx/onnx.proto3; unknown fields are skipped, as protobuf does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mnist_edge.errors import ArtifactError

# Message kinds and, for each, the fields that hold sub-messages we must walk to find every TensorProto.
_MODEL, _GRAPH, _NODE, _ATTR, _TENSOR, _SPARSE, _FUNCTION, _TRAINING = range(8)
_CHILDREN = {
    _MODEL: {7: _GRAPH, 20: _TRAINING, 25: _FUNCTION},  # graph, training_info, functions
    _GRAPH: {1: _NODE, 5: _TENSOR, 15: _SPARSE},  # node, initializer, sparse_initializer
    _NODE: {5: _ATTR},  # attribute
    _ATTR: {5: _TENSOR, 6: _GRAPH, 10: _TENSOR, 11: _GRAPH, 22: _SPARSE, 23: _SPARSE},  # t, g, tensors, graphs...
    _SPARSE: {1: _TENSOR, 2: _TENSOR},  # values, indices
    _FUNCTION: {7: _NODE},  # node
    _TRAINING: {1: _GRAPH, 2: _GRAPH},  # initialization, algorithm
    _TENSOR: {},
}
_TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION, _EXTERNAL = 13, 14, 1  # TensorProto fields; DataLocation.EXTERNAL


class ProtoError(ValueError):
    """Bytes that are not a well-formed protobuf message."""


@dataclass
class OnnxInfo:
    """The facts about a model file that the runtime checks before creating a session."""

    ir_version: int = 0
    opsets: dict[str, int] = field(default_factory=dict)  # domain ("" = ai.onnx) -> version
    metadata: dict[str, str] = field(default_factory=dict)
    producer: str = ""
    has_graph: bool = False
    external_tensors: int = 0  # tensors whose data lives outside the file

    @property
    def onnx_opset(self) -> int | None:
        return self.opsets.get("", self.opsets.get("ai.onnx"))


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise ProtoError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ProtoError("varint longer than 10 bytes")


def _fields(buf: memoryview, start: int, end: int):
    """Yield (field number, wire type, value) where value is an int or a (start, end) span."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        num, wire = key >> 3, key & 7
        if num == 0:
            raise ProtoError("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos, end)
        elif wire == 2:
            n, pos = _varint(buf, pos, end)
            value, pos = (pos, pos + n), pos + n
        elif wire in (1, 5):
            value, pos = None, pos + (8 if wire == 1 else 4)
        else:  # 3/4: deprecated groups, 6/7: invalid; ONNX uses none of them
            raise ProtoError(f"unsupported wire type {wire}")
        if pos > end:
            raise ProtoError("field runs past the end of its message")
        yield num, wire, value


def _str(buf: memoryview, span) -> str:
    try:
        return bytes(buf[span[0]:span[1]]).decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProtoError("a string field is not UTF-8") from e


def _pair(buf: memoryview, span, a: int = 1, b: int = 2) -> tuple:
    """A two-field sub-message (StringStringEntryProto, OperatorSetIdProto) as (field a, field b)."""
    out = {a: None, b: None}
    for num, wire, value in _fields(buf, *span):
        if num in out:
            out[num] = value if wire == 0 else _str(buf, value) if wire == 2 else None
    return out[a], out[b]


def read_onnx_info(data: bytes) -> OnnxInfo:
    """Parse ``data`` (a serialized ModelProto); raises ProtoError when it is not well-formed protobuf."""
    buf = memoryview(data)
    info = OnnxInfo()
    for num, wire, value in _fields(buf, 0, len(buf)):
        if num == 1 and wire == 0:
            info.ir_version = value
        elif num == 2 and wire == 2:
            info.producer = _str(buf, value)
        elif num == 8 and wire == 2:
            domain, version = _pair(buf, value)
            info.opsets[domain or ""] = int(version or 0)
        elif num == 14 and wire == 2:
            key, val = _pair(buf, value)
            if key is not None:
                info.metadata[key] = val or ""
        elif num == 7 and wire == 2:
            info.has_graph = True
    # Walk every sub-message that can hold a TensorProto (iteratively: subgraphs nest).
    stack = [(_MODEL, 0, len(buf))]
    while stack:
        kind, start, end = stack.pop()
        children = _CHILDREN[kind]
        for num, wire, value in _fields(buf, start, end):
            if kind == _TENSOR:
                if (num == _TENSOR_DATA_LOCATION and wire == 0 and value == _EXTERNAL) or (
                        num == _TENSOR_EXTERNAL_DATA and wire == 2):
                    info.external_tensors += 1
                    break
            elif wire == 2 and num in children:
                stack.append((children[num], *value))
    return info


def inspect_bytes(data: bytes, source: str) -> OnnxInfo:
    """:func:`read_onnx_info` with the project's errors: not protobuf, no graph or external data."""
    if not data:
        raise ArtifactError(f"{source} is empty (0 bytes); re-export it with `mnist-edge export`")
    try:
        info = read_onnx_info(data)
    except ProtoError as e:
        raise ArtifactError(f"{source} is not an ONNX model ({e}); it may be truncated or corrupt") from None
    if not info.ir_version or not info.has_graph:
        raise ArtifactError(f"{source} is not an ONNX model (no IR version or no graph); it may be corrupt")
    if info.external_tensors:
        raise ArtifactError(
            f"{source} keeps {info.external_tensors} tensor(s) in external data files; refused: external data "
            "paths have been a path-traversal risk and our models are small enough to be one self-contained file "
            "(re-export with external data off)")
    return info
