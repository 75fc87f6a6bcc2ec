"""mnist-edge: train documented MNIST classifiers, export them to TorchScript/ONNX/int8, run them anywhere.

Importing this package needs only numpy (and onnxruntime for the runtime); torch is imported inside the
functions that train or export.
"""

__version__ = "0.1.0"

from mnist_edge.errors import MnistEdgeError  # noqa: E402

__all__ = ["__version__", "MnistEdgeError"]
