"""Tiny hand-built ONNX models that follow our contract (for bad-input tests and the fuzzer; needs onnx)."""

from __future__ import annotations

import json

import numpy as np

from mnist_edge import contract as C


def contract_model(*, broken_reshape: bool = False, ir_version: int = 8, opset: int = 17, sparse_external=False):
    """uint8 image [batch,1,28,28] -> Cast -> Flatten -> Gemm(784x10) -> logits, Softmax -> probabilities.

    ``broken_reshape``: a Reshape to [-1, 10] that loads (the batch is symbolic) but fails at run (784 does
    not divide by 10), like an int8 file with one changed byte. ``sparse_external``: a sparse initializer
    whose values point at an external file (``verify`` must refuse it, as ``predict`` does).
    Returns the ModelProto.
    """
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.01, (784, 10)).astype(np.float32), "w"),
             numpy_helper.from_array(np.zeros(10, np.float32), "b")]
    nodes = [helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Flatten", ["f"], ["flat"], axis=1)]
    if broken_reshape:
        inits.append(numpy_helper.from_array(np.array([-1, 10], np.int64), "shape"))
        nodes += [helper.make_node("Reshape", ["f", "shape"], ["logits"])]
    else:
        nodes += [helper.make_node("Gemm", ["flat", "w", "b"], ["logits"])]
    nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1))
    sparse = []
    if sparse_external:
        values = numpy_helper.from_array(np.zeros(1, np.float32), "sp")
        values.ClearField("raw_data")
        values.data_location = TensorProto.EXTERNAL
        entry = values.external_data.add()
        entry.key, entry.value = "location", "../../../../etc/passwd"
        indices = numpy_helper.from_array(np.array([0], np.int64), "sp_idx")
        sparse.append(helper.make_sparse_tensor(values, indices, [4]))
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("image", TensorProto.UINT8, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 10]) for n in C.OUTPUT_NAMES], inits,
        sparse_initializer=sparse)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version)
    meta = {"contract": C.CONTRACT_VERSION, "model": "mlp", "labels": json.dumps(list(C.LABELS)),
            "input": json.dumps({"name": C.INPUT_NAME, "dtype": C.INPUT_DTYPE, "shape": ["batch", 1, 28, 28]}),
            "outputs": json.dumps(list(C.OUTPUT_NAMES)), "normalization": json.dumps({"mean": 0.0, "std": 1.0}),
            "precision": "fp32"}
    helper.set_model_props(model, {C.META_KEYS[k]: v for k, v in meta.items()})
    return model


def contract_model_bytes(**kw) -> bytes:
    return contract_model(**kw).SerializeToString()
