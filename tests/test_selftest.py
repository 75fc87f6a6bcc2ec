"""Self-test bundles: written by the export, checked on the device without MNIST, torch or onnx; they catch
perturbed weights and int8 kernels that round differently. Node placement and strict mode (CPU only here:
the CUDA paths are tested through onnxruntime's Azure provider, which has no kernels for our nodes)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

from conftest import EXPORTED, SHORT_TRAINED_THRESHOLDS

from mnist_edge.errors import ArtifactError, DeviceError, SelfTestError
from mnist_edge.evaluate.bundle import ALIGN, BUNDLE_NAME, FORMAT, MAGIC, pack, read_bundle, unpack
from mnist_edge.evaluate.selftest import SelfTestReport, run_self_test


def _session(level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL, rewrite=None):
    """A session_factory for run_self_test: other optimization level, or bytes rewritten first."""
    def make(data, source):
        so = ort.SessionOptions()
        so.graph_optimization_level = level
        so.intra_op_num_threads = 1
        so.log_severity_level = 3
        return ort.InferenceSession(rewrite(data) if rewrite else data, so, providers=["CPUExecutionProvider"])
    return make


def _perturb(data: bytes, *, rel: float = 0.0, int8_steps: int = 0) -> bytes:
    """Float weights (>= 2 dims) scaled by (1 + rel * N(0,1)); or int8 weights moved by int8_steps on 1%."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load_from_string(data)
    rng = np.random.default_rng(0)
    for t in m.graph.initializer:
        a = numpy_helper.to_array(t)
        if a.ndim >= 2 and a.dtype == np.float32 and rel:
            a = (a * (1 + rel * rng.standard_normal(a.shape))).astype(np.float32)
        elif a.ndim >= 2 and a.dtype == np.int8 and int8_steps:
            a = np.clip(a.astype(np.int16) + (rng.random(a.shape) < 0.01) * int8_steps, -127, 127).astype(np.int8)
        else:
            continue
        t.CopyFrom(numpy_helper.from_array(a, t.name))
    return m.SerializeToString()


def test_pack_unpack_round_trip_and_refusals():
    arrays = {"images": np.arange(2 * 784, dtype=np.uint8).reshape(2, 1, 28, 28),
              "labels": np.array([3, 7], np.uint8), "logits/model.onnx": np.linspace(-1, 1, 20, dtype=np.float32).reshape(2, 10)}
    data = pack({"model": "m"}, arrays)
    header, back = unpack(data)
    assert header["model"] == "m" and header["format"] == "mnist-edge-selftest/1"
    for name, a in arrays.items():
        assert np.array_equal(back[name], a) and back[name].dtype == a.dtype
        assert header["arrays"][name]["offset"] % 64 == 0
    with pytest.raises(ArtifactError, match="not an mnist-edge self-test bundle"):
        unpack(b"PK\x03\x04" + data[4:])
    with pytest.raises(ArtifactError, match="does not fit"):
        unpack(data[:-100])


def test_export_writes_the_bundle_into_the_manifest(artifact_dir):
    from mnist_edge.manifest import read_manifest

    entry = read_manifest(artifact_dir)["files"][BUNDLE_NAME]
    assert entry["kind"] == "selftest" and entry["images"] == 100
    assert entry["covers"] == ["model.int8.onnx", "model.int8.tflite", "model.onnx", "model.pt", "model.tflite"]
    header, arrays, _ = read_bundle(artifact_dir)
    assert np.bincount(arrays["labels"], minlength=10).tolist() == [10] * 10  # class-balanced
    assert arrays["labels"][:20].tolist() == list(range(10)) * 2  # interleaved: the batch-1 run's 20 too
    assert header["files"]["model.onnx"]["runs"] == [{"batch_size": 1, "images": 20}, {"batch_size": 100, "images": 100}]
    assert arrays["images"].shape == (100, 1, 28, 28) and arrays["images"].dtype == np.uint8
    tol = header["files"]["model.int8.onnx"]["tolerance"]
    assert 0 < tol["step"] < 1 and tol["max_abs_diff"] == pytest.approx(1.5 * tol["step"])
    for name, spec in header["files"].items():  # every picked image has a clear top-2 margin under each file
        z = np.sort(arrays[spec["array"]], axis=1)
        assert (z[:, -1] - z[:, -2] > 2 * spec["tolerance"]["max_abs_diff"]).all(), name


