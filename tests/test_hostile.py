"""Hostile and careless input (issue 12): each case a reliability probe broke ends in a typed, one-line error
naming the file or value, and leaves nothing behind. Numbers in the comments are the issue's items.

Cheap by design: tiny hand-built ONNX models, the committed exported/bn_cnn (read, or copied), no training
fixture; the export-level cases that need a real export run live in test_export.py.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import pickle
import shutil
import socket
import threading
import time
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from helpers_onnx import contract_model_bytes
from mnist_edge import files as mio
from mnist_edge.cli import interrupted_message, main
from mnist_edge.errors import (ArtifactError, CheckpointError, DownloadError, ExportError, InputError,
                               TrainingError, UsageError, WriteError)
from mnist_edge.manifest import MANIFEST_NAME, file_record, read_manifest, seal, write_manifest
from mnist_edge.runtime import load
from mnist_edge.runtime.images import load_image, read_gray

REPO = Path(__file__).resolve().parents[1]


def run_cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def one_line_error(code: int, err: str) -> str:
    assert code == 1 and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    return err


@pytest.fixture
def bn_copy(tmp_path, model_dir) -> Path:
    """A copy of the committed exported/bn_cnn (ONNX files, manifest, checkpoint, bench.json)."""
    folder = tmp_path / "bn_cnn"
    shutil.copytree(model_dir, folder)
    return folder


def digit_png(path: Path, fmt: str = "PNG", **save) -> Path:
    from PIL import Image

    img = np.zeros((40, 40), np.uint8)
    img[8:32, 17:23] = 255
    Image.fromarray(img).save(path, fmt, **save)
    return path


# --- 1. a model that loads but cannot run ---------------------------------------------------------------

def test_1_a_model_that_cannot_run_fails_at_load_typed_not_at_first_predict(tmp_path, capfd):
    broken = tmp_path / "model.onnx"
    broken.write_bytes(contract_model_bytes(broken_reshape=True))  # loads (symbolic batch), fails to run
    with pytest.raises(ArtifactError, match=r"model\.onnx failed to run on a batch of 2: .*cannot be reshaped"):
        load(broken)
    assert "onnxruntime" not in capfd.readouterr().err  # its own log line of the failed kernel stays quiet
    good = tmp_path / "good.onnx"
    good.write_bytes(contract_model_bytes())
    assert load(good).predict(np.zeros((3, 28, 28), np.uint8)).labels.shape == (3,)


def test_1_a_failure_at_predict_is_typed_too(tmp_path):
    good = tmp_path / "good.onnx"
    good.write_bytes(contract_model_bytes())
    clf = load(good)

    class Exploding:  # onnxruntime raises its own pybind classes; any of them must come out typed
        def run(self, *a, **k):
            raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : QLinearConv : Invalid input shape")

    object.__setattr__(clf, "_session", Exploding())
    with pytest.raises(ArtifactError, match="good.onnx failed to run on a batch of 1: QLinearConv : Invalid"):
        clf.predict(np.zeros((28, 28), np.uint8))


# --- 2. image decoders ----------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt, name", [("JPEG2000", "JPEG 2000"), ("AVIF", "AVIF")])
def test_2_formats_outside_the_allow_list_are_refused_by_name(tmp_path, fmt, name):
    from PIL import features

    plugin = {"JPEG2000": "jpg_2000", "AVIF": "avif"}[fmt]
    if not features.check(plugin):  # then Pillow cannot open it either: the refusal is generic
        pytest.fail(f"this Pillow lacks {plugin}; the test needs it to write the file")
    p = digit_png(tmp_path / f"digit.{fmt.lower()}", fmt)
    with pytest.raises(InputError, match=f"is a {name} file, a format mnist-edge does not decode; readable "
                                         "formats: PNG, JPEG"):
        load_image(p)


def test_2_eps_is_refused_without_running_ghostscript(tmp_path, monkeypatch):
    import subprocess

    def no_subprocess(*a, **k):
        raise AssertionError("a subprocess was started to decode an image")

    monkeypatch.setattr(subprocess, "Popen", no_subprocess)
    p = tmp_path / "digit.png"  # the name says PNG; the bytes are PostScript
    p.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\nnewpath 0 0 moveto 28 28 lineto stroke\n")
    with pytest.raises(InputError, match="digit.png is a PostScript/EPS file, a format mnist-edge does not decode"):
        load_image(p)


# (offset from "Exif", new byte) patches of a JPEG's EXIF block found by fuzzing Pillow 13: its EXIF parser
# raised TypeError ("bad operand type for abs()") and struct.error ("required argument is not an integer").
EXIF_BREAKERS = {"TypeError": [(17, 63), (48, 152)], "struct.error": [(17, 78), (45, 123), (75, 200)]}


@pytest.mark.parametrize("kind", list(EXIF_BREAKERS))
def test_2_corrupt_exif_is_an_input_error(tmp_path, kind):
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112], exif[0x010F], exif[0x0132] = 6, "Cam", "2020:01:01 00:00:00"  # orientation, make, date
    p = digit_png(tmp_path / "photo.jpg", "JPEG", exif=exif.tobytes())
    data = bytearray(p.read_bytes())
    start = data.find(b"Exif")
    for offset, value in EXIF_BREAKERS[kind]:
        data[start + offset] = value
    p.write_bytes(bytes(data))
    with pytest.raises(InputError, match="photo.jpg is corrupt or truncated"):
        load_image(p)


def test_2_decoded_memory_is_bounded_not_only_pixels(tmp_path):
    from PIL import Image

    big = tmp_path / "big.png"
    Image.new("RGBA", (3000, 3000), (255, 255, 255, 255)).save(big)  # 9 MP: under the pixel limit
    with pytest.raises(InputError, match=r"big.png is 3000x3000 RGBA: 36,024,000 bytes decoded, over the limit "
                                         r"of 10,000,000"):
        read_gray(big, max_decoded_bytes=10_000_000)
    probe = tmp_path / "probe.png"  # the probe's 1 x 39,999,999 PNG: 320 MB of row pointers in Pillow
    Image.new("L", (1, 12_000_000)).save(probe)  # (scaled down) a few kB on disk
    with pytest.raises(InputError, match=r"probe.png is 1x12000000 L: 108,000,000 bytes decoded, over the limit"):
        read_gray(probe)
    tall = tmp_path / "tall.png"  # long and thin, but within the limit: decoded, then reduced
    arr = np.zeros((300_000, 1), np.uint8)
    arr[100_000:200_000] = 255
    Image.fromarray(arr).save(tall)
    gray = read_gray(tall)
    assert gray.shape == (2041, 1)  # box-reduced by 147 (<= 2048 a side) before any float work
    assert gray.max() == 255 and gray[0, 0] == 0


def test_2_an_image_path_that_is_empty_a_fifo_or_a_device_is_refused(tmp_path):
    with pytest.raises(InputError, match="image path '' is empty"):
        load_image("")  # Path("") is ".", which used to say "image . is a directory"
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="fifo.png: is a FIFO, not a regular file"):
        load_image(fifo)
    with pytest.raises(InputError, match="/dev/zero: is a device, not a regular file"):
        load_image("/dev/zero")


# --- 3. manifests with bad content ----------------------------------------------------------------------

def _resealed(model_dir: Path, folder: Path, change) -> Path:
    manifest = json.loads((model_dir / MANIFEST_NAME).read_text())
    change(manifest)
    folder.mkdir()
    (folder / MANIFEST_NAME).write_text(json.dumps(seal(manifest), allow_nan=True))
    return folder


@pytest.mark.parametrize("change, message", [
    (lambda m: m["evaluation"].update(batch_sizes=[-1]), r"evaluation.batch_sizes has a bad value \[-1\]"),
    (lambda m: m["evaluation"].update(batch_sizes=True), "evaluation.batch_sizes has a bad value True"),
    (lambda m: m["evaluation"].update(batch_sizes=[[], 7, 64]), r"evaluation.batch_sizes has a bad value \[\[\]"),
    (lambda m: m.update(evaluation=True), "'evaluation' must be a JSON object, found True"),
    (lambda m: m["files"]["model.onnx"].update(accuracy="99%"), "files.model.onnx.accuracy has a bad value '99%'"),
    (lambda m: m["files"]["model.onnx"].update(size=True), "entry for 'model.onnx' needs"),
    (lambda m: m.update(created=12), "'created' must be a string"),
    (lambda m: m.update(model="../etc"), "names no model"),
], ids=["batch-minus-1", "batch-true", "batch-nested", "evaluation-true", "accuracy-string", "size-bool",
        "created-int", "model-path"])
def test_3_resealed_manifests_with_wrong_types_are_refused(model_dir, tmp_path, change, message):
    folder = _resealed(model_dir, tmp_path / "m", change)
    with pytest.raises(ArtifactError, match=message):
        read_manifest(folder)


@pytest.mark.parametrize("text, message", [
    ('{"format": "mnist-edge-manifest/1", "created": NaN}', "NaN is not a JSON number"),
    ('{"format": "mnist-edge-manifest/1", "x": -Infinity}', "-Infinity is not a JSON number"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"size": ' + "9" * 5000 + "}", "5,000-digit integer"),
    (b"\xff\xfe{}", "not UTF-8"),
    ("{", "not valid JSON"),
], ids=["nan", "infinity", "deep", "huge-int", "not-utf8", "truncated"])
def test_3_malformed_manifest_json_is_an_artifact_error(tmp_path, text, message):
    (tmp_path / MANIFEST_NAME).write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ArtifactError, match=message):
        read_manifest(tmp_path)


def test_3_what_we_write_passes_the_full_schema(model_dir):
    for folder in sorted((REPO / "exported").iterdir()):
        if (folder / MANIFEST_NAME).is_file():
            assert read_manifest(folder)["model"] == folder.name


# --- 4. unreadable and special files --------------------------------------------------------------------

@pytest.fixture
def deny(monkeypatch):
    """deny(path): opening ``path`` raises PermissionError, as mode 000 does for a user who is not root
    (this suite runs as root, whom chmod does not stop)."""
    denied: set[str] = set()
    real_os_open, real_open = os.open, open

    def os_open(path, *a, **k):
        if os.path.abspath(os.fspath(path)) in denied:
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_os_open(path, *a, **k)

    def builtin_open(path, *a, **k):
        if isinstance(path, (str, os.PathLike)) and os.path.abspath(os.fspath(path)) in denied:
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr("builtins.open", builtin_open)
    return lambda path: denied.add(os.path.abspath(path))


def test_4_unreadable_manifest_or_model_is_a_typed_error_in_predict_verify_and_export(bn_copy, tmp_path, deny):
    from mnist_edge.evaluate.verify import verify_artifacts

    deny(bn_copy / "model.int8.onnx")
    code, _, err = run_cli("verify", str(bn_copy), "--hashes-only")
    assert "model.int8.onnx: cannot read it (permission denied)" in one_line_error(code, err)
    with pytest.raises(ArtifactError, match="permission denied"):
        load(bn_copy)
    deny(bn_copy / MANIFEST_NAME)
    with pytest.raises(ArtifactError, match=r"cannot read '.*manifest.json': permission denied"):
        load(bn_copy)
    with pytest.raises(ArtifactError, match="permission denied"):
        verify_artifacts(bn_copy, hashes_only=True)
    deny(bn_copy / "checkpoint.pt")
    code, _, err = run_cli("export", "--model", "bn_cnn", "--checkpoint", str(bn_copy / "checkpoint.pt"),
                           "--out", str(tmp_path / "out"))
    assert "cannot read checkpoint" in one_line_error(code, err) and "permission denied" in err
    assert not (tmp_path / "out").exists()


def _finishes(fn, seconds: float = 30.0):
    """Run ``fn`` in a daemon thread; (finished, result or exception). A hang cannot stall the suite."""
    box: list = []
    t = threading.Thread(target=lambda: box.append(_call(fn)), daemon=True)
    t.start()
    t.join(seconds)
    return (not t.is_alive()), (box[0] if box else None)


def _call(fn):
    try:
        return fn()
    except BaseException as e:  # noqa: BLE001 - returned to the test, which checks its type
        return e


def test_4_a_fifo_or_dev_zero_as_model_or_manifest_is_refused_without_hanging(tmp_path, model_dir):
    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    done, result = _finishes(lambda: load(fifo))
    assert done, "load() of a FIFO hangs"
    assert isinstance(result, ArtifactError) and "is a FIFO, not a regular file" in str(result)
    done, result = _finishes(lambda: load("/dev/zero"))
    assert done and isinstance(result, ArtifactError) and "is a device" in str(result)
    folder = tmp_path / "folder"
    folder.mkdir()
    os.mkfifo(folder / MANIFEST_NAME)
    done, result = _finishes(lambda: read_manifest(folder))
    assert done and isinstance(result, ArtifactError) and "FIFO" in str(result)


def test_4_read_regular_counts_bytes_and_does_not_trust_st_size(tmp_path):
    (tmp_path / "f").write_bytes(b"x" * 100)
    assert mio.read_regular(tmp_path / "f", 100) == b"x" * 100
    with pytest.raises(mio.FileTooLargeError):
        mio.read_regular(tmp_path / "f", 99)
    with pytest.raises(mio.NotRegularFileError):
        mio.read_regular("/dev/zero", 10)  # st_size 0, endless


# --- 5. full disk ---------------------------------------------------------------------------------------

def test_5_torchscript_on_a_full_disk_is_an_export_error_not_an_abort():
    """/dev/full answers every write with ENOSPC: torch.jit.save's own file writer aborted the process."""
    import torch

    from mnist_edge.exporter.torchscript import export_torchscript
    from mnist_edge.zoo.networks import build_edge_model
    from mnist_edge.zoo.registry import get_spec

    torch.manual_seed(0)
    edge = build_edge_model(get_spec("mlp")).eval()
    with pytest.raises(ExportError, match="cannot write '/dev/full': No space left on device"):
        export_torchscript(edge, "/dev/full", metadata={"k": "v"})


