"""The runtime: torch-free, agrees with PyTorch, thread-safe, and every runtime/artifacts row of BAD_INPUTS.md.

One exported artifact folder (short-trained bn_cnn, fp32 + int8 + manifest) is shared by the session;
tampered variants are written to tmp folders from its bytes.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from mnist_edge import contract as C
from mnist_edge.data.mnist import load_mnist
from mnist_edge.errors import ArtifactError, ContractError, DeviceError, InputError, UsageError
from mnist_edge.runtime import load
from mnist_edge.runtime.inputs import as_batch


@pytest.fixture(scope="module")
def cuda(artifact_dir):
    """The fp32 model on CUDA; skips (absent hardware) where no CUDA GPU is usable, saying why."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("no CUDA: this onnxruntime build has no CUDAExecutionProvider")
    try:
        return load(artifact_dir, device="cuda", precision="fp32")
    except DeviceError as e:
        pytest.skip(f"no usable CUDA GPU: {e}")


@pytest.fixture
def no_cuda(monkeypatch):
    """This onnxruntime as a CPU-only build would be (a no-op where CUDA is absent): no skip on GPU machines."""
    real = ort.get_available_providers()
    monkeypatch.setattr(ort, "get_available_providers", lambda: [p for p in real if p != "CUDAExecutionProvider"])


@pytest.fixture(scope="module")
def test_digits(mnist_dir):
    x, y = load_mnist("test", mnist_dir)
    return x[:512], y[:512]


@pytest.fixture(scope="module")
def fp32(artifact_dir):
    return load(artifact_dir, precision="fp32")


@pytest.fixture(scope="module")
def int8(artifact_dir):
    return load(artifact_dir)


def _torch_labels(edge_model, x):
    import torch

    with torch.no_grad():
        logits, _ = edge_model(torch.from_numpy(np.array(x))[:, None])  # a writable copy
    return logits.argmax(1).numpy()


# --- torch-free, and the same labels as PyTorch ----------------------------------------------------------

