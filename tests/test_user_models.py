"""Networks the package does not define (tests/user_models/, written as a user would) through the CLI, each
command in a subprocess: export with int8 and every gate, verify, the self-test, predict, bench, card; and
the one-line errors for bad user models, with nothing written.

The networks are trained for a few hundred steps with plain PyTorch here (as a user's own script would),
so their int8 agreement sits near the real gate by chance: exports use the relaxed limits of the other
briefly trained fixtures (--thresholds, recorded in the manifest). No test depends on an accuracy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import SHORT_TRAINED_THRESHOLDS

HERE = Path(__file__).resolve().parent
NETS = HERE / "user_models"
EVAL = "1000"  # gate on the first 1,000 test images: the pipeline is the same, the test quicker


def cli(*argv, cwd=None, check=True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(NETS))
    p = subprocess.run([sys.executable, "-m", "mnist_edge", *map(str, argv)], capture_output=True, text=True,
                       cwd=cwd, env=env, timeout=600)
    if check and p.returncode != 0:
        pytest.fail(f"mnist-edge {' '.join(map(str, argv))} exited {p.returncode}: {p.stderr[-1500:]}")
    return p


def quick_train(net, mnist_dir, steps: int = 300, targets=None):
    """What a user's script does: a few hundred Adam steps on MNIST's training images; the state_dict."""
    import torch

    from mnist_edge.data.dataset import load_digits

    train = load_digits(mnist_dir, ("train",)).train
    torch.manual_seed(0)
    x = torch.from_numpy(train.images[:steps * 32].astype(np.float32) / 255)[:, None]
    y = torch.from_numpy(train.labels[:steps * 32] if targets is None else targets(train.labels[:steps * 32]))
    size = getattr(net, "input_size", 28)
    if size != 28:
        x = torch.nn.functional.pad(x, ((size - 28) // 2,) * 4)
    x = x.expand(-1, getattr(net, "channels", 1), -1, -1)
    x = (x - 0.1307) / 0.3081
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    net.train()
    for i in range(0, len(x), 32):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x[i:i + 32]), y[i:i + 32]).backward()
        opt.step()
    return net.eval().state_dict()


def _load(module: str, cls: str):
    sys.path.insert(0, str(NETS))
    try:
        return getattr(__import__(module), cls)
    finally:
        sys.path.remove(str(NETS))


@pytest.fixture(scope="module")
def residual_weights(mnist_dir, tmp_path_factory) -> Path:
    import torch

    path = tmp_path_factory.mktemp("user") / "residual_state.pt"
    torch.save(quick_train(_load("residual_net", "ResidualNet")(), mnist_dir), path)
    return path


RELAXED = json.dumps(SHORT_TRAINED_THRESHOLDS)


def test_a_users_residual_network_gets_every_command(residual_weights, mnist_dir, tmp_path):
    out = tmp_path / "mynet"
    cli("export", "--net", f"{NETS / 'residual_net.py'}:ResidualNet", "--weights", residual_weights, "--name",
        "mynet", "--quantize", "--out", out, "--data", mnist_dir, "--eval-limit", EVAL, "--thresholds", RELAXED,
        "--quiet")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"] == "mynet" and {"model.onnx", "model.int8.onnx", "model.pt", "selftest.bin"} <= set(
        manifest["files"])
    assert all(c["passed"] for c in manifest["checks"]) and manifest["settings"]["thresholds"]["int8"][
        "agreement_pct"] == 97.0
    assert "ok" in cli("verify", out, "--data", mnist_dir).stdout
    assert "bit-identical" in cli("verify", "--self-test", out).stdout
    from PIL import Image

    from mnist_edge.data.dataset import load_digits

    test = load_digits(mnist_dir, ("test",)).test
    Image.fromarray(test.images[0]).save(tmp_path / "digit.png")
    pred = json.loads(cli("predict", tmp_path / "digit.png", "--model", out, "--json").stdout)
    assert pred["results"][0]["top_k"][0]["label"] in [str(d) for d in range(10)]
    bench = cli("bench", "--model", out, "--runs", "5", "--threads", "1", "--no-progress", "--json", out / "bench.json")
    assert "int8" in bench.stdout and "not available" in bench.stdout  # eager: no zoo class to rebuild
    cli("card", "--folder", out)
    card = (out / "README.md").read_text()
    assert card.startswith("# `mynet`") and "| parameters |" in card and "model.int8.onnx" in card


@pytest.mark.parametrize("module, cls, extra", [
    ("other_nets", "NormGeluMlp", []),
    ("other_nets", "Net32", ["--input-size", "32"]),
    ("other_nets", "ThreeChannel", ["--channels", "3"]),
], ids=["layernorm-gelu", "32x32", "3-channels"])
def test_other_user_networks_export_with_int8_and_verify(module, cls, extra, mnist_dir, tmp_path):
    import torch

    net = _load(module, cls)()
    net.input_size = 32 if "32" in extra else 28
    net.channels = 3 if "3" in extra else 1
    torch.save(quick_train(net, mnist_dir, steps=150), tmp_path / "w.pt")
    out = tmp_path / "out"
    cli("export", "--net", f"{module}:{cls}", "--weights", tmp_path / "w.pt", "--name", cls.lower(), *extra,
        "--quantize", "--out", out, "--data", mnist_dir, "--eval-limit", EVAL, "--thresholds", RELAXED, "--quiet")
    assert "ok" in cli("verify", out, "--data", mnist_dir).stdout
    meta = json.loads((out / "manifest.json").read_text())["settings"]["normalization"]
    assert meta["input_size"] == (32 if "32" in extra else 28) and meta.get("channels", 1) == net.channels
    if net.channels != 1:  # not a one-channel digit model: predict feeds it the image plainly resized
        from PIL import Image

        Image.fromarray(np.full((56, 56), 200, np.uint8)).save(tmp_path / "plain.png")  # no digit: refused by
        pred = json.loads(cli("predict", tmp_path / "plain.png", "--model", out, "--json").stdout)  # MNIST's
        assert "error" not in pred["results"][0] and pred["results"][0]["top_k"][0]["label"]


def test_26_classes_from_an_npz_with_labels(mnist_dir, tmp_path):
    """A letters network: 26 labels named on the command line, calibration and gates on the user's .npz."""
    import torch

    from mnist_edge.data.dataset import load_digits

    net = _load("other_nets", "Letters")()
    d = load_digits(mnist_dir)
    np.savez(tmp_path / "letters.npz", x_train=d.train.images[:3000], y_train=d.train.labels[:3000],
             x_test=d.test.images[:1000], y_test=d.test.labels[:1000])
    torch.save(quick_train(net, mnist_dir, steps=100), tmp_path / "w.pt")
    labels = ",".join(chr(ord("A") + i) for i in range(26))
    out = tmp_path / "letters"
    cli("export", "--net", "other_nets:Letters", "--weights", tmp_path / "w.pt", "--name", "letters", "--labels",
        labels, "--quantize", "--out", out, "--data", tmp_path / "letters.npz", "--thresholds", RELAXED, "--quiet")
    from mnist_edge.runtime import load

    clf = load(out)
    assert clf.labels == tuple(labels.split(","))
    assert "ok" in cli("verify", out, "--data", tmp_path / "letters.npz").stdout  # gated on the .npz: checked on it
    assert "not the data" in cli("verify", out, "--data", mnist_dir, check=False).stderr
    pred = clf.predict(d.test.images[:5], top_k=3)
    assert pred.probabilities.shape == (5, 26) and np.allclose(pred.probabilities.sum(1), 1, atol=1e-5)