def test_5_checkpoint_on_a_full_disk_is_a_write_error_and_keeps_the_old_file(tmp_path, monkeypatch):
    import torch

    from mnist_edge.training.checkpoint import save_checkpoint

    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"previous")

    real_write_bytes = Path.write_bytes

    def full(self, data):  # the disk fills after 10 bytes of the temporary file
        real_write_bytes(self, data[:10])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(WriteError, match="cannot write checkpoint .*No space left on device; the previous "
                                         "checkpoint is unchanged"):
        save_checkpoint(path, model="mlp", state_dict={"w": torch.zeros(2)}, recipe={}, history=[],
                        data_sha256="0" * 64, metrics={})
    assert path.read_bytes() == b"previous" and os.listdir(tmp_path) == ["checkpoint.pt"]


def test_5_an_os_error_no_library_call_translated_is_one_line_at_the_cli(monkeypatch, tmp_path):
    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", "exported/README.md")

    monkeypatch.setattr("mnist_edge.cards.card.write_cards", full)
    code, _, err = run_cli("card", "--exported", str(tmp_path))
    assert "No space left on device: 'exported/README.md'" in one_line_error(code, err)


# --- 6. stray temporary files ---------------------------------------------------------------------------

def _age(path: Path, seconds: float = 3600) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_6_leftovers_of_killed_runs_are_removed_only_when_ours_old_and_unlocked(tmp_path):
    from mnist_edge.exporter.pipeline import stale_pattern

    killed = tmp_path / ".bn_cnn.export-ab12cd34"
    live = tmp_path / ".bn_cnn.export-zz99yy88"
    fresh = tmp_path / ".bn_cnn.old-qq11ww22"
    other = tmp_path / ".mlp.export-ab12cd34"  # another model's: not ours to judge here
    lookalike = tmp_path / ".bn_cnn.export-notes"  # not mkdtemp's 8 characters
    for d in (killed, live, fresh, other, lookalike):
        d.mkdir()
        (d / "model.onnx").write_bytes(b"x" * 1000)
    for d in (killed, live, other, lookalike):
        _age(d)
    fd = os.open(live, os.O_RDONLY)
    mio.lock_fd(fd)  # a running export holds its folder locked
    try:
        removed = mio.remove_stale(tmp_path, stale_pattern("bn_cnn"))
    finally:
        os.close(fd)
    assert removed == [killed]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (live, fresh, other, lookalike))


