"""Optional extras: which modules each needs, and one typed error naming the install when one is missing.

The runtime install (the wheel, docs/install.md) has numpy and onnxruntime only; training,
export and the model cards need the ``train`` extra, image files the ``images`` extra. mnist-edge is not
on PyPI, so the install hint names the wheel or a checkout, never a bare ``mnist-edge[...]``.
"""

from __future__ import annotations

import importlib

from mnist_edge.version import __version__
from mnist_edge.errors import MissingExtraError

# extra -> the modules it provides that mnist-edge imports (import name, pip name)
EXTRAS: dict[str, tuple[tuple[str, str], ...]] = {
    "train": (("torch", "torch"), ("onnx", "onnx"), ("onnxscript", "onnxscript"), ("matplotlib", "matplotlib")),
    "images": (("PIL", "pillow"),),
    "quantize": (("onnx", "onnx"),),
    "litert-runtime": (("ai_edge_litert", "ai-edge-litert"),),
}


# command -> the extra it needs (`--help` marks them; a runtime-only install, numpy + onnxruntime, runs
# the others). The library functions themselves call ``require``.
COMMAND_EXTRAS = {"train": "train", "export": "train", "card": "train", "predict": "images", "quantize": "quantize"}
WHEEL = f"mnist_edge-{__version__}-py3-none-any.whl"


def install_hint(extra: str) -> str:
    """How to add ``extra``: mnist-edge is not on PyPI, so to the wheel the project builds, or a checkout."""
    plain = " ".join(pip for _, pip in EXTRAS[extra])
    return (f'pip install "{WHEEL}[{extra}]" (the wheel you installed; in a checkout: pip install -e ".[{extra}]")'
            + (f", or just pip install {plain}" if extra == "images" else ""))


def require(extra: str, what: str, modules: tuple[str, ...] | None = None) -> None:
    """Raise MissingExtraError unless every module of ``extra`` (or just ``modules``) imports.

    ``what`` names the job in the message ("mnist-edge export"). Importing is the only honest test:
    a module can be present and still fail to import (a CUDA build of torchvision, say).
    """
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; valid: {', '.join(EXTRAS)}")
    wanted = [(mod, pip) for mod, pip in EXTRAS[extra] if modules is None or mod in modules]
    missing = []
    for mod, pip in wanted:
        try:
            importlib.import_module(mod)
        except ImportError:
            missing.append(pip)
    if missing:
        raise MissingExtraError(f"{what} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
                                f"not installed: {install_hint(extra)}")
