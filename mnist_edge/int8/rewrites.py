"""Exact float-graph rewrites before quantization that let more of the graph stay in int8 after onnxruntime's optimizer.

Measured on cnn_small (AMD EPYC, onnxruntime 1.31.1, batch 1, one thread): with the first conv in float, the
optimized int8 graph still ran ``QLinearConv -> Transpose -> DQ -> MaxPool (float) -> Q -> Reshape -> QGemm``:
the model computes ``Relu(MaxPool(Conv))``, the quantizer folds the Relu into the Q after the MaxPool with a
range of its own, so the MaxPool sits between two different scales and onnxruntime cannot drop its DQ/Q pair.
At batch 1 every node costs a fixed ~1-3 us, so those round trips ate most of what int8 saved.

- ``relu_before_pool`` (MaxPool selectors such as ``"MaxPool[1]"``): rewrite ``MaxPool -> Relu`` into
  ``Relu -> MaxPool``. Exact: relu is monotone, so the max of the relus is the relu of the max (pads of a
  MaxPool never win a max). The Relu then folds into the conv's output Q, the MaxPool keeps its input's scale,
  and onnxruntime runs it as an int8 ``NhwcMaxPool`` next to the ``QLinearConv``. Worth it only where the
  MaxPool's input comes from a quantized node: onnxruntime's uint8 MaxPool in NCHW layout (what a pool after a
  float conv becomes) was slower than the float one it replaces, which is why this is a list, not a switch.
- ``pool_before_activation`` (MaxPool selectors): the opposite, ``Relu -> MaxPool`` (or Tanh, also
  non-decreasing) into ``MaxPool -> Relu``, for a pool after a conv left in float. onnxruntime's optimizer
  moves a QuantizeLinear up through a MaxPool, so ``float conv -> Relu -> MaxPool -> Q`` ran as a uint8
  MaxPool in NCHW layout (2.1 ms at batch 64 on cnn_dropout, against 0.1 ms for the float one); with the
  pool first it stays a float NCHWc MaxPool next to the float conv and the Relu folds into the Q. On
  cnn_dropout that took int8 with its first conv in float from 1.15x / 1.59x of fp32 (batch 1 / 64) to
  0.88x / 0.57x.
- ``nhwc_flatten``: a flatten (``Reshape``/``Flatten`` of an [N, C, H, W] tensor) feeding a ``Gemm``/``MatMul``
  with constant weights becomes ``Transpose(0, 2, 3, 1) -> flatten`` with the weight's input columns permuted
  to match. Exact up to float summation order. onnxruntime runs QLinearConv in NHWC and transposes back to
  NCHW before the flatten; with this rewrite the two transposes cancel and the int8 tensor goes straight from
  the last pool into the QGemm.

Tried on cnn_small and not adopted (paired against fp32, one thread): the input's ``Cast -> Div(255)`` as one
``DequantizeLinear`` (both files 1-2% faster, the int8/fp32 ratio unchanged at 0.77x); folding ``Div(255)``
into the first conv's weights (0.82x against 0.78x); the first pool quantized after its float conv
(0.96-1.49x); per-tensor weights or uint8 activations with the layout rewrites (0.99-1.04x of the shipped
recipe's time); every conv in int8 with both pools rewritten, the cleanest graph (``Q -> QLinearConv ->
NhwcMaxPool -> QLinearConv -> NhwcMaxPool -> QGemm``, 13 nodes): 1.25x of fp32, since a QLinearConv over one
input channel is slow; the first conv in float with the last Gemm quantized, with or without Softmax left
out of the quantized op types: 0.83-0.90x against the shipped 0.78x in the same runs; the last Gemm with int8
weights and an int32 bias but no output Q, which onnxruntime fuses into one QGemm writing float logits (one
node fewer than ``DQ -> Gemm``): 1.00x [0.99, 1.00] of the shipped recipe's time at batch 1. Running the int8
file without onnxruntime's layout optimizations (``ORT_ENABLE_EXTENDED``) made it 1.21x slower. A newer
onnxruntime does not close the gap: the shipped files under 1.32.0 gave 0.79x [0.79, 0.79] at batch 1, against
0.76x [0.76, 0.76] under 1.31.1 in the same minutes (``scripts/experiments/compare_latency.py``; 0.63x at batch 64 in both).
Tried on 2026-11-22 against the shipped recipe (relu-before-pool, padded channels), paired, 32-48 repeats: the NHWC
flatten on top of it (one Transpose fewer) 0.99-1.00x at batch 1 in three runs; that with the first Gemm also in
float 0.98x at batch 1 but 1.03x at batch 64; a Transpose pair written into the float graph before the second
conv, so that onnxruntime might fold its NHWC transpose into the first conv's reorder: the optimizer moved it back
after the QuantizeLinear and produced the same 15-node graph. What did pay was padding the second conv's input
channels to 16 rather than 12, so the float first conv and its pool stay in onnxruntime's NCHWc layout, with the
NHWC flatten on top: 0.72x of fp32 (:mod:`mnist_edge.int8.channel_pad`).

One more, the input channels of a conv padded for onnxruntime's fast int8 conv kernel, is in
:mod:`mnist_edge.int8.channel_pad`; :func:`apply_rewrites` applies them all.

The rewrites keep every node name, so a recipe's ``keep_float`` selectors mean the same nodes before and after.
Needs ``onnx`` (and numpy); never torch.
"""

