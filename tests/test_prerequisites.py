"""A command missing its data or an optional extra says in one line how to get it, before any other work."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

BLOCK = ("import sys\n"
         "for name in sys.argv[1].split(','):\n"
         "    if name: sys.modules[name] = None  # unimportable, as on a runtime-only install\n"
         "from mnist_edge.cli import main\n"
         "sys.exit(main(sys.argv[2:]))\n")


def run(argv, blocked=(), cwd=None, env=None):
    return subprocess.run([sys.executable, "-c", BLOCK, ",".join(blocked), *argv], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=env, timeout=120)


@pytest.mark.parametrize("argv,missing", [
    (["train", "--model", "mlp"], "torch"),
    (["export", "--model", "bn_cnn", "--quantize"], "torch, onnx, onnxscript"),
    (["card", "--model", "bn_cnn"], "torch"),
])
def test_commands_needing_the_train_extra_name_the_install(argv, missing, tmp_path):
    p = run(argv, blocked=("torch", "onnx", "onnxscript"), cwd=tmp_path)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert f"needs {missing}, which" in p.stderr and 'mnist_edge-0.1.0-py3-none-any.whl[train]' in p.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_export_without_onnx_alone_names_onnx():
    p = run(["export", "--model", "bn_cnn"], blocked=("onnx",))
    assert p.returncode == 1 and "needs onnx, onnxscript, which are not installed" in p.stderr  # onnxscript imports onnx


@pytest.mark.parametrize("argv", [
    ["train", "--model", "mlp", "--data", "{empty}"],
    ["export", "--model", "bn_cnn", "--quantize", "--data", "{empty}", "--out", "{tmp}/out"],
    ["verify", str(ROOT / "exported" / "bn_cnn"), "--data", "{empty}"],
    ["bench", "--model", str(ROOT / "exported" / "bn_cnn"), "--accuracy", "--data", "{empty}", "--runs", "5"],
    ["robustness", str(ROOT / "exported" / "bn_cnn"), "--data", "{empty}"],
])
def test_commands_needing_data_say_how_to_get_it_before_any_work(argv, tmp_path):
    empty = tmp_path / "no-data"
    empty.mkdir()
    argv = [a.format(empty=empty, tmp=tmp_path) for a in argv]
    t0 = time.perf_counter()
    p = run(argv, cwd=tmp_path)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr  # no bench progress, no export steps before the error
    assert f"MNIST files not found in {empty}" in lines[0]
    assert f"Get them with: mnist-edge data download --data {empty}" in lines[0]
    assert sorted(q.name for q in tmp_path.iterdir()) == ["no-data"] and list(empty.iterdir()) == []
