"""Export layer: TorchScript, ONNX and static int8 ONNX, each checked against PyTorch, plus verification.

Importing this package imports neither torch nor onnx (only numpy); the functions that export import
them. ``verify_artifacts`` needs only numpy and onnxruntime (and torch, where present, for TorchScript).

    from mnist_edge.export import export_model, verify_artifacts
    result = export_model("bn_cnn", quantize=True)     # exported/bn_cnn/{model.pt, model.onnx, ...}
    report = verify_artifacts("exported/bn_cnn")
"""

from mnist_edge.export.gates import BATCH_SIZES, THRESHOLDS, Check
from mnist_edge.export.onnx_export import DEFAULT_OPSET, MIN_OPSET, export_onnx, supported_opsets
from mnist_edge.export.pipeline import (CHECKPOINT_NAME, INT8_NAME, ONNX_NAME, TORCHSCRIPT_NAME, ExportResult,
                                        default_checkpoint, default_out, export_model)
from mnist_edge.export.quantize import (CALIBRATION_METHODS, QUANT_FORMATS, ImageCalibrationReader, QuantizeOptions,
                                        quantize_int8)
from mnist_edge.export.torchscript import export_torchscript, load_torchscript
from mnist_edge.export.verify import VerifyReport, verify_artifacts

__all__ = [
    "export_model", "ExportResult", "verify_artifacts", "VerifyReport",
    "export_torchscript", "load_torchscript", "export_onnx", "quantize_int8", "QuantizeOptions",
    "ImageCalibrationReader", "Check", "BATCH_SIZES", "THRESHOLDS", "DEFAULT_OPSET", "MIN_OPSET",
    "supported_opsets", "CALIBRATION_METHODS", "QUANT_FORMATS", "CHECKPOINT_NAME", "TORCHSCRIPT_NAME",
    "ONNX_NAME", "INT8_NAME", "default_checkpoint", "default_out",
]
