"""Checkpoints: weights plus everything needed to rebuild the model, loadable with weights_only=True.

A checkpoint is a dict of plain types and tensors: ``format``, ``model`` (registry name), ``net``/
``kwargs`` (model arguments), ``state_dict``, ``recipe``, ``history`` (per-epoch metrics), ``data_sha256``,
``metrics`` (final test accuracy, how it was selected) and ``versions``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mnist_edge.errors import CheckpointError

FORMAT = "mnist-edge-checkpoint/1"
DEFAULT_NAME = "checkpoint.pt"


def save_checkpoint(path: str | os.PathLike, *, model: str, state_dict: dict, recipe: dict, history: list,
                    data_sha256: str, metrics: dict, extra: dict | None = None) -> Path:
    """Write atomically; every value is a tensor or a JSON-able plain type so weights_only loading works."""
    import torch

    from mnist_edge import __version__
    from mnist_edge.io import atomic_path
    from mnist_edge.zoo import get_spec

    spec = get_spec(model)
    payload = {
        "format": FORMAT,
        "model": model,
        "net": spec.net,
        "kwargs": json.loads(json.dumps(spec.kwargs)),  # tuples -> lists: plain JSON types only
        "state_dict": {k: v.detach().cpu().clone() for k, v in state_dict.items()},
        "recipe": recipe,
        "history": history,
        "data_sha256": data_sha256,
        "metrics": metrics,
        "versions": {"mnist_edge": __version__, "torch": str(torch.__version__)},
        "extra": extra or {},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The checkpoint dict, loaded with weights_only=True (anything needing pickled code is refused)."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist (train one with: mnist-edge train --model NAME)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" in str(e) or "Unsupported class" in str(e):  # needs code to load: refuse
            raise CheckpointError(f"checkpoint '{path}' is not weights-only and is refused (it needs pickled "
                                  "code to load; mnist-edge never loads such files)") from None
        raise CheckpointError(f"checkpoint '{path}' cannot be read: not a torch checkpoint") from None
    except Exception as e:  # corrupt zip, truncated file, not a torch file
        raise CheckpointError(f"checkpoint '{path}' cannot be read: {type(e).__name__}: {e}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"'{path}' is not an mnist-edge checkpoint (expected format {FORMAT!r})")
    return ckpt


def load_checkpoint(path: str | os.PathLike):
    """Rebuild the trained network from a checkpoint: returns (net in eval mode, checkpoint dict)."""
    from mnist_edge.models import NETS
    from mnist_edge.zoo import get_spec

    ckpt = read_checkpoint(path)
    spec = get_spec(ckpt["model"])
    if ckpt["net"] != spec.net:
        raise CheckpointError(f"checkpoint '{path}' holds a {ckpt['net']}, but '{spec.name}' is a {spec.net}")
    net = NETS[ckpt["net"]](**ckpt["kwargs"])
    try:
        net.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint '{path}' does not match model '{spec.name}': {e}") from None
    return net.eval(), ckpt