def test_6_a_checkpoint_temp_file_left_by_sigkill_is_removed_by_the_next_save(tmp_path):
    left = tmp_path / ".checkpoint.pt.k1ll3d00.tmp"
    left.write_bytes(b"half a checkpoint")
    _age(left)
    live = tmp_path / ".checkpoint.pt.w0rk1ng0.tmp"
    live.write_bytes(b"being written")
    _age(live)
    fd = os.open(live, os.O_RDONLY)
    mio.lock_fd(fd)
    try:
        mio.write_bytes_atomic(tmp_path / "checkpoint.pt", b"new")
    finally:
        os.close(fd)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".checkpoint.pt.w0rk1ng0.tmp", "checkpoint.pt"]


# --- 7. interrupt reporting -----------------------------------------------------------------------------

def test_7_the_interrupt_message_names_what_was_already_replaced(tmp_path):
    mio.forget_replaced()
    assert interrupted_message() == "interrupted; earlier files are unchanged"
    mio.write_text_atomic(tmp_path / "checkpoint.pt", "new")  # train: checkpoint in place, then Ctrl-C
    msg = interrupted_message()
    assert f"interrupted after replacing {tmp_path / 'checkpoint.pt'} (complete and in place)" in msg
    assert "unchanged" in msg and "earlier files are unchanged" not in msg
    mio.forget_replaced()


