"""Reproducible, clean artifacts: the committed checkpoint re-exports to the committed bytes, wherever the
checkout lies, and no shipped file carries a path, user or host name of the machine that built it.

What is byte-identical across CPUs and what may differ (docs/reproducibility.md): the fp32 ONNX and
TorchScript files hold the checkpoint's weights and a graph built without running a kernel, so their
bytes are compared exactly. The int8 file's activation scales come from onnxruntime running the fp32
model over the calibration images: another CPU's kernels can move a range in its last bits, so int8 is
compared by structure, metadata, weights and scales within INT8_SCALE_RTOL, and by identical labels.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from mnist_edge.evaluate.ort_eval import make_session, ort_logits
from mnist_edge.exporter.records import created_time
from mnist_edge.files import sha256_file
from mnist_edge.manifest import read_manifest
from mnist_edge.zoo.registry import MODELS

ROOT = Path(__file__).resolve().parents[1]
EXPORTED = ROOT / "exported"
BIT_IDENTICAL = ("model.onnx",)
# Relative tolerance on int8 scales between machines: kernels differ by ~1e-6 relative in fp32 outputs, so
# a calibrated range moves by about as much; 1e-4 leaves two orders of magnitude (docs/reproducibility.md).
INT8_SCALE_RTOL = 1e-4
SHIPPED = ("model.onnx", "model.int8.onnx", "model.pt", "manifest.json")
_PATHS = re.compile(rb"(/(work|home|tmp|root|Users|var/folders)/|site-packages|[A-Z]:\\\\)")


def torchscript_content(path: Path):
    """What a TorchScript file holds, without torch's type-name numbering: the inlined graph (types'
    ``___torch_mangle_N`` suffixes and source positions removed), every tensor, and our metadata. torch names the types
    it creates with a process-wide counter, so a trace that follows others in one Python process (this test
    session) writes other names and file layout; `mnist-edge export`, one export per process, writes the
    same bytes every time (test_export_bytes_do_not_depend_on_where_the_checkout_lies compares them)."""
    import torch

    from mnist_edge.torchrun import load_torchscript

    module, meta = load_torchscript(path)
    graph = re.sub(r"\.___torch_mangle_\d+| # code/\S+", "", str(module.inlined_graph))  # + source positions
    return graph, {k: v.numpy().tobytes() for k, v in module.state_dict().items()}, meta, torch.__version__


def int8_differences(a: Path, b: Path) -> list[str]:
    """What differs between two int8 ONNX files beyond what another CPU's calibration may move."""
    ma, mb = onnx.load(a), onnx.load(b)
    problems = []
    meta_a, meta_b = ({p.key: p.value for p in m.metadata_props} for m in (ma, mb))
    problems += [f"metadata {k} differs" for k in sorted(meta_a.keys() | meta_b.keys()) if meta_a.get(k) != meta_b.get(k)]
    if [(n.op_type, list(n.input), list(n.output)) for n in ma.graph.node] != \
            [(n.op_type, list(n.input), list(n.output)) for n in mb.graph.node]:
        problems.append("graph structure differs")
    ta = {t.name: numpy_helper.to_array(t) for t in ma.graph.initializer}
    tb = {t.name: numpy_helper.to_array(t) for t in mb.graph.initializer}
    if ta.keys() != tb.keys():
        return problems + [f"initializers differ: {sorted(ta.keys() ^ tb.keys())[:5]}"]
    for name, x in ta.items():
        y = tb[name]
        if x.dtype != y.dtype or x.shape != y.shape:
            problems.append(f"{name}: {x.dtype}{list(x.shape)} vs {y.dtype}{list(y.shape)}")
        elif x.dtype.kind == "f":
            if not np.allclose(x, y, rtol=INT8_SCALE_RTOL, atol=0):
                problems.append(f"{name}: max relative difference {np.max(np.abs(x - y) / np.abs(y)):.2e}")
        elif x.dtype == np.int32:  # biases quantized with the activation scale: may round one step apart
            if np.abs(x.astype(np.int64) - y).max() > 1:
                problems.append(f"{name}: int32 values differ by more than 1")
        elif not np.array_equal(x, y):  # int8 weights and zero points: computed from the weights alone
            problems.append(f"{name}: {x.dtype} values differ")
    return problems


def test_committed_bn_cnn_reexports_to_the_committed_files(artifact_dir, mnist_dir):
    """The session's `mnist-edge export` of the committed checkpoint (another folder, maybe another CPU)."""
    committed = read_manifest(EXPORTED / "bn_cnn")["files"]
    for name in BIT_IDENTICAL:
        assert sha256_file(artifact_dir / name) == committed[name]["sha256"], f"{name} is not reproduced"
    assert sha256_file(artifact_dir / "checkpoint.pt") == committed["checkpoint.pt"]["sha256"]
    if sha256_file(artifact_dir / "model.pt") != committed["model.pt"]["sha256"]:  # see torchscript_content
        assert torchscript_content(artifact_dir / "model.pt") == torchscript_content(EXPORTED / "bn_cnn" / "model.pt")
    ours, theirs = artifact_dir / "model.int8.onnx", EXPORTED / "bn_cnn" / "model.int8.onnx"
    if sha256_file(ours) != committed["model.int8.onnx"]["sha256"]:
        assert int8_differences(ours, theirs) == []
    from mnist_edge.data.mnist import load_mnist

    x, _ = load_mnist("test", data_dir=mnist_dir)
    x = np.ascontiguousarray(x[:, None])
    assert np.array_equal(ort_logits(make_session(ours), x, 1000).argmax(1),
                          ort_logits(make_session(theirs), x, 1000).argmax(1))


