"""`mnist-edge verify` and the manifest: hashes before parsing, accuracy against the manifest, torch optional."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest

from mnist_edge.cli import main
from mnist_edge.errors import ArtifactError, ContractError
from mnist_edge.evaluate.ort_eval import runtime_limits
from mnist_edge.evaluate.verify import verify_artifacts
from mnist_edge.contract import META_KEYS
from mnist_edge.manifest import MANIFEST_NAME, file_record, read_manifest, seal, verify_files, write_manifest
from mnist_edge.runtime import load


def run_cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def copy(artifact_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "bn_cnn"
    shutil.copytree(artifact_dir, dst)
    return dst


def rehash(folder: Path, name: str) -> None:
    """Rewrite the manifest so it vouches for the file's current bytes (what a careless edit would do)."""
    manifest = read_manifest(folder)
    data = (folder / name).read_bytes()
    manifest["files"][name].update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    write_manifest(folder, manifest)


def test_verify_passes_on_a_fresh_export(artifact_dir, mnist_dir):
    code, out, err = run_cli("verify", str(artifact_dir), "--data", str(mnist_dir))
    assert code == 0, err
    assert "  model.int8.tflite: accuracy on 10,000 test images" in err.splitlines()  # progress, one per model
    rows = {line.split()[0]: line for line in out.splitlines()[2:]}
    models = ("model.pt", "model.onnx", "model.int8.onnx", "model.tflite", "model.int8.tflite")
    assert set(rows) == {"checkpoint.pt", "selftest.bin", *models}
    for name in models:
        assert rows[name].endswith(" ok"), rows[name]
        acc, expected = rows[name].split()[1:3]
        assert acc == expected  # same machine, same kernels: the manifest's number exactly
    assert rows["checkpoint.pt"].endswith("hash ok")


def test_hashes_only_needs_no_data(artifact_dir, monkeypatch):
    monkeypatch.delenv("MNIST_EDGE_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "/nonexistent")
    code, out, _ = run_cli("verify", str(artifact_dir), "--hashes-only")
    assert code == 0 and out.count("hash ok") == 7  # five models, the checkpoint, the self-test bundle


def _tamper(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "flipped":
        i = len(data) * 2 // 3
        path.write_bytes(data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:])
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "random":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, len(data), dtype=np.uint8).tobytes())
    elif how == "appended":
        path.write_bytes(data + b"\0")


@pytest.mark.parametrize("how", ["flipped", "truncated", "empty", "random", "appended"])
@pytest.mark.parametrize("name", ["model.onnx", "model.int8.onnx", "model.pt", "checkpoint.pt"])
def test_a_changed_file_is_caught_by_its_hash_before_anything_parses_it(name, how, artifact_dir, tmp_path,
                                                                       monkeypatch):
    folder = copy(artifact_dir, tmp_path)
    _tamper(folder / name, how)

    def must_not_parse(*a, **k):
        raise AssertionError("a parser ran before the hash check")

    import onnxruntime
    import torch

    monkeypatch.setattr(onnx, "load", must_not_parse)
    monkeypatch.setattr(onnxruntime, "InferenceSession", must_not_parse)
    monkeypatch.setattr(torch.jit, "load", must_not_parse)
    monkeypatch.setattr("mnist_edge.data.mnist.load_mnist", must_not_parse)
    with pytest.raises(ArtifactError, match="fails its hash check") as e:
        verify_artifacts(folder)
    assert name in str(e.value) and ("SHA-256" in str(e.value) or "size" in str(e.value))
    code, out, err = run_cli("verify", str(folder))
    assert code == 1 and out == "" and len(err.strip().splitlines()) == 1 and name in err


def _zero_first_conv(model) -> None:
    inits = {t.name: t for t in model.graph.initializer}
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    w = inits[conv.input[1]]
    w.CopyFrom(onnx.numpy_helper.from_array(np.zeros_like(onnx.numpy_helper.to_array(w)), w.name))


def test_a_tampered_weight_fails_verify_by_hash_and_by_accuracy(artifact_dir, mnist_dir, tmp_path):
    folder = copy(artifact_dir, tmp_path)
    m = onnx.load(folder / "model.onnx")
    _zero_first_conv(m)
    onnx.save(m, folder / "model.onnx")
    with pytest.raises(ArtifactError, match="model.onnx: (size|SHA-256)"):
        verify_artifacts(folder, data_dir=mnist_dir)
    # Even with the manifest rewritten to vouch for the new bytes, the accuracy check catches the change.
    rehash(folder, "model.onnx")
    with pytest.raises(ArtifactError, match=r"model.onnx: accuracy \d+\.\d\d% on 10,000 test images, manifest says") as e:
        verify_artifacts(folder, data_dir=mnist_dir, torchscript=False)
    assert "model.int8.onnx" not in str(e.value)  # the untouched files still pass


def test_verify_runs_without_torch(artifact_dir, mnist_dir):
    script = f"""
        import sys
        sys.modules["torch"] = None  # as on a Raspberry Pi with only the runtime installed
        from mnist_edge.cli import main
        code = main(["verify", {str(artifact_dir)!r}, "--data", {str(mnist_dir)!r}])
        assert not [m for m, mod in sys.modules.items() if mod is not None and m.split(".")[0] == "torch"]
        sys.exit(code)
    """
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line for line in proc.stdout.splitlines()[2:]}
    assert rows["model.onnx"].endswith(" ok") and rows["model.int8.onnx"].endswith(" ok")
    assert rows["model.pt"].endswith("skipped (torch not installed)")