from __future__ import annotations

import numpy as np

from mnist_edge.int8.channel_pad import pad_channels
from mnist_edge.int8.onnx_graph import consumers, initializer, producers, require_valid, selector_index

FLATTEN_OPS = ("Reshape", "Flatten")
MONOTONE = ("Relu", "Tanh")  # non-decreasing, so a max-pool commutes with them
DENSE_OPS = ("Gemm", "MatMul")


def swappable_pools(model) -> list[str]:
    """Selectors of every MaxPool whose only consumer is a Relu (what ``relu_before_pool`` can rewrite)."""
    nodes = list(model.graph.node)
    outputs = {o.name for o in model.graph.output}
    out = []
    for sel, i in selector_index(nodes).items():
        node = nodes[i]
        if node.op_type != "MaxPool" or len(node.output) != 1 or node.output[0] in outputs:
            continue
        users = consumers(nodes, node.output[0])
        if len(users) == 1 and nodes[users[0]].op_type == "Relu":
            out.append(sel)
    return out


def relu_before_pool(model, selectors) -> None:
    """Rewrite ``MaxPool -> Relu`` into ``Relu -> MaxPool`` for the MaxPools named by ``selectors`` (in place)."""
    require_valid("relu_before_pool", selectors, swappable_pools(model), "a MaxPool followed only by a Relu")
    nodes = list(model.graph.node)
    index = selector_index(nodes)
    for sel in selectors:
        i = index[sel]
        _swap(model, nodes, i, consumers(nodes, nodes[i].output[0])[0])


def pools_after_activation(model) -> list[str]:
    """Selectors of every MaxPool fed by a Relu or Tanh that feeds nothing else (what
    ``pool_before_activation`` can rewrite)."""
    nodes = list(model.graph.node)
    producer = producers(nodes)
    outputs = {o.name for o in model.graph.output}
    out = []
    for sel, i in selector_index(nodes).items():
        node = nodes[i]
        if node.op_type != "MaxPool" or len(node.output) != 1 or node.input[0] not in producer:
            continue
        act = nodes[producer[node.input[0]]]
        if act.op_type in MONOTONE and act.output[0] not in outputs and len(consumers(nodes, act.output[0])) == 1:
            out.append(sel)
    return out


def pool_before_activation(model, selectors) -> None:
    """Rewrite ``Relu -> MaxPool`` (or Tanh) into ``MaxPool -> Relu`` for the MaxPools named by ``selectors``
    (in place). Exact for the same reason as :func:`relu_before_pool`."""
    require_valid("pool_before_activation", selectors, pools_after_activation(model),
                  "a MaxPool fed only by a Relu or Tanh")
    nodes = list(model.graph.node)
    index = selector_index(nodes)
    producer = producers(nodes)
    for sel in selectors:
        j = index[sel]
        _swap(model, nodes, producer[nodes[j].input[0]], j)