def test_int8_comparison_catches_a_changed_scale(artifact_dir, tmp_path):
    model = onnx.load(artifact_dir / "model.int8.onnx")
    scale = next(t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and "scale" in t.name)
    value = numpy_helper.to_array(scale) * np.float32(1.001)
    scale.CopyFrom(numpy_helper.from_array(value.astype(np.float32), scale.name))
    onnx.save(model, tmp_path / "changed.onnx")
    problems = int8_differences(tmp_path / "changed.onnx", artifact_dir / "model.int8.onnx")
    assert len(problems) == 1 and problems[0].startswith(scale.name)
    assert int8_differences(artifact_dir / "model.int8.onnx", artifact_dir / "model.int8.onnx") == []


def test_int8_comparison_catches_changed_metadata(artifact_dir, tmp_path):
    """A stale int8 file (its recipe record missing fields today's code writes) is not reproduced."""
    model = onnx.load(artifact_dir / "model.int8.onnx")
    entry = next(p for p in model.metadata_props if p.key == "mnist_edge.quantization")
    record = json.loads(entry.value)
    record.pop("pad_multiple")
    entry.value = json.dumps(record)
    onnx.save(model, tmp_path / "stale.onnx")
    assert int8_differences(tmp_path / "stale.onnx", artifact_dir / "model.int8.onnx") == \
        ["metadata mnist_edge.quantization differs"]


def identity_strings() -> list[bytes]:
    """This machine's user and host names, where they are specific enough to search for."""
    names = {getpass.getuser(), socket.gethostname(), Path.home().name}
    return [n.encode() for n in names if n and len(n) >= 4 and n not in ("root", "user", "localhost")]


@pytest.mark.parametrize("name", list(MODELS))
def test_committed_artifacts_carry_no_machine_paths_or_names(name):
    folder = EXPORTED / name
    for fname in SHIPPED:
        data = (folder / fname).read_bytes()
        found = _PATHS.search(data)
        assert found is None, f"{name}/{fname} carries a path: ...{data[max(0, found.start() - 40):found.end() + 40]!r}"
        for ident in identity_strings():
            assert ident not in data, f"{name}/{fname} carries {ident!r}"
    for fname in ("model.onnx", "model.int8.onnx"):
        model = onnx.load(folder / fname)
        assert not any(n.metadata_props for n in model.graph.node), f"{fname}: exporter node metadata left in"
    assert not any(n.endswith(".debug_pkl") for n in __import__("zipfile").ZipFile(folder / "model.pt").namelist())
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["created"] is None or re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", manifest["created"])


SCRIPT = """
import sys
sys.path.insert(0, sys.argv[1])
from mnist_edge.data.dataset import load_digits
from mnist_edge.exporter import ExportOptions, export, from_checkpoint, int8_choice
import mnist_edge
assert mnist_edge.__file__.startswith(sys.argv[1]), mnist_edge.__file__
options = ExportOptions(int8=int8_choice("mlp"), eval_limit=200, thresholds=__import__("json").loads(sys.argv[5]))
export(from_checkpoint(sys.argv[2]), load_digits(sys.argv[4]), options, out=sys.argv[3])
"""


def test_export_bytes_do_not_depend_on_where_the_checkout_lies(short_trained, mnist_dir, tmp_path):
    """The same checkpoint exported by two copies of the package in two folders, from two working folders."""
    from conftest import SHORT_TRAINED_THRESHOLDS

    outs = []
    for where in ("first/checkout", "second/deeper/copy"):
        pkg = tmp_path / where
        shutil.copytree(ROOT / "mnist_edge", pkg / "mnist_edge", ignore=shutil.ignore_patterns("__pycache__"))
        out = tmp_path / f"out-{len(outs)}" / "mlp"
        env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
        p = subprocess.run([sys.executable, "-c", SCRIPT, str(pkg), str(short_trained("mlp").checkpoint), str(out),
                            str(mnist_dir), json.dumps(SHORT_TRAINED_THRESHOLDS)],
                           cwd=pkg.parent, capture_output=True, text=True, env=env)
        assert p.returncode == 0, p.stderr[-2000:]
        outs.append(out)
    for fname in SHIPPED:
        assert (outs[0] / fname).read_bytes() == (outs[1] / fname).read_bytes(), fname
        assert _PATHS.search((outs[0] / fname).read_bytes()) is None, fname


def test_manifest_time_comes_from_source_date_epoch_or_the_checkpoint(monkeypatch):
    from mnist_edge.errors import UsageError

    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    assert created_time({"metrics": {}}) is None  # never the export's wall clock
    assert created_time({"metrics": {"finished_utc": "2026-01-02T03:04:05+00:00"}}) == "2026-01-02T03:04:05+00:00"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert created_time({"metrics": {"finished_utc": "2026-01-02T03:04:05+00:00"}}) == "2023-11-14T22:13:20+00:00"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(UsageError, match="SOURCE_DATE_EPOCH='yesterday'"):
        created_time({})