def test_a_users_torchscript_file_exports(residual_weights, tmp_path, mnist_dir):
    import torch

    net = _load("residual_net", "ResidualNet")()
    net.load_state_dict(torch.load(residual_weights, weights_only=True))
    torch.jit.save(torch.jit.script(net.eval()), tmp_path / "scripted.pt")
    out = tmp_path / "ts"
    cli("export", "--torchscript", tmp_path / "scripted.pt", "--name", "scripted", "--out", out, "--data",
        mnist_dir, "--eval-limit", EVAL, "--quiet")
    report = cli("verify", "--self-test", out).stdout
    assert "model.pt" in report and "model.onnx" in report and "failed" not in report


# --- bad user models: one line, nothing written -----------------------------------------------------------

def _fails(tmp_path, *argv) -> str:
    p = cli("export", *argv, "--out", tmp_path / "never", "--quiet", check=False)
    assert p.returncode != 0 and "Traceback" not in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not (tmp_path / "never").exists()
    return p.stderr


def test_bad_user_models_get_one_line_and_nothing_is_written(residual_weights, tmp_path, mnist_dir):
    import torch

    net_ref = f"{NETS / 'residual_net.py'}:ResidualNet"
    whole = tmp_path / "whole.pt"
    net = _load("residual_net", "ResidualNet")()
    torch.save(net, whole)
    assert "torch.save(model.state_dict()" in _fails(tmp_path, "--net", net_ref, "--weights", whole, "--name", "m")
    other = tmp_path / "other.pt"
    torch.save(_load("other_nets", "Letters")().state_dict(), other)
    msg = _fails(tmp_path, "--net", net_ref, "--weights", other, "--name", "m")
    assert "missing keys" in msg and "unexpected keys" in msg
    assert "returns 10 classes but the labels name 3" in _fails(
        tmp_path, "--net", net_ref, "--weights", residual_weights, "--name", "m", "--labels", "a,b,c")
    assert "defines no class 'Nope'" in _fails(tmp_path, "--net", f"{NETS / 'residual_net.py'}:Nope", "--weights",
                                               residual_weights, "--name", "m")
    norm = tmp_path / "norm.pt"
    torch.save(_load("other_nets", "NormGeluMlp")().state_dict(), norm)
    assert "rejects input [2, 1, 32, 32]" in _fails(
        tmp_path, "--net", "other_nets:NormGeluMlp", "--weights", norm, "--name", "m", "--input-size", "32")
    assert "--net needs --name" in _fails(tmp_path, "--net", net_ref, "--weights", residual_weights)


