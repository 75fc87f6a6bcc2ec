"""ONNX export through torch.onnx's dynamo path: one self-contained file, dynamic batch, full checker pass.

torch 2.13's exporter builds every graph at opset 18 (its torchlib) and converts to the requested opset
afterwards; when that conversion fails it keeps 18 and only logs a warning, so we compare the opset
written with the one asked for and fail loudly. Measured on torch 2.13 / onnx 1.23: our graphs convert
down to 16 (LeNet's Pad only to 18); 15 and lower fail for every zoo model; onnxruntime 1.31 loads up
to 26. The exporter writes IR version 10, which every onnxruntime since 1.16 reads.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
from pathlib import Path

from mnist_edge.contract import INPUT_NAME, OUTPUT_NAMES
from mnist_edge.errors import ExportError, UsageError, first_line
from mnist_edge.evaluate.ort_eval import MAX_IR_VERSION, runtime_limits
from mnist_edge.exporter.torchscript import example_input

DEFAULT_OPSET = 18  # torch 2.13's native opset: no conversion step
MIN_OPSET = 16  # lowest the exporter's converter reaches for our graphs (see module docstring)
_NOISY_LOGGERS = ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx", "onnxscript", "onnx_ir", "")


def supported_opsets() -> range:
    """Opsets ``--opset`` accepts: what the exporter reaches and the installed onnxruntime loads."""
    return range(MIN_OPSET, runtime_limits()[1] + 1)


def check_opset(opset) -> int:
    valid = supported_opsets()
    if isinstance(opset, bool) or not isinstance(opset, int) or opset not in valid:
        raise UsageError(f"--opset {opset!r} is not supported: valid opsets are {valid.start}..{valid.stop - 1} "
                         f"(torch's exporter writes {DEFAULT_OPSET} and cannot convert below {MIN_OPSET}; "
                         f"the installed onnxruntime loads at most {valid.stop - 1})")
    return opset


@contextlib.contextmanager
def quiet(captured: io.StringIO | None = None):
    """Capture stdout/stderr and silence exporter/quantizer loggers and warnings for the duration.

    The dynamo exporter prints progress lines to stdout and logs warnings (torchvision missing, opset
    conversion) and onnxruntime.quantization logs through the root logger; the CLI prints its own table.
    """
    captured = captured if captured is not None else io.StringIO()
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
    try:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured), \
                warnings.catch_warnings():
            # torch.export/pytree FutureWarnings and quantizer notes are about their internals, not our use
            warnings.simplefilter("ignore")
            yield captured
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_onnx(edge, path: str | os.PathLike, *, opset: int = DEFAULT_OPSET, metadata: dict[str, str],
                doc: str = "") -> dict:
    """Export ``edge`` (EdgeModel, eval) to one ONNX file at ``path``; returns ``{"opset", "ir_version"}``.

    The example batch has 2 images and the batch axis is declared dynamic: exporting with a batch of 1
    can fix the batch dimension. The gates run the file at batch sizes 1, 7 and 64 regardless.
    """
    import torch

    check_opset(opset)
    edge.eval()
    batch = torch.export.Dim("batch", min=1)
    log = io.StringIO()
    try:
        with quiet(log), torch.no_grad():
            if isinstance(edge.net, torch.jit.ScriptModule):
                model = _script_module_proto(edge, opset)
            else:
                model = torch.onnx.export(
                    edge, (example_input(2),), None, dynamo=True, external_data=False, opset_version=opset,
                    input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                    dynamic_shapes={"image": {0: batch}}, optimize=True, verify=False, report=False).model_proto
    except Exception as e:
        tail = " | ".join(line for line in log.getvalue().splitlines()[-3:] if line.strip())
        raise ExportError(f"torch.onnx.export failed: {type(e).__name__}: {first_line(e)}"
                          + (f" (exporter log: {tail})" if tail else "")) from e
    written = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if written != opset:
        raise ExportError(f"the exporter could not convert this model to opset {opset} (it kept {written}); "
                          f"use --opset {DEFAULT_OPSET} or higher")
    if model.ir_version > MAX_IR_VERSION:
        # Safe to lower: IR 11+ adds features (e.g. float8 / 4-bit types) our graphs never use; checked below.
        model.ir_version = MAX_IR_VERSION
    dim0 = model.graph.input[0].type.tensor_type.shape.dim[0]
    if not dim0.dim_param:
        raise ExportError(f"the exported batch dimension is fixed at {dim0.dim_value}; it must be dynamic")
    strip_exporter_metadata(model)
    set_metadata(model, metadata, doc=doc)
    save_onnx(model, path)
    return {"opset": written, "ir_version": model.ir_version}


def _script_module_proto(edge, opset: int):
    """A TorchScript network (a user's ``--torchscript`` file) through torch.onnx's TorchScript-based exporter:
    torch.export, which the dynamo path starts from, cannot take a ScriptModule."""
    import onnx
    import torch

    buf = io.BytesIO()
    axes = {name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)}
    scripted = torch.jit.script(edge)  # the TorchScript exporter traces a Python module, never a loaded one
    torch.onnx.export(scripted, (example_input(2),), buf, dynamo=False, opset_version=opset,
                      input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES), dynamic_axes=axes)
    return onnx.load_from_string(buf.getvalue())


def strip_exporter_metadata(model) -> int:
    """Remove torch.onnx's per-node and per-graph ``metadata_props`` and doc strings; returns how many.

    The dynamo exporter annotates every node with its Python stack trace (absolute paths of the checkout
    and the virtualenv), name scopes and FX node text, and the graph with the ExportedProgram signature:
    ~25% of a small fp32 file, nothing reads it at inference, and it makes the bytes depend on where the
    checkout lies. Our own model-level ``metadata_props`` are untouched.
    """
    removed = 0

    def clear(proto) -> None:
        nonlocal removed
        removed += len(proto.metadata_props)
        del proto.metadata_props[:]

    def nodes(container) -> None:  # a graph's or a function's nodes, and the subgraphs in their attributes
        for node in container.node:
            clear(node)
            node.doc_string = ""
            for attr in node.attribute:
                for sub in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
                    graph(sub)

    def graph(g) -> None:
        clear(g)
        g.doc_string = ""
        for item in (*g.input, *g.output, *g.value_info, *g.initializer):
            clear(item)
        nodes(g)

    graph(model.graph)
    for fn in model.functions:
        clear(fn)
        nodes(fn)
    return removed


def set_metadata(model, metadata: dict[str, str], *, doc: str = "") -> None:
    """Replace our keys in ``model.metadata_props`` (keeping any others) and set producer fields."""
    from mnist_edge.version import __version__

    keep = [(p.key, p.value) for p in model.metadata_props if p.key not in metadata]
    del model.metadata_props[:]
    for key, value in keep + sorted(metadata.items()):
        if not isinstance(value, str):
            raise ExportError(f"metadata value for {key!r} must be a string, got {type(value).__name__}")
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name, model.producer_version = "mnist-edge", __version__
    if doc:
        model.doc_string = doc


def save_onnx(model, path: str | os.PathLike) -> None:
    """Full checker pass (shape inference, strict), then one self-contained file (external data refused)."""
    import onnx

    from mnist_edge.evaluate.ort_eval import external_tensors

    external = external_tensors(model)
    if external:
        raise ExportError(f"the exported model stores {', '.join(external[:3])} as external data; refused")
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:
        raise ExportError(f"onnx.checker rejected the exported model: {first_line(e)}") from None
    data = model.SerializeToString()  # raises above 2 GB instead of spilling to external data
    Path(path).write_bytes(data)


def load_model(path: str | os.PathLike):
    """An ONNX ModelProto from a file we just wrote (never with external data)."""
    import onnx

    return onnx.load(os.fspath(path), load_external_data=False)


def metadata_json(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
