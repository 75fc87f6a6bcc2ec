"""The input/output contract every exported artifact follows, and the metadata keys that describe it.

An exported model takes one input ``image``: uint8, shape [batch, 1, 28, 28] (dynamic batch), pixels as
MNIST stores them (0 background, 255 ink). The graph itself scales, normalizes and pads. It returns
``logits`` and ``probabilities``: float32, [batch, 10]. This module is numpy-free and torch-free so the
runtime, the exporter and the tests all read the same names from one place.
"""

from dataclasses import dataclass

from mnist_edge.errors import UsageError

CONTRACT_VERSION = "1"
INPUT_NAME = "image"
INPUT_DTYPE = "uint8"
INPUT_SHAPE = ("batch", 1, 28, 28)  # "batch" is the dynamic axis
OUTPUT_NAMES = ("logits", "probabilities")
NUM_CLASSES = 10  # MNIST's digits: the default labels
LABELS = tuple(str(d) for d in range(NUM_CLASSES))
MAX_CLASSES = 1000

# Keys written into ONNX metadata_props (all values are strings; JSON where structured).
META_PREFIX = "mnist_edge."
META_KEYS = {
    "contract": META_PREFIX + "contract",  # CONTRACT_VERSION
    "model": META_PREFIX + "model",  # registry name, e.g. "bn_cnn"
    "labels": META_PREFIX + "labels",  # JSON list of the 10 class names
    "input": META_PREFIX + "input",  # JSON: name, dtype, shape, value range
    "outputs": META_PREFIX + "outputs",  # JSON list of output names
    "normalization": META_PREFIX + "normalization",  # JSON: mean, std, input_size, resize
    "seed_file": META_PREFIX + "seed_file",
    "checkpoint_sha256": META_PREFIX + "checkpoint_sha256",
    "versions": META_PREFIX + "versions",  # JSON: mnist_edge, torch, onnx, onnxruntime
    "precision": META_PREFIX + "precision",  # "fp32" or "int8"
    "quantization": META_PREFIX + "quantization",  # JSON calibration recipe (int8 only)
    # JSON: temperature T (probabilities = softmax(logits / T) in the graph), the split it was fitted on,
    # ECE before/after. Absent in files exported before calibration: T = 1.
    "temperature": META_PREFIX + "temperature",
}
REQUIRED_META = ("contract", "model", "labels", "input", "outputs", "normalization")

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


@dataclass(frozen=True)
class Contract:
    """What one model's files promise: the pixels they take and the classes they answer.

    The graph takes raw uint8 grey pixels [batch, 1, 28, 28], pads them to ``input_size`` (LeNet-5's 32),
    repeats the grey channel ``channels`` times for a network that takes more than one, computes
    ``(pixel / 255 - mean) / std`` itself, and returns ``logits`` and ``probabilities`` over ``labels``.
    ``mean`` and ``std`` are what the network was trained with.
    """

    labels: tuple = LABELS
    input_size: int = 28
    mean: float = MNIST_MEAN
    std: float = MNIST_STD
    channels: int = 1

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def pad(self) -> int:
        """Pixels of padding on each side that bring the 28x28 digit to ``input_size``."""
        return (self.input_size - 28) // 2


def make_contract(labels=None, input_size: int = 28, mean: float = MNIST_MEAN, std: float = MNIST_STD,
                 channels: int = 1) -> Contract:
    """A Contract from what a user states, each value checked (UsageError naming it)."""
    labels = tuple(str(x) for x in labels) if labels is not None else LABELS
    if not 2 <= len(labels) <= MAX_CLASSES or len(set(labels)) != len(labels) or not all(labels):
        raise UsageError(f"labels must be 2 to {MAX_CLASSES} distinct, non-empty names, got {list(labels)[:12]}")
    if isinstance(input_size, bool) or not isinstance(input_size, int) or not 28 <= input_size <= 512 \
            or (input_size - 28) % 2:
        raise UsageError(f"input size {input_size!r} must be 28, or an even size above it up to 512 (the graph pads "
                         "the 28x28 digit by the same number of pixels on each side, as for LeNet-5's 32)")
    for what, v in (("mean", mean), ("std", std)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or abs(v) > 1e3:
            raise UsageError(f"{what} {v!r} must be a finite number (of pixels scaled to [0, 1])")
    if std <= 0:
        raise UsageError(f"std {std!r} must be positive")
    if isinstance(channels, bool) or not isinstance(channels, int) or not 1 <= channels <= 16:
        raise UsageError(f"channels {channels!r} must be a whole number from 1 to 16 (the grey digit goes into each)")
    return Contract(labels=labels, input_size=input_size, mean=float(mean), std=float(std), channels=channels)
