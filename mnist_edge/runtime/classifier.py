"""The runtime classifier: load an exported model (file or artifact folder) and predict digits.

Loading does every check before the first prediction, in this order: if an artifact manifest describes
the file, check its size and SHA-256 (mnist_edge.manifest: a truncated file or a flipped byte fails here,
before any parsing); read the bytes once (size-capped) and compare their hash again; read IR version,
opsets, metadata and external-data references from those bytes (no onnx package needed); check the
metadata contract; create the onnxruntime session from the same bytes (so the file checked is the file
run, and no external file can be pulled in); check the provider really running and the session's
inputs and outputs. A ``.tflite`` file takes the same steps, with its metadata read from the flatbuffer and
LiteRT's interpreter behind an onnxruntime-like session (:mod:`mnist_edge.runtime.litert`).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mnist_edge import contract as C
from mnist_edge.artifacts import ONNX_FILES, RUNTIMES, resolve
from mnist_edge.runtime.confidence import check_min_confidence, softmax, temperature_from_metadata
from mnist_edge.errors import ArtifactError, ContractError, DeviceError, UsageError, first_line
from mnist_edge.runtime import checks
from mnist_edge.runtime.inputs import as_batch
from mnist_edge.runtime.litert import create_litert_session, read_metadata
from mnist_edge.runtime.onnxfile import OnnxInfo, inspect_bytes
from mnist_edge.runtime.session import CUDA, create_session
from mnist_edge.runtime.hashcheck import pick_file, read_verified

CHUNK = 512  # images per session.run: bounds memory (cnn at 4,096 per call took robustness to 1.8 GB RSS; a Pi has 1-8 GB)
UNSURE = -1  # Prediction.labels where the top probability is below min_confidence


@dataclass(frozen=True)
class Prediction:
    """Results for a batch of N images (N may be 0).

    labels: int64 [N], the most probable class (the digit; ``Classifier.labels`` names them), or
      ``UNSURE`` (-1) where ``min_confidence`` was given and that class's probability is below it.
    probabilities: float32 [N, K] over the K classes of ``Classifier.labels`` (10 digits for MNIST models),
      softmax(logits / T) with the model's temperature T (1 for files exported before calibration).
      logits: float32 [N, K], the model's output.
    topk: int64 [N, k], classes by decreasing probability, unsure or not (``topk[:, 0]`` is the best
      guess); ``topk_probabilities``: float32 [N, k].
    confident: bool [N], False exactly where ``labels`` is UNSURE (all True without min_confidence).
    """

    labels: np.ndarray
    probabilities: np.ndarray
    logits: np.ndarray
    topk: np.ndarray
    confident: np.ndarray = None  # type: ignore[assignment]  # None: all confident (set in __post_init__)
    min_confidence: float | None = None

    def __post_init__(self):
        if self.confident is None:
            object.__setattr__(self, "confident", np.ones(len(self.labels), dtype=bool))

    @property
    def topk_probabilities(self) -> np.ndarray:
        return np.take_along_axis(self.probabilities, self.topk, axis=1)

    def __len__(self) -> int:
        return len(self.labels)

    def to_list(self, names=C.LABELS) -> list[dict]:
        """One dict per image, JSON-ready: ``label`` (None when unsure), ``probability`` (of the most
        probable class, unsure or not), ``confident`` and the ``top_k`` list (best guess first)."""
        out = []
        for i in range(len(self)):
            top = [{"label": names[c], "probability": float(self.probabilities[i, c])} for c in self.topk[i]]
            best = int(self.topk[i, 0])
            out.append({"label": names[best] if self.confident[i] else None,
                        "probability": float(self.probabilities[i, best]), "confident": bool(self.confident[i]),
                        "top_k": top})
        return out


@dataclass(frozen=True)
class Classifier:
    """A loaded, checked model. ``predict`` is safe to call from many threads at once (onnxruntime's
    ``InferenceSession.run`` is thread-safe and this object holds no mutable state)."""

    path: Path
    sha256: str
    verified: bool  # True when the bytes matched an artifact manifest's hash
    model: str  # registry name from the metadata, e.g. "bn_cnn"
    precision: str  # "fp32" or "int8" (metadata), "unknown" if not recorded
    labels: tuple
    metadata: dict
    device: str  # what really runs: "cpu" or "cuda:N"
    providers: tuple  # session.get_providers(), in priority order
    notes: tuple = ()  # e.g. why auto chose the CPU; advice for int8 on CUDA
    ir_version: int = 0
    opset: int | None = None
    temperature: float = 1.0  # probabilities = softmax(logits / T); from metadata mnist_edge.temperature
    _session: object = field(default=None, repr=False, compare=False)

    @property
    def provider(self) -> str:
        return self.providers[0]

    @property
    def session(self):
        """The onnxruntime InferenceSession (for benchmarks: ``run`` on it skips predict's input checks)."""
        return self._session

    def predict(self, images, *, top_k: int = 1, min_confidence: float | None = None) -> Prediction:
        """Classify ``images``: uint8 (28,28), (N,28,28) or (N,1,28,28) with 0 = background, 255 = ink;
        float arrays in [0, 1] (converted with round(x * 255)); other integer types with values 0-255;
        lists through np.asarray. Anything else, NaN/Inf or values out of range: InputError (never a label).
        Empty batch: empty result. See :mod:`mnist_edge.runtime.inputs` for the full rules.
        ``min_confidence`` P in (0, 1): an image whose most probable class has probability below P gets
        label ``UNSURE`` (-1) and ``confident`` False (a bad P is a UsageError).
        """
        k = _check_top_k(top_k, len(self.labels))
        p_min = None if min_confidence is None else check_min_confidence(min_confidence)
        batch = as_batch(images)
        n = len(batch)
        if n == 0:
            empty = np.zeros((0, len(self.labels)), np.float32)
            return Prediction(np.zeros(0, np.int64), empty, empty.copy(), np.zeros((0, k), np.int64),
                              np.zeros(0, bool), p_min)
        logits = np.concatenate([_run(self._session, batch[start:start + CHUNK], self.path)
                                 for start in range(0, n, CHUNK)]).astype(np.float32, copy=False)
        if logits.shape != (n, len(self.labels)):
            raise ArtifactError(f"{self.path} returned logits of shape {logits.shape} for {n} images, "
                                f"expected ({n}, {len(self.labels)})")
        if not np.isfinite(logits).all():
            raise ArtifactError(f"{self.path} produced non-finite logits for finite input; the model is broken")
        # Rank by logits and take softmax(logits / T) here, in float64, rather than use the graph's
        # "probabilities": one rule for every file, whatever its precision (the exporter keeps Div and
        # Softmax in float, so for our files the two agree to float rounding; a foreign int8 file may
        # quantize them). Stable sort: a tie goes to the lower class, as argmax does.
        probs = softmax(logits, self.temperature).astype(np.float32)
        topk = np.argsort(-logits, axis=1, kind="stable")[:, :k].astype(np.int64)
        labels = topk[:, 0].copy()
        confident = np.ones(n, bool) if p_min is None else probs[np.arange(n), labels] >= p_min
        labels[~confident] = UNSURE
        return Prediction(labels=labels, probabilities=probs, logits=logits, topk=topk, confident=confident,
                          min_confidence=p_min)

    def predict_files(self, paths, *, top_k: int = 1, min_confidence: float | None = None,
                      **image_limits) -> Prediction:
        """Read each image file (MNIST-style normalization, see :mod:`mnist_edge.runtime.images`), predict."""
        from mnist_edge.runtime.images import load_images

        return self.predict(load_images(list(paths), **image_limits), top_k=top_k, min_confidence=min_confidence)

    def describe(self) -> str:
        check = "hash verified against its manifest" if self.verified else "no manifest hash checked"
        return (f"{self.path} ({self.model}, {self.precision}, sha256 {self.sha256[:12]}, {check}) "
                f"on {self.device} via {self.provider}")


def _run(session, batch: np.ndarray, source) -> np.ndarray:
    """The logits output for ``batch``; onnxruntime's failure (a broken graph) as an ArtifactError."""
    try:
        return np.asarray(session.run([C.OUTPUT_NAMES[0]], {C.INPUT_NAME: batch}, _quiet_run_options())[0])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own pybind classes (Fail, InvalidArgument...)
        text = first_line(e)
        text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
        text = re.sub(r"/\S*onnxruntime\S*:\d+ \S+\([^)]*\) ", "", text)  # source path and signature
        raise ArtifactError(f"{source} failed to run on a batch of {len(batch)}: {text[:300]}") from None


@functools.lru_cache(maxsize=1)
def _quiet_run_options():
    """RunOptions that keep onnxruntime's own log of a failed kernel off stderr (the error is raised anyway)."""
    import onnxruntime

    ro = onnxruntime.RunOptions()
    ro.log_severity_level = 4
    return ro


def _dry_run(session, source: str, classes: int) -> None:
    """Run two fixed images through a new session, so a model that loads but cannot run (a QLinearConv
    whose shapes a flipped byte broke, say) fails at load, not at the first predict."""
    probe = (np.arange(2 * 28 * 28, dtype=np.int64) * 37 % 256).astype(np.uint8).reshape(2, 1, 28, 28)
    logits = _run(session, probe, source)
    if logits.shape != (2, classes) or not np.isfinite(logits).all():
        raise ArtifactError(f"{source} does not work: on a test batch of 2 images it returned "
                            f"{'non-finite logits' if logits.shape == (2, classes) else f'shape {logits.shape}'}"
                            f", expected finite float32 (2, {classes})")


def _litert_session(data: bytes, source: str, device: str, threads: int | None, probe: bool):
    """(session, device used, note) for a .tflite: LiteRT runs on the CPU here (XNNPACK); a GPU is refused.
    ``probe``: the file is not hash-checked against a manifest, so it is first loaded in a forked child
    (LiteRT crashes on some malformed files; mnist_edge.runtime.litert)."""
    from mnist_edge.system.devices import parse_device

    kind, _ = parse_device(device)
    if kind == "cuda":
        raise DeviceError(f"device {device!r}: {source} is a LiteRT file, which mnist-edge runs on the CPU only; "
                          "load model.onnx for CUDA")
    note = "auto: CPU, because LiteRT files run on the CPU here" if kind == "auto" else ""
    return create_litert_session(data, source=source, threads=threads, probe=probe), "cpu", note


def _check_top_k(top_k, classes: int) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or not 1 <= top_k <= classes:
        raise UsageError(f"top_k must be an integer from 1 to {classes}, got {top_k!r}")
    return int(top_k)


def resolve_model(path=None, precision: str | None = None, runtime: str = "onnxruntime") -> tuple[Path, dict | None]:
    """The model file to load for ``path`` (a zoo name, an artifact folder or a file; None: the default
    model, see :func:`mnist_edge.artifacts.resolve`) and, for a folder, its (required) manifest. In a folder,
    ``runtime`` ("onnxruntime" or "litert") and ``precision`` ("fp32" or "int8") pick the file."""
    if runtime not in RUNTIMES:
        raise UsageError(f"unknown runtime {runtime!r}; valid: {', '.join(RUNTIMES)}")
    if precision is not None and precision not in ONNX_FILES:
        raise UsageError(f"unknown precision {precision!r}; valid: {', '.join(ONNX_FILES)}")
    artifact = resolve(path)
    if artifact.file is None:
        return pick_file(artifact.folder, precision, RUNTIMES[runtime])
    if precision is not None or runtime != "onnxruntime":
        raise UsageError(f"precision and runtime choose a file inside an artifact folder; {artifact.file} is a file")
    return artifact.file, None


def load(path=None, *, device: str = "cpu", threads: int | None = None, precision: str | None = None,
         spinning: bool = False, strict: bool = False, runtime: str = "onnxruntime") -> Classifier:
    """Load an exported model and check it completely; see the module docstring for the order of checks.

    path: an .onnx file (verified against a manifest.json beside it when that lists it), or an artifact
      folder (manifest required; ``precision`` "int8" or "fp32" picks the file, default int8 when the
      manifest lists one), or a zoo name (``exported/NAME`` here, else the copy installed with the package;
      :func:`mnist_edge.artifacts.resolve`). None: the default model, bn_cnn.
    device: "cpu", "cuda" / "cuda:N" (CUDA or a DeviceError, never a silent CPU run), or "auto" (CUDA when
      it really initialises, else CPU; ``Classifier.device`` and ``notes`` say which and why).
    threads: onnxruntime intra-op threads (None: its default, one per physical core).
    spinning: let idle worker threads spin between runs (faster back-to-back calls, CPU burnt meanwhile).
    runtime: in a folder, "onnxruntime" (the .onnx files, default) or "litert" (the .tflite files). A
      ``.tflite`` file, named or picked, runs through ai-edge-litert (mnist_edge.runtime.litert) on the CPU.
    strict: fail (DeviceError) when onnxruntime would run any node of the model on the CPU although
      ``device`` is a GPU (its ``session.disable_cpu_ep_fallback``); no effect on ``device="cpu"``.
    """
    file, manifest = resolve_model(path, precision, runtime)
    data, sha256, manifest = read_verified(file, manifest)  # hash-checked before anything parses them
    source = str(file)
    litert = file.suffix == ".tflite"
    info = OnnxInfo() if litert else inspect_bytes(data, source)
    meta = read_metadata(data, source) if litert else dict(info.metadata)
    parsed = checks.check_metadata(meta, source)
    temperature = temperature_from_metadata(meta, source)  # 1.0 for files exported before calibration
    if manifest is not None and meta[C.META_KEYS["model"]] != manifest["model"]:
        raise ContractError(f"{source} holds model {meta[C.META_KEYS['model']]!r}, its manifest says "
                            f"{manifest['model']!r}")
    if litert:
        session, used, note = _litert_session(data, source, device, threads, probe=manifest is None)
    else:
        session, used, note = create_session(data, source=source, device=device, threads=threads,
                                             spinning=spinning, ir_version=info.ir_version, opset=info.onnx_opset,
                                             strict=strict)
    labels = tuple(parsed["labels"])
    checks.check_session_io(session, source, len(labels))
    _dry_run(session, source, len(labels))
    precision_meta = meta.get(C.META_KEYS["precision"], "unknown")
    notes = [note] if note else []
    if session.get_providers()[0] == CUDA and precision_meta == "int8":
        notes.append("int8 QDQ model on CUDA: onnxruntime has no int8 Conv/Gemm kernels for CUDA, so it runs "
                     "simulated quantization in float32 (no int8 speed-up); on a GPU load the fp32 model.onnx")
    return Classifier(path=file, sha256=sha256, verified=manifest is not None, model=meta[C.META_KEYS["model"]],
                      precision=precision_meta, labels=labels, metadata=meta, device=used,
                      providers=tuple(session.get_providers()), notes=tuple(notes), ir_version=info.ir_version,
                      opset=info.onnx_opset, temperature=temperature, _session=session)