def test_7_ctrl_c_at_the_replace_is_held_until_the_record_is_made(tmp_path, default_sigint):
    import signal

    mio.forget_replaced()
    with pytest.raises(KeyboardInterrupt):
        with mio.atomic_path(tmp_path / "f") as tmp:
            tmp.write_text("new")
            os.kill(os.getpid(), signal.SIGINT)  # arrives during the write; python raises it at once
    assert mio.replaced_paths() == [] and not (tmp_path / "f").exists()
    real_replace = os.replace

    def replace_then_interrupt(a, b):
        real_replace(a, b)
        os.kill(os.getpid(), signal.SIGINT)  # blocked here; delivered once the rename is recorded

    os.replace = replace_then_interrupt
    try:
        with pytest.raises(KeyboardInterrupt):
            mio.write_text_atomic(tmp_path / "g", "new")
    finally:
        os.replace = real_replace
    assert mio.replaced_paths() == [str(tmp_path / "g")] and (tmp_path / "g").read_text() == "new"
    mio.forget_replaced()


# --- 8. verify and sparse external data -----------------------------------------------------------------

def test_8_verify_refuses_external_data_in_a_sparse_initializer(tmp_path, mnist_dir):
    from mnist_edge.evaluate.verify import verify_artifacts

    (tmp_path / "model.onnx").write_bytes(contract_model_bytes(sparse_external=True))
    write_manifest(tmp_path, {"model": "mlp", "evaluation": {"images": 10, "batch_sizes": [2]}, "files": {
        "model.onnx": {"kind": "model", "format": "onnx", "accuracy": 10.0, **file_record(tmp_path / "model.onnx")}}})
    with pytest.raises(ArtifactError, match="model.onnx: .*model.onnx keeps 1 tensor.*external data"):
        verify_artifacts(tmp_path, data_dir=mnist_dir)
    with pytest.raises(ArtifactError, match="external data"):
        load(tmp_path)  # predict refuses the same file


