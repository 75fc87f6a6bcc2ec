"""Static int8 quantization with onnxruntime, calibrated on class-balanced MNIST *training* images.

Defaults follow onnxruntime's guidance for CPUs: QDQ format, per-channel weights, signed int8 activations
and weights ("S8S8 with QDQ is the default setting for balance of performance and accuracy"), MinMax
calibration. Every option is a field of :class:`QuantizeOptions` and the whole recipe, including which
images calibrated the model, is recorded in the manifest and in the int8 file's metadata.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass

import numpy as np

from mnist_edge.contract import INPUT_NAME
from mnist_edge.errors import ExportError, UsageError

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
QUANT_FORMATS = ("qdq", "qoperator")
QUANT_TYPES = ("int8", "uint8")
CALIBRATION_BATCH = 100  # images per calibration feed; ranges are the same for any split into batches


@dataclass(frozen=True)
class QuantizeOptions:
    calibration_samples: int = 1000  # 100 per class
    calibration_method: str = "minmax"
    per_channel: bool = True
    quant_format: str = "qdq"
    activation_type: str = "int8"
    weight_type: str = "int8"
    reduce_range: bool = False  # 7-bit weights: only for CPUs without VNNI / dot-product instructions
    seed: int = 0  # picks the calibration images

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
        return self

    def to_dict(self) -> dict:
        return asdict(self)


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


def training_calibration_images(samples: int, seed: int, data_root=None) -> tuple[np.ndarray, dict]:
    """``samples`` class-balanced training images (never test images) and a record of which ones."""
    from mnist_edge.data import class_balanced_indices, load_mnist

    images, labels = load_mnist("train", root=data_root)
    idx = class_balanced_indices(labels, samples, seed)
    chosen = images[idx]
    source = {"split": "train", "selection": "class_balanced_indices", "seed": seed, "images": len(idx),
              "per_class": np.bincount(labels[idx], minlength=10).tolist(),
              "indices_sha256": hashlib.sha256(np.asarray(idx, dtype=np.int64).tobytes()).hexdigest()}
    return chosen, source


def custom_source(images: np.ndarray) -> dict:
    """Record for calibration images supplied by the caller (tests, experiments)."""
    images = np.ascontiguousarray(images)
    return {"split": "custom", "images": int(len(images)),
            "images_sha256": hashlib.sha256(images.tobytes()).hexdigest()}


def _softmax_nodes(path) -> list[str]:
    import onnx

    return [n.name for n in onnx.load(os.fspath(path)).graph.node if n.op_type == "Softmax"]


def quantize_int8(fp32_path: str | os.PathLike, out_path: str | os.PathLike, images: np.ndarray,
                  options: QuantizeOptions, *, source: dict) -> dict:
    """Write the static int8 model of ``fp32_path`` to ``out_path``; returns the recipe to record."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from mnist_edge.export.onnx_export import quiet

    options.validate()
    qtype = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[options.calibration_method]
    fmt = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}[options.quant_format]
    extra_options: dict = {}  # onnxruntime defaults: asymmetric activations, symmetric weights
    # Softmax stays float: quantized, `probabilities` would come in steps of 1/255 (ties, rows not summing
    # to 1). Its input is dequantized logits, so the int8 Conv/Gemm work is unchanged.
    exclude = _softmax_nodes(fp32_path)
    reader = ImageCalibrationReader(images)
    try:
        with quiet():
            quantize_static(os.fspath(fp32_path), os.fspath(out_path), reader, quant_format=fmt,
                            per_channel=options.per_channel, reduce_range=options.reduce_range,
                            activation_type=qtype[options.activation_type], weight_type=qtype[options.weight_type],
                            calibrate_method=method, op_types_to_quantize=None, nodes_to_exclude=exclude,
                            use_external_data_format=False, extra_options=extra_options)
    except OSError:
        raise  # disk full, read-only: the pipeline reports these with the folder they concern
    except Exception as e:
        text = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ExportError(f"onnxruntime quantize_static failed: {type(e).__name__}: {text}") from e
    return {
        "tool": "onnxruntime.quantization.quantize_static",
        "onnxruntime": ort.__version__,
        **options.to_dict(),
        "calibration_batch_size": reader.batch_size,
        "calibration_source": source,
        "op_types_to_quantize": "all onnxruntime supports",
        "nodes_to_exclude": exclude,
        "extra_options": extra_options,
    }
