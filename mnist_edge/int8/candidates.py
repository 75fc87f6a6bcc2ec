"""The int8 search's candidate recipes: what each stage of :mod:`mnist_edge.int8.search` tries next from
the recipe it has so far (one change at a time for speed, the exact layout rewrites that apply to the graph,
the channel padding, the calibration methods) and how two recipes' changes combine. Needs onnx; never torch
or onnxruntime.
"""

from __future__ import annotations

from mnist_edge.int8.quantize import SELECTOR_FIELDS, QuantizeOptions, node_selectors

COMPUTE_OPS = ("Conv", "Gemm", "MatMul")
# what lies between a conv and the next layer; the Transpose is the one nhwc_flatten inserts before the flatten
POOL_PATH_OPS = ("MaxPool", "Relu", "Transpose", "Reshape", "Flatten")


def _by_selector(model) -> tuple[dict, dict]:
    """({"MaxPool[1]": its NodeProto, ...}, {tensor: selector of the node making it})."""
    node_of = dict(zip(node_selectors(model), model.graph.node))
    return node_of, {o: sel for sel, n in node_of.items() for o in n.output}


def float_side_pools(model, keep_float) -> tuple:
    """Selectors of the MaxPools fed by a Relu/Tanh that a conv in ``keep_float`` feeds: moved before their
    activation (rewrites.pool_before_activation) they stay float pools beside the float conv, where
    onnxruntime would otherwise run them as slow uint8 NCHW pools after the next layer's QuantizeLinear."""
    from mnist_edge.int8.rewrites import pools_after_activation

    node_of, producer = _by_selector(model)
    out = []
    for sel in pools_after_activation(model):
        act = producer[node_of[sel].input[0]]
        conv = producer.get(node_of[act].input[0], "")
        if conv in keep_float and conv.split("[")[0] in COMPUTE_OPS:
            out.append(sel)
    return tuple(out)


def speed_variants(base: QuantizeOptions, fp32_path) -> list[tuple[str, QuantizeOptions]]:
    """Stage 2: one change at a time (first/last compute layer found in the graph itself; a pool after a conv
    left in float is moved before its activation, :func:`float_side_pools`)."""
    import onnx

    model = onnx.load(str(fp32_path))
    compute = [s for s in node_selectors(model) if s.split("[")[0] in COMPUTE_OPS]
    out = [("preprocess", base.with_(preprocess=True)),
           ("u8s8", base.with_(activation_type="uint8")),
           ("qoperator-u8s8", base.with_(quant_format="qoperator", activation_type="uint8")),
           ("per-tensor", base.with_(per_channel=False)),
           ("reduce-range", base.with_(reduce_range=True)),
           ("conv-gemm-only", base.with_(op_types=COMPUTE_OPS))]
    if compute:
        def kept(keep):
            pools = tuple(p for p in float_side_pools(model, keep) if p not in base.relu_before_pool)
            return base.with_(keep_float=keep, pool_before_activation=tuple(dict.fromkeys(
                base.pool_before_activation + pools)))

        first = tuple(dict.fromkeys(base.keep_float + (compute[0],)))
        out.append(("first-float", kept(first)))
        if len(compute) > 1:
            out.append(("first-last-float", kept(tuple(dict.fromkeys(first + (compute[-1],))))))
    return [(n, o) for n, o in out if o != base]


def calibration_variants(base: QuantizeOptions) -> list[tuple[str, QuantizeOptions]]:
    out = [("entropy", base.with_(calibration_method="entropy")),
           ("percentile-99.99", base.with_(calibration_method="percentile", percentile=99.99)),
           ("percentile-99.999", base.with_(calibration_method="percentile", percentile=99.999)),
           ("distribution", base.with_(calibration_method="distribution"))]
    return [(n, o) for n, o in out if o != base]


