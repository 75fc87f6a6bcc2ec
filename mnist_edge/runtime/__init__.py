"""The torch-free runtime: load an exported ONNX model on CPU or CUDA, or a LiteRT file on the CPU, and classify digits.

Needs only numpy and onnxruntime (Pillow, the optional extra ``images``, for image files; ai-edge-litert,
the extra ``litert-runtime``, for ``.tflite`` files). Never imports torch or TensorFlow, directly or
indirectly; tests run it with both made unimportable.

    from mnist_edge.runtime import load
    clf = load("exported/bn_cnn", device="auto")   # folder: hash-checked against its manifest
    pred = clf.predict(images_uint8_N_28_28, top_k=3)
    pred.labels, pred.probabilities, pred.topk, clf.device, clf.notes
    clf.predict_files(["photo_of_a_7.jpg"])        # MNIST-style normalization of real photos/drawings
    load("exported/bn_cnn", runtime="litert")       # model.int8.tflite through LiteRT (XNNPACK)
"""

from mnist_edge.runtime.classifier import (
    Classifier,
    Prediction,
    load,
    resolve_model,
)
from mnist_edge.runtime.images import load_image, load_images, normalize_digit
from mnist_edge.runtime.inputs import as_batch
from mnist_edge.runtime.predict import classify_files

__all__ = [
    "Classifier",
    "Prediction",
    "as_batch",
    "load",
    "load_image",
    "load_images",
    "normalize_digit",
    "classify_files",
    "resolve_model",
]
