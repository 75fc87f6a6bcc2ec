"""The committed artifacts in exported/: every registry model has them, and they still check out.

Recomputed here on the full 10,000-image test set, against the manifest written at export time and the
committed checkpoint (PyTorch is the oracle).
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from mnist_edge.training.checkpoint import load_checkpoint
from mnist_edge.data.mnist import load_mnist
from mnist_edge.evaluate.gates import THRESHOLDS
from mnist_edge.evaluate.ort_eval import accuracy_pct, make_session, ort_logits
from mnist_edge.manifest import read_manifest, verify_files
from mnist_edge.zoo.networks import build_edge_model
from mnist_edge.zoo.registry import MODELS, get_spec

EXPORTED = Path(__file__).resolve().parent.parent / "exported"
REQUIRED = ("checkpoint.pt", "model.pt", "model.onnx", "model.int8.onnx", "manifest.json",
            "training_curves.png", "README.md")


@pytest.fixture(scope="module")
def test_set(mnist_dir):
    x, y = load_mnist("test", data_dir=mnist_dir)
    return x[:, None].copy(), y  # writable: torch.from_numpy warns on read-only arrays


@pytest.mark.parametrize("name", list(MODELS))
def test_committed_artifacts_match_manifest_and_checkpoint(name, test_set):
    folder = EXPORTED / name
    missing = [f for f in REQUIRED if not (folder / f).is_file()]
    assert not missing, f"exported/{name} lacks {missing}: train, export --quantize, bench and card it"
    manifest = read_manifest(folder)
    verify_files(folder, manifest=manifest)  # every hash, before anything is parsed
    assert manifest["model"] == name
    assert manifest["evaluation"]["images"] == 10_000

    images, labels = test_set
    logits = {}
    for fname in ("model.onnx", "model.int8.onnx"):
        logits[fname] = ort_logits(make_session(folder / fname), images, 1000)
        recorded = manifest["files"][fname]["accuracy"]
        assert accuracy_pct(logits[fname], labels) == pytest.approx(recorded, abs=0.05), fname

    net, ckpt = load_checkpoint(folder / "checkpoint.pt")
    edge = build_edge_model(get_spec(name), net).eval()
    with torch.no_grad():
        ref = torch.cat([edge(torch.from_numpy(images[i:i + 1000]))[0] for i in range(0, len(images), 1000)]).numpy()
    fp32 = logits["model.onnx"]
    assert np.abs(fp32 - ref).max() <= THRESHOLDS["onnx"]["max_abs_diff"]
    assert (fp32.argmax(1) != ref.argmax(1)).sum() <= THRESHOLDS["onnx"]["label_mismatches"]
    assert accuracy_pct(ref, labels) == pytest.approx(ckpt["metrics"]["test_accuracy"], abs=0.05)
    int8 = logits["model.int8.onnx"]
    # the real int8 gates, on the fully trained committed model (the test fixtures are only briefly trained)
    assert accuracy_pct(fp32, labels) - accuracy_pct(int8, labels) <= THRESHOLDS["int8"]["accuracy_drop_pp"]
    assert (int8.argmax(1) == fp32.argmax(1)).mean() * 100 >= THRESHOLDS["int8"]["agreement_pct"]
    assert manifest["settings"]["thresholds"] == THRESHOLDS


@pytest.mark.parametrize("name", list(MODELS))
def test_committed_probabilities_are_calibrated_by_the_recorded_temperature(name, test_set):
    """Every graph outputs softmax(logits / T) with the T its metadata and manifest record, the same as the
    EdgeModel carrying T (the oracle); T was fitted on unseen images exactly when the recipe held some out."""
    import json

    from mnist_edge.evaluate.confidence import softmax
    from mnist_edge.contract import META_KEYS
    from mnist_edge.evaluate.ort_eval import make_session
    from mnist_edge.runtime import load
    from mnist_edge.torchrun import load_torchscript

    folder = EXPORTED / name
    manifest = read_manifest(folder)
    rec = manifest["temperature"]
    t = rec["temperature"]
    assert rec["fitted_on"]["seen_in_training"] == (not get_spec(name).recipe.val_size)
    images = test_set[0][:500]
    net, _ = load_checkpoint(folder / "checkpoint.pt")
    edge = build_edge_model(get_spec(name), net, temperature=t).eval()
    with torch.no_grad():
        ref = edge(torch.from_numpy(images))[1].numpy()
    for fname in ("model.onnx", "model.int8.onnx"):
        clf = load(folder / fname, threads=1)
        assert clf.temperature == t and json.loads(clf.metadata[META_KEYS["temperature"]])["temperature"] == t
        logits, probs = make_session(folder / fname).run(None, {"image": images})
        assert np.allclose(probs, softmax(logits, t), atol=1e-6), fname
        assert np.allclose(clf.predict(images).probabilities, probs, atol=1e-6), fname
    assert np.abs(make_session(folder / "model.onnx").run(["probabilities"], {"image": images})[0] - ref).max() < 1e-5
    ts, meta = load_torchscript(folder / "model.pt")
    assert json.loads(meta[META_KEYS["temperature"]])["temperature"] == t
    with torch.no_grad():
        assert np.abs(ts(torch.from_numpy(images))[1].numpy() - ref).max() < 1e-6
