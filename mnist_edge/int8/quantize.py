"""Static int8 quantization with onnxruntime, calibrated on class-balanced MNIST *training* images.

Defaults follow onnxruntime's guidance for CPUs: QDQ format, per-channel weights, signed int8 activations
and weights ("S8S8 with QDQ is the default setting for balance of performance and accuracy"), MinMax
calibration. Every option is a field of :class:`QuantizeOptions` (one object from the CLI, a recipe file
or the search down to :func:`quantize_int8`) and the whole recipe, including which images calibrated the
model and what onnxruntime's quantizer logged, is recorded in the manifest and in the int8 file's metadata.
Needs ``onnx`` and ``onnxruntime``, never torch (install the wheel with its ``[quantize]`` extra).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

from mnist_edge.contract import INPUT_NAME
from mnist_edge.errors import ExportError, UsageError, first_line
from mnist_edge.int8.channel_pad import MULTIPLES as PAD_MULTIPLES
from mnist_edge.system.scratch import temp_dir_as

CALIBRATION_METHODS = ("minmax", "entropy", "percentile", "distribution")
QUANT_FORMATS = ("qdq", "qoperator")
QUANT_TYPES = ("int8", "uint8")
CALIBRATION_BATCH = 100  # images per calibration feed; ranges are the same for any split into batches
# A node kept in float is named by op type and its index among that op type's nodes in graph order
# ("Conv[0]": the first Conv), not by the exporter's node name, so a recipe survives a re-export.
_SELECTOR = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)\[(\d+)\]$")
ALWAYS_FLOAT = ("Softmax",)  # see quantize_int8
# the options that name nodes, and the op type each must name (None: any)
SELECTOR_FIELDS = {"keep_float": None, "relu_before_pool": "MaxPool", "pool_before_activation": "MaxPool",
                   "pad_channels": "Conv"}
LIST_FIELDS = ("op_types", *SELECTOR_FIELDS)  # lists in JSON, tuples here


def _shown(value) -> str:
    """A list option's value as a message shows it: a tuple as the JSON list it came from, anything else
    (a recipe's 5 or "Conv[0]") as it is, never iterated."""
    return f"{list(value) if isinstance(value, tuple) else value!r:.80}"


@dataclass(frozen=True)
class QuantizeOptions:
    """One int8 recipe: every choice onnxruntime's static quantizer offers that matters for these models."""

    calibration_samples: int = 1000  # 100 per class
    calibration_method: str = "minmax"
    percentile: float = 99.999  # with calibration_method "percentile" only
    per_channel: bool = True
    quant_format: str = "qdq"
    activation_type: str = "int8"
    weight_type: str = "int8"
    reduce_range: bool = False  # 7-bit weights: only for CPUs without VNNI / dot-product instructions
    preprocess: bool = False  # onnxruntime's quant_pre_process (shape inference + graph optimization) first
    keep_float: tuple = ()  # node selectors such as "Conv[0]" left in float (besides Softmax)
    op_types: tuple = ()  # quantize only these op types ("Conv", "Gemm"); empty: all onnxruntime supports
    seed: int = 0  # picks the calibration images
    # exact float-graph rewrites first (mnist_edge.int8.rewrites): "MaxPool[1]" -> Relu moved before it
    relu_before_pool: tuple = ()
    nhwc_flatten: bool = False  # flatten in NHWC order (fc weights permuted) so no Transpose precedes the QGemm
    pad_channels: tuple = ()  # "Conv[1]": input channels zero-padded to a multiple of 4 (mnist_edge.int8.channel_pad)
    pad_multiple: int = 4  # ... or of 8 or 16, so that a float conv feeding it fills onnxruntime's NCHWc blocks
    pool_before_activation: tuple = ()  # "MaxPool[0]": Relu/Tanh -> MaxPool becomes MaxPool -> Relu/Tanh

    def __post_init__(self):
        # JSON gives lists; the dataclass is frozen and hashable, so hold tuples
        for name in LIST_FIELDS:
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))

    def validate(self) -> "QuantizeOptions":
        def choice(flag, value, valid):
            if value not in valid:
                raise UsageError(f"{flag} {value!r} is not valid; choose one of: {', '.join(valid)}")

        choice("--calibration-method", self.calibration_method, CALIBRATION_METHODS)
        choice("--quant-format", self.quant_format, QUANT_FORMATS)
        choice("--activation-type", self.activation_type, QUANT_TYPES)
        choice("--weight-type", self.weight_type, QUANT_TYPES)
        n = self.calibration_samples
        if isinstance(n, bool) or not isinstance(n, int) or not 10 <= n <= 60_000:
            raise UsageError(f"--calibration-samples {n!r} must be an integer from 10 to 60000 "
                             "(at least one image per class; the training set has 60,000)")
        p = self.percentile
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 90.0 <= p <= 100.0:
            raise UsageError(f"--percentile {p!r} must be a number from 90 to 100 (onnxruntime's default 99.999)")
        for flag in ("per_channel", "reduce_range", "preprocess", "nhwc_flatten"):
            if not isinstance(getattr(self, flag), bool):
                raise UsageError(f"{flag} {getattr(self, flag)!r} must be true or false")
        if isinstance(self.pad_multiple, bool) or self.pad_multiple not in PAD_MULTIPLES:
            raise UsageError(f"pad_multiple {self.pad_multiple!r} is not valid; choose one of: "
                             f"{', '.join(map(str, PAD_MULTIPLES))}")
        if not isinstance(self.keep_float, tuple) or not all(isinstance(s, str) and _SELECTOR.match(s)
                                                             for s in self.keep_float):
            raise UsageError(f"keep_float {_shown(self.keep_float)} must be a list of node selectors such as "
                             "'Conv[0]' (op type, then its index among that op type's nodes)")
        for name, op in SELECTOR_FIELDS.items():
            value = getattr(self, name)
            if op and (not isinstance(value, tuple) or not all(
                    isinstance(s, str) and _SELECTOR.match(s) and s.startswith(f"{op}[") for s in value)):
                raise UsageError(f"{name} {_shown(value)} must be a list of {op} selectors such as '{op}[1]'")
        both = sorted(set(self.relu_before_pool) & set(self.pool_before_activation))
        if both:
            raise UsageError(f"{', '.join(both)}: in both relu_before_pool and pool_before_activation (they undo "
                             "each other); name a pool in one of them")
        if not isinstance(self.op_types, tuple) or not all(isinstance(s, str) and s.isidentifier()
                                                           for s in self.op_types):
            raise UsageError(f"op_types {_shown(self.op_types)} must be a list of ONNX op types such as 'Conv'")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise UsageError(f"seed {self.seed!r:.60} must be an integer >= 0 (it picks the calibration images)")
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        for name in LIST_FIELDS:
            d[name] = list(getattr(self, name))
        return d

    @classmethod
    def from_dict(cls, data: dict, source: str = "recipe") -> "QuantizeOptions":
        """Options from a recipe's dict; unknown keys are an error (a typo must not fall back to a default)."""
        if not isinstance(data, dict):
            raise UsageError(f"{source}: quantization options must be a JSON object, got {type(data).__name__}")
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise UsageError(f"{source}: unknown quantization option(s) {', '.join(unknown)}; "
                             f"valid: {', '.join(valid)}")
        return cls(**data).validate()

    def differences(self) -> dict:
        """The fields that differ from the defaults: a short name for a recipe."""
        base = QuantizeOptions().to_dict()
        return {k: v for k, v in self.to_dict().items() if base[k] != v}

    def with_(self, **changes) -> "QuantizeOptions":
        return replace(self, **changes).validate()


