"""Checkpoints: weights plus everything needed to rebuild the model, loadable with weights_only=True.

A checkpoint is a dict of plain types and tensors: ``format``, ``model`` (the name it was trained under: a
zoo registry name, or a label of the caller's), ``net``/``kwargs`` (the network's class name and constructor
arguments), ``state_dict``, ``recipe``, ``history`` (per-epoch metrics), ``data_sha256``, ``metrics`` (final
test accuracy, how it was selected), ``versions`` and ``extra``. :func:`load_checkpoint` rebuilds zoo
networks, by the recorded name.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

from mnist_edge import artifacts as A
from mnist_edge.documents import SCHEMAS
from mnist_edge.errors import CheckpointError, WriteError, first_line
from mnist_edge.files import describe_os_error, read_regular

FORMAT = SCHEMAS["checkpoint"]
DEFAULT_NAME = A.CHECKPOINT


def save_checkpoint(path: str | os.PathLike, **fields) -> Path:
    """Write :func:`checkpoint_bytes` of ``fields`` to ``path`` atomically."""
    from mnist_edge.files import atomic_path

    data = checkpoint_bytes(**fields)
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    except OSError as e:
        raise WriteError(f"cannot write checkpoint '{path}': {describe_os_error(e)}; "
                         f"{'the previous checkpoint is unchanged' if Path(path).exists() else 'nothing was written'}"
                         ) from None
    return Path(path)


def checkpoint_bytes(*, model: str, state_dict: dict, recipe: dict, history: list, data_sha256: str, metrics: dict,
                     extra: dict | None = None, architecture: tuple[str, dict] | None = None) -> bytes:
    """A checkpoint serialized in memory; every value is a tensor or a JSON-able plain type so weights_only
    loading works. Serialized here, then written by Python: a full disk is then an OSError we can report,
    where torch's C++ file writer can fail with a RuntimeError (or worse) halfway through the file.

    One keyword per field of the format (the module docstring lists them), hence eight parameters.
    ``architecture``: (class name, constructor arguments) that rebuild the network (nanoGPT's
    ``model_args``); None: those of the zoo entry called ``model``, the name :func:`load_checkpoint`
    rebuilds zoo networks by.
    """
    import torch

    from mnist_edge.version import __version__

    if architecture is None:
        from mnist_edge.zoo.registry import get_spec

        spec = get_spec(model)
        architecture = spec.net, spec.kwargs
    net_class, kwargs = architecture
    payload = {
        "format": FORMAT,
        "model": model,
        "net": net_class,
        "kwargs": json.loads(json.dumps(kwargs)),  # tuples -> lists: plain JSON types only
        "state_dict": {k: v.detach().cpu().clone() for k, v in state_dict.items()},
        "recipe": recipe,
        "history": history,
        "data_sha256": data_sha256,
        "metrics": metrics,
        "versions": {"mnist_edge": __version__, "torch": str(torch.__version__)},
        "extra": extra or {},
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def digits_sha256(data) -> str:
    """The hash naming ``data`` (a :class:`mnist_edge.data.dataset.Digits` with both splits) as
    :data:`mnist_edge.data.mnist.DATASET_SHA256` names MNIST: SHA-256 over "sha256  name" lines of the four
    IDX files, each rebuilt here from the arrays in memory (header, then the bytes). MNIST's arrays give
    exactly DATASET_SHA256, what checkpoints have always recorded; other digits get their own hash, never
    MNIST's. About 0.03 s for MNIST's 55 MB."""
    import hashlib

    import numpy as np

    from mnist_edge.data.mnist import SPLITS

    def idx_sha256(array, magic: int) -> str:  # IDX: big-endian int32 magic and dimensions, then the bytes
        h = hashlib.sha256(np.array([magic, *array.shape], ">i4").tobytes())
        h.update(np.ascontiguousarray(array))
        return h.hexdigest()

    lines = []
    for split, (images_name, labels_name) in SPLITS.items():
        images, labels = getattr(data.need(split), split).images, getattr(data, split).labels
        small = len(labels) == 0 or (labels.min() >= 0 and labels.max() < 256)
        lines += [f"{idx_sha256(images, 0x803)}  {images_name}\n",  # 0x08: unsigned bytes, 3 dimensions
                  # labels as unsigned bytes (0x08) like MNIST's, or as int32 (0x0C) where they do not fit
                  f"{idx_sha256(labels.astype(np.uint8 if small else '>i4'), 0x801 if small else 0xC01)}  "
                  f"{labels_name}\n"]
    return hashlib.sha256("".join(lines).encode()).hexdigest()


MAX_CHECKPOINT_BYTES = 512 * 1024 * 1024  # ours are under 5 MB; bounds what a wrong path can make us read
# Fields every reader of a checkpoint relies on, with their types (cards check metrics and history too).
REQUIRED = {"model": str, "net": str, "kwargs": dict, "state_dict": dict, "recipe": dict, "history": list,
            "metrics": dict}


def _needs_code(err: Exception, data: bytes) -> bool:
    """torch's weights-only unpickler refused a file whose pickle names code (a GLOBAL, a class to build).

    torch words this differently by path ("Unsupported global", "unsupported GLOBAL", and for a raw
    pickle of protocol 4+ only "Unsupported operand 149"), so the bytes are also scanned, without running
    anything (pickletools), for the opcodes that import or call.
    """
    import pickletools

    text = str(err).lower()
    if "unsupported global" in text or "unsupported class" in text:
        return True
    try:
        return any(op.name in ("GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX")
                   for op, _, _ in pickletools.genops(data))
    except Exception:  # noqa: BLE001 - not a well-formed pickle: then it is not a torch file at all
        return False


def is_torchscript(data: bytes) -> bool:
    """Whether ``data`` is a TorchScript archive (``torch.jit.save``): a zip holding ``constants.pkl``.

    Checked before torch.load, which would warn twice ("looks like a TorchScript archive") and then refuse
    it under weights_only with a paragraph about PyTorch 2.6. Only the zip's directory is read.
    """
    import zipfile

    if data[:4] != b"PK\x03\x04":
        return False
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
    except Exception:  # noqa: BLE001 - a damaged zip: torch.load then says what is wrong with it
        return False
    return any(name.rpartition("/")[2] == "constants.pkl" for name in names)


def read_bounded(path: Path, limit: int, what: str) -> bytes:
    """The bytes of a weights file (a regular file of at most ``limit`` bytes), read once: the bytes torch
    parses are the bytes that were checked; CheckpointError naming ``what`` and the path otherwise."""
    try:
        return read_regular(path, limit)
    except OSError as e:
        raise CheckpointError(f"cannot read {what} '{path}': {describe_os_error(e)}") from None


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The checkpoint dict, loaded with weights_only=True (anything needing pickled code is refused)."""
    import pickle

    import torch

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint '{path}' does not exist (train one with: mnist-edge train --model NAME)")
    data = read_bounded(path, MAX_CHECKPOINT_BYTES, "checkpoint")
    if is_torchscript(data):
        raise CheckpointError(f"'{path}' is a TorchScript file (torch.jit.save), not a checkpoint: export it with "
                              f"--torchscript '{path}' --name NAME")
    try:
        ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if _needs_code(e, data):  # needs code to load: refuse, never retry unsafely
            raise CheckpointError(f"checkpoint '{path}' is not weights-only and is refused (it needs pickled "
                                  "code to load; mnist-edge never loads such files)") from None
        raise CheckpointError(f"checkpoint '{path}' cannot be read: not a torch checkpoint") from None
    except Exception as e:  # corrupt zip, truncated file, not a torch file
        first = first_line(e, 200)
        raise CheckpointError(f"checkpoint '{path}' cannot be read: {type(e).__name__}: {first}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"'{path}' is not an mnist-edge checkpoint (expected format {FORMAT!r})")
    bad = [f"{k!r} ({'missing' if k not in ckpt else type(ckpt[k]).__name__}, expected {t.__name__})"
           for k, t in REQUIRED.items() if not isinstance(ckpt.get(k), t)]
    if bad:
        raise CheckpointError(f"checkpoint '{path}' is not one mnist-edge wrote: bad fields {', '.join(bad)}")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in ckpt["state_dict"].items()):
        raise CheckpointError(f"checkpoint '{path}': state_dict must map parameter names to tensors")
    return ckpt


def load_checkpoint(path: str | os.PathLike):
    """Rebuild the trained network from a checkpoint: returns (net in eval mode, checkpoint dict)."""
    from mnist_edge.zoo.networks import NETS
    from mnist_edge.zoo.registry import get_spec

    ckpt = read_checkpoint(path)
    spec = get_spec(ckpt["model"])
    if ckpt["net"] != spec.net:
        raise CheckpointError(f"checkpoint '{path}' holds a {ckpt['net']}, but '{spec.name}' is a {spec.net}")
    try:
        net = NETS[ckpt["net"]](**ckpt["kwargs"])
    except (TypeError, ValueError, RuntimeError) as e:  # arguments the network does not take
        raise CheckpointError(f"checkpoint '{path}' has model arguments {ckpt['kwargs']!r:.200} that "
                              f"{ckpt['net']} does not accept: {e}") from None
    try:
        net.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint '{path}' does not match model '{spec.name}': {e}") from None
    return net.eval(), ckpt
