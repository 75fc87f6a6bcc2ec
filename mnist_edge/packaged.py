"""Where exported models are found: the working directory, the source checkout, and the wheel's own copy.

The wheel carries the default model so that `mnist-edge predict`, `verify` and `bench` work right after
`pip install` on a device: the build (``setup.py``) copies the files of ``exported/bn_cnn`` that the
runtime can use (:func:`shipped`: the ONNX models, a self-test bundle) and its ``manifest.json``, each
checked against that manifest's hashes, into ``mnist_edge/models_data/bn_cnn/``.
The committed ``exported/bn_cnn`` stays the one source of truth; nothing is copied into the source tree.

That copy leaves out the files only torch can use (``checkpoint.pt``, ``model.pt``) although its
manifest lists them: :func:`not_shipped` names them, so verification checks what is there and says what
is absent instead of failing. Standard library only (the runtime and the build use it).
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_MODEL = "bn_cnn"
PACKAGE = Path(__file__).resolve().parent
PACKAGED_ROOT = PACKAGE / "models_data"  # inside an installed wheel; absent in a source checkout
CHECKOUT = PACKAGE.parent  # the repository root when running from a checkout (or an editable install)


def torch_only(entry: dict) -> bool:
    """Whether a manifest file entry is of use only where torch is installed (checkpoint, TorchScript)."""
    return entry.get("kind") == "checkpoint" or entry.get("format") == "torchscript"


def shipped(entry: dict) -> bool:
    """Whether a manifest file entry goes into the wheel: everything the runtime can use (the ONNX models,
    a self-test bundle), not the torch-only files."""
    return not torch_only(entry)


def _is_checkout(root: Path) -> bool:
    return (root / "pyproject.toml").is_file() and (root / "exported").is_dir()


def search_roots() -> list[Path]:
    """Folders holding ``NAME/`` model folders, in the order they are tried: ``./exported``, the source
    checkout's ``exported/`` (not in an installed wheel), then the models packaged in the wheel."""
    roots = [Path.cwd() / "exported"]
    if _is_checkout(CHECKOUT):
        roots.append(CHECKOUT / "exported")
    roots.append(PACKAGED_ROOT)
    return list(dict.fromkeys(roots))


def find_model_dir(name: str = DEFAULT_MODEL) -> Path | None:
    """The first ``ROOT/name`` of :func:`search_roots` that is a folder, else None."""
    for root in search_roots():
        if (root / name).is_dir():
            return root / name
    return None


def where_looked(name: str = DEFAULT_MODEL) -> str:
    """The folders :func:`find_model_dir` tried, for error messages."""
    return " nor ".join(str(root / name) for root in search_roots())


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