# --- 9. TorchScript is code -----------------------------------------------------------------------------

def test_9_bench_never_loads_torchscript_no_manifest_vouches_for(tmp_path, monkeypatch, bn_copy):
    import torch

    from mnist_edge.bench.formats import load_torchscript

    calls = []
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: calls.append(a))
    loose = tmp_path / "loose"
    loose.mkdir()
    shutil.copy(bn_copy / "model.pt", loose / "model.pt")
    with pytest.raises(ArtifactError, match="model.pt is not listed in a manifest.json beside it; TorchScript "
                                            "files are code"):
        load_torchscript(loose / "model.pt", "cpu", 1)
    data = bytearray((bn_copy / "model.pt").read_bytes())
    data[len(data) // 2] ^= 1
    (bn_copy / "model.pt").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="SHA-256"):
        load_torchscript(bn_copy / "model.pt", "cpu", 1)
    assert calls == []


# --- 10. training options -------------------------------------------------------------------------------

@pytest.mark.parametrize("kw, message", [
    ({"lr": float("nan")}, "--lr must be a positive finite number, got nan"),
    ({"lr": float("inf")}, "--lr must be a positive finite number, got inf"),
    ({"threads": -2}, "--threads must be a positive integer, got -2"),
    ({"limit_train": -5}, "--limit-train must be a positive integer, got -5"),
    ({"limit_train": 0}, "--limit-train must be a positive integer, got 0"),
    ({"epochs": 0}, "--epochs must be a positive finite number"),
])
def test_10_bad_training_options_are_usage_errors_before_any_work(kw, message, monkeypatch):
    from mnist_edge.training.options import TrainOptions
    from mnist_edge.zoo.registry import get_spec
    from mnist_edge.zoo.training import zoo_training

    monkeypatch.setattr("mnist_edge.data.mnist.load_mnist", lambda *a, **k: pytest.fail("data was loaded"))
    recipe_kw = {k: v for k, v in kw.items() if k in ("lr", "epochs")}
    with pytest.raises(UsageError, match=message):
        zoo_training(get_spec("mlp"), **recipe_kw)
        TrainOptions(**{k: v for k, v in kw.items() if k not in recipe_kw})


