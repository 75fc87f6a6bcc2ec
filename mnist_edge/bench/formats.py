"""The formats a benchmark compares, one plain dict keyed by the CLI's names, and how each one is loaded.

Every format takes the same input, the exported contract's uint8 [N, 1, 28, 28], and computes both
outputs (logits, probabilities):

- ``eager``: PyTorch eager, the checkpoint rebuilt into ``EdgeModel`` (what the seeds' notebooks run),
  called under ``torch.inference_mode()``; zoo networks only (a checkpoint of a network the zoo does not
  define is "not available", with the reason).
- ``torchscript``: ``model.pt`` through ``torch.jit.load``, same call.
- ``onnx`` / ``int8`` / ``tflite`` / ``tflite-int8``: ``model.onnx`` / ``model.int8.onnx`` (onnxruntime) and
  ``model.tflite`` / ``model.int8.tflite`` (LiteRT, mnist_edge.runtime.litert) loaded by the runtime users run
  (``mnist_edge.runtime.load``: hash check, contract check, its latency-tuned session options and its
  provider choice with no silent fallback). The timed call is that classifier's own session, ``run`` on
  the uint8 batch: the model's cost, like the torch formats' forward. ``Classifier.predict`` adds input
  checks and top-k on top; its p50 is reported beside (``predict_p50_ms``).

torch is imported only inside the torch loaders; without torch those formats are "not available".
"""

from __future__ import annotations

import difflib
import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from mnist_edge import artifacts as A
from mnist_edge import contract as C
from mnist_edge.errors import ArtifactError, UsageError


@dataclass
class Loaded:
    """A format loaded for one (device, threads) setting."""

    call: Callable[[np.ndarray], object]  # one timed inference on a uint8 [N,1,28,28] batch
    logits: Callable[[np.ndarray], np.ndarray]  # float32 [N, 10] as numpy (accuracy)
    provider: str  # what really ran: an onnxruntime provider, or "torch:cpu" / "torch:cuda:0"
    device: str
    api_call: Callable[[np.ndarray], object] | None = None  # the public predict path, where there is one
    notes: tuple = ()
    placement: Callable[[], dict] | None = None  # nodes per onnxruntime provider (runtime.placement); not timed
    session: object = None  # the onnxruntime InferenceSession timed (ONNX formats), for its settings


@dataclass(frozen=True)
class FormatSpec:
    name: str
    label: str
    file: str  # inside the artifact folder
    needs_torch: bool
    load: Callable[[Path, str, int], Loaded]  # (file, device, threads)
    unavailable: Callable[[Path], str | None] | None = None  # why the file cannot run (in the worker: may need torch)


def _torch_device(device: str):
    from mnist_edge.torchrun import torch_device

    return torch_device(device)


def _torch_loaded(model, dev, threads: int) -> Loaded:
    import torch

    torch.set_num_threads(threads)
    cuda = dev.type == "cuda"

    def call(x):
        with torch.inference_mode():
            out = model(torch.from_numpy(x).to(dev))
            # on CUDA, .cpu() waits for the kernels: the clock sees the whole inference, as ONNX returns numpy
            return [o.cpu() for o in out] if cuda else out

    def logits(x):
        return call(x)[0].cpu().numpy()

    return Loaded(call=call, logits=logits, provider=f"torch:{dev}", device=str(dev))


def eager_unavailable(file: Path) -> str | None:
    """Why the eager baseline cannot run this checkpoint (None: it can). It rebuilds the network from the
    zoo by the name the checkpoint records: a network the zoo does not define has no class to rebuild here,
    and its TorchScript row times the same network."""
    from mnist_edge.errors import UnknownModelError
    from mnist_edge.training.checkpoint import read_checkpoint
    from mnist_edge.zoo.registry import get_spec

    name = read_checkpoint(file)["model"]
    try:
        get_spec(name)
    except UnknownModelError:
        return (f"{file.name} holds '{name}', not a zoo network: the eager row rebuilds zoo networks only "
                "(the torchscript row times the same network)")
    return None


def load_eager(file: Path, device: str, threads: int) -> Loaded:
    """The checkpoint rebuilt into the contract wrapper, in eval mode (a deliberate eager baseline)."""
    from mnist_edge.training.checkpoint import load_checkpoint
    from mnist_edge.zoo.networks import build_edge_model
    from mnist_edge.zoo.registry import get_spec

    dev = _torch_device(device)
    net, ckpt = load_checkpoint(file)
    model = build_edge_model(get_spec(ckpt["model"]), net).eval().to(dev)
    return _torch_loaded(model, dev, threads)


