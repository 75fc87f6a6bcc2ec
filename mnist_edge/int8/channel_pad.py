"""Channel padding: an exact float-graph rewrite that lets onnxruntime run an int8 conv on its fast kernel.

onnxruntime's QLinearConv on x64 takes MLAS's symmetric int8 convolution (an indirect-buffer kernel, no
im2col copy) only when the weights are symmetric int8 (what our recipes write), the input channels come in
fours and the output channels number at least 16, in fours (``MlasConvSymPackWSize`` in MLAS's
``convsym.cpp``; ARM64 builds use it only from 64 input channels). Otherwise it falls back to im2col and a
general int8 GEMM. cnn_small's second conv has 10 input channels, lenet5's 6.

``pad_channels`` (Conv selectors such as ``"Conv[1]"``) gives such a conv zero weights for extra input
channels, up to the next multiple of four, and gives the conv feeding it as many extra output channels,
with zero weights and zero bias. Exact: the extra channels are zero everywhere, and every op between the
two convs maps zero to zero (Relu, Tanh, MaxPool, AveragePool), so they add nothing to any output. The
price is a fifth (10 to 12 channels) to a third (6 to 8) more multiply-adds in the two convs.

Measured on cnn_small (AMD EPYC with AVX-512 VNNI, onnxruntime 1.31.1, one thread, quiet; paired with
``scripts/experiments/compare_latency.py``, 48 repeats): the recipe shipped before, with its second conv padded from 10 to
12 input channels, took 0.74x [0.73, 0.75] of fp32's p50 at batch 1 against 0.78x [0.78, 0.78] unpadded, and
0.60x against 0.64x at batch 64; onnxruntime's profiler put that QLinearConv at 12 us a call instead of about
25. The search (stage 4) times it on the machine it runs on and keeps it only where it wins: it did for
cnn_small and lenet5, not for lenet5_mod (whose QOperator recipe already ran faster).

A larger multiple (``multiple`` 8 or 16) serves the conv feeding the padded one when that conv stays in float.
onnxruntime runs a float conv in its blocked NCHWc layout (blocks of 16 channels with AVX-512, 8 with AVX2), and
keeps the MaxPool after it in that layout only when the channels fill whole blocks. cnn_small's first conv, left
in float, has 10 output channels. Padded to 12 (multiple 4), onnxruntime reorders the conv's whole output back to
NCHW and runs the pool there. Padded to 16, it runs an NCHWc pool and reorders only the pooled tensor, a quarter
the size. Measured like the above, with the NHWC flatten (:mod:`mnist_edge.int8.rewrites`) on top: 0.72x
[0.72, 0.72] and [0.72, 0.73] of fp32's p50 at batch 1 in two runs, against 0.75x and 0.76x for the multiple-4
file in the same runs; 0.59x against 0.60x at batch 64. The int8 conv then does a third more multiply-adds
(16 input channels against 12), which the search weighs by timing both.

Node names and order are unchanged, so recipe selectors mean the same nodes before and after. Needs
``onnx`` and numpy; never torch.
"""

from __future__ import annotations

import numpy as np

from mnist_edge.int8.onnx_graph import consumers, initializer, producers, require_valid, selector_index

MULTIPLE = 4  # MLAS's x64 symmetric conv kernels: input (and output) channels in fours
MULTIPLES = (4, 8, 16)  # ... and onnxruntime's NCHWc blocks for the float conv feeding it (8: AVX2, 16: AVX-512)
MIN_OUTPUT_CHANNELS = 16  # ... and at least one 16-channel filter pack
ZERO_PRESERVING = ("Relu", "Tanh", "MaxPool", "AveragePool")  # f(0) = 0, channel by channel


def _group(node) -> int:
    return next((a.i for a in node.attribute if a.name == "group"), 1)


def _weight(model, node):
    """The Conv's constant 4-D weight tensor (used by this node only), or None."""
    if len(node.input) < 2:
        return None
    tensor = initializer(model, node.input[1])
    if tensor is None or len(tensor.dims) != 4:
        return None
    return tensor if len(consumers(model.graph.node, node.input[1])) == 1 else None


