"""A float ONNX classifier made elsewhere, wrapped into the contract without torch: raw uint8 pixels in,
the preprocessing in the graph, ``logits`` and ``probabilities`` out.

The user's file must have one input [batch, channels, S, S] (float) and its first output must be the logits
[batch, classes]; external data is loaded from beside it (our file is one self-contained file). The wrapped
graph is the user's graph untouched, with nodes before it (Cast, /255, Pad to S, -mean, /std) and after it
(softmax of logits / T); it is gated against the user's file run by onnxruntime on the same preprocessing.
"""

from __future__ import annotations

from pathlib import Path

from mnist_edge.contract import INPUT_NAME, OUTPUT_NAMES
from mnist_edge.errors import ContractError, UsageError, first_line

MAX_ONNX_BYTES = 1 << 30
PREFIX = "mnist_edge_"  # our tensors' names: never the same as the user's


def read_user_onnx(path: str | Path):
    """The user's ModelProto, external data loaded from beside it, checked: one float input of rank 4 with
    a dynamic (or absent) batch, a first output of rank 2."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--onnx: no such file '{path}'")
    if path.stat().st_size > MAX_ONNX_BYTES:
        raise UsageError(f"--onnx '{path}' is over {MAX_ONNX_BYTES:,} bytes")
    try:
        model = onnx.load(str(path))  # external data: from the file's own folder, as onnx resolves it
        onnx.checker.check_model(model)
    except Exception as e:
        raise UsageError(f"--onnx '{path}' is not a valid ONNX model: {type(e).__name__}: {first_line(e, 200)}") from None
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if len(inputs) != 1:
        raise ContractError(f"'{path}' has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); a classifier "
                            "of one image batch has exactly one")
    dims = inputs[0].type.tensor_type.shape.dim
    if not inputs[0].type.tensor_type.HasField("shape") or len(dims) != 4:
        raise ContractError(f"'{path}': input {inputs[0].name!r} must have rank 4 [batch, channels, H, W], found "
                            f"{'a dynamic rank' if not inputs[0].type.tensor_type.HasField('shape') else len(dims)}")
    if dims[0].HasField("dim_value") and dims[0].dim_value != 0:
        raise ContractError(f"'{path}': the batch dimension is fixed at {dims[0].dim_value}; export it with a dynamic "
                            "batch (torch.onnx.export(..., dynamic_axes={'input': {0: 'batch'}}))")
    if inputs[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise ContractError(f"'{path}': input {inputs[0].name!r} must be float32")
    out = model.graph.output[0]
    if len(out.type.tensor_type.shape.dim) != 2:
        raise ContractError(f"'{path}': its first output {out.name!r} must be logits [batch, classes]")
    return model, inputs[0].name


def check_shapes(model, input_name: str, contract, path) -> None:
    """The input's channels and size and the output's class count against ``contract``."""
    dims = next(i for i in model.graph.input if i.name == input_name).type.tensor_type.shape.dim
    want = (contract.channels, contract.input_size, contract.input_size)
    got = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims[1:])
    if any(g is not None and g != w for g, w in zip(got, want)):
        raise ContractError(f"'{path}': input [batch, {', '.join(map(str, got))}] but the contract gives [batch, "
                            f"{', '.join(map(str, want))}]; set --input-size and --channels to what it takes")
    k = model.graph.output[0].type.tensor_type.shape.dim[1]
    if k.HasField("dim_value") and k.dim_value != contract.num_classes:
        raise ContractError(f"'{path}' outputs {k.dim_value} classes but the labels name {contract.num_classes}; give "
                            "--labels with one name per output")


def wrap(model, input_name: str, contract, temperature: float = 1.0):
    """The contract's graph around the user's: a new ModelProto (the user's nodes and weights untouched)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model, given = onnx.ModelProto(), model
    model.CopyFrom(given)  # the caller's graph stays as it was
    g = model.graph
    input_name, user_out = _rename_clashes(model, input_name, g.output[0].name)
    nodes, inits = [], []

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value, np.float32), PREFIX + name))
        return PREFIX + name

    nodes.append(helper.make_node("Cast", [INPUT_NAME], [PREFIX + "x"], to=TensorProto.FLOAT))
    nodes.append(helper.make_node("Div", [PREFIX + "x", const("255", 255.0)], [PREFIX + "x01"]))
    x = PREFIX + "x01"
    if contract.pad:
        p = contract.pad
        inits.append(numpy_helper.from_array(np.array([0, 0, p, p, 0, 0, p, p], np.int64), PREFIX + "pads"))
        nodes.append(helper.make_node("Pad", [x, PREFIX + "pads"], [PREFIX + "x01p"]))
        x = PREFIX + "x01p"
    if contract.channels != 1:  # the grey digit in each of the network's channels
        nodes.append(helper.make_node("Concat", [x] * contract.channels, [PREFIX + "xch"], axis=1))
        x = PREFIX + "xch"
    nodes.append(helper.make_node("Sub", [x, const("mean", contract.mean)], [PREFIX + "xc"]))
    nodes.append(helper.make_node("Div", [PREFIX + "xc", const("std", contract.std)], [input_name]))
    nodes += list(g.node)
    nodes.append(helper.make_node("Identity", [user_out], [OUTPUT_NAMES[0]]))
    scaled = OUTPUT_NAMES[0]
    if temperature != 1.0:
        nodes.append(helper.make_node("Div", [scaled, const("temperature", temperature)], [PREFIX + "scaled"]))
        scaled = PREFIX + "scaled"
    nodes.append(helper.make_node("Softmax", [scaled], [OUTPUT_NAMES[1]], axis=1))
    image = helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["batch", 1, 28, 28])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", contract.num_classes]) for n in OUTPUT_NAMES]
    graph = helper.make_graph(nodes, "mnist_edge", [image], outs, initializer=list(g.initializer) + inits)
    wrapped = helper.make_model(graph, opset_imports=list(model.opset_import))
    wrapped.ir_version = model.ir_version
    for f in model.functions:
        wrapped.functions.append(f)
    return wrapped


def _rename_clashes(model, input_name: str, user_out: str) -> tuple[str, str]:
    """A user's tensor called ``image``, ``logits`` or ``probabilities`` would clash with ours: renamed in
    the user's graph (in place). Returns the (input, output) names after renaming."""
    g = model.graph
    clash = {n: PREFIX + "user_" + n for n in {input_name, user_out} if n in (INPUT_NAME, *OUTPUT_NAMES)}
    for node in g.node:
        node.input[:] = [clash.get(n, n) for n in node.input]
        node.output[:] = [clash.get(n, n) for n in node.output]
    for vi in (*g.input, *g.output, *g.value_info):
        vi.name = clash.get(vi.name, vi.name)
    return clash.get(input_name, input_name), clash.get(user_out, user_out)


def from_onnx(path: str | Path, *, name: str, contract):
    """A :class:`~mnist_edge.exporter.source.ModelSource` for the user's float ONNX file, checked against
    ``contract`` (input channels and size, class count) before any work."""
    from mnist_edge import artifacts as A
    from mnist_edge.exporter.source import ModelSource

    if not A.SAFE_NAME.fullmatch(str(name)):
        raise UsageError(f"name {name!r} must be a plain name of letters, digits, '.', '_' or '-' (e.g. mynet)")
    model, input_name = read_user_onnx(path)
    check_shapes(model, input_name, contract, path)
    return ModelSource(name=name, net=None, contract=contract, description=f"{name} (ONNX file of your own)",
                       onnx=Path(path), onnx_model=model, onnx_input=input_name)
