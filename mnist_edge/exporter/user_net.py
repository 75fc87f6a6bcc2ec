"""A user's own network: its class from a ``.py`` file or an importable module, its weights (weights-only),
a TorchScript file, and the probe that checks it against the contract before any export work.

Loading ``my_model.py:MyNet`` runs the user's file: that is their choice (``--help`` says so). Weights are
still read with ``torch.load(weights_only=True)``; a pickled whole module is refused with the two lines
that save a state_dict instead.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import json
import sys
from pathlib import Path

from mnist_edge.contract import Contract
from mnist_edge.errors import CheckpointError, UsageError, first_line

SAVE_STATE_DICT = ("save the weights instead: torch.save(model.state_dict(), 'my_state.pt'), then pass "
                   "--net FILE.py:CLASS --weights my_state.pt")
MAX_WEIGHTS_BYTES = 1 << 30


def load_class(ref: str):
    """The class ``ref`` names: ``path/to/file.py:Class`` (runs that file) or ``package.module:Class``."""
    where, sep, name = str(ref).rpartition(":")
    if not sep or not where or not name.isidentifier():
        raise UsageError(f"--net {ref!r} must be FILE.py:CLASS or MODULE.PATH:CLASS, e.g. my_model.py:MyNet")
    module = _load_file(Path(where)) if where.endswith(".py") else _import(where)
    cls = getattr(module, name, None)
    if not isinstance(cls, type):
        import torch.nn as nn

        found = sorted(k for k, v in vars(module).items() if isinstance(v, type) and issubclass(v, nn.Module)
                       and v.__module__ == module.__name__)
        raise UsageError(f"{where} defines no class {name!r}; nn.Module classes there: {', '.join(found) or 'none'}")
    return cls


def _load_file(path: Path):
    if not path.is_file():
        raise UsageError(f"--net: no such file '{path}'")
    module_name = f"mnist_edge_user_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look classes up here
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[module_name]
        raise UsageError(f"--net: running '{path}' failed: {type(e).__name__}: {first_line(e, 200)}") from None
    return module


def _import(name: str):
    try:
        return importlib.import_module(name)
    except Exception as e:
        raise UsageError(f"--net: cannot import module {name!r}: {type(e).__name__}: {first_line(e, 200)}") from None


def build(cls, args: str | dict | None = None):
    """``cls(**args)``; ``args`` a dict or its JSON text (``--net-args``)."""
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError as e:
            raise UsageError(f"--net-args is not JSON: {e}") from None
    if args is not None and not isinstance(args, dict):
        raise UsageError(f"--net-args must be a JSON object of constructor arguments, got {args!r:.80}")
    try:
        return cls(**(args or {}))
    except Exception as e:
        raise UsageError(f"{cls.__name__}(**{args or {}!r:.80}) failed: {type(e).__name__}: {first_line(e, 200)}") from None


def read_state_dict(path: str | Path) -> dict:
    """The tensors of a weights file: a state_dict, or a dict holding one under ``state_dict`` (our
    checkpoints, many training scripts'). Refused: pickled code (a whole module), anything else."""
    import pickle

    import torch

    from mnist_edge.training.checkpoint import is_torchscript, read_bounded

    path = Path(path)
    data = read_bounded(path, MAX_WEIGHTS_BYTES, "weights")
    if is_torchscript(data):  # before torch.load, which warns twice and then refuses it
        raise CheckpointError(f"'{path}' is a TorchScript file (torch.jit.save), not weights: pass it as --torchscript")
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"weights '{path}' hold pickled code (a whole model object?) and are refused; "
                              f"{SAVE_STATE_DICT}") from None
    except Exception as e:
        raise CheckpointError(f"weights '{path}' cannot be read: {type(e).__name__}: {first_line(e, 200)}") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise CheckpointError(f"weights '{path}' are not a state_dict (names -> tensors); {SAVE_STATE_DICT}")
    return obj


def load_weights(net, state: dict, path) -> None:
    """``net.load_state_dict(state)``, or a CheckpointError listing the first missing/unexpected keys."""
    mine, theirs = set(net.state_dict()), set(state)
    missing, unexpected = sorted(mine - theirs), sorted(theirs - mine)
    if missing or unexpected:
        raise CheckpointError(f"weights '{path}' do not match {type(net).__name__}: missing keys "
                              f"{missing[:5] or 'none'}, unexpected keys {unexpected[:5] or 'none'}")
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"weights '{path}' do not fit {type(net).__name__}: {first_line(e, 300)}") from None


def load_torchscript_net(path: str | Path):
    """A TorchScript module a user saved (``torch.jit.save``); it is code, loaded because they asked."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--torchscript: no such file '{path}'")
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as e:
        raise CheckpointError(f"'{path}' is not a TorchScript file: {type(e).__name__}: {first_line(e, 200)}") from None


def probe(net, contract: Contract, name: str, say=None):
    """Put ``net`` in eval mode (saying so if it was training) and run it once on a batch of 2 of the
    contract's input: the output must be finite logits [2, number of labels]. Returns the net."""
    import torch

    if getattr(net, "training", False):
        (say or (lambda m: None))(f"{name}: the network was in training mode (dropout, batch-norm updates); "
                                  "exporting it in eval mode")
    net.eval()
    x = torch.zeros(2, contract.channels, contract.input_size, contract.input_size)
    try:
        with torch.no_grad():
            out = net(x)
    except Exception as e:
        raise UsageError(f"{name} rejects input [2, {contract.channels}, {contract.input_size}, "
                         f"{contract.input_size}] (--input-size {contract.input_size}): {type(e).__name__}: "
                         f"{first_line(e, 200)}") from None
    if isinstance(out, (tuple, list)) or not isinstance(out, torch.Tensor):
        raise UsageError(f"{name} returns {type(out).__name__}; it must return one tensor of logits [batch, classes]")
    if out.ndim != 2 or out.shape[0] != 2:
        raise UsageError(f"{name} returns shape {list(out.shape)} for a batch of 2; expected logits [2, classes]")
    if out.shape[1] != contract.num_classes:
        raise UsageError(f"{name} returns {out.shape[1]} classes but the labels name {contract.num_classes} "
                         f"({', '.join(contract.labels[:12])}{', ...' if contract.num_classes > 12 else ''}); "
                         "give --labels with one name per output")
    if not torch.isfinite(out).all():
        raise UsageError(f"{name} returns NaN or infinite logits for a blank image")
    return net