def test_the_readme_example_runs_as_pasted(mnist_dir, tmp_path):
    """README's "Your own model" block: mnist_edge.train() then mnist_edge.export(), in a fresh process."""
    readme = (HERE.parent / "README.md").read_text()
    block = readme.split("## Your own model", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    env = dict(os.environ, MNIST_EDGE_DATA=str(mnist_dir))
    p = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, env=env,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert (tmp_path / "runs" / "export" / "mynet" / "manifest.json").is_file()
    assert p.stdout.strip().endswith(("model.int8.onnx", "model.onnx"))


def test_train_net_writes_a_checkpoint_that_export_net_takes(mnist_dir, tmp_path):
    ckpt = tmp_path / "mynet" / "checkpoint.pt"
    p = cli("train", "--net", f"{NETS / 'residual_net.py'}:ResidualNet", "--name", "mynet", "--recipe", "fast",
            "--epochs", "1", "--limit-train", "2048", "--out", ckpt, "--data", mnist_dir, "--no-progress")
    assert f"--weights {ckpt}" in p.stdout
    from mnist_edge.training.checkpoint import read_checkpoint

    record = read_checkpoint(ckpt)
    assert record["model"] == "mynet" and record["net"].endswith("residual_net.py:ResidualNet")
    out = tmp_path / "out"
    cli("export", "--net", f"{NETS / 'residual_net.py'}:ResidualNet", "--weights", ckpt, "--name", "mynet",
        "--out", out, "--data", mnist_dir, "--eval-limit", EVAL, "--quiet")
    assert json.loads((out / "manifest.json").read_text())["model"] == "mynet"


BLOCK_TORCH = ("import sys\n"
               "sys.modules['torch'] = None  # unimportable: a float ONNX export must not need it\n"
               "from mnist_edge.cli import main\n"
               "sys.exit(main(sys.argv[1:]))\n")


@pytest.mark.parametrize("external", [False, True], ids=["one-file", "external-data"])
def test_a_float_onnx_made_elsewhere_is_wrapped_gated_and_verified_without_torch(external, residual_weights,
                                                                                 mnist_dir, tmp_path):
    import torch

    net = _load("residual_net", "ResidualNet")().eval()
    net.load_state_dict(torch.load(residual_weights, weights_only=True))
    src = tmp_path / "src" / "theirs.onnx"
    src.parent.mkdir()
    batch = torch.export.Dim("batch", min=1)
    # named "image" and "logits", as ours: the wrapper renames the user's tensors instead of clashing
    torch.onnx.export(net, (torch.zeros(2, 1, 28, 28),), str(src), dynamo=True, external_data=external,
                      input_names=["image"], output_names=["logits"], dynamic_shapes={"x": {0: batch}})
    assert (src.parent / "theirs.onnx.data").exists() == external
    out = tmp_path / "wrapped"
    p = subprocess.run([sys.executable, "-c", BLOCK_TORCH, "export", "--onnx", str(src), "--name", "theirs",
                        "--quantize", "--out", str(out), "--data", str(mnist_dir), "--eval-limit", EVAL,
                        "--thresholds", RELAXED, "--quiet"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-1500:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["files"]) == ["model.int8.onnx", "model.onnx", "selftest.bin"]
    assert "torch" not in manifest["versions"] and manifest["source.onnx"]["accuracy"] > 0
    assert manifest["files"]["model.onnx"]["reference"] == "source.onnx"
    assert "ok" in cli("verify", out, "--data", mnist_dir).stdout
    assert "bit-identical" in cli("verify", "--self-test", out).stdout
    from mnist_edge.runtime import load

    assert load(out, precision="fp32").labels == tuple(str(d) for d in range(10))


def test_a_float_onnx_that_does_not_fit_the_contract_is_refused(tmp_path, mnist_dir):
    import torch

    net = _load("other_nets", "Net32")().eval()
    src = tmp_path / "net32.onnx"
    torch.onnx.export(net, (torch.zeros(2, 1, 32, 32),), str(src), dynamo=True, external_data=False,
                      dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}})
    assert "input [batch, 1, 32, 32] but the contract gives [batch, 1, 28, 28]" in _fails(
        tmp_path, "--onnx", src, "--name", "n", "--data", mnist_dir)
    fixed = tmp_path / "fixed.onnx"
    torch.onnx.export(net, (torch.zeros(1, 1, 32, 32),), str(fixed), dynamo=True, external_data=False)
    assert "the batch dimension is fixed at 1" in _fails(tmp_path, "--onnx", fixed, "--name", "n", "--input-size",
                                                          "32", "--data", mnist_dir)
