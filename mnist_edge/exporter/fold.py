"""Fold the graph's input scaling into its first layer: Cast -> Div 255 -> Sub mean -> Div std -> Conv/Gemm
becomes Cast -> Conv/Gemm with rescaled weights and bias (onnxruntime then runs three fewer element-wise
nodes per call; measured in docs/litert.md with scripts/experiments/ort_levers.py).

Exact only where the first layer adds no zero padding: a zero pad in the normalized space is the raw value
``mean * 255`` in the raw one, which a folded Conv would pad as raw 0. Such graphs, and any graph whose start
is not that chain of scalar constants, are left as they are. The gates then check the folded file like any
other (the fold moves logits by float rounding only, ~1e-6).
"""

from __future__ import annotations

import numpy as np


def _constant(model, name: str):
    from onnx import numpy_helper

    for t in model.graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output[0] == name and n.attribute:
            return numpy_helper.to_array(n.attribute[0].t)
    return None


def _chain(model, input_name: str):
    """(Cast, Div, Sub, Div, first layer) at the graph's start, or None."""
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def only(name, ops):
        nxt = consumers.get(name, [])
        return nxt[0] if len(nxt) == 1 and nxt[0].op_type in ops else None

    chain = [only(input_name, ("Cast",))]
    for op in ("Div", "Sub", "Div"):
        chain.append(chain[-1] and only(chain[-1].output[0], (op,)))
    layer = chain[-1] and only(chain[-1].output[0], ("Conv", "Gemm", "Flatten", "Reshape"))
    if layer is not None and layer.op_type in ("Flatten", "Reshape"):  # an MLP flattens first
        layer = only(layer.output[0], ("Gemm",))
    return None if layer is None or None in chain else (*chain, layer)


def fold_input_scaling(model, input_name: str = "image") -> str:
    """Fold in place where exact; returns what was done (for the manifest), "folded into <op>" or why not."""
    from onnx import numpy_helper

    found = _chain(model, input_name)
    if found is None:
        return "not folded: the graph does not start with Cast, Div, Sub, Div and a Conv or Gemm"
    cast, div255, sub, div, layer = found
    if any(a.name == "pads" and any(a.ints) for a in layer.attribute) or \
            any(a.name == "auto_pad" and a.s not in (b"", b"NOTSET", b"VALID") for a in layer.attribute):
        return f"not folded: the first {layer.op_type} pads its input"
    scale, mean, std = (_constant(model, n.input[1]) for n in (div255, sub, div))
    weight = _constant(model, layer.input[1])
    bias = _constant(model, layer.input[2]) if len(layer.input) > 2 and layer.input[2] else None
    if any(v is None or np.size(v) != 1 for v in (scale, mean, std)) or weight is None or bias is None:
        return "not folded: the scaling or the first layer's weights are not constants"
    a, b = 1.0 / (float(scale) * float(std)), -float(mean) / float(std)  # normalized = a * raw + b
    trans_b = any(x.name == "transB" and x.i for x in layer.attribute)
    over_inputs = tuple(range(1, weight.ndim)) if layer.op_type == "Conv" or trans_b else (0,)
    replace = {layer.input[1]: (weight * a).astype(np.float32),
               layer.input[2]: (bias + b * weight.sum(axis=over_inputs)).astype(np.float32)}
    for t in model.graph.initializer:
        if t.name in replace:
            t.CopyFrom(numpy_helper.from_array(replace.pop(t.name), t.name))
    if replace:  # weights held by Constant nodes: leave the graph as it was
        return "not folded: the first layer's weights are not initializers"
    for n in model.graph.node:  # the layer (or the Flatten before it) now reads the Cast's output
        for i, name in enumerate(n.input):
            if name == div.output[0]:
                n.input[i] = cast.output[0]
    for n in (div255, sub, div):
        model.graph.node.remove(n)
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    for t in [t for t in model.graph.initializer if t.name not in used]:  # the scaling's constants
        model.graph.initializer.remove(t)
    for n in [n for n in model.graph.node if n.op_type == "Constant" and n.output[0] not in used]:
        model.graph.node.remove(n)
    return f"folded into the first {layer.op_type}"