def test_self_test_passes_on_the_export_machine(artifact_dir, tmp_path):
    report = run_self_test(artifact_dir, torchscript=True)
    rows = {r.file: r for r in report.rows}
    assert {f: r.status for f, r in rows.items()} == {"model.int8.onnx": "ok", "model.onnx": "ok", "model.pt": "ok",
                                                      "model.int8.tflite": "ok", "model.tflite": "ok"}
    assert rows["model.int8.onnx"].exact and rows["model.int8.tflite"].exact  # same machine and kernels
    assert rows["model.onnx"].max_abs_diff < 1e-4 and rows["model.onnx"].label_changes == 0
    # the --json document: its own schema (not the bundle's), read back field by field
    doc = report.to_json()
    assert doc["schema"] == "mnist-edge-selftest-report/1" != FORMAT
    assert list(doc) == ["schema", "folder", "model", "device", "images", "seconds", "rows"]
    (tmp_path / "r.json").write_text(json.dumps(doc))
    assert SelfTestReport.from_json(tmp_path / "r.json") == report
    doc["rows"][0]["max_abs_diff"] = -1
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match=r"rows\[0\].max_abs_diff is -1, expected a finite number >= 0"):
        SelfTestReport.from_json(tmp_path / "bad.json")
    (tmp_path / "bundle.json").write_text(json.dumps({**doc, "schema": FORMAT}))
    with pytest.raises(ArtifactError, match="not a selftest report document"):
        SelfTestReport.from_json(tmp_path / "bundle.json")