class ImageCalibrationReader:
    """onnxruntime's calibration contract: ``get_next()`` returns a feed dict, then ``None``.

    Feeds uint8 [b, 1, 28, 28], exactly the contract's input, so calibration sees the graph's own
    normalization.
    """

    def __init__(self, images: np.ndarray, batch_size: int = CALIBRATION_BATCH):
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.shape[-2:] != (28, 28) or images.ndim not in (3, 4):
            raise UsageError(f"calibration images must be uint8 [N, 28, 28] or [N, 1, 28, 28], "
                             f"got {images.dtype} {list(images.shape)}")
        if len(images) == 0:
            raise UsageError("calibration needs at least one image")
        self.images = np.ascontiguousarray(images.reshape(len(images), 1, 28, 28))
        self.batch_size = batch_size
        self._pos = 0

    def get_next(self) -> dict | None:
        if self._pos >= len(self.images):
            return None
        batch = self.images[self._pos:self._pos + self.batch_size]
        self._pos += self.batch_size
        return {INPUT_NAME: batch}

    def rewind(self) -> None:
        self._pos = 0

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)


def training_calibration_images(samples: int, seed: int, data_dir=None) -> tuple[np.ndarray, dict]:
    """``samples`` class-balanced training images (never test images) and a record of which ones, loaded
    from ``data_dir``; with the data in memory, :func:`mnist_edge.data.dataset.balanced_sample`."""
    from mnist_edge.data.dataset import Split, balanced_sample
    from mnist_edge.data.mnist import load_mnist

    return balanced_sample(Split(*load_mnist("train", data_dir=data_dir)), samples, seed)