def test_runtime_never_imports_torch_and_predicts_pytorchs_labels(artifact_dir, edge_model, test_digits, tmp_path):
    x = test_digits[0][:256]
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(f"""
        import json, sys
        sys.modules["torch"] = None  # any import of torch, direct or indirect, now raises ImportError
        import numpy as np
        from mnist_edge.runtime import load
        x = np.load({str(tmp_path / "x.npy")!r})
        fp32 = load({str(artifact_dir)!r}, precision="fp32")
        int8 = load({str(artifact_dir)!r})
        from mnist_edge.cli import main  # the predict command is torch-free too
        json.dump({{"fp32": fp32.predict(x).labels.tolist(), "int8": int8.predict(x).labels.tolist(),
                   "verified": [fp32.verified, int8.verified], "cli": callable(main),
                   "torch": repr(sys.modules["torch"])}}, sys.stdout)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    want = _torch_labels(edge_model, x)
    assert got["torch"] == "None" and got["verified"] == [True, True]
    assert np.array_equal(got["fp32"], want)  # fp32 ONNX: the same labels as PyTorch
    assert (np.array(got["int8"]) == want).mean() >= 0.98  # int8: the export gate allows a few flips


def test_predict_cli_runs_with_torch_unimportable(artifact_dir, test_digits, tmp_path):
    from PIL import Image

    Image.fromarray(test_digits[0][0]).save(tmp_path / "d.png")
    script = (f"import sys; sys.modules['torch'] = None; from mnist_edge.cli import main; "
              f"sys.exit(main(['predict', '--model', {str(artifact_dir)!r}, {str(tmp_path / 'd.png')!r}]))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"{tmp_path / 'd.png'}: ")


# --- predictions --------------------------------------------------------------------------------------

def test_prediction_shapes_topk_and_probabilities(int8, test_digits):
    x, y = test_digits
    p = int8.predict(x, top_k=3)
    assert p.labels.shape == (512,) and p.labels.dtype == np.int64
    assert p.probabilities.shape == (512, 10) and p.probabilities.dtype == np.float32
    assert p.topk.shape == (512, 3) and np.array_equal(p.topk[:, 0], p.labels)
    assert np.allclose(p.probabilities.sum(1), 1, atol=1e-4)
    assert (np.diff(p.topk_probabilities, axis=1) <= 0).all()
    assert np.array_equal(p.labels, p.logits.argmax(1))
    assert (p.labels == y).mean() > 0.7  # a short-trained model, far above chance (10%)
    row = p.to_list(int8.labels)[0]
    assert row["label"] == str(p.labels[0]) and len(row["top_k"]) == 3
    assert int8.model == "bn_cnn" and int8.precision == "int8" and int8.device == "cpu"
    assert int8.provider == "CPUExecutionProvider" and int8.verified and len(int8.sha256) == 64


def test_probabilities_are_the_softmax_of_the_logits_and_match_the_graphs_fp32_output(fp32, int8, test_digits):
    x = test_digits[0][:64]
    raw = ort.InferenceSession(str(fp32.path), providers=["CPUExecutionProvider"])
    logits, probs = raw.run(None, {"image": x[:, None]})
    p = fp32.predict(x)
    assert np.allclose(p.logits, logits, atol=1e-6) and np.allclose(p.probabilities, probs, atol=1e-6)
    # int8: probabilities come from the logits (softmax in float64): rows sum to 1, labels are the argmax
    q = int8.predict(x)
    assert np.allclose(q.probabilities.sum(1), 1, atol=1e-5) and np.array_equal(q.labels, q.logits.argmax(1))


def test_batch_sizes_and_single_image_agree(fp32, test_digits):
    x = test_digits[0][:64]
    whole = fp32.predict(x)
    one_by_one = np.concatenate([fp32.predict(img).probabilities for img in x])  # (28, 28) each
    assert np.array_equal(whole.labels, one_by_one.argmax(1))
    assert np.allclose(whole.probabilities, one_by_one, atol=1e-5)
    assert np.array_equal(fp32.predict(x[:7]).labels, whole.labels[:7])


def test_eight_threads_on_one_model_match_serial_calls(int8, test_digits):
    x = test_digits[0]
    batches = [x[i * 16:(i + 1) * 16] for i in range(32)]
    serial = [int8.predict(b).probabilities for b in batches]
    results = {}

    def work(t):
        for i in range(t, len(batches), 8):
            for _ in range(3):
                results.setdefault(i, []).append(int8.predict(batches[i]).probabilities)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(32))
    for i, outs in results.items():
        for out in outs:
            assert np.array_equal(out, serial[i])


# --- inputs: dtype, shape, range, layout (BAD_INPUTS "runtime" rows) ------------------------------------

def test_accepted_shapes_give_the_same_labels(fp32, test_digits):
    x = test_digits[0][:5]
    want = fp32.predict(x).labels
    assert np.array_equal(fp32.predict(x[:, None]).labels, want)
    assert np.array_equal(fp32.predict(x[2]).labels, want[2:3])
    assert np.array_equal(fp32.predict(x.tolist()).labels, want)  # lists: np.asarray, int64 in 0-255


@pytest.mark.parametrize("shape", [(28, 28, 3), (32, 32), (5, 32, 32), (2, 3, 28, 28), (28,), (), (1, 1, 1, 28, 28)])
def test_other_shapes_are_refused_naming_the_shape(fp32, shape):
    with pytest.raises(InputError, match=r"shape \(" if shape else r"shape \(\)"):
        fp32.predict(np.zeros(shape, np.uint8))


def test_float_inputs_in_0_1_are_scaled_and_checked(fp32, test_digits):
    x = test_digits[0][:16]
    want = fp32.predict(x)
    for dt in (np.float16, np.float32, np.float64):
        got = fp32.predict((x / 255.0).astype(dt))
        assert np.array_equal(got.labels, want.labels)
        assert np.array_equal(as_batch((x / 255.0).astype(dt)), as_batch(x))  # exact round(x*255)
    with pytest.raises(InputError, match=r"must be in \[0, 1\].*\[0, 255\].*pass uint8"):
        fp32.predict(x.astype(np.float32))  # 0-255 floats: refused with a hint, not saturated
    with pytest.raises(InputError, match=r"\[-0.5, 1\]"):
        fp32.predict(np.full((28, 28), -0.5, np.float32) + (np.arange(28) == 0) * 1.5)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_are_errors_never_labels(fp32, test_digits, bad):
    x = (test_digits[0][:4] / 255.0).astype(np.float32)
    x[2, 10, 10] = bad
    with pytest.raises(InputError, match="NaN|infinite"):
        fp32.predict(x)


def test_integer_bool_and_odd_dtypes(fp32, test_digits):
    x = test_digits[0][:8]
    want = fp32.predict(x).labels
    for dt in (np.int8, np.int16, np.int32, np.int64, np.uint16, np.uint64):
        if dt == np.int8:
            continue  # int8 cannot hold 128-255
        assert np.array_equal(fp32.predict(x.astype(dt)).labels, want)
    with pytest.raises(InputError, match=r"0-255.*\[-1, 255\]"):
        fp32.predict(x.astype(np.int16) - (x == 0))
    with pytest.raises(InputError, match=r"0-255.*\[300, 300\]"):
        fp32.predict(np.full((28, 28), 300, np.int32))
    with pytest.raises(InputError, match="bool input is ambiguous.*uint8"):
        fp32.predict(x > 0)
    for odd in (x.astype(np.complex64), x.astype(object), np.full((28, 28), "a")):
        with pytest.raises(InputError, match="dtype .* is not accepted; expected uint8"):
            fp32.predict(odd)
    with pytest.raises(InputError, match="cannot read the input"):
        fp32.predict([[0] * 28] * 27 + [[0] * 5])  # ragged list


def test_empty_batch_gives_an_empty_result(fp32):
    for empty in (np.zeros((0, 28, 28), np.uint8), np.zeros((0, 1, 28, 28), np.float32)):
        p = fp32.predict(empty, top_k=3)
        assert len(p) == 0 and p.labels.shape == (0,) and p.probabilities.shape == (0, 10)
        assert p.topk.shape == (0, 3) and p.to_list() == []


def test_non_contiguous_fortran_and_readonly_arrays_match_contiguous(fp32, test_digits):
    x = np.ascontiguousarray(test_digits[0][:16])
    want = fp32.predict(x).probabilities
    big = np.zeros((32, 56, 56), np.uint8)
    big[::2, ::2, ::2] = x
    views = [big[::2, ::2, ::2], np.asfortranarray(x), x.transpose(0, 2, 1).copy().transpose(0, 2, 1),
             test_digits[0][:16]]  # the last: read-only (load_mnist returns read-only arrays)
    assert not views[0].flags.c_contiguous and views[1].flags.f_contiguous and not views[3].flags.writeable
    for v in views:
        assert np.array_equal(fp32.predict(v).probabilities, want)


def test_top_k_is_validated(fp32, test_digits):
    for k in (0, 11, 2.5, True, "3"):
        with pytest.raises(UsageError, match="top_k must be an integer from 1 to 10"):
            fp32.predict(test_digits[0][:1], top_k=k)


# --- devices and session options ------------------------------------------------------------------------

def test_cuda_without_the_cuda_provider_is_an_error_naming_the_providers(artifact_dir, no_cuda):
    with pytest.raises(DeviceError) as e:
        load(artifact_dir, device="cuda")
    msg = str(e.value)
    assert "CPUExecutionProvider" in msg and "onnxruntime-gpu" in msg


def test_auto_without_cuda_runs_on_cpu_and_says_why(artifact_dir, no_cuda):
    clf = load(artifact_dir, device="auto")
    assert clf.device == "cpu" and clf.provider == "CPUExecutionProvider"
    assert clf.notes and "auto: CPU" in clf.notes[0] and "CUDAExecutionProvider" in clf.notes[0]


def test_a_cuda_provider_that_silently_falls_back_to_cpu_is_caught(artifact_dir, monkeypatch):
    """A CUDA build whose libraries fail to load creates a CPU-only session without raising (seen with
    onnxruntime-gpu 1.31.1); here the CPU build is told CUDA is available, so it does the same."""
    real = [p for p in ort.get_available_providers() if p != "CUDAExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", *real])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # onnxruntime warns that CUDA is not really available
        with pytest.raises(DeviceError, match=r"did not initialise \(the session runs on \['CPUExecutionProvider'\]"):
            load(artifact_dir, device="cuda")
        clf = load(artifact_dir, device="auto")
    assert clf.device == "cpu" and "did not initialise" in clf.notes[0]


def test_cuda_really_runs_on_cuda_and_agrees_with_cpu(cuda, artifact_dir, test_digits):
    x = test_digits[0]
    assert cuda.provider == "CUDAExecutionProvider"
    for precision in ("fp32", "int8"):
        gpu = load(artifact_dir, device="cuda", precision=precision)
        cpu = load(artifact_dir, device="cpu", precision=precision)
        assert gpu.provider == "CUDAExecutionProvider" and gpu.device == "cuda:0"
        assert (gpu.predict(x).labels == cpu.predict(x).labels).mean() >= 0.99
    assert any("int8 QDQ model on CUDA" in n for n in load(artifact_dir, device="cuda").notes)
    assert load(artifact_dir, device="auto").device == "cuda:0"


def test_unknown_device_and_bad_threads_are_usage_errors(artifact_dir):
    with pytest.raises(UsageError, match="unknown device 'gpu'; valid: cpu, cuda, cuda:N"):
        load(artifact_dir, device="gpu")
    for t in (0, -1, 1.5):
        with pytest.raises(UsageError, match="threads must be a positive integer"):
            load(artifact_dir, threads=t)
    with pytest.raises(UsageError, match="unknown precision 'fp16'"):
        load(artifact_dir, precision="fp16")


def test_session_options_are_tuned_for_latency(artifact_dir):
    clf = load(artifact_dir, threads=1)
    so = clf._session.get_session_options()
    assert so.intra_op_num_threads == 1 and so.inter_op_num_threads == 1
    assert so.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    spin = load(artifact_dir, spinning=True)._session.get_session_options()
    assert spin.get_session_config_entry("session.intra_op.allow_spinning") == "1"


# --- artifacts (BAD_INPUTS "artifacts" rows) ------------------------------------------------------------

def _copy(artifact_dir, tmp_path) -> Path:
    dst = tmp_path / "art"
    shutil.copytree(artifact_dir, dst)
    return dst


def _tamper(path: Path, how: str):
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "random":
        path.write_bytes(os.urandom(len(data)))
    elif how == "flipped":
        i = len(data) * 2 // 3
        path.write_bytes(data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:])


@pytest.mark.parametrize("how", ["truncated", "empty", "random", "flipped"])
@pytest.mark.parametrize("name", ["model.onnx", "model.int8.onnx"])
def test_tampered_onnx_in_a_folder_fails_the_hash_check_before_parsing(artifact_dir, tmp_path, monkeypatch, how, name):
    art = _copy(artifact_dir, tmp_path)
    _tamper(art / name, how)
    from mnist_edge.runtime import classifier

    def must_not_parse(*a, **k):
        raise AssertionError("parsed a file whose hash does not match")
    monkeypatch.setattr(classifier, "inspect_bytes", must_not_parse)
    with pytest.raises(ArtifactError, match="sha256|SHA-256|hash") as e:
        load(art, precision="int8" if "int8" in name else "fp32")
    assert name in str(e.value)


@pytest.mark.parametrize("how", ["truncated", "empty", "random"])
def test_broken_onnx_file_without_manifest_is_an_artifact_error_not_a_raw_onnxruntime_one(artifact_dir, tmp_path, how):
    p = tmp_path / "loose.onnx"
    shutil.copy(artifact_dir / "model.onnx", p)
    _tamper(p, how)
    with pytest.raises(ArtifactError) as e:
        load(p)
    assert str(p) in str(e.value) and "ONNXRuntimeError" not in str(e.value)


def test_manifest_missing_malformed_tampered_or_naming_absent_files(artifact_dir, tmp_path):
    cases = {}
    art = _copy(artifact_dir, tmp_path / "missing")
    (art / "manifest.json").unlink()
    cases["missing"] = art
    art = _copy(artifact_dir, tmp_path / "malformed")
    (art / "manifest.json").write_text("{not json")
    cases["malformed"] = art
    art = _copy(artifact_dir, tmp_path / "tampered")
    text = (art / "manifest.json").read_text()
    digest = __import__("hashlib").sha256((art / "model.int8.onnx").read_bytes()).hexdigest()
    (art / "manifest.json").write_text(text.replace(digest, "0" * 64))
    cases["tampered"] = art
    art = _copy(artifact_dir, tmp_path / "absent")
    (art / "model.int8.onnx").unlink()  # listed in the manifest: no silent switch to model.onnx
    cases["absent"] = art
    expected = {"missing": "manifest.json' is missing", "malformed": "not valid JSON",
                "tampered": "modified after export", "absent": "model.int8.onnx: missing"}
    for case, folder in cases.items():
        with pytest.raises(ArtifactError, match=expected[case]) as e:
            load(folder)
        assert str(folder) in str(e.value), case


def _edit(src: Path, dst: Path, edit) -> Path:
    m = onnx.load(src)
    edit(m)
    onnx.save(m, dst)
    return dst


def _set_meta(m, key, value=None):
    props = {p.key: p.value for p in m.metadata_props}
    if value is None:
        props.pop(key, None)
    else:
        props[key] = value
    del m.metadata_props[:]
    onnx.helper.set_model_props(m, props)


def test_ir_version_newer_than_onnxruntime_reads_quotes_both(artifact_dir, tmp_path):
    def edit(m):
        m.ir_version = 99  # beyond any onnxruntime's reach (1.32 reads IR 14)
    p = _edit(artifact_dir / "model.onnx", tmp_path / "ir99.onnx", edit)
    with pytest.raises(ArtifactError, match=r"IR version 99, newer than onnxruntime [\d.]+ reads \(at most IR 1\d\)"):
        load(p)


def test_opset_newer_than_onnxruntime_supports_quotes_both(artifact_dir, tmp_path):
    def edit(m):
        for o in m.opset_import:
            if o.domain in ("", "ai.onnx"):
                o.version = 40
    p = _edit(artifact_dir / "model.onnx", tmp_path / "opset40.onnx", edit)
    with pytest.raises(ArtifactError, match=r"opset 40, newer than onnxruntime [\d.]+ supports \(at most opset \d+\)"):
        load(p)


def test_external_data_is_refused_before_onnxruntime_reads_it(artifact_dir, tmp_path):
    m = onnx.load(artifact_dir / "model.onnx")
    onnx.save_model(m, tmp_path / "ext.onnx", save_as_external_data=True, location="weights.bin",
                    size_threshold=0)
    assert (tmp_path / "weights.bin").exists()
    with pytest.raises(ArtifactError, match="external data.*refused"):
        load(tmp_path / "ext.onnx")


@pytest.mark.parametrize("case, edit, message", [
    ("no metadata", lambda m: m.metadata_props.__delitem__(slice(None)), "lacks the metadata.*mnist_edge.contract"),
    ("no labels", lambda m: _set_meta(m, C.META_KEYS["labels"]), "lacks the metadata.*mnist_edge.labels"),
    ("contract 2", lambda m: _set_meta(m, C.META_KEYS["contract"], "2"), "contract version '2'"),
    ("bad labels", lambda m: _set_meta(m, C.META_KEYS["labels"], '["a"]'), "labels must be a list of 2 to 1000 distinct names"),
    ("bad json", lambda m: _set_meta(m, C.META_KEYS["input"], "{"), "is not JSON"),
    ("input renamed", lambda m: setattr(m.graph.input[0], "name", "pixels") or
     [n.input.__setitem__(i, "pixels") for n in m.graph.node for i, v in enumerate(n.input) if v == "image"],
     "input named 'pixels', expected 'image'"),
    ("fixed batch", lambda m: m.graph.input[0].type.tensor_type.shape.dim[0].__setattr__("dim_value", 1),
     "fixed batch dimension 1"),
    ("output dropped", lambda m: m.graph.output.__delitem__(1), "no output 'probabilities'"),
])
def test_contract_mismatches_fail_at_load_not_at_first_predict(artifact_dir, tmp_path, case, edit, message):
    p = _edit(artifact_dir / "model.onnx", tmp_path / "edited.onnx", edit)
    with pytest.raises(ContractError, match=message):
        load(p)


def test_float_input_model_is_a_contract_error(artifact_dir, tmp_path):
    def edit(m):  # declare the input float32 and cast it back to uint8 first, so the graph stays valid
        inp = m.graph.input[0]
        inp.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
        inp.name = "image_f"
        m.graph.node.insert(0, onnx.helper.make_node("Cast", ["image_f"], ["image"], to=onnx.TensorProto.UINT8))
    p = _edit(artifact_dir / "model.onnx", tmp_path / "float.onnx", edit)
    with pytest.raises(ContractError, match=r"named 'image_f'.*type tensor\(float\), expected tensor\(uint8"):
        load(p)


def test_loose_file_beside_its_manifest_is_verified(artifact_dir):
    clf = load(artifact_dir / "model.onnx")
    assert clf.verified and clf.precision == "fp32"


def test_missing_model_path(tmp_path):
    with pytest.raises(ArtifactError, match="no such file or folder"):
        load(tmp_path / "nope.onnx")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(ArtifactError, match="manifest.json' is missing"):
        load(tmp_path / "empty_dir")
