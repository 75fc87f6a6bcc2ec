"""LiteRT (.tflite) as an export target: conversion, gates, the torch-free runtime, self-test and bench's choice.

PyTorch is the oracle for the fp32 file, the fp32 ONNX file for the int8 one (the export's own rules). One real
conversion of a briefly trained fixture (mlp, ~15 s: TensorFlow runs in a worker process); the committed
bn_cnn's session export (conftest ``artifact_dir``, exported with --litert) serves the runtime and bench tests.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import SHORT_TRAINED_THRESHOLDS
from helpers_export import export_checkpoint

from mnist_edge import artifacts as A
from mnist_edge.errors import ArtifactError, DeviceError, GateError

EVAL = 1000


@pytest.fixture(scope="module")
def litert_mlp(short_trained, mnist_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("litert") / "mlp"
    trained = short_trained("mlp")
    result = export_checkpoint(trained.checkpoint, out, mnist_dir, quantize=True, litert=True, eval_limit=EVAL,
                               thresholds=SHORT_TRAINED_THRESHOLDS)
    return trained, result


@pytest.fixture(scope="module")
def test_digits(mnist_dir):
    from mnist_edge.data.mnist import load_mnist

    x, y = load_mnist("test", mnist_dir)
    return x[:EVAL], y[:EVAL]


def _perturbed(data: bytes, scale: float = 1.02) -> bytes:
    """``data`` with its largest float32 weight buffer scaled by ``scale`` (a wrong weight, same shapes)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as fb

    model = fb.ModelT.InitFromPackedBuf(bytearray(data), 0)
    float_buffers = {t.buffer for t in model.subgraphs[0].tensors if t.type == fb.TensorType.FLOAT32}
    biggest = max((i for i in float_buffers if model.buffers[i].data is not None), key=lambda i: len(model.buffers[i].data))
    weights = np.frombuffer(np.asarray(model.buffers[biggest].data, np.uint8).tobytes(), np.float32) * scale
    model.buffers[biggest].data = np.frombuffer(weights.astype(np.float32).tobytes(), np.uint8)
    builder = flatbuffers.Builder(len(data) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def test_export_writes_both_litert_files_gated_and_in_the_manifest(litert_mlp):
    _, result = litert_mlp
    files = result.manifest["files"]
    assert files[A.TFLITE]["format"] == "tflite" and files[A.TFLITE]["precision"] == "fp32"
    assert files[A.TFLITE_INT8]["format"] == "tflite" and files[A.TFLITE_INT8]["precision"] == "int8"
    for name in (A.TFLITE, A.TFLITE_INT8):
        rows = [c for c in result.manifest["checks"] if c["artifact"] == name]
        assert rows and all(c["passed"] for c in rows)
        assert {c["batch_size"] for c in rows if c.get("batch_size")} >= {1, 7, 64}
    record = result.manifest["litert"]
    assert record["int8"] in {r["candidate"] for r in record["candidates"] if r["passed"]}
    race = result.manifest["fastest"]["by_batch"]
    assert set(race) == {"1", "64"} and result.manifest["recommended"] == race["1"]["winner"]["file"]
    assert {r["file"] for r in race["1"]["rows"]} == set(A.RUNTIME_FILES)
    assert set(result.manifest["files"][A.SELFTEST]["covers"]) >= {A.TFLITE, A.TFLITE_INT8}


def test_litert_files_agree_with_pytorch_and_carry_the_contract(litert_mlp, test_digits):
    import torch

    from mnist_edge.runtime import load

    trained, result = litert_mlp
    x = test_digits[0]
    with torch.inference_mode():
        want = trained.edge_model()(torch.from_numpy(x[:, None].copy()))[0].numpy()
    fp32 = load(result.out, runtime="litert", precision="fp32")
    int8 = load(result.out, runtime="litert", precision="int8")
    assert fp32.provider == "LiteRT (XNNPACK)" and fp32.verified and fp32.model == "mlp"
    assert fp32.metadata["mnist_edge.layout"] == "NHWC" and int8.precision == "int8"
    got = fp32.predict(x)
    assert np.abs(got.logits - want).max() < 1e-4 and np.array_equal(got.labels, want.argmax(1))
    assert (int8.predict(x).labels == want.argmax(1)).mean() >= 0.95  # a briefly trained net: a few flips


def test_a_perturbed_tflite_fails_the_gate_and_the_folder_keeps_its_files(litert_mlp, mnist_dir, monkeypatch):
    from mnist_edge.exporter import litert

    trained, result = litert_mlp
    before = {p.name: p.read_bytes() for p in result.out.iterdir() if p.is_file()}
    good = {"fp32": (result.out / A.TFLITE).read_bytes(), "int8-per-channel": (result.out / A.TFLITE_INT8).read_bytes()}
    bad = dict(good, fp32=_perturbed(good["fp32"]))
    bad["int8-per-tensor"] = good["int8-per-channel"]
    monkeypatch.setattr(litert, "convert", lambda *a, **k: (bad, {"tensorflow": "test", "onnx2tf": "test"}))
    with pytest.raises(GateError, match=r"model\.tflite @ batch 1: max_abs_diff") as e:
        export_checkpoint(trained.checkpoint, result.out, mnist_dir, quantize=True, litert=True, eval_limit=EVAL,
                          thresholds=SHORT_TRAINED_THRESHOLDS)
    assert "unchanged" in str(e.value)
    assert {p.name: p.read_bytes() for p in result.out.iterdir() if p.is_file()} == before


def test_self_test_and_verify_run_the_litert_files(litert_mlp, mnist_dir):
    from mnist_edge.evaluate.selftest import run_self_test
    from mnist_edge.evaluate.verify import verify_artifacts

    _, result = litert_mlp
    report = run_self_test(result.out)
    rows = {r.file: r for r in report.rows}
    assert rows[A.TFLITE].status == "ok" and rows[A.TFLITE_INT8].status == "ok"
    verified = {r["file"]: r for r in verify_artifacts(result.out, data_dir=mnist_dir).rows}
    assert verified[A.TFLITE]["status"] == "ok" and verified[A.TFLITE_INT8]["status"] == "ok"


def test_the_runtime_runs_tflite_with_torch_and_tensorflow_unimportable(artifact_dir, test_digits):
    from mnist_edge.runtime import load

    x = test_digits[0][:32]
    want = load(artifact_dir, precision="fp32").predict(x).labels.tolist()
    script = (
        "import json, sys\n"
        "for name in ('torch', 'tensorflow', 'onnx', 'tf_keras', 'onnx2tf'):\n"
        "    sys.modules[name] = None  # unimportable: numpy + ai-edge-litert are all a .tflite needs\n"
        "import numpy as np\n"
        "from mnist_edge.runtime import load\n"
        f"x = np.load({str(artifact_dir / 'probe.npy')!r})\n"
        f"out = {{p: load({str(artifact_dir)!r}, runtime='litert', precision=p).predict(x).labels.tolist() "
        "for p in ('fp32', 'int8')}\n"
        "print(json.dumps(out))\n")
    probe = artifact_dir / "probe.npy"
    np.save(probe, x)
    try:
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    finally:
        probe.unlink()
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["fp32"] == want
    assert np.mean(np.array(got["int8"]) == np.array(want)) >= 0.95
    assert "XNNPACK delegate" not in out.stderr  # LiteRT's C++ INFO line is kept off the user's terminal


def test_a_broken_tflite_is_a_typed_error_and_cuda_is_refused(artifact_dir, tmp_path):
    from mnist_edge.runtime import load
    from mnist_edge.runtime.litert import read_metadata

    data = (artifact_dir / A.TFLITE).read_bytes()
    for bad in (b"", b"not a model", data[:100], data[:4] + b"XXXX" + data[8:]):
        (tmp_path / "m.tflite").write_bytes(bad)
        with pytest.raises(ArtifactError):
            load(tmp_path / "m.tflite")
    for bad in (b"\xff\xff\xff\x7fTFL3" + data[8:], data[:len(data) // 2]):  # offsets past the end
        with pytest.raises(ArtifactError, match="metadata cannot be read"):
            read_metadata(bad, "m.tflite")
    with pytest.raises(DeviceError, match="CPU only"):
        load(artifact_dir / A.TFLITE, device="cuda")


def test_bench_races_the_runtimes_and_the_advice_ships_the_fastest(artifact_dir, tmp_path):
    from mnist_edge.bench import BenchOptions, run_bench

    folder = tmp_path / "bn_cnn"
    shutil.copytree(artifact_dir, folder)
    report = run_bench(folder, BenchOptions(formats=("int8", "tflite-int8"), batch_sizes=(1,), threads=(1,), runs=20,
                                            isolate=False))
    assert report.race is not None and not report.race.error
    assert {r.file for r in report.race.rows} == {A.INT8, A.TFLITE_INT8}
    fastest = min(report.race.rows, key=lambda r: r.ratio).file
    assert report.advice.ship == fastest and report.advice.fastest[0].file == fastest
    assert report.advice.line.startswith(f"Ship {fastest}")


def _recorded_report(race: list, accuracy: dict):
    """A bench report as read from disk (the committed bn_cnn one), with the given race rows and accuracies."""
    from mnist_edge.bench.document import BenchReport

    doc = json.loads((Path(__file__).resolve().parents[1] / "exported" / "bn_cnn" / "bench.json").read_text())
    doc["race"] = {"method": "recorded", "rows": race}
    for entry in doc["formats"]:
        entry["accuracy"] = accuracy.get(entry["format"], entry.get("accuracy"))
    files = {e["format"] for e in doc["formats"]}
    for fmt, file in (("tflite", A.TFLITE), ("tflite-int8", A.TFLITE_INT8)):
        if fmt not in files:
            doc["formats"].append({"format": fmt, "label": fmt, "status": "ok", "file": file,
                                   "accuracy": accuracy.get(fmt)})
    return BenchReport.from_dict(doc)


def _row(file, batch, ratio, low, high, p50=0.05):
    return {"batch": batch, "threads": 1, "file": file, "p50_ms": p50 * ratio, "ratio": ratio, "low": low,
            "high": high}


def test_advice_picks_across_runtimes_from_recorded_timings():
    from mnist_edge.bench.advice import advise

    race = [_row(A.TFLITE_INT8, 1, 1.0, 1.0, 1.0), _row(A.INT8, 1, 1.6, 1.5, 1.7), _row(A.ONNX, 1, 3.0, 2.8, 3.2),
            _row(A.INT8, 64, 1.0, 1.0, 1.0), _row(A.TFLITE_INT8, 64, 1.1, 1.05, 1.2)]
    advice = advise(_recorded_report(race, {"tflite": 99.4, "tflite-int8": 99.4, "onnx": 99.4, "int8": 99.4}))
    assert advice.ship == A.TFLITE_INT8 and [(f.batch, f.file) for f in advice.fastest] == [(1, A.TFLITE_INT8),
                                                                                           (64, A.INT8)]
    assert advice.fastest[0].runner_up == A.INT8 and advice.fastest[0].margin == [1.5, 1.7]
    # an int8 file that loses accuracy is never shipped, however fast
    lossy = advise(_recorded_report(race, {"tflite": 99.4, "tflite-int8": 98.0, "onnx": 99.4, "int8": 99.4}))
    assert lossy.ship == A.INT8 and all(f.file != A.TFLITE_INT8 for f in lossy.fastest)