def load_torchscript(file: Path, device: str, threads: int) -> Loaded:
    """``model.pt`` only when the manifest beside it vouches for its hash: TorchScript is code (a
    ``__setstate__`` runs at load), so an unlisted file is refused, never loaded with a warning. The
    bytes loaded are the bytes hashed."""
    import io

    from mnist_edge.errors import ArtifactError
    from mnist_edge.runtime.hashcheck import read_verified

    data, _, manifest = read_verified(Path(file), None)
    if manifest is None:
        raise ArtifactError(f"{file} is not listed in a manifest.json beside it; TorchScript files are code, so "
                            "mnist-edge loads only those whose SHA-256 an export's manifest records "
                            "(re-export the folder with `mnist-edge export`)")
    import torch

    dev = _torch_device(device)
    with warnings.catch_warnings():  # torch 2.13 calls TorchScript deprecated; it is still what we ship
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        model = torch.jit.load(io.BytesIO(data), map_location=dev).eval()
    return _torch_loaded(model, dev, threads)


def load_onnx(file: Path, device: str, threads: int) -> Loaded:
    """Through ``mnist_edge.runtime.load`` (a folder's manifest hash is checked when it has one)."""
    from mnist_edge.runtime import load

    clf = load(file, device=device, threads=threads)
    # The classifier's own session (not a second one): same options, same provider as predict() uses.
    session = getattr(clf, "session", None) or getattr(clf, "_session")
    feed_name, outputs = C.INPUT_NAME, list(C.OUTPUT_NAMES)

    def call(x):
        return session.run(outputs, {feed_name: x})

    def logits(x):
        return call(x)[0]

    if Path(file).suffix == ".tflite":  # LiteRT: no onnxruntime node placement to count
        return Loaded(call=call, logits=logits, provider=clf.provider, device=clf.device, api_call=clf.predict,
                      notes=tuple(clf.notes), session=session)

    def placement():
        from mnist_edge.runtime.placement import measure_placement
        from mnist_edge.runtime.hashcheck import read_verified

        data, digest, _ = read_verified(file, None)
        if digest != clf.sha256:
            raise ArtifactError(f"{file} changed during the benchmark")
        return measure_placement(data, source=str(file), device=clf.device, threads=threads)

    return Loaded(call=call, logits=logits, provider=clf.provider, device=clf.device, api_call=clf.predict,
                  notes=tuple(clf.notes), placement=placement, session=session)


FORMATS: dict[str, FormatSpec] = {
    s.name: s
    for s in [
        FormatSpec("eager", "PyTorch eager", A.CHECKPOINT, True, load_eager, eager_unavailable),
        FormatSpec("torchscript", "TorchScript", A.TORCHSCRIPT, True, load_torchscript),
        FormatSpec("onnx", "ONNX fp32", A.ONNX, False, load_onnx),
        FormatSpec("int8", "ONNX int8", A.INT8, False, load_onnx),
        FormatSpec("tflite", "LiteRT fp32", A.TFLITE, False, load_onnx),
        FormatSpec("tflite-int8", "LiteRT int8", A.TFLITE_INT8, False, load_onnx),
    ]
}
RUNTIME_FORMATS = ("onnx", "int8", "tflite", "tflite-int8")  # the torch-free ones: what the race compares


def check_formats(names) -> list[str]:
    """The names in registry order, deduplicated; UsageError naming the valid ones for an unknown name."""
    names = list(names)
    for name in names:
        if name not in FORMATS:
            close = difflib.get_close_matches(str(name), FORMATS, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise UsageError(f"unknown format '{name}'.{hint} Valid formats: {', '.join(FORMATS)}")
    if not names:
        raise UsageError(f"no formats given; valid formats: {', '.join(FORMATS)}")
    return [n for n in FORMATS if n in names]


def unavailable_reason(spec: FormatSpec, folder: Path, torch_importable: bool) -> str | None:
    """Why ``spec`` cannot run from ``folder`` here (None: it can)."""
    if spec.needs_torch and not torch_importable:
        return "torch is not installed (runtime-only install: numpy + onnxruntime)"
    if not (folder / spec.file).is_file():
        how = " (export with --quantize)" if spec.name == "int8" else \
            " (export --quantize with the litert extra installed)" if spec.file.endswith(".tflite") else ""
        return f"{spec.file} is not in {folder}{how}"
    if spec.file.endswith(".tflite") and importlib.util.find_spec("ai_edge_litert") is None:
        return "ai-edge-litert is not installed (pip install ai-edge-litert)"
    return None
