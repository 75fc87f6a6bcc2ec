"""The LiteRT conversion, in a process of its own: ``python -m mnist_edge.exporter.litert_worker`` < config.

Why a process: TensorFlow takes seconds and hundreds of MB to import, logs from C++ straight onto file
descriptor 2, starts thread pools, and bundles its own protobuf and absl beside torch's; none of that belongs
in the export's process. The parent (:mod:`mnist_edge.exporter.litert`) sends one JSON config on stdin and
reads one JSON line back; everything else the libraries print goes to a log file the parent quotes on failure.

The path: ``onnx2tf`` turns a *copy* of ``model.onnx`` into a Keras model (it rewrites its input file in
place), a ``tf.function`` names the outputs ``logits`` and ``probabilities`` and takes ``image`` as uint8
NHWC, and ``tf.lite.TFLiteConverter`` writes the fp32 file and each int8 candidate (full integer: int8
weights and activations, uint8 ``image`` in, float outputs, Softmax kept float; calibrated on the images
given, real training images). Finally each file is stamped: its input and output tensors are renamed to the contract's names and
the metadata is added as the flatbuffer metadata entry ``mnist_edge`` (mnist_edge.runtime.litert).
"""

from __future__ import annotations

import json
import os
import shutil
import sys

# candidate -> converter settings; "fp32" is the plain conversion
CANDIDATES = {
    "fp32": None,
    "int8-per-channel": {"per_channel": True},  # TensorFlow's default full-integer recipe
    "int8-per-tensor": {"per_channel": False},  # one scale per weight tensor: fewer requantizations
    # TensorFlow's documented default full-integer recipe as it stands (Softmax quantized too): the baseline
    # of scripts/experiments/runtimes_table.py, never written by an export (its probabilities fail the gate)
    "tf-default": {"per_channel": True, "tf_default": True},
}


def _keras_model(onnx_path: str, work: str):
    import onnx2tf

    copy = os.path.join(work, "input-copy.onnx")  # onnx2tf rewrites the file it is given
    shutil.copyfile(onnx_path, copy)
    return onnx2tf.convert(input_onnx_file_path=copy, output_folder_path=os.path.join(work, "saved_model"),
                           non_verbose=True, disable_model_save=True)


def _converters(keras_model, calibration):
    """candidate -> a function returning that candidate's .tflite bytes."""
    import tensorflow as tf

    spec = keras_model.inputs[0]

    @tf.function(input_signature=[tf.TensorSpec([None, *spec.shape[1:]], tf.uint8, name="image")])
    def serve(image):
        logits, probabilities = keras_model(image)
        return {"logits": logits, "probabilities": probabilities}

    concrete = serve.get_concrete_function()

    def representative():
        for image in calibration:  # uint8 [C, H, W] -> [1, H, W, C]
            yield [image.transpose(1, 2, 0)[None]]

    def convert(settings):
        c = tf.lite.TFLiteConverter.from_concrete_functions([concrete], keras_model)
        if settings is None:
            return c.convert()
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.representative_dataset = representative
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
        c._experimental_disable_per_channel = not settings["per_channel"]
        if settings.get("tf_default"):
            c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            return c.convert()
        # Softmax stays float, as in our int8 ONNX files: a quantized one gives probabilities in steps of
        # 1/256 (measured 3.9e-3 off softmax(logits / T)), failing the probabilities gate. The converter's own
        # way to keep an op float is the quantization debugger's deny list.
        options = tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=["SOFTMAX"])
        debugger = tf.lite.experimental.QuantizationDebugger(converter=c, debug_dataset=representative,
                                                             debug_options=options)
        return debugger.get_nondebug_quantized_model()

    return convert


def stamp(data: bytes, metadata: dict) -> bytes:
    """``data`` with its signature's input and output tensors renamed to the contract's names and
    ``metadata`` (str -> str) added as the metadata entry ``mnist_edge``."""
    import flatbuffers
    import numpy as np
    from ai_edge_litert import schema_py_generated as fb

    from mnist_edge.runtime.litert import METADATA_NAME

    model = fb.ModelT.InitFromPackedBuf(bytearray(data), 0)
    graph, (signature,) = model.subgraphs[0], model.signatureDefs
    for arg in list(signature.inputs) + list(signature.outputs):
        graph.tensors[arg.tensorIndex].name = arg.name  # "image", "logits", "probabilities"
    buffer = fb.BufferT()
    buffer.data = np.frombuffer(json.dumps(metadata, sort_keys=True).encode(), np.uint8)
    model.buffers.append(buffer)
    entry = fb.MetadataT()
    entry.name, entry.buffer = METADATA_NAME.encode(), len(model.buffers) - 1
    model.metadata = (model.metadata or []) + [entry]
    builder = flatbuffers.Builder(len(data) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def main() -> int:
    config = json.loads(sys.stdin.read())
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np

    calibration = np.load(config["calibration"], allow_pickle=False)
    keras_model = _keras_model(config["onnx"], config["work"])
    convert = _converters(keras_model, calibration)
    written = {}
    for name in config["candidates"]:
        data = stamp(convert(CANDIDATES[name]), config["metadata"][name])
        path = os.path.join(config["work"], f"{name}.tflite")
        with open(path, "wb") as f:
            f.write(data)
        written[name] = path
    versions = {"tensorflow": _version("tensorflow"), "onnx2tf": _version("onnx2tf")}
    print(config["prefix"] + json.dumps({"written": written, "versions": versions}), flush=True)
    return 0


def _version(module: str) -> str:
    return getattr(sys.modules.get(module), "__version__", "unknown")


if __name__ == "__main__":
    raise SystemExit(main())