def test_10_training_that_diverges_is_an_error_and_writes_nothing(mnist_dir, tmp_path):
    from mnist_edge.data.dataset import load_digits
    from mnist_edge.training.loop import train
    from mnist_edge.training.options import TrainOptions
    from mnist_edge.zoo.registry import get_spec
    from mnist_edge.zoo.training import zoo_training

    out = tmp_path / "checkpoint.pt"
    job = zoo_training(get_spec("mlp"), epochs=1, batch_size=32, lr=1e30)
    options = TrainOptions(limit_train=256, out=out, plot=False, threads=1)
    with pytest.raises(TrainingError, match=r"training mlp diverged in epoch 1: the loss is (nan|inf).*smaller --lr"):
        train(job.build_net, job.recipe, load_digits(mnist_dir), name=job.name, contract=job.contract,
              net_args=job.net_args, options=options)
    assert not out.exists() and list(tmp_path.iterdir()) == []


# --- 11. checkpoints and files that are not ours --------------------------------------------------------

def test_11_a_checkpoint_with_wrong_keys_is_a_checkpoint_error(tmp_path, bn_copy):
    import torch

    from mnist_edge.training.checkpoint import FORMAT, load_checkpoint, read_checkpoint

    path = tmp_path / "checkpoint.pt"
    torch.save({"format": FORMAT, "model": "mlp", "state_dict": {}}, path)
    with pytest.raises(CheckpointError, match=r"bad fields 'net' \(missing, expected str\)"):
        read_checkpoint(path)
    ckpt = torch.load(bn_copy / "checkpoint.pt", weights_only=True)
    ckpt["kwargs"] = {"no_such_argument": 3}
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="does not accept"):
        load_checkpoint(path)
    ckpt["kwargs"], ckpt["metrics"] = {}, [1, 2]
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=r"'metrics' \(list, expected dict\)"):
        read_checkpoint(path)


def test_11_card_with_a_broken_bench_json_or_odd_checkpoint_is_typed(tmp_path, bn_copy):
    from mnist_edge.cards.card import write_cards

    exported = bn_copy.parent
    (bn_copy / "bench.json").write_text("{")
    code, _, err = run_cli("card", "--exported", str(exported), "--model", "bn_cnn")
    assert "bench.json' is not valid JSON" in one_line_error(code, err)
    (bn_copy / "bench.json").unlink()
    import torch

    ckpt = torch.load(bn_copy / "checkpoint.pt", weights_only=True)
    ckpt["metrics"] = {"test_accuracy": "high"}
    torch.save(ckpt, bn_copy / "checkpoint.pt")
    with pytest.raises(ArtifactError, match="cannot make the card of .* lacks a field the card needs"):
        write_cards(exported, ["bn_cnn"])



def test_11_a_torchscript_archive_as_checkpoint_or_weights_is_one_line_and_no_torch_warning(tmp_path):
    import torch

    from mnist_edge.exporter.user_net import read_state_dict
    from mnist_edge.training.checkpoint import read_checkpoint

    ts = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(784, 10)), str(ts))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        code, _, err = run_cli("export", "--model", "mlp", "--checkpoint", str(ts), "--out", str(tmp_path / "out"))
        assert f"'{ts}' is a TorchScript file (torch.jit.save), not a checkpoint" in one_line_error(code, err)
        assert "--torchscript" in err
        with pytest.raises(CheckpointError, match=r"is a TorchScript file \(torch.jit.save\), not weights: pass it "
                                                  r"as --torchscript"):
            read_state_dict(ts)
    assert [str(w.message) for w in seen] == []  # torch's "looks like a TorchScript archive" is never issued

