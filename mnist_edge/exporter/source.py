"""What an export starts from: a network in eval mode, its contract, its name, and where it came from.

:func:`from_checkpoint` is the registry's edge: it reads a weights-only checkpoint that ``mnist-edge train``
wrote, rebuilds the zoo network it names and fills in the registry's description and seed document.
Everything below it (the export pipeline, the gates, the records) takes a :class:`ModelSource` and looks
nothing up by name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from mnist_edge import artifacts as A
from mnist_edge.contract import Contract
from mnist_edge.errors import CheckpointError


@dataclass(frozen=True)
class ModelSource:
    """One network to export. ``checkpoint``: the weights-only file it was loaded from (copied into the
    folder and hashed into the metadata), with ``record`` its contents (metrics, recipe: the held-out split
    the softmax temperature is fitted on); None for a network handed over in memory."""

    name: str
    net: object  # torch.nn.Module, in eval mode
    contract: Contract
    description: str = ""
    seed_file: str = ""
    checkpoint: Path | None = None
    record: dict = field(default_factory=dict, compare=False)
    # Without a checkpoint: what rebuilds the network (class reference, constructor arguments), written
    # into the folder's own weights-only checkpoint.pt; None for a TorchScript module (no class to name).
    architecture: tuple | None = None
    # A float ONNX file made elsewhere instead of a network (then ``net`` is None): its path, its graph
    # (mnist_edge.exporter.onnx_source.read_user_onnx) and the name of its input.
    onnx: Path | None = None
    onnx_model: object = field(default=None, compare=False)
    onnx_input: str = ""


def from_checkpoint(path: str | os.PathLike, *, model: str | None = None) -> ModelSource:
    """The zoo network a checkpoint holds, rebuilt and loaded (``model``: the name it must hold, if given)."""
    from mnist_edge.training.checkpoint import load_checkpoint
    from mnist_edge.zoo.registry import get_spec

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at '{path}'" + (f" for model '{model}'; {_how_to_get(model)}"
                                                               if model else ""))
    net, ckpt = load_checkpoint(path)
    if model is not None and ckpt["model"] != model:
        raise CheckpointError(f"checkpoint '{path}' holds model '{ckpt['model']}', not '{model}'")
    spec = get_spec(ckpt["model"])
    return ModelSource(name=spec.name, net=net, contract=spec.contract, description=spec.description,
                       seed_file=spec.seed_file, checkpoint=path, record=ckpt)


def default_checkpoint(model: str) -> Path:
    """Where a zoo model's committed checkpoint lives (what ``mnist-edge train --model NAME`` should produce)."""
    return A.EXPORTED / model / A.CHECKPOINT


def _how_to_get(model: str) -> str:
    how = f"train one with: mnist-edge train --model {model} --out {default_checkpoint(model).parent}"
    trained = A.RUNS / model / A.CHECKPOINT  # where `mnist-edge train` writes by default
    if trained.is_file():
        how += f" (or export the one it wrote: --checkpoint {trained})"
    return how


def from_net(net, *, name: str, contract: Contract, architecture: tuple | None = None, description: str = "",
             say=None) -> ModelSource:
    """A network handed over in memory (a user's own): checked against ``contract`` first (eval mode, one
    run on the contract's input: logits [batch, number of labels], finite), see
    :func:`mnist_edge.exporter.user_net.probe`. ``architecture``: (class reference, arguments) recorded in the
    folder's checkpoint, e.g. ("my_model.py:MyNet", {})."""
    import torch.nn as nn

    from mnist_edge.errors import UsageError
    from mnist_edge.exporter.user_net import probe

    if not isinstance(net, nn.Module):
        raise UsageError(f"export takes a torch.nn.Module, got {type(net).__name__}")
    if not A.SAFE_NAME.fullmatch(str(name)):
        raise UsageError(f"name {name!r} must be a plain name of letters, digits, '.', '_' or '-' (e.g. mynet)")
    probe(net, contract, name, say)
    return ModelSource(name=name, net=net, contract=contract, description=description or f"{name} (user model)",
                       architecture=architecture or (f"{type(net).__module__}:{type(net).__qualname__}", {}))