def _swap(model, nodes, i: int, j: int) -> None:
    """Nodes i -> j (j the only consumer of i's output) become j -> i, each keeping its name."""
    first, second = nodes[i], nodes[j]
    source, middle, result = first.input[0], first.output[0], second.output[0]
    second.input[0], second.output[0] = source, middle
    first.input[0], first.output[0] = middle, result
    # ``middle`` changed shape (pooled <-> full size): drop its recorded shape (the exporter's value_info),
    # which onnx.checker's full check would otherwise find contradicted
    for v in [v for v in model.graph.value_info if v.name == middle]:
        model.graph.value_info.remove(v)
    # the second node now runs first; swapping the two protos keeps the graph topologically sorted
    a, b = nodes[i].SerializeToString(), nodes[j].SerializeToString()
    nodes[i].ParseFromString(b)
    nodes[j].ParseFromString(a)


def _flatten_sites(model) -> list[tuple[int, int, list[int]]]:
    """(flatten node index, dense node index, [C, H, W]) for every NCHW flatten feeding a constant-weight dense op."""
    from onnx import shape_inference

    inferred = shape_inference.infer_shapes(model)
    shapes = {}
    for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = v.type.tensor_type.shape.dim
        shapes[v.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    nodes = list(model.graph.node)
    sites = []
    for i, node in enumerate(nodes):
        if node.op_type not in FLATTEN_OPS:
            continue
        src, dst = shapes.get(node.input[0]), shapes.get(node.output[0])
        if not src or len(src) != 4 or None in src[1:] or not dst or len(dst) != 2 or dst[1] != int(np.prod(src[1:])):
            continue
        if src[1] == 1 or src[2] * src[3] == 1:  # one channel or one pixel: NHWC order is NCHW order already
            continue
        if node.op_type == "Flatten" and any(a.name == "axis" and a.i != 1 for a in node.attribute):
            continue
        users = consumers(nodes, node.output[0])
        if len(users) != 1 or nodes[users[0]].op_type not in DENSE_OPS:
            continue
        dense = nodes[users[0]]
        if len(dense.input) < 2 or dense.input[0] != node.output[0] or initializer(model, dense.input[1]) is None:
            continue
        if dense.op_type == "Gemm" and any(a.name == "transA" and a.i for a in dense.attribute):
            continue
        sites.append((i, users[0], src[1:]))
    return sites


def nhwc_flatten(model) -> int:
    """Flatten in NHWC order before each constant-weight Gemm/MatMul (weights permuted to match); in place.
    Returns how many flattens were rewritten."""
    from onnx import helper, numpy_helper

    sites = _flatten_sites(model)
    graph = model.graph
    for i, d, (c, h, w) in reversed(sites):  # from the end, so earlier indices stay valid after each insert
        flat, dense = graph.node[i], graph.node[d]
        trans_b = dense.op_type == "Gemm" and any(a.name == "transB" and a.i for a in dense.attribute)
        tensor = initializer(model, dense.input[1])
        weight = numpy_helper.to_array(tensor)
        rows = weight if trans_b else weight.T  # [out, C*H*W], each row ordered (c, h, w)
        rows = rows.reshape(len(rows), c, h, w).transpose(0, 2, 3, 1).reshape(len(rows), c * h * w)
        tensor.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(rows if trans_b else rows.T), tensor.name))
        nhwc = flat.input[0] + "_nhwc"
        graph.node.insert(i, helper.make_node("Transpose", [flat.input[0]], [nhwc], name=flat.name + "_nhwc",
                                              perm=[0, 2, 3, 1]))
        flat.input[0] = nhwc
    return len(sites)


def flatten_sites(model) -> int:
    """How many flattens ``nhwc_flatten`` would rewrite in ``model``."""
    return len(_flatten_sites(model))


def apply_rewrites(model, *, relu_pools=(), flatten: bool = False, pad=(), pad_multiple: int = 4,
                   pools_first=()) -> None:
    """Apply the rewrites a recipe names to ``model`` (an onnx ModelProto, in place); ``pad``: Conv selectors
    for :func:`mnist_edge.int8.channel_pad.pad_channels` (to a multiple of ``pad_multiple``); ``pools_first``:
    MaxPool selectors for :func:`pool_before_activation`."""
    if pad:
        pad_channels(model, pad, pad_multiple)
    if pools_first:
        pool_before_activation(model, pools_first)
    if relu_pools:
        relu_before_pool(model, relu_pools)
    if flatten:
        nhwc_flatten(model)
