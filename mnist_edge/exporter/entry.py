"""The two ways into an export, resolved to the pipeline's objects: a zoo model by name (its checkpoint and
MNIST), or a user's own network (a class and its weights, or a TorchScript file, with their contract and
data). The CLI and the Python API call these; below them nothing looks a name up.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mnist_edge.contract import MNIST_MEAN, MNIST_STD, make_contract
from mnist_edge.errors import CheckpointError
from mnist_edge.exporter.options import ExportOptions


def preflight_all(out, torch: bool = True) -> None:
    """Everything that must hold before any work: the extra (train; quantize for a float ONNX source, which
    needs no torch), and an output folder we may replace."""
    from mnist_edge.exporter.pipeline import preflight
    from mnist_edge.system.extras import require

    if torch:
        require("train", "export (TorchScript, ONNX, int8)", ("torch", "onnx", "onnxscript"))
    else:
        require("quantize", "export of an ONNX file (wrap, int8)", ("onnx",))
    preflight(Path(out))


def export_zoo(name: str, *, checkpoint, data_dir, options: ExportOptions, out, progress=None):
    """`export --model NAME`: the checkpoint (default ``exported/NAME/checkpoint.pt``) must hold ``name``;
    the data is MNIST (verified) from ``data_dir``."""
    from mnist_edge.data.dataset import load_digits
    from mnist_edge.data.mnist import require_splits
    from mnist_edge.exporter.pipeline import export
    from mnist_edge.exporter.source import default_checkpoint, from_checkpoint

    preflight_all(out)
    with output_lock(out):
        require_splits(data_dir, ("test", "train"))  # train fits T (and calibrates int8)
        source = from_checkpoint(checkpoint or default_checkpoint(name), model=name if checkpoint is None else None)
        if checkpoint is not None and source.name != name:
            raise CheckpointError(f"checkpoint '{checkpoint}' holds model '{source.name}', not '{name}'")
        (progress or (lambda msg: None))("loading MNIST")
        return export(source, load_digits(data_dir), options, out=out, progress=progress)


def output_lock(out, flag: str = "--out"):
    """Hold ``out``'s lock (:mod:`mnist_edge.system.lock`) for a whole export: a second export or search
    into the same folder stops at once with a line naming this one, instead of replacing its files."""
    from mnist_edge.system.lock import hold

    return hold(Path(out), flag=flag)


@dataclass(frozen=True)
class UserModel:
    """A user's network as the CLI names it: ``net`` (FILE.py:CLASS or MODULE:CLASS) with ``weights`` and
    ``net_args`` (JSON), or ``torchscript``, or ``onnx`` (a float ONNX file); its name and contract."""

    name: str
    net: str | None = None
    weights: str | None = None
    net_args: str | None = None
    torchscript: str | None = None
    onnx: str | None = None
    labels: tuple | None = None
    input_size: int = 28
    mean: float = MNIST_MEAN
    std: float = MNIST_STD
    channels: int = 1


def export_user(model: UserModel, *, data_ref, options: ExportOptions, out, progress=None):
    """`export --net/--torchscript`: the network built and loaded, checked against its contract, then the
    zoo's pipeline. ``data_ref``: None (MNIST), a folder or an ``.npz``."""
    preflight_all(out, torch=model.onnx is None)
    with output_lock(out):
        return _export_user(model, data_ref, options, out, progress)


def _export_user(model: UserModel, data_ref, options: ExportOptions, out, progress):
    from mnist_edge.data.sources import load_data
    from mnist_edge.exporter.pipeline import export

    say = progress or (lambda msg: None)
    say("loading the data")
    data, data_labels = load_data(data_ref)
    contract = make_contract(model.labels or data_labels, model.input_size, model.mean, model.std, model.channels)
    if model.onnx:
        from mnist_edge.exporter.onnx_source import from_onnx

        return export(from_onnx(model.onnx, name=model.name, contract=contract), data, options, out=out,
                      progress=progress)
    from mnist_edge.exporter import user_net as U
    from mnist_edge.exporter.source import from_net

    if model.net:
        net = U.build(U.load_class(model.net), model.net_args)
        U.load_weights(net, U.read_state_dict(model.weights), model.weights)
        architecture = (model.net, json.loads(model.net_args) if model.net_args else {})
    else:
        net, architecture = U.load_torchscript_net(model.torchscript), None
    source = from_net(net, name=model.name, contract=contract, architecture=architecture, say=say)
    return export(source, data, options, out=out, progress=progress)