def layout_variants(base: QuantizeOptions, fp32_path) -> list[tuple[str, QuantizeOptions]]:
    """Stage 4: the exact rewrites that apply to ``base``'s graph (none for a graph without MaxPool -> Relu or
    an NCHW flatten). A MaxPool is rewritten only when the node feeding it is quantized: after a float node
    onnxruntime runs the pool as a uint8 NCHW MaxPool, which measured slower than the float one.

    When ``base`` quantizes only some op types and MaxPool is not among them (e.g. "conv-gemm-only"), the
    rewrite brings the pools it applies to back into int8 (with the Relu and the flatten between them and the
    next layer) and keeps every other MaxPool in float. On cnn_small (AMD EPYC, batch 1) that took int8 from
    0.81-0.87x of fp32 to 0.77x in the same runs: QLinearConv -> int8 pool -> QGemm, no float round trip."""
    import onnx

    from mnist_edge.int8.rewrites import flatten_sites, swappable_pools

    model = onnx.load(str(fp32_path))
    node_of, producer = _by_selector(model)
    widen = bool(base.op_types) and "MaxPool" not in base.op_types
    op_types = tuple(dict.fromkeys(base.op_types + POOL_PATH_OPS)) if widen else base.op_types
    pools = []
    for sel in swappable_pools(model):
        src = producer.get(node_of[sel].input[0], "")
        op = src.split("[")[0]
        quantized = not op_types or (op in op_types and "MaxPool" in op_types)
        if src and src not in base.keep_float and op in COMPUTE_OPS and quantized:
            pools.append(sel)
    relu = base.with_(relu_before_pool=tuple(dict.fromkeys(base.relu_before_pool + tuple(pools))))
    if widen and pools:
        float_pools = tuple(sel for sel in node_of if sel.startswith("MaxPool[") and sel not in pools)
        relu = relu.with_(op_types=op_types, keep_float=tuple(dict.fromkeys(base.keep_float + float_pools)))
    sites = bool(flatten_sites(model))
    out = [("relu-before-pool", relu), ("nhwc-flatten", nhwc_flatten(base) if sites else base),
           ("relu-before-pool+nhwc-flatten", nhwc_flatten(relu) if sites else relu)]
    seen, unique = {base}, []
    for n, o in out:
        if o not in seen:
            seen.add(o)
            unique.append((n, o))
    return unique


def nhwc_flatten(base: QuantizeOptions) -> QuantizeOptions:
    """``base`` with the NHWC flatten. When ``base`` quantizes the flatten (its ``op_types`` name Reshape or
    Flatten), the Transpose that the rewrite puts before it is quantized too: left out, its float input and
    output put a DequantizeLinear -> QuantizeLinear pair (two scales) between the int8 pool and the QGemm
    (cnn_small, onnxruntime 1.31: 16 nodes after optimization against 14)."""
    ops = base.op_types
    if ops and {"Reshape", "Flatten"} & set(ops) and "Transpose" not in ops:
        ops = ops + ("Transpose",)
    return base.with_(nhwc_flatten=True, op_types=ops)


def pad_variants(base: QuantizeOptions, fp32_path) -> list[tuple[str, QuantizeOptions]]:
    """Stage 4, after the layout rewrites: the input channels of every quantized Conv that
    :mod:`mnist_edge.int8.channel_pad` can pad, padded to a multiple of four; where the conv feeding one of
    them stays in float, also to a multiple of 8 and of 16 (onnxruntime's NCHWc blocks, so that float conv and
    its pool stay blocked). Each also with the NHWC flatten when the graph has one and ``base`` does not: with
    the float pool blocked, the flatten's Transpose is what is left (cnn_small: 0.96x of the multiple-4 file's
    time at batch 1 and 64 with both, 0.99x with the multiple 16 alone). Multiples giving the same channel
    counts are tried once; none when no such Conv is quantized under ``base``."""
    import onnx

    from mnist_edge.int8.channel_pad import MULTIPLE, MULTIPLES, feeding_conv, paddable_convs, padded_widths
    from mnist_edge.int8.rewrites import flatten_sites

    model = onnx.load(str(fp32_path))
    quantized = not base.op_types or "Conv" in base.op_types
    flatten = bool(flatten_sites(model)) and not base.nhwc_flatten
    out, seen = [], set()
    for multiple in MULTIPLES:
        convs = [s for s in paddable_convs(model, multiple) if quantized and s not in base.keep_float]
        if multiple != MULTIPLE and not any(feeding_conv(model, s) in base.keep_float for s in convs):
            continue
        pad = tuple(dict.fromkeys(base.pad_channels + tuple(convs)))
        widths = (pad, padded_widths(model, pad, multiple))
        if not convs or widths in seen or (pad, multiple) == (base.pad_channels, base.pad_multiple):
            continue
        seen.add(widths)
        name = "pad-channels" if multiple == MULTIPLE else f"pad-channels-{multiple}"
        padded = base.with_(pad_channels=pad, pad_multiple=multiple)
        out.append((name, padded))
        if flatten:
            out.append((f"{name}+nhwc-flatten", nhwc_flatten(padded)))
    return out


def merge(a: QuantizeOptions, b: QuantizeOptions) -> QuantizeOptions:
    """``a`` with ``b``'s differences from the defaults applied (selector lists are joined)."""
    changes = b.differences()
    for key in SELECTOR_FIELDS:
        if key in changes:
            changes[key] = tuple(dict.fromkeys(getattr(a, key) + getattr(b, key)))
    return a.with_(**changes)
