"""Each warning once: what onnxruntime's quantizer says during `mnist-edge export --quantize` (it gives the
"consider pre-processing" advice in two wordings, and the export used to show both in its progress and again
in its summary) reaches the user once."""

from __future__ import annotations

from mnist_edge.cli import distinct_notes

START = ("warning: Please consider to run pre-processing before quantization. Refer to example: "
         "https://github.com/microsoft/onnxruntime-inference-examples/blob/main/quantization/image_classification"
         "/cpu/ReadMe.md")
END = ("warning: Please consider pre-processing before quantization. See "
       "https://github.com/microsoft/onnxruntime-inference-examples/blob/main/quantization/image_classification"
       "/cpu/ReadMe.md")


def test_the_same_advice_in_two_wordings_or_repeated_is_one_note():
    other = "warning: QOperator is not recommended on x64"
    assert distinct_notes([START, other, END, START, other]) == [START, other]
    assert distinct_notes([]) == []


def test_export_shows_the_quantizers_advice_once(model_dir, mnist_dir, tmp_path, capsys):
    """What the quantizer really says on the committed bn_cnn, through the export command's progress (as the
    pipeline reports each message) and its summary: one line of advice in all. No torch, no export: fast."""
    from mnist_edge.cli import export_cmd
    from mnist_edge.int8.quantize import QuantizeOptions, quantize_int8, training_calibration_images

    images, source = training_calibration_images(100, 0, mnist_dir)
    recipe = quantize_int8(model_dir / "model.onnx", tmp_path / "q.onnx", images,
                           QuantizeOptions(calibration_samples=100), source=source)
    said = recipe["onnxruntime_messages"]
    assert sum("pre-processing before quantization" in m for m in said) == 2  # both wordings: the cause
    for message in said:
        export_cmd._say(f"onnxruntime: {message}")  # as exporter/pipeline.py reports them while it runs
    export_cmd._say("writing selftest.bin")
    summary = export_cmd._int8_lines({"int8_recipe": {"source": "registry:bn_cnn"}, "recommended": "model.int8.onnx",
                                      "files": {"model.int8.onnx": {"quantization": recipe}}})
    progress = capsys.readouterr().err
    assert progress == "  writing selftest.bin\n"  # progress goes on; the advice waits for the summary
    advice = [line for line in summary if "pre-processing before quantization" in line]
    assert advice == ["onnxruntime: " + next(m for m in said if "pre-processing" in m)]