def test_cli_self_test_needs_neither_mnist_nor_torch_nor_onnx(artifact_dir, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MNIST_EDGE_DATA"}
    env["HOME"] = str(tmp_path)  # no cache with MNIST in it either
    script = ("import sys; sys.modules['torch'] = None; sys.modules['onnx'] = None; sys.modules['tensorflow'] = None; "
              "from mnist_edge.cli import main; "
              f"sys.exit(main(['verify', '--self-test', {str(artifact_dir)!r}, '--json', '-']))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    rows = {r["file"]: r["status"] for r in doc["rows"]}
    assert rows == {"model.int8.onnx": "ok", "model.onnx": "ok", "model.pt": "skipped", "model.int8.tflite": "ok",
                    "model.tflite": "ok"}
    assert doc["schema"] == "mnist-edge-selftest-report/1"


def test_self_test_catches_slightly_perturbed_fp32_weights(artifact_dir):
    # 1e-4 relative noise on every weight: accuracy and labels unchanged, logits move by ~1e-3
    factory = _session(rewrite=lambda d: _perturb(d, rel=1e-4))
    with pytest.raises(SelfTestError, match=r"model\.onnx: batch 1: max \|Δ logits\| [0-9.e-]+ \(image \d+\) vs "
                                            r"tolerance 0\.0001"):
        run_self_test(artifact_dir, torchscript=False, session_factory=factory)


def test_self_test_catches_int8_weights_moved_by_one_step(artifact_dir):
    factory = _session(rewrite=lambda d: _perturb(d, int8_steps=1))
    with pytest.raises(SelfTestError, match=r"model\.int8\.onnx: .*images moved by a quantization step"):
        run_self_test(artifact_dir, torchscript=False, session_factory=factory)


@pytest.fixture(scope="module")
def default_int8_dir(short_trained, mnist_dir, tmp_path_factory):
    """The short-trained mlp exported with onnxruntime's default int8 recipe: every layer in int8, so the
    logits are quantized and come in output steps, which the int8 tolerance is made of (bn_cnn's registered
    recipe keeps its last layer in float). The mlp exports in ~2 s, bn_cnn in ~20 s."""
    from helpers_export import export_checkpoint

    from mnist_edge.int8.quantize import QuantizeOptions

    out = tmp_path_factory.mktemp("default_int8") / "mlp"
    export_checkpoint(short_trained("mlp").checkpoint, out, mnist_dir, quantize=True,
                      quantize_options=QuantizeOptions(), eval_limit=1000, thresholds=SHORT_TRAINED_THRESHOLDS)
    return out


def test_self_test_sees_int8_kernels_that_round_differently(default_int8_dir):
    # graph optimizations off: onnxruntime runs the QDQ graph in float instead of its fused int8 kernels,
    # which moves the bundle's canary images by one output step
    artifact_dir = default_int8_dir
    header, _, _ = read_bundle(artifact_dir)
    assert header["selection"]["canaries"] > 0
    factory = _session(ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    report = run_self_test(artifact_dir, torchscript=False, session_factory=factory)
    int8 = next(r for r in report.rows if r.file == "model.int8.onnx")
    assert not int8.exact and int8.moved_images >= 1
    assert int8.max_abs_diff == pytest.approx(int8.tolerance.step, rel=1e-3)  # exactly one step
    with pytest.raises(SelfTestError, match=r"model\.int8\.onnx: batch (1|100): max \|Δ logits\| .* vs tolerance 0\b"):
        run_self_test(artifact_dir, torchscript=False, session_factory=factory, exact=True)


def test_self_test_refuses_a_changed_or_stale_bundle(artifact_dir, tmp_path):
    folder = tmp_path / "a"
    shutil.copytree(artifact_dir, folder)
    data = bytearray((folder / BUNDLE_NAME).read_bytes())
    data[-1] ^= 1
    (folder / BUNDLE_NAME).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="fails its hash check: selftest.bin"):
        run_self_test(folder)
    # a manifest without the bundle (exported before self-tests): a clear message, not a KeyError
    from mnist_edge.manifest import read_manifest, write_manifest

    m = read_manifest(artifact_dir)
    del m["files"][BUNDLE_NAME]
    write_manifest(folder, m)
    with pytest.raises(ArtifactError, match="has no self-test bundle"):
        run_self_test(folder)
    # references for other bytes than the file listed now (a stale bundle), and a model file the bundle has
    # no references for: both fail, naming the file (neither is skipped)
    from mnist_edge.manifest import file_record

    header, arrays = unpack((artifact_dir / BUNDLE_NAME).read_bytes())
    header["files"]["model.onnx"]["sha256"] = "0" * 64
    del header["files"]["model.int8.onnx"]
    del header["arrays"]
    (folder / BUNDLE_NAME).write_bytes(pack(header, arrays))
    m = read_manifest(artifact_dir)
    m["files"][BUNDLE_NAME].update(file_record(folder / BUNDLE_NAME))
    write_manifest(folder, m)
    with pytest.raises(SelfTestError) as e:
        run_self_test(folder, torchscript=False)
    assert "model.int8.onnx: listed in the manifest, but the bundle has no reference outputs for it" in str(e.value)
    assert "model.onnx: the bundle's reference outputs are for other bytes" in str(e.value)
    # a re-sealed bundle whose tolerance is not a number: that file fails, naming the field
    header, arrays = unpack((artifact_dir / BUNDLE_NAME).read_bytes())
    header["files"]["model.onnx"]["tolerance"]["max_abs_diff"] = [None]
    del header["arrays"]
    (folder / BUNDLE_NAME).write_bytes(pack(header, arrays))
    m = read_manifest(artifact_dir)
    m["files"][BUNDLE_NAME].update(file_record(folder / BUNDLE_NAME))
    write_manifest(folder, m)
    with pytest.raises(SelfTestError, match=r"model.onnx: .*files.model.onnx.tolerance.max_abs_diff is \[None\], "
                                            r"expected a finite number >= 0"):
        run_self_test(folder, torchscript=False)


# --- re-sealed bundles: edited, their hash recorded again, so only the reader's own checks stand ----------

def _reseal(src, dst, edit=None, *, arrays=None):
    """A copy of folder ``src`` whose bundle header went through ``edit`` (dict -> dict, or -> raw JSON bytes)
    with the data section kept, or (``arrays``: dict -> None, editing them) repacked; the manifest records the
    new bytes, so the bundle passes the seal."""
    from mnist_edge.manifest import file_record, read_manifest, write_manifest

    shutil.copytree(src, dst)
    data = (src / BUNDLE_NAME).read_bytes()
    if arrays is not None:
        header, arrs = unpack(data)
        arrs = {k: v.copy() for k, v in arrs.items()}
        arrays(header, arrs)
        del header["arrays"]
        blob = pack(header, arrs)
    else:
        (hlen,) = struct.unpack("<I", data[8:12])
        start = 12 + hlen + (-(12 + hlen) % ALIGN)
        text = edit(json.loads(data[12:12 + hlen]))
        text = text if isinstance(text, bytes) else json.dumps(text).encode()
        head = MAGIC + struct.pack("<I", len(text)) + text
        blob = head + b"\0" * (-len(head) % ALIGN) + data[start:]
    (dst / BUNDLE_NAME).write_bytes(blob)
    m = read_manifest(src)
    m["files"][BUNDLE_NAME].update(file_record(dst / BUNDLE_NAME))
    write_manifest(dst, m)
    return dst


def _verify_self_test(folder) -> str:
    """`mnist-edge verify --self-test FOLDER`: must fail in one typed line; returns that line."""
    from mnist_edge.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["verify", "--self-test", str(folder), "--no-torchscript"])
    text = err.getvalue()
    assert code == 1 and "Traceback" not in text and len(text.strip().splitlines()) == 1, text
    return text


def _set(path, value):
    """An edit that sets the header key at ``path`` (a tuple of keys) to ``value``."""
    def edit(header):
        node = header
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        return header
    return edit


@pytest.mark.parametrize("edit,message", [
    (_set(("arrays",), 7), r"arrays is 7, expected an object"),
    (lambda h: json.dumps(h).replace('"shape": [100, 1, 28, 28]', '"shape": [1e400, 1, 28, 28]', 1).encode(),
     r"not valid JSON: 1e400 is out of the range of a finite number"),
    (_set(("arrays", "images"), {"dtype": "uint8", "shape": [2 ** 62, 1, 28, 28], "offset": 0, "nbytes": 0}),
     r"arrays.images.nbytes is 0, but shape \[4611686018427387904, 1, 28, 28\] of uint8 needs 3,615,[\d,]+ bytes"),
    (_set(("arrays", "images"), {"dtype": "uint8", "shape": [], "offset": 0, "nbytes": 1}),
     r"images \(\) and labels \(100,\) are not \[N, 1, 28, 28\] and \[N\]"),
    (_set(("files", "model.onnx", "runs"), []), r"model.onnx: .*files.model.onnx.runs is \[\], expected a non-empty"),
    (_set(("files", "model.onnx", "runs"), [{"batch_size": 0, "images": 20}]),
     r"files.model.onnx.runs\[0\].batch_size is 0, expected an integer >= 1"),
    (_set(("files", "model.onnx", "runs"), [{"batch_size": 1, "images": 101}]),
     r"files.model.onnx.runs\[0\].images is 101, expected an integer from 1 to 100"),
    (_set(("files",), 7), r"files is 7, expected an object"),
    (_set(("files", "model.onnx", "array"), "labels"),
     r"files.model.onnx.array names 'labels', uint8 \(100,\): expected float32 \[100, classes\]"),
    (_set(("selection",), json.loads("[" * 200 + "]" * 200)), r"nested more than 32 deep"),
])
def test_a_malformed_resealed_bundle_is_one_typed_line(model_dir, tmp_path, edit, message):
    folder = _reseal(model_dir, tmp_path / "bn_cnn", edit)
    assert _verify_self_test(folder)
    with pytest.raises(ArtifactError, match=message):
        run_self_test(folder, torchscript=False)


def test_non_finite_reference_logits_fail_instead_of_passing_every_comparison(model_dir, tmp_path):
    def nan(header, arrays):
        arrays["logits/model.onnx"][:] = np.nan  # NaN > tolerance is False: it would pass any check

    folder = _reseal(model_dir, tmp_path / "bn_cnn", arrays=nan)
    with pytest.raises(SelfTestError, match=r"files.model.onnx.array names 'logits/model.onnx', which holds non-finite"):
        run_self_test(folder, torchscript=False)


def _tolerance(name, **values):
    def edit(header):
        header["files"][name]["tolerance"].update(values)
        return header
    return edit


@pytest.mark.parametrize("name,values,message", [
    ("model.onnx", {"max_abs_diff": 1e30}, r"model.onnx.tolerance.max_abs_diff is 1e\+30, over the cap of 0.001"),
    ("model.onnx", {"label_changes": 90}, r"model.onnx.tolerance.label_changes is 90, expected 0"),
    ("model.int8.onnx", {"max_abs_diff": 1e30}, r"int8.onnx.tolerance.max_abs_diff is 1e\+30, over the cap of 1.5 "
                                                r"output steps"),
    ("model.int8.onnx", {"step": 1e30, "max_abs_diff": 1.5e30}, r"int8.onnx.tolerance.step is 1e\+30, over the "
                                                                r"smallest gap between its reference logits"),
    ("model.int8.onnx", {"moved_images": 100}, r"int8.onnx.tolerance.moved_images is 100, over the cap of 40"),
])
def test_a_resealed_bundles_tolerances_are_bounded(model_dir, tmp_path, name, values, message):
    folder = _reseal(model_dir, tmp_path / "bn_cnn", _tolerance(name, **values))
    assert name in _verify_self_test(folder)
    with pytest.raises(SelfTestError, match=message):
        run_self_test(folder, torchscript=False)


def test_ninety_changed_labels_fail_whatever_tolerance_the_bundle_states(model_dir, tmp_path):
    def relabel(header, arrays):
        ref = arrays["logits/model.onnx"]
        ref[:90] = np.roll(ref[:90], 1, axis=1)  # 90 of the 100 reference labels move to another class
        header["files"]["model.onnx"]["tolerance"].update(max_abs_diff=1e30, label_changes=90)

    folder = _reseal(model_dir, tmp_path / "bn_cnn", arrays=relabel)
    with pytest.raises(SelfTestError, match=r"model\.onnx: .*label_changes is 90, expected 0: labels must match"):
        run_self_test(folder, torchscript=False)
    # the bounds leave the bundle the export wrote as it is: it passes
    assert run_self_test(model_dir, torchscript=False).ok


# --- node placement and strict mode ------------------------------------------------------------------------

def test_placement_counts_every_node_on_the_cpu(artifact_dir):
    from mnist_edge.runtime.placement import measure_placement, summary as describe

    data = (artifact_dir / "model.int8.onnx").read_bytes()
    p = measure_placement(data, source="int8", device="cpu", threads=1)
    assert p["provider"] == "CPUExecutionProvider" and set(p["nodes"]) == {"CPUExecutionProvider"}
    assert p["total"] == p["nodes"]["CPUExecutionProvider"] > 5
    assert "QLinearConv" in p["ops"]["CPUExecutionProvider"]  # the fused int8 kernels, as onnxruntime ran them
    assert describe(p) == f"{p['total']} CPU nodes"


def test_placement_from_profile_and_strict_check():
    from mnist_edge.runtime.placement import check_strict, placement_from_profile, summary as describe

    def ev(node, provider, op):
        return {"cat": "Node", "name": f"{node}_kernel_time", "args": {"provider": provider, "op_name": op}}
    events = [ev("conv", "CUDAExecutionProvider", "Conv"), ev("relu", "CUDAExecutionProvider", "Relu"),
              ev("pad", "CPUExecutionProvider", "Pad"), {"cat": "Session", "name": "model_run"},
              ev("conv", "CUDAExecutionProvider", "Conv")]  # a second run of the same node counts once
    p = dict(placement_from_profile(events), provider="CUDAExecutionProvider")
    assert p["nodes"] == {"CUDAExecutionProvider": 2, "CPUExecutionProvider": 1} and p["total"] == 3
    assert describe(p) == "2 CUDA + 1 CPU nodes"
    with pytest.raises(DeviceError, match=r"1 node\(s\) did not run on CUDAExecutionProvider \(Pad x1\)"):
        check_strict(p, "m.onnx")
    check_strict(dict(placement_from_profile(events[:2]), provider="CUDAExecutionProvider"), "m.onnx")


def test_strict_mode_is_onnxruntimes_no_cpu_fallback(artifact_dir, monkeypatch):
    """No GPU here: onnxruntime's Azure provider stands in for CUDA (it has no kernel for any of our nodes,
    so every node would fall back to the CPU). The real onnxruntime refusal must become our DeviceError."""
    from mnist_edge.runtime import session as S

    data = (artifact_dir / "model.onnx").read_bytes()
    assert "AzureExecutionProvider" in ort.get_available_providers()
    real_create = S._create

    def create(data, providers, provider_options, so):
        swap = {S.CUDA: "AzureExecutionProvider"}
        return real_create(data, [swap.get(p, p) for p in providers], [{} for _ in providers], so)

    monkeypatch.setattr(S, "_create", create)
    monkeypatch.setattr(ort, "get_available_providers", lambda: [S.CUDA, S.CPU])
    monkeypatch.setattr(S, "_preload_cuda_libraries", lambda: "")
    with pytest.raises(DeviceError, match="strict placement: onnxruntime would run some nodes on the CPU"):
        S.create_session(data, source="m.onnx", device="cuda", strict=True)
    sess, used, _ = S.create_session(data, source="m.onnx", device="cpu", strict=True)  # CPU: nothing to fall back from
    assert used == "cpu" and sess.get_providers() == [S.CPU]


def test_predict_and_bench_report_placement(artifact_dir, tmp_path):
    from PIL import Image

    from mnist_edge.bench.formats import FORMATS
    from mnist_edge.runtime import classify_files

    _, arrays, _ = read_bundle(artifact_dir)
    Image.fromarray(arrays["images"][0, 0]).save(tmp_path / "d.png")
    out = classify_files([tmp_path / "d.png"], model=artifact_dir, strict=True)
    assert out["model"]["placement"]["nodes"] == {"CPUExecutionProvider": out["model"]["placement"]["total"]}
    loaded = FORMATS["int8"].load(artifact_dir / "model.int8.onnx", "cpu", 1)
    assert loaded.placement()["provider"] == "CPUExecutionProvider"