def test_manifest_missing_malformed_edited_or_unsafe(artifact_dir, tmp_path):
    cases = {}

    def case(label, edit):
        folder = copy(artifact_dir, tmp_path / label)
        edit(folder)
        cases[label] = folder

    case("missing", lambda f: (f / MANIFEST_NAME).unlink())
    case("malformed", lambda f: (f / MANIFEST_NAME).write_text("{not json"))
    case("not ours", lambda f: (f / MANIFEST_NAME).write_text('{"format": "other/1"}'))
    case("edited", lambda f: (f / MANIFEST_NAME).write_text(
        (f / MANIFEST_NAME).read_text().replace('"quantize": true', '"quantize": false')))
    case("absent file", lambda f: (f / "model.pt").unlink())

    def traversal(f):
        m = json.loads((f / MANIFEST_NAME).read_text())
        m["files"]["../model.onnx"] = m["files"].pop("model.onnx")
        (f / MANIFEST_NAME).write_text(json.dumps(seal(m)))
    case("traversal", traversal)
    case("huge", lambda f: (f / MANIFEST_NAME).write_bytes(b" " * (2 << 20)))
    expected = {"missing": "manifest.json' is missing", "malformed": "not valid JSON",
                "not ours": "not an mnist-edge manifest", "edited": "modified after export",
                "absent file": "model.pt: missing", "traversal": "only plain file names",
                "huge": "a manifest is at most"}
    for label, folder in cases.items():
        with pytest.raises(ArtifactError, match=expected[label]) as e:
            verify_files(folder)
        assert str(folder) in str(e.value), label


def test_external_data_is_refused(artifact_dir, tmp_path):
    m = onnx.load(artifact_dir / "model.onnx")
    onnx.save_model(m, tmp_path / "ext.onnx", save_as_external_data=True, location="weights.bin", size_threshold=0)
    with pytest.raises(ArtifactError, match="external data.*refused"):
        load(tmp_path / "ext.onnx")


def test_ir_and_opset_newer_than_onnxruntime_are_refused_quoting_both(artifact_dir, tmp_path):
    max_ir, max_opset = runtime_limits()
    assert max_ir >= 10 and max_opset >= 18
    m = onnx.load(artifact_dir / "model.onnx")
    m.opset_import[0].version = max_opset + 1
    onnx.save(m, tmp_path / "new.onnx")
    with pytest.raises(ArtifactError, match=rf"opset {max_opset + 1}, newer than onnxruntime [\d.]+ supports "
                                            rf"\(at most opset {max_opset}\)"):
        load(tmp_path / "new.onnx")


def relabelled(artifact_dir: Path, tmp_path: Path) -> Path:
    """A copy of the folder whose model.onnx says it is 'mlp', with the manifest resealed over it."""
    folder = tmp_path / "relabelled"
    shutil.copytree(artifact_dir, folder)
    m = onnx.load(folder / "model.onnx")
    next(p for p in m.metadata_props if p.key == META_KEYS["model"]).value = "mlp"
    onnx.save(m, folder / "model.onnx")
    manifest = read_manifest(folder)
    manifest["files"]["model.onnx"].update(file_record(folder / "model.onnx"))
    write_manifest(folder, manifest)
    return folder


def test_a_model_that_is_not_the_manifests_is_a_contract_error(artifact_dir, tmp_path, mnist_dir):
    folder = relabelled(artifact_dir, tmp_path)
    with pytest.raises(ArtifactError, match="model.onnx: .*holds model 'mlp', its manifest says 'bn_cnn'"):
        verify_artifacts(folder, data_dir=mnist_dir)
    m = onnx.load(artifact_dir / "model.onnx")
    del m.metadata_props[:]
    onnx.save(m, tmp_path / "bare.onnx")
    with pytest.raises(ContractError, match="lacks the metadata our runtime needs: mnist_edge.contract"):
        load(tmp_path / "bare.onnx")


def test_without_onnx_and_torch_verify_still_refuses_a_relabelled_model(artifact_dir, tmp_path, mnist_dir):
    """The defect of two verification paths: with onnx unimportable, verify once passed this folder."""
    folder = relabelled(artifact_dir, tmp_path)
    code = ("import sys; sys.modules['onnx'] = None; sys.modules['torch'] = None\n"
            "from mnist_edge.cli import main\n"
            f"sys.exit(main(['verify', {str(folder)!r}, '--data', {str(mnist_dir)!r}]))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert "model.onnx: " in p.stderr and "holds model 'mlp', its manifest says 'bn_cnn'" in p.stderr


def test_bad_tolerance_and_missing_folder_are_one_line_errors(tmp_path):
    code, _, err = run_cli("verify", str(tmp_path / "nope"))
    assert code == 1 and "does not exist" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli("verify", str(tmp_path), "--tolerance", "-1")
    assert code == 1 and "--tolerance -1.0 must be between 0 and 100" in err