def _feeding_conv(model, nodes, tensor: str) -> tuple[int, list[str]] | None:
    """(index of the Conv whose output reaches ``tensor`` through zero-preserving single-use ops only, the
    tensors on the way including its output) or None."""
    producer = producers(nodes)
    outputs = {o.name for o in model.graph.output}
    path = []
    while True:
        if tensor in outputs or len(consumers(nodes, tensor)) != 1 or tensor not in producer:
            return None
        path.append(tensor)
        node = nodes[producer[tensor]]
        if node.op_type == "Conv":
            bias_ok = len(node.input) < 3 or not node.input[2] or len(consumers(nodes, node.input[2])) == 1
            ok = _group(node) == 1 and len(node.output) == 1 and _weight(model, node) is not None and bias_ok
            return (producer[tensor], path) if ok else None
        if node.op_type not in ZERO_PRESERVING or len(node.output) != 1:
            return None
        tensor = node.input[0]


def paddable_convs(model, multiple: int = MULTIPLE) -> list[str]:
    """Selectors of every Conv that ``pad_channels`` can rewrite: not grouped, input channels not a multiple
    of ``multiple``, output channels that already suit the kernel, and fed by a Conv through zero-preserving
    ops."""
    nodes = list(model.graph.node)
    out = []
    for sel, i in selector_index(nodes).items():
        node = nodes[i]
        if node.op_type != "Conv" or _group(node) != 1:
            continue
        weight = _weight(model, node)
        if weight is None:
            continue
        c_out, c_in = weight.dims[0], weight.dims[1]
        if c_in % multiple == 0 or c_out < MIN_OUTPUT_CHANNELS or c_out % MULTIPLE:
            continue
        if _feeding_conv(model, nodes, node.input[0]) is not None:
            out.append(sel)
    return out


def _pad(model, name: str, axis: int, extra: int) -> None:
    from onnx import numpy_helper

    tensor = initializer(model, name)
    array = numpy_helper.to_array(tensor)
    shape = list(array.shape)
    shape[axis] = extra
    padded = np.concatenate([array, np.zeros(shape, array.dtype)], axis=axis)
    tensor.CopyFrom(numpy_helper.from_array(padded, name))


def feeding_conv(model, selector: str) -> str:
    """The selector of the Conv whose output channels padding the Conv ``selector`` adds to."""
    nodes = list(model.graph.node)
    index = selector_index(nodes)
    j, _ = _feeding_conv(model, nodes, nodes[index[selector]].input[0])
    return next(s for s, i in index.items() if i == j)


def padded_widths(model, selectors, multiple: int = MULTIPLE) -> tuple:
    """The input channels each Conv in ``selectors`` has after padding to a multiple of ``multiple``."""
    nodes = list(model.graph.node)
    index = selector_index(nodes)
    return tuple(-(-initializer(model, nodes[index[s]].input[1]).dims[1] // multiple) * multiple for s in selectors)


def pad_channels(model, selectors, multiple: int = MULTIPLE) -> None:
    """Pad the input channels of the Convs named by ``selectors`` to a multiple of ``multiple`` (in place)."""
    require_valid("pad_channels", selectors, paddable_convs(model, multiple),
                  "a Conv whose input channels can be padded")
    nodes = list(model.graph.node)
    index = selector_index(nodes)
    stale = set()
    for sel in selectors:
        conv = nodes[index[sel]]
        c_in = initializer(model, conv.input[1]).dims[1]
        extra = -c_in % multiple
        j, path = _feeding_conv(model, nodes, conv.input[0])
        source = nodes[j]
        padded = [(source.input[1], 0), (conv.input[1], 1)]
        if len(source.input) > 2 and source.input[2]:
            padded.append((source.input[2], 0))
        for name, axis in padded:
            _pad(model, name, axis, extra)
        stale.update(path + [name for name, _ in padded])
    # the padded tensors' recorded shapes (the exporter's value_info, weights included) no longer hold
    for v in [v for v in model.graph.value_info if v.name in stale]:
        model.graph.value_info.remove(v)