def custom_source(images: np.ndarray) -> dict:
    """Record for calibration images supplied by the caller (tests, experiments)."""
    images = np.ascontiguousarray(images)
    return {"split": "custom", "images": int(len(images)),
            "images_sha256": hashlib.sha256(images.tobytes()).hexdigest()}


def node_selectors(model) -> dict[str, str]:
    """``{"Conv[0]": node name, ...}`` for every node of a ModelProto, in graph order."""
    seen: dict[str, int] = {}
    out = {}
    for node in model.graph.node:
        k = seen.get(node.op_type, 0)
        seen[node.op_type] = k + 1
        out[f"{node.op_type}[{k}]"] = node.name
    return out


def resolve_keep_float(model, selectors) -> list[str]:
    """Node names for ``selectors`` plus every Softmax; an unknown selector names some valid ones."""
    table = node_selectors(model)
    missing = [s for s in selectors if s not in table]
    if missing:
        raise UsageError(f"keep_float {', '.join(missing)} matches no node of this graph; its nodes are: "
                         f"{some(list(table))}")
    names = [table[s] for s in selectors]
    names += [n.name for n in model.graph.node if n.op_type in ALWAYS_FLOAT and n.name not in names]
    return names


def some(names: list, limit: int = 12) -> str:
    """The first ``limit`` of ``names``, then "…" and how many there are (a large graph has hundreds)."""
    shown = ", ".join(map(str, names[:limit]))
    return shown if len(names) <= limit else f"{shown}, … ({len(names)} in all)"


def check_selectors(fp32_path, options: QuantizeOptions, workdir) -> None:
    """Every node a recipe names exists in ``fp32_path``'s graph: checked on the graph the quantizer will
    see (after the recipe's rewrites and pre-processing), before any quantization. Otherwise each trial of a
    search fails with the same error and the search ends "no int8 recipe passed the accuracy gates"."""
    import onnx

    try:
        graph = float_graph(fp32_path, options, workdir)  # the rewrites refuse selectors they cannot apply to
        resolve_keep_float(onnx.load(os.fspath(graph)), options.keep_float)
    except UsageError as e:
        raise UsageError(f"the recipe does not fit '{fp32_path}': {e}") from None


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record):
        if record.levelno >= logging.WARNING:
            self.messages.append(f"{record.levelname.lower()}: {record.getMessage().strip()}")


@contextlib.contextmanager
def quantizer_log():
    """Collect what onnxruntime.quantization logs (through the root logger) and warns, printing nothing.

    Yields the list the messages are appended to; the caller re-emits and records them. Our handler is the
    root logger's only one for the duration, so ``logging.warning`` neither prints nor calls
    ``basicConfig`` (which would install a handler on a redirected stderr for good).
    """
    root = logging.getLogger()
    handler = _Records()
    saved = root.handlers[:], root.level
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), \
                warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield handler.messages
            handler.messages += [f"warning: {w.message}" for w in caught]
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    seen = set()
    handler.messages[:] = [m for m in handler.messages if not (m in seen or seen.add(m))]