# --- 12. messages that mislead --------------------------------------------------------------------------

class _Payload:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


@pytest.mark.parametrize("protocol", [2, 4])
def test_12_a_pickle_with_a_payload_is_refused_as_not_weights_only(tmp_path, protocol):
    from mnist_edge.training.checkpoint import read_checkpoint

    p = tmp_path / "checkpoint.pt"
    p.write_bytes(pickle.dumps({"format": "mnist-edge-checkpoint/1", "x": _Payload()}, protocol=protocol))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(CheckpointError, match="is not weights-only and is refused"):
            read_checkpoint(p)
    p.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a torch checkpoint"):
        read_checkpoint(p)


def test_12_verify_no_torchscript_says_so(model_dir, mnist_dir):
    from mnist_edge.evaluate.verify import verify_artifacts

    report = verify_artifacts(model_dir, data_dir=mnist_dir, torchscript=False)
    status = {r["file"]: r["status"] for r in report.rows}
    assert status["model.pt"] == "skipped (--no-torchscript)" and status["model.onnx"] == "ok"


def test_12_empty_paths_name_themselves(model_dir):
    code, _, err = run_cli("predict", "", "--model", str(model_dir))
    assert "image path '' is empty" in one_line_error(code, err)
    code, _, err = run_cli("predict", str(REPO / "README.md"), "--model", "")
    assert "model path '' is empty" in one_line_error(code, err)


