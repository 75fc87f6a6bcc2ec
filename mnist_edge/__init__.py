"""mnist-edge: take a small PyTorch digit classifier to a device: export it to TorchScript, ONNX and static int8
ONNX, each file gated against PyTorch, and run it anywhere with numpy and onnxruntime.

Importing this package needs only numpy (and onnxruntime for the runtime); torch is imported inside the
functions that train or export. The public surface:

- :func:`export`: a network of your own (a ``torch.nn.Module``) through the whole export pipeline.
- :func:`train`: a network of your own trained by a general ``seed`` or ``fast`` recipe.
- :mod:`mnist_edge.runtime` (``load``, ``Classifier``): the torch-free runtime.
- :class:`MnistEdgeError`: the base of every error the package raises.
"""

from mnist_edge.errors import MnistEdgeError
from mnist_edge.version import __version__

__all__ = ["__version__", "MnistEdgeError", "export", "train"]


def export(net, **kwargs):
    """Export ``net`` (in eval mode) like a zoo model: TorchScript, ONNX and int8 ONNX, every gate, the
    self-test bundle and the manifest. Keywords: ``name``, ``out`` (required), ``quantize=True``,
    ``labels=None`` (default 0-9), ``input_size=28``, ``mean``/``std`` (default MNIST's), ``data=None``
    (MNIST; or a folder or .npz), ``search=False`` (search the int8 recipe on this machine), ``recipe``,
    ``progress``. Returns the ExportResult (``.out``, ``.manifest``, ``.checks``).
    See :func:`mnist_edge.exporter.api.export_net`."""
    from mnist_edge.exporter.api import export_net

    return export_net(net, **kwargs)


def train(net, **kwargs):
    """Train ``net`` by a general recipe and write a checkpoint ``mnist-edge export --net`` takes. Keywords:
    ``name`` (required), ``out`` (checkpoint path), ``recipe="fast"`` or ``"seed"``, ``epochs``, ``data``,
    ``labels``, ``input_size``, ``mean``/``std``, ``seed``, ``progress``. Returns the TrainResult.
    See :func:`mnist_edge.training.api.train_net`."""
    from mnist_edge.training.api import train_net

    return train_net(net, **kwargs)
