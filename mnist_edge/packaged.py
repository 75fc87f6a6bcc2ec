"""The default model the wheel carries, and which of its manifest's files a wheel leaves out.

The wheel carries the default model so that `mnist-edge predict`, `verify` and `bench` work right after
`pip install` on a device: the build (``setup.py``) copies the files of ``exported/bn_cnn`` that the
runtime can use (:func:`shipped`: the ONNX models, a self-test bundle) and its ``manifest.json``, each
checked against that manifest's hashes, into ``mnist_edge/models_data/bn_cnn/``.
The committed ``exported/bn_cnn`` stays the one source of truth; nothing is copied into the source tree.

That copy leaves out the files only torch can use (``checkpoint.pt``, ``model.pt``) although its
manifest lists them: :func:`not_shipped` names them, so verification checks what is there and says what
is absent instead of failing. Standard library only (the runtime and the build use it).

An editable install (``pip install -e .``) has no packaged copy: the package is the checkout's own
``mnist_edge/``, and the checkout's ``exported/`` plays that part (:func:`installed_model_dir`), so a
zoo name works from any folder there as it does with a wheel.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
PACKAGED_ROOT = PACKAGE / "models_data"  # inside an installed wheel; absent in a source checkout
CHECKOUT = PACKAGE.parent  # the source checkout, when the package is imported from one (editable install)


def torch_only(entry: dict) -> bool:
    """Whether a manifest file entry is of use only where torch is installed (checkpoint, TorchScript)."""
    return entry.get("kind") == "checkpoint" or entry.get("format") == "torchscript"


def shipped(entry: dict) -> bool:
    """Whether a manifest file entry goes into the wheel: everything the runtime can use (the ONNX models,
    a self-test bundle), not the torch-only files."""
    return not torch_only(entry)


def installed_model_dir(name: str) -> Path | None:
    """The copy of model ``name`` installed with the package: a wheel's packaged copy, else, when the package
    is imported from a source checkout (an editable install), that checkout's ``exported/NAME``; else None."""
    folder = PACKAGED_ROOT / name
    if folder.is_dir():
        return folder
    return checkout_model_dir(name)


def checkout_model_dir(name: str) -> Path | None:
    """``exported/NAME`` of the source checkout this package is imported from, if it is one and has it.

    A wheel's package lies in site-packages, beside no ``pyproject.toml``; a checkout's lies beside the
    ``pyproject.toml`` and ``exported/`` that the wheel's build reads.
    """
    folder = CHECKOUT / "exported" / name
    return folder if (CHECKOUT / "pyproject.toml").is_file() and folder.is_dir() else None


def is_packaged(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` is a model folder shipped inside the installed package."""
    try:
        return Path(folder).resolve().parent == PACKAGED_ROOT.resolve()
    except OSError:
        return False


def not_shipped(folder: str | os.PathLike, manifest: dict) -> list[str]:
    """Files the manifest of a packaged ``folder`` lists that the wheel leaves out and that are indeed
    absent (a present file is always checked); empty for any folder outside the package."""
    if not is_packaged(folder):
        return []
    return [name for name, entry in manifest["files"].items()
            if not shipped(entry) and not os.path.lexists(Path(folder) / name)]
