"""Export layer: a PyTorch network to TorchScript, ONNX and static int8 ONNX, each checked against PyTorch.

Importing this package imports neither torch nor onnx (only numpy); the functions that export import them.

    from mnist_edge.data.dataset import load_digits
    from mnist_edge.exporter import ExportOptions, export, from_checkpoint, int8_choice
    source = from_checkpoint("exported/bn_cnn/checkpoint.pt")
    options = ExportOptions(int8=int8_choice(source.name))
    result = export(source, load_digits(), options, out="runs/export/bn_cnn")
"""

from mnist_edge.exporter.options import ExportOptions, Int8Choice, int8_choice
from mnist_edge.exporter.pipeline import ExportResult, export
from mnist_edge.exporter.source import ModelSource, default_checkpoint, from_checkpoint

__all__ = ["export", "ExportResult", "ExportOptions", "Int8Choice", "int8_choice", "ModelSource",
           "from_checkpoint", "default_checkpoint"]
