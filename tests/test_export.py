"""The export layer: every zoo model exports and passes its gates; the gates can fail; failures change nothing.

PyTorch is the oracle. bn_cnn is gated on all 10,000 test images through the CLI (the session's
``artifact_dir``); the other zoo models are gated on the first 2,000 test images (``eval_limit``, recorded
in their manifests) with the same thresholds and batch sizes, to keep the suite within minutes on 2 cores.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest

from mnist_edge.cli import interrupted_message, main
from mnist_edge.contract import META_KEYS
from mnist_edge.errors import CheckpointError, ExportError, GateError, UsageError
from mnist_edge.evaluate import gates as G
from mnist_edge.exporter import default_checkpoint, from_checkpoint, pipeline, swap
from mnist_edge.int8.quantize import QuantizeOptions, custom_source, quantize_int8
from mnist_edge.files import forget_replaced, sha256_file
from mnist_edge.manifest import verify_files
from mnist_edge.zoo.registry import MODELS

from conftest import EXPORTED, SHORT_TRAINED_THRESHOLDS
from helpers_export import export_checkpoint

# Written out, not taken from MODELS, so that a model added to the registry fails the test below.
ZOO = ["cnn_small", "cnn_small_1conv", "mlp", "cnn", "bn_cnn", "lenet5", "lenet5_mod", "mlp_wide", "cnn_dropout",
       "edge_cnn"]
ZOO_EVAL_LIMIT = 500
# The pipeline's mechanics (gates that fail, interrupted or failed exports, folder swaps, bad options) are the
# same for every model; they run on the short-trained mlp, whose export takes ~2 s against bn_cnn's ~18 s.
MECH = "mlp"
ARTIFACTS = {"checkpoint.pt", "model.pt", "model.onnx", "model.int8.onnx", "manifest.json"}


def test_every_registry_model_is_parametrized():
    assert sorted(ZOO) == sorted(MODELS), "add the new registry model to ZOO (it must export and pass the gates)"


def snapshot(folder: Path) -> dict:
    """Every file's bytes and mode, by relative path: 'byte-identical' made checkable."""
    return {str(p.relative_to(folder)): (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
            for p in sorted(folder.rglob("*")) if p.is_file()}


def previous_folder(artifact_dir: Path, tmp_path: Path) -> Path:
    """A folder holding an earlier, complete export (the session's bn_cnn) where the next export of MECH goes."""
    out = tmp_path / "exported" / MECH
    shutil.copytree(artifact_dir, out)
    (out / "notes.txt").write_text("kept across exports\n")
    return out


def assert_export_folder(folder: Path, name: str, checkpoint: Path, images: int, thresholds=G.THRESHOLDS) -> dict:
    assert {p.name for p in folder.iterdir()} >= ARTIFACTS
    manifest = verify_files(folder)  # every hash matches
    assert manifest["model"] == name and manifest["evaluation"]["images"] == images
    assert manifest["evaluation"]["batch_sizes"] == [1, 7, 64]
    assert sha256_file(folder / "checkpoint.pt") == sha256_file(checkpoint)  # carried over byte for byte
    assert manifest["checks"] and all(c["passed"] for c in manifest["checks"])
    models = {n for n, e in manifest["files"].items() if e["kind"] == "model"}  # + the LiteRT files where written
    assert models >= {"model.pt", "model.onnx", "model.int8.onnx"}
    assert {(c["artifact"], c["batch_size"]) for c in manifest["checks"] if c["batch_size"]} == {
        (a, b) for a in models for b in (1, 7, 64)}

    files = manifest["files"]
    assert manifest["settings"]["thresholds"] == thresholds
    assert files["model.pt"]["max_abs_diff"] <= 1e-5 and files["model.pt"]["label_mismatches"] == 0
    assert files["model.onnx"]["max_abs_diff"] <= 1e-4 and files["model.onnx"]["label_mismatches"] <= 1
    int8 = thresholds["int8"]
    assert files["model.int8.onnx"]["agreement"] >= int8["agreement_pct"]
    assert files["model.int8.onnx"]["accuracy_drop_pp"] <= int8["accuracy_drop_pp"]
    assert files["model.int8.onnx"]["reference"] == "model.onnx"
    assert abs(files["model.onnx"]["accuracy"] - manifest["pytorch"]["accuracy"]) <= 0.01 + 100 / images
    for entry in files.values():
        assert entry["size"] == (folder / [k for k, v in files.items() if v is entry][0]).stat().st_size

    ckpt_sha = sha256_file(checkpoint)
    for fname, precision in (("model.onnx", "fp32"), ("model.int8.onnx", "int8")):
        model = onnx.load(folder / fname)
        assert model.ir_version <= 10 and model.opset_import[0].version == 18
        assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
        assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
        meta = {p.key: p.value for p in model.metadata_props}
        expected_keys = set(META_KEYS.values()) - ({META_KEYS["quantization"]} if precision == "fp32" else set())
        # onnxruntime's quantizer adds its own markers ("onnx.infer": "onnxruntime.quant", and
        # "onnx.quant.pre_process" when the recipe runs quant_pre_process); we keep them
        assert set(meta) - {"onnx.infer", "onnx.quant.pre_process"} == expected_keys
        assert meta[META_KEYS["model"]] == name and meta[META_KEYS["precision"]] == precision
        assert meta[META_KEYS["checkpoint_sha256"]] == ckpt_sha
        assert json.loads(meta[META_KEYS["labels"]]) == [str(i) for i in range(10)]
        assert json.loads(meta[META_KEYS["versions"]])["torch"].startswith("2.")
        if precision == "int8":
            # the model's registered recipe (its entry in mnist_edge/zoo/int8_recipes.json), applied as recorded
            from mnist_edge.int8.recipes import load_recipe

            opts = load_recipe(name).options
            ops = [n.op_type for n in model.graph.node]
            assert ops.count("QuantizeLinear") >= 1 and (ops.count("DequantizeLinear") >= 1 or any(
                o.startswith("QLinear") for o in ops))
            recipe = json.loads(meta[META_KEYS["quantization"]])
            assert recipe == files["model.int8.onnx"]["quantization"]
            assert {k: recipe[k] for k in opts.to_dict()} == json.loads(json.dumps(opts.to_dict()))
            assert recipe["calibration_source"]["split"] == "train"
            assert recipe["calibration_source"]["per_class"] == [opts.calibration_samples // 10] * 10
            inits = {t.name: t for t in model.graph.initializer}
            per_channel = [n for n in model.graph.node if n.op_type == "DequantizeLinear"
                           and n.input[0] in inits and inits[n.input[0]].data_type == onnx.TensorProto.INT8
                           and len(inits[n.input[1]].dims) == 1 and inits[n.input[1]].dims[0] > 1]
            if opts.per_channel and opts.quant_format == "qdq" and opts.weight_type == "int8":
                assert per_channel, "weights should carry one scale per output channel"
    return manifest


@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_exports_and_passes_every_gate(name, short_trained, exported_bn_cnn, mnist_dir, tmp_path):
    """Every registry model goes through the whole pipeline. The briefly trained fixtures are gated with
    SHORT_TRAINED_THRESHOLDS (the real int8 limits are applied to the committed models in
    test_exported.py); bn_cnn is the session's CLI export of the committed checkpoint, with the real ones."""
    if name == "bn_cnn":  # the CLI export of the session, on all 10,000 test images
        from mnist_edge.training.checkpoint import read_checkpoint

        checkpoint = EXPORTED / "bn_cnn" / "checkpoint.pt"
        manifest = assert_export_folder(exported_bn_cnn.path, name, checkpoint, 10_000)
        assert abs(manifest["pytorch"]["accuracy"] - read_checkpoint(checkpoint)["metrics"]["test_accuracy"]) < 0.011
        return
    trained = short_trained(name)
    folder = tmp_path / name
    result = export_checkpoint(trained.checkpoint, folder, mnist_dir, quantize=True,
                                   eval_limit=ZOO_EVAL_LIMIT, thresholds=SHORT_TRAINED_THRESHOLDS)
    assert all(c.passed for c in result.checks) and result.out == folder
    assert_export_folder(folder, name, trained.checkpoint, ZOO_EVAL_LIMIT, SHORT_TRAINED_THRESHOLDS)


def test_thresholds_are_checked_and_the_real_ones_are_the_default(short_trained, mnist_dir, tmp_path):
    bad = {**G.THRESHOLDS, "int8": {"agreement_pct": 99.5}}
    with pytest.raises(UsageError, match="thresholds"):
        export_checkpoint(short_trained(MECH).checkpoint, tmp_path / "o", mnist_dir,
                              thresholds=bad)
    assert G.check_thresholds(None) is G.THRESHOLDS
    assert not (tmp_path / "o").exists()


def test_cli_prints_a_clean_table_and_leaves_no_temporary_folders(exported_bn_cnn):
    out = exported_bn_cnn.stdout
    lines = out.splitlines()
    assert lines[0].startswith(f"exported bn_cnn to {exported_bn_cnn.path}/")
    assert "10,000 test images at batch sizes 1, 7, 64" in lines[0]
    for fname in ARTIFACTS:
        assert any(line.startswith(fname) for line in lines), fname
    assert any(line.startswith("checks: ") and line.split()[1].split("/")[0] == line.split()[1].split("/")[1]
               for line in lines)
    # The dynamo exporter's progress lines and warnings stay out of our output; onnxruntime's quantizer
    # warnings reach the user, once, as our own "onnxruntime: ..." lines (they are recorded in the manifest).
    assert any(line.startswith("onnxruntime: warning: Please consider") for line in lines), out
    noise = ("[torch.onnx]", "Warning", "warn", "torchvision", "Traceback")
    ours = lambda text: "\n".join(ln for ln in text.splitlines() if not ln.strip().startswith("onnxruntime: "))  # noqa: E731
    assert not any(n in ours(out) for n in noise), out
    assert not any(n in ours(exported_bn_cnn.stderr) for n in noise[:-1]), exported_bn_cnn.stderr
    assert sorted(p.name for p in exported_bn_cnn.path.parent.iterdir()) == ["bn_cnn"]
    assert stat.S_IMODE(exported_bn_cnn.path.stat().st_mode) == 0o755


def test_torchscript_loads_with_plain_torch_and_without_mnist_edge(artifact_dir, edge_model, mnist_dir, tmp_path):
    from mnist_edge.data.mnist import load_mnist

    x = load_mnist("test", mnist_dir)[0][:500, None].copy()
    np.save(tmp_path / "x.npy", x)
    script = f"""
        import sys, warnings
        sys.modules["mnist_edge"] = None  # the file must not need our package
        import numpy as np, torch
        warnings.simplefilter("ignore", DeprecationWarning)
        m = torch.jit.load({str(artifact_dir / 'model.pt')!r})
        logits, probs = m(torch.from_numpy(np.load({str(tmp_path / 'x.npy')!r})))
        np.save({str(tmp_path / 'ts.npy')!r}, logits.detach().numpy())
        assert probs.shape == (500, 10) and abs(float(probs.sum(1).mean()) - 1) < 1e-5
    """
    subprocess.run([sys.executable, "-c", textwrap.dedent(script)], check=True, timeout=120)
    import torch

    with torch.no_grad():
        want = edge_model(torch.from_numpy(x))[0].numpy()
    got = np.load(tmp_path / "ts.npy")
    assert np.abs(got - want).max() <= 1e-5 and (got.argmax(1) == want.argmax(1)).all()


@pytest.mark.parametrize("fname", ["model.onnx", "model.int8.onnx"])
def test_onnx_runs_in_a_fresh_process_with_only_numpy_and_onnxruntime(fname, artifact_dir, edge_model, mnist_dir,
                                                                       tmp_path):
    from mnist_edge.data.mnist import load_mnist

    x = load_mnist("test", mnist_dir)[0][:1000, None].copy()
    np.save(tmp_path / "x.npy", x)
    script = f"""
        import sys
        sys.modules["torch"] = None  # importing torch now raises ImportError
        sys.modules["mnist_edge"] = None
        import numpy as np, onnxruntime as ort
        s = ort.InferenceSession({str(artifact_dir / fname)!r}, providers=["CPUExecutionProvider"])
        logits, probs = s.run(None, {{"image": np.load({str(tmp_path / 'x.npy')!r})}})
        np.save({str(tmp_path / 'labels.npy')!r}, logits.argmax(1))
        loaded = [m for m, mod in sys.modules.items() if mod is not None and m.split(".")[0] in ("torch", "mnist_edge", "onnx")]
        assert not loaded, loaded
    """
    subprocess.run([sys.executable, "-c", textwrap.dedent(script)], check=True, timeout=120)
    import torch

    with torch.no_grad():
        want = edge_model(torch.from_numpy(x))[0].numpy().argmax(1)
    got = np.load(tmp_path / "labels.npy")
    if fname == "model.onnx":
        assert (got != want).sum() <= 1
    else:  # the int8 gate's bound, on this subset
        assert (got == want).mean() >= 0.99


# --- the gates can fail, and a failure changes nothing -------------------------------------------------------

def test_int8_calibrated_on_blank_images_fails_the_int8_gate(artifact_dir, short_trained, mnist_dir, tmp_path):
    out = previous_folder(artifact_dir, tmp_path)
    before = snapshot(out)
    with pytest.raises(GateError) as e:
        export_checkpoint(short_trained(MECH).checkpoint, out, mnist_dir, quantize=True,
                              eval_limit=1000,
                              calibration_images=np.zeros((200, 28, 28), np.uint8))
    msg = str(e.value)
    assert "model.int8.onnx @ batch 1: agreement_pct" in msg and "model.int8.onnx @ batch 64: accuracy_drop_pp" in msg
    assert "[1]" in msg and "limit >= 99.50%" in msg
    assert "model.onnx @" not in msg and "model.pt @" not in msg  # only the int8 checks failed
    assert snapshot(out) == before
    assert sorted(p.name for p in out.parent.iterdir()) == [MECH]


def test_a_batch_size_baked_into_the_onnx_file_fails_the_gate(artifact_dir, short_trained, mnist_dir, tmp_path,
                                                               monkeypatch):
    from mnist_edge.exporter import onnx_export

    real_export = onnx_export.export_onnx

    def export_with_fixed_batch(edge, path, **kw):
        info = real_export(edge, path, **kw)
        m = onnx.load(path)
        for v in list(m.graph.input) + list(m.graph.output):
            v.type.tensor_type.shape.dim[0].dim_value = 64  # what a trace at batch 64 without dynamic axes gives
        onnx.save(m, path)
        return info

    monkeypatch.setattr(onnx_export, "export_onnx", export_with_fixed_batch)
    out = previous_folder(artifact_dir, tmp_path)
    before = snapshot(out)
    with pytest.raises(GateError) as e:
        export_checkpoint(short_trained(MECH).checkpoint, out, mnist_dir,
                              eval_limit=640)
    msg = str(e.value)
    assert "model.onnx: contract failed: input batch dimension is fixed at 64" in msg
    assert "model.onnx @ batch 1: max_abs_diff failed" in msg and "model.onnx @ batch 7: max_abs_diff failed" in msg
    assert "model.onnx @ batch 64" not in msg  # 640 images: batch 64 runs fine
    assert snapshot(out) == before


def test_gate_error_lists_every_failed_check_with_its_number():
    ref = {1: np.zeros((4, 10), np.float32), 7: np.zeros((4, 10), np.float32)}
    bad = ref[1].copy()
    bad[0, 3] = 0.5  # one label flips, logits off by 0.5
    checks = G.parity_checks("model.onnx", ref, {1: bad, 7: ValueError("Got invalid dimensions")},
                             max_abs_diff=1e-4, label_mismatches=0)
    assert [c.passed for c in checks] == [False, False, False, False]
    with pytest.raises(GateError) as e:
        G.raise_on_failure(checks, "bn_cnn")
    msg = str(e.value)
    assert msg.startswith("4 of 4 parity checks failed for bn_cnn")
    assert "[1] model.onnx @ batch 1: max_abs_diff 5.00e-01 (limit <= 1.00e-04)" in msg
    assert "[2] model.onnx @ batch 1: label_mismatches 1 (limit <= 0)" in msg
    assert "[3] model.onnx @ batch 7: max_abs_diff failed: ValueError: Got invalid dimensions" in msg
    nan = ref[1].copy()
    nan[0, 0] = np.nan
    assert not G.parity_checks("x", {1: ref[1]}, {1: nan}, max_abs_diff=1.0, label_mismatches=5)[0].passed


@pytest.mark.parametrize("target, exc", [
    ("export_onnx", RuntimeError("exporter crashed")),
    ("export_onnx", KeyboardInterrupt()),
    ("quantize_int8", OSError(errno.ENOSPC, "No space left on device")),
    ("write_manifest", KeyboardInterrupt()),  # after every gate passed
    ("_exchange", KeyboardInterrupt()),  # at the swap itself
    ("rename", OSError(errno.EIO, "Input/output error")),  # fallback swap: the second rename fails
], ids=["error-in-onnx", "ctrl-c-in-onnx", "disk-full-in-int8", "ctrl-c-before-manifest", "ctrl-c-at-swap",
        "fallback-swap-fails"])
def test_a_failed_or_interrupted_export_leaves_the_previous_folder_byte_identical(
        target, exc, artifact_dir, short_trained, mnist_dir, tmp_path, monkeypatch):
    out = previous_folder(artifact_dir, tmp_path)
    before = snapshot(out)

    def fail(*a, **k):
        raise exc

    if target == "quantize_int8":
        monkeypatch.setattr("mnist_edge.int8.quantize.quantize_int8", fail)
    elif target == "rename":
        real_rename = os.rename
        monkeypatch.setattr(swap, "_exchange", lambda a, b: False)  # e.g. a filesystem without RENAME_EXCHANGE

        def rename(src, dst):
            if Path(src).name.startswith(f".{MECH}.export-"):  # the new folder moving into place
                raise exc
            return real_rename(src, dst)
        monkeypatch.setattr(swap.os, "rename", rename)
    elif target == "_exchange":
        monkeypatch.setattr(swap, target, fail)
    else:  # looked up in its module at each call
        monkeypatch.setattr({"export_onnx": "mnist_edge.exporter.onnx_export.export_onnx",
                             "write_manifest": "mnist_edge.manifest.write_manifest"}[target], fail)
    expected = ExportError if isinstance(exc, OSError) else type(exc)
    with pytest.raises(expected) as e:
        export_checkpoint(short_trained(MECH).checkpoint, out, mnist_dir,
                              quantize=target in ("export_onnx", "quantize_int8"),
                              eval_limit=500)
    if expected is ExportError:
        assert "is unchanged" in str(e.value)
    assert snapshot(out) == before
    assert sorted(p.name for p in out.parent.iterdir()) == [MECH]  # no temporary folder left behind


def test_ctrl_c_just_after_the_swap_reports_the_new_folder_and_leftovers_of_killed_exports_go(
        artifact_dir, short_trained, mnist_dir, tmp_path, monkeypatch, default_sigint):
    """Issue 12, items 6 and 7: a folder a SIGKILLed export left is removed by the next export (it is ours,
    unlocked and old); a Ctrl-C that lands right after the swap says the new folder is in place."""
    import signal
    import time

    out = previous_folder(artifact_dir, tmp_path)
    killed = out.parent / f".{MECH}.export-k1ll3d00"
    killed.mkdir()
    (killed / "model.onnx").write_bytes(b"half an export")
    old = time.time() - 3600
    os.utime(killed, (old, old))
    real_swap = pipeline.swap_into_place

    def swap_then_ctrl_c(new, dest):
        real_swap(new, dest)
        os.kill(os.getpid(), signal.SIGINT)  # held back until the swap is recorded

    monkeypatch.setattr(pipeline, "swap_into_place", swap_then_ctrl_c)
    checkpoint = short_trained(MECH).checkpoint  # trained (and its checkpoint written) before the record
    forget_replaced()
    with pytest.raises(KeyboardInterrupt):
        export_checkpoint(checkpoint, out, mnist_dir, eval_limit=300)
    msg = interrupted_message()  # what the CLI prints for a KeyboardInterrupt
    assert msg.startswith(f"interrupted after replacing {out} (complete and in place)"), msg
    assert "model.int8.onnx" not in {p.name for p in out.iterdir()}  # the new (non-quantized) export is there
    assert verify_files(out)["evaluation"]["images"] == 300
    forget_replaced()
    assert sorted(p.name for p in out.parent.iterdir()) == [MECH]  # leftover and swapped-out folder gone


def test_a_new_export_carries_other_files_over_and_drops_stale_artifacts(artifact_dir, short_trained, mnist_dir,
                                                                          tmp_path, monkeypatch):
    out = previous_folder(artifact_dir, tmp_path)
    os.chmod(out, 0o750)
    monkeypatch.setattr(swap, "_exchange", lambda a, b: False)  # exercise the two-rename swap too
    result = export_checkpoint(short_trained(MECH).checkpoint, out, mnist_dir,
                                   eval_limit=300)
    names = {p.name for p in out.iterdir()}
    assert names == {"checkpoint.pt", "model.pt", "model.onnx", "manifest.json", "selftest.bin",
                     "notes.txt"}  # no stale int8
    assert (out / "notes.txt").read_text() == "kept across exports\n"
    assert set(result.files) == {"checkpoint.pt", "model.pt", "model.onnx", "selftest.bin"}
    assert result.files["selftest.bin"]["covers"] == ["model.onnx", "model.pt"]  # no int8 reference either
    assert result.manifest["settings"]["quantize"] is False
    assert stat.S_IMODE(out.stat().st_mode) == 0o750
    assert sorted(p.name for p in out.parent.iterdir()) == [MECH]


def test_by_default_export_reads_the_committed_checkpoint_and_writes_into_runs_export(short_trained, mnist_dir,
                                                                                      tmp_path, monkeypatch):
    """`mnist-edge export --model NAME` never overwrites the committed exported/NAME: it writes runs/export/NAME."""
    monkeypatch.chdir(tmp_path)
    committed = tmp_path / "exported" / "mlp" / "checkpoint.pt"
    committed.parent.mkdir(parents=True)
    shutil.copyfile(short_trained("mlp").checkpoint, committed)
    before = snapshot(committed.parent)
    code, out, err = run_cli("export", "--model", "mlp", "--data", str(mnist_dir), "--quiet")
    assert code == 0, err
    assert "runs/export/mlp/" in out.splitlines()[0]
    assert snapshot(committed.parent) == before  # the committed folder is untouched
    assert verify_files(tmp_path / "runs" / "export" / "mlp")["files"]["checkpoint.pt"]["sha256"] == \
        sha256_file(committed)


# --- bad input: typed errors, one line at the CLI, nothing changed ------------------------------------------

def run_cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_missing_committed_checkpoint_says_how_to_train_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match=r"exported/bn_cnn/checkpoint.pt.*mnist-edge train --model bn_cnn"):
        from_checkpoint(default_checkpoint("bn_cnn"), model="bn_cnn")
    code, out, err = run_cli("export", "--model", "bn_cnn")
    assert code == 1 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith("mnist-edge export: error: ") and "mnist-edge train --model bn_cnn" in err
    assert not (tmp_path / "exported").exists()


def test_a_checkpoint_of_another_model_is_refused(short_trained, tmp_path):
    with pytest.raises(CheckpointError, match="holds model 'mlp', not 'bn_cnn'"):
        from_checkpoint(short_trained("mlp").checkpoint, model="bn_cnn")
    assert not (tmp_path / "o").exists()


def test_read_only_output_folder_is_an_error_and_keeps_its_artifacts(artifact_dir, mnist_dir, short_trained, tmp_path):
    out = previous_folder(artifact_dir, tmp_path)
    before = snapshot(out)
    os.chmod(out, 0o555)
    try:
        code, _, err = run_cli("export", "--model", MECH, "--checkpoint", str(short_trained(MECH).checkpoint),
                               "--out", str(out))
    finally:
        os.chmod(out, 0o755)
    assert code == 1 and "read-only" in err and str(out) in err and len(err.strip().splitlines()) == 1
    assert snapshot(out) == before


@pytest.mark.parametrize("argv, message", [
    (["--model", "bn_cn"], "Did you mean 'bn_cnn'"),
    (["--model", MECH, "--opset", "11"], r"--opset 11 is not supported: valid opsets are 16\.\.2\d"),
    (["--model", MECH, "--opset", "99"], r"--opset 99 is not supported"),
    (["--model", MECH, "--calibration-method", "entropy"], "--calibration-method only apply with --quantize"),
    (["--model", MECH, "--quantize", "--calibration-samples", "5"], "--calibration-samples 5 must be"),
])
def test_bad_options_are_one_line_usage_errors(argv, message, short_trained, tmp_path):
    code, out, err = run_cli("export", "--checkpoint", str(short_trained(MECH).checkpoint),
                             "--out", str(tmp_path / "o"), *argv)
    assert code == 1 and len(err.strip().splitlines()) == 1
    import re
    assert re.search(message, err), err
    assert not (tmp_path / "o").exists()


def test_quantize_options_validate_and_name_the_choices():
    with pytest.raises(UsageError, match="--calibration-method 'kl' is not valid; choose one of: minmax, entropy, percentile"):
        QuantizeOptions(calibration_method="kl").validate()
    with pytest.raises(UsageError, match="--quant-format 'QDQ'.*qdq, qoperator"):
        QuantizeOptions(quant_format="QDQ").validate()
    with pytest.raises(UsageError, match="--calibration-samples"):
        QuantizeOptions(calibration_samples=60_001).validate()


def test_every_quantization_option_is_applied_and_recorded(artifact_dir, tmp_path):
    opts = QuantizeOptions(calibration_samples=100, calibration_method="entropy", per_channel=False,
                           quant_format="qoperator")
    images = np.random.default_rng(0).integers(0, 256, (100, 28, 28), dtype=np.uint8)
    recipe = quantize_int8(artifact_dir / "model.onnx", tmp_path / "q.onnx", images, opts,
                           source=custom_source(images))
    assert {k: recipe[k] for k in opts.to_dict()} == opts.to_dict()
    assert recipe["calibration_source"]["split"] == "custom" and recipe["calibration_source"]["images"] == 100
    ops = {n.op_type for n in onnx.load(tmp_path / "q.onnx").graph.node}
    assert "QLinearConv" in ops and "Conv" not in ops  # operator-oriented, not QDQ


def test_opset_can_go_lower_and_fails_loudly_where_the_exporter_cannot(tmp_path):
    import torch

    from mnist_edge.exporter.onnx_export import export_onnx
    from mnist_edge.evaluate.ort_eval import make_session, ort_logits
    from mnist_edge.zoo.networks import build_edge_model
    from mnist_edge.zoo.registry import get_spec

    torch.manual_seed(0)
    edge = build_edge_model(get_spec("bn_cnn")).eval()  # untrained weights: what matters is the graph
    info = export_onnx(edge, tmp_path / "m17.onnx", opset=17, metadata={})
    assert info["opset"] == 17 and onnx.load(tmp_path / "m17.onnx").opset_import[0].version == 17
    x = np.arange(7 * 784).reshape(7, 1, 28, 28).astype(np.uint8)
    with torch.no_grad():
        want = edge(torch.from_numpy(x))[0].numpy()
    assert np.abs(ort_logits(make_session(tmp_path / "m17.onnx"), x, 7) - want).max() <= 1e-4

    with pytest.raises(ExportError, match="could not convert this model to opset 16 \\(it kept 18\\)"):
        export_onnx(build_edge_model(get_spec("lenet5")).eval(), tmp_path / "l16.onnx", opset=16, metadata={})
    with pytest.raises(UsageError, match="valid opsets are 16"):
        export_onnx(edge, tmp_path / "m15.onnx", opset=15, metadata={})
    assert not (tmp_path / "l16.onnx").exists() and not (tmp_path / "m15.onnx").exists()