def float_graph(fp32_path, options: QuantizeOptions, workdir) -> Path:
    """The float graph the quantizer will see: ``fp32_path`` itself, or (in ``workdir``) it after the
    recipe's exact rewrites (:mod:`mnist_edge.int8.rewrites`) and then quant_pre_process."""
    src = Path(fp32_path)
    if options.relu_before_pool or options.nhwc_flatten or options.pad_channels or options.pool_before_activation:
        import onnx

        from mnist_edge.int8.rewrites import apply_rewrites

        model = onnx.load(os.fspath(src))
        apply_rewrites(model, relu_pools=options.relu_before_pool, flatten=options.nhwc_flatten,
                       pad=options.pad_channels, pad_multiple=options.pad_multiple,
                       pools_first=options.pool_before_activation)
        src = Path(workdir) / "rewritten.onnx"
        onnx.save(model, os.fspath(src))
    if not options.preprocess:
        return src
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = Path(workdir) / "preprocessed.onnx"
    quant_pre_process(os.fspath(src), os.fspath(out), skip_symbolic_shape=False)
    return out


def quantize_int8(fp32_path: str | os.PathLike, out_path: str | os.PathLike, images: np.ndarray,
                  options: QuantizeOptions, *, source: dict) -> dict:
    """Write the static int8 model of ``fp32_path`` to ``out_path``; returns the recipe to record.

    The recipe's ``onnxruntime_messages`` holds what the quantizer logged (e.g. "consider pre-processing",
    "QOperator ... bad performance on x64"); callers show them to the user.
    """
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    options.validate()
    qtype = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile,
              "distribution": CalibrationMethod.Distribution}[options.calibration_method]
    fmt = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}[options.quant_format]
    # onnxruntime defaults otherwise: asymmetric activations, symmetric weights
    extra_options: dict = {"CalibPercentile": options.percentile} if options.calibration_method == "percentile" else {}
    reader = ImageCalibrationReader(images)
    work = Path(tempfile.mkdtemp(prefix=".quantize-", dir=Path(out_path).parent))
    try:
        # onnxruntime's own temporary folders go into ``work`` too, so they go when it goes
        with quantizer_log() as messages, temp_dir_as(work):
            src = float_graph(fp32_path, options, work)
            if Path(src) == Path(fp32_path):
                # quantize_static writes "<name>-inferred.onnx" beside the file it is given: a copy here, so
                # nothing is ever written beside the source (a read-only folder, another run's same file)
                src = work / "source.onnx"
                shutil.copyfile(fp32_path, src)
            # Softmax stays float: quantized, `probabilities` would come in steps of 1/255 (ties, rows not
            # summing to 1). Its input is dequantized logits, so the int8 Conv/Gemm work is unchanged.
            exclude = resolve_keep_float(onnx.load(os.fspath(src)), options.keep_float)
            quantize_static(os.fspath(src), os.fspath(out_path), reader, quant_format=fmt,
                            per_channel=options.per_channel, reduce_range=options.reduce_range,
                            activation_type=qtype[options.activation_type], weight_type=qtype[options.weight_type],
                            calibrate_method=method, op_types_to_quantize=list(options.op_types) or None,
                            nodes_to_exclude=exclude, use_external_data_format=False, extra_options=extra_options)
    except (OSError, UsageError):
        raise  # disk full, read-only: the pipeline reports these with the folder they concern
    except Exception as e:
        text = first_line(e)
        raise ExportError(f"onnxruntime quantize_static failed: {type(e).__name__}: {text}") from e
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # temporary paths would make the record depend on where it ran
    messages = [m.replace(os.fspath(work), "<tmp>") for m in messages]
    return {
        "tool": "onnxruntime.quantization.quantize_static",
        "onnxruntime": ort.__version__,
        **options.to_dict(),
        "calibration_batch_size": reader.batch_size,
        "calibration_source": source,
        "op_types_to_quantize": list(options.op_types) or "all onnxruntime supports",
        "nodes_to_exclude": exclude,
        "extra_options": extra_options,
        "onnxruntime_messages": messages,
    }