def test_12_export_into_the_working_directory_is_refused_before_copying_anything(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoint.pt").write_bytes(b"not read: the output check comes first")
    (tmp_path / "big.bin").write_bytes(b"x" * 100_000)
    before = sorted(os.listdir(tmp_path))
    for out in (".", str(tmp_path), str(tmp_path.parent)):
        code, _, err = run_cli("export", "--model", "mlp", "--checkpoint", "checkpoint.pt", "--out", out)
        assert "the working directory: an export replaces its output folder as a whole" in one_line_error(code, err)
    assert sorted(os.listdir(tmp_path)) == before  # nothing copied, no temporary folder


# --- 13. demo server ------------------------------------------------------------------------------------

def test_13_demo_closes_idle_connections_and_queues_a_burst(tmp_path, monkeypatch):
    from mnist_edge import demo

    monkeypatch.setattr(demo._Handler, "timeout", 0.5)
    server = demo.DemoServer(("127.0.0.1", 0), web_dir=tmp_path, ort_dist=tmp_path, model_dir=tmp_path,
                             index={}, blobs={})
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert server.request_queue_size >= 128
        idle = [socket.create_connection(server.server_address[:2], timeout=10) for _ in range(5)]
        for s in idle:  # the server closes each one: recv returns b"" (EOF) well before our 10 s timeout
            assert s.recv(1) == b""
            s.close()
        burst = [socket.create_connection(server.server_address[:2], timeout=10) for _ in range(100)]
        for s in burst:
            s.sendall(b"GET /models/index.json HTTP/1.0\r\n\r\n")
        assert all(s.recv(12).startswith(b"HTTP/1.0 200") for s in burst)
        for s in burst:
            s.close()
    finally:
        server.shutdown()
        server.server_close()


def _demo_server(tmp_path, **kw):
    from mnist_edge import demo

    server = demo.DemoServer(("127.0.0.1", 0), web_dir=tmp_path, ort_dist=tmp_path, model_dir=tmp_path,
                             index={}, blobs={}, **kw)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _drip_until_closed(sock: socket.socket, every_s: float, limit_s: float) -> float:
    """Send a header line every ``every_s`` until the server closes the connection; seconds it took (or
    ``limit_s`` when it never did)."""
    t0 = time.monotonic()
    sock.sendall(b"GET /models/index.json HTTP/1.0\r\n")
    sock.settimeout(every_s)
    while time.monotonic() - t0 < limit_s:
        try:
            if sock.recv(1) == b"":  # EOF: the server hung up
                return time.monotonic() - t0
        except TimeoutError:
            pass
        except OSError:  # reset: the server hung up
            return time.monotonic() - t0
        try:
            sock.sendall(b"X-Drip: 1\r\n")
        except OSError:
            return time.monotonic() - t0
    return limit_s


def test_13_a_client_dripping_header_lines_is_cut_off_at_the_request_deadline(tmp_path):
    # Each line arrives well within the idle timeout; only a deadline on the whole request ends it.
    server = _demo_server(tmp_path, request_deadline_s=1.0)
    try:
        socks = [socket.create_connection(server.server_address[:2], timeout=10) for _ in range(3)]
        took = [_drip_until_closed(s, every_s=0.2, limit_s=8.0) for s in socks]
        assert max(took) < 6.0, took  # each cut off near the 1 s deadline (dripped in turn), not held
        for s in socks:
            s.close()
        with socket.create_connection(server.server_address[:2], timeout=10) as s:  # still serving
            s.sendall(b"GET /models/index.json HTTP/1.0\r\n\r\n")
            assert s.recv(12).startswith(b"HTTP/1.0 200")
    finally:
        server.shutdown()
        server.server_close()


def test_13_many_slow_clients_hold_at_most_the_handler_cap(tmp_path):
    before = set(threading.enumerate())  # other tests' servers may still have threads
    server = _demo_server(tmp_path, request_deadline_s=1.0, max_handlers=2)
    handlers = lambda: sum("process_request_thread" in t.name for t in set(threading.enumerate()) - before)  # noqa: E731
    try:
        slow = [socket.create_connection(server.server_address[:2], timeout=10) for _ in range(4)]
        for s in slow:
            s.sendall(b"GET / HTTP/1.0\r\n")  # and never the blank line
        seen = []
        for _ in range(8):
            seen.append(handlers())
            time.sleep(0.1)
        assert max(seen) <= 2, seen
        with socket.create_connection(server.server_address[:2], timeout=20) as s:  # served once slots free
            s.sendall(b"GET /models/index.json HTTP/1.0\r\n\r\n")
            assert s.recv(12).startswith(b"HTTP/1.0 200")
        for s in slow:
            s.close()
    finally:
        server.shutdown()
        server.server_close()


def test_13_accept_at_the_fd_limit_backs_off_instead_of_spinning(tmp_path, monkeypatch):
    import socketserver

    calls, real = [], socketserver.TCPServer.get_request

    def accept(self):
        calls.append(time.monotonic())
        if len(calls) <= 3:
            raise OSError(errno.EMFILE, "Too many open files")
        return real(self)

    monkeypatch.setattr(socketserver.TCPServer, "get_request", accept)
    server = _demo_server(tmp_path)
    try:
        with socket.create_connection(server.server_address[:2], timeout=20) as s:
            s.sendall(b"GET /models/index.json HTTP/1.0\r\n\r\n")
            assert s.recv(12).startswith(b"HTTP/1.0 200")  # served once accept works again
        assert len(calls) == 4, len(calls)  # not thousands of retries while the fd limit was hit
        assert calls[3] - calls[0] >= 0.3  # it waited, longer each time (0.05 + 0.1 + 0.2 s)
    finally:
        server.shutdown()
        server.server_close()


# --- 14. download deadline ------------------------------------------------------------------------------

def test_14_a_mirror_trickling_one_byte_a_second_is_cut_off_by_the_deadline(tmp_path):
    from mnist_edge.data.download import download_mnist

    stop = threading.Event()

    class Trickle(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", "9000000")
            self.end_headers()
            while not stop.is_set():
                try:
                    self.wfile.write(b"\x1f")
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.2)

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        t0 = time.monotonic()
        with pytest.raises(DownloadError, match="too slow: the download deadline passed"):
            download_mnist(tmp_path, mirrors=[f"http://127.0.0.1:{server.server_address[1]}/"], progress=False,
                           timeout=5, deadline=1.0)
        assert time.monotonic() - t0 < 60  # ended by the deadline, not by the mirror
        assert [p.name for p in (tmp_path / "MNIST" / "raw").iterdir()] == []  # no partial file left
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
    with pytest.raises(UsageError, match="deadline must be a positive number"):
        download_mnist(tmp_path, mirrors=["http://127.0.0.1:9/"], deadline=float("inf"))
