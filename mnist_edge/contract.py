"""The input/output contract every exported artifact follows, and the metadata keys that describe it.

An exported model takes one input ``image``: uint8, shape [batch, 1, 28, 28] (dynamic batch), pixels as
MNIST stores them (0 background, 255 ink). The graph itself scales, normalizes and pads. It returns
``logits`` and ``probabilities``: float32, [batch, 10]. This module is numpy-free and torch-free so the
runtime, the exporter and the tests all read the same names from one place.
"""

CONTRACT_VERSION = "1"
INPUT_NAME = "image"
INPUT_DTYPE = "uint8"
INPUT_SHAPE = ("batch", 1, 28, 28)  # "batch" is the dynamic axis
OUTPUT_NAMES = ("logits", "probabilities")
NUM_CLASSES = 10
LABELS = tuple(str(d) for d in range(NUM_CLASSES))

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
