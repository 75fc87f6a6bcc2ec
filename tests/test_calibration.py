"""Temperature scaling and min_confidence: the fit against known temperatures, ECE against calibrated
synthetic data, the exported graph's probabilities against softmax(logits / T) and the torch EdgeModel,
"unsure" exactly below the threshold, and files exported before calibration (T = 1).

Cheap: synthetic numpy data, and one untrained mlp exported to ONNX (a few seconds); no fixture trains.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from mnist_edge.evaluate import confidence as cal
from mnist_edge.contract import META_KEYS
from mnist_edge.errors import ContractError, UsageError


def _synthetic(t0: float, n: int = 20_000, seed: int = 0):
    """Logits z and labels drawn from softmax(z / t0): a model whose true temperature is t0."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 4, size=(n, 10))
    p = cal.softmax(z, t0)
    y = (p.cumsum(1) > rng.random((n, 1))).argmax(1)
    return z, y


@pytest.mark.parametrize("t0", [0.5, 1.0, 2.5])
def test_fit_recovers_a_known_temperature(t0):
    z, y = _synthetic(t0)
    t = cal.fit_temperature(z, y)
    assert t == pytest.approx(t0, rel=0.05)
    assert cal.nll(z, y, t) <= min(cal.nll(z, y, t * 1.1), cal.nll(z, y, t / 1.1))
    assert cal.fit_temperature(z, y) == t  # deterministic


def test_ece_is_near_zero_when_calibrated_and_large_when_not():
    z, y = _synthetic(1.0, n=50_000)
    assert cal.expected_calibration_error(cal.softmax(z), y) < 0.01
    assert cal.expected_calibration_error(cal.softmax(z, 0.3), y) > 0.05  # overconfident
    # by hand: two bins of half the images each; confidence 0.95 right half the time (gap 0.45), 0.55
    # always right (gap 0.45) -> 0.5 * 0.45 + 0.5 * 0.45
    p = np.array([[0.95, 0.05], [0.95, 0.05], [0.55, 0.45], [0.55, 0.45]])
    assert cal.expected_calibration_error(p, np.array([0, 1, 0, 0])) == pytest.approx(0.45)
    assert cal.expected_calibration_error(p, np.array([0, 0, 0, 0])) == pytest.approx(0.5 * 0.05 + 0.5 * 0.45)


def test_rejection_table_counts_errors_and_correct_answers_below_the_threshold():
    p = np.array([[0.96, 0.04], [0.6, 0.4], [0.8, 0.2], [0.99, 0.01], [0.7, 0.3]])
    y = np.array([0, 1, 1, 0, 0])  # wrong: rows 1 (0.6) and 2 (0.8)
    rows = {r["threshold"]: r for r in cal.rejection_table(p, y, (0.7, 0.9))}
    assert rows[0.7]["errors_rejected_pct"] == 50.0 and rows[0.7]["correct_rejected_pct"] == 0.0
    assert rows[0.9]["errors_rejected_pct"] == 100.0 and rows[0.9]["correct_rejected_pct"] == pytest.approx(33.33)
    assert rows[0.9]["accepted_accuracy_pct"] == 100.0 and rows[0.9]["rejected_pct"] == 60.0


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, float("nan"), "0.9", True, None])
def test_bad_min_confidence_is_a_usage_error_naming_it(bad):
    with pytest.raises(UsageError, match=r"min_confidence.*between 0 and 1.*got"):
        cal.check_min_confidence(bad)


def test_temperature_metadata_absent_means_one_and_malformed_is_refused():
    assert cal.temperature_from_metadata({}, "f.onnx") == 1.0
    key = META_KEYS["temperature"]
    assert cal.temperature_from_metadata({key: json.dumps({"temperature": 1.7})}, "f.onnx") == 1.7
    for raw in ("{", json.dumps({"t": 1}), json.dumps({"temperature": -1}), json.dumps({"temperature": "2"})):
        with pytest.raises(ContractError, match="f.onnx"):
            cal.temperature_from_metadata({key: raw}, "f.onnx")


def test_fit_split_is_the_held_out_validation_split_or_says_it_was_seen(mnist_dir):
    from mnist_edge.data.dataset import load_digits
    from mnist_edge.data.mnist import train_val_split
    from mnist_edge.exporter.temperature import fit_split

    train = load_digits(mnist_dir, ("train",)).train
    ckpt = {"recipe": {"val_size": 12_000}, "metrics": {"seed": 3, "limit_train": None}}
    x, y, rec = fit_split(ckpt, train)
    val = train_val_split(60_000, 12_000, 3)[1]
    assert rec["images"] == 12_000 and not rec["seen_in_training"] and rec["split"].startswith("validation")
    assert rec["indices_sha256"] == hashlib.sha256(val.astype(np.int64).tobytes()).hexdigest()
    _, _, seen = fit_split({"recipe": {"val_size": 0}, "metrics": {"seed": 0}}, train)
    assert seen["seen_in_training"] and "seen in training" in seen["split"] and seen["images"] == 12_000
    assert x.shape == (12_000, 1, 28, 28) and x.dtype == np.uint8 and y.dtype == np.int64


def test_a_temperature_fitted_on_seen_digits_is_recorded_but_not_applied(mnist_dir):
    from mnist_edge.data.dataset import load_digits
    from mnist_edge.exporter.temperature import fit
    from mnist_edge.zoo.networks import build_edge_model
    from mnist_edge.zoo.registry import get_spec

    import torch

    torch.manual_seed(0)
    edge = build_edge_model(get_spec("mlp")).eval()
    with torch.no_grad():
        edge.net.body[-1].weight.mul_(20.0)  # an over-confident net: the NLL-optimal T is far from 1
    data = load_digits(mnist_dir)
    x, y = np.ascontiguousarray(data.test.images[:500, None]), data.test.labels[:500]
    from mnist_edge.exporter.reference import TorchReference

    seen = fit(TorchReference(edge), {"recipe": {"val_size": 0}, "metrics": {"seed": 0}}, x, y, data.train)
    assert seen["fitted_on"]["seen_in_training"] and seen["temperature"] == 1.0 == edge.temperature
    assert abs(seen["fitted_temperature"] - 1.0) > 0.1 and seen["applied"] is False
    held = fit(TorchReference(edge), {"recipe": {"val_size": 2_000}, "metrics": {"seed": 0}}, x, y, data.train)
    assert held["temperature"] == held["fitted_temperature"] == edge.temperature and held["applied"] is True


@pytest.fixture(scope="module")
def exported_pair(tmp_path_factory):
    """An untrained mlp exported with T = 2.5 (metadata as the exporter writes it), and the same file
    with the temperature key removed (a file exported before calibration)."""
    import onnx

    from mnist_edge.exporter import records
    from mnist_edge.exporter.onnx_export import export_onnx, save_onnx
    from mnist_edge.zoo.networks import build_edge_model
    from mnist_edge.zoo.registry import get_spec

    import torch

    torch.manual_seed(0)
    spec = get_spec("mlp")
    edge = build_edge_model(spec, temperature=2.5).eval()
    with torch.no_grad():  # sharper logits than an initialised net gives, so T visibly matters
        edge.net.body[-1].weight.mul_(20)
    folder = tmp_path_factory.mktemp("calibrated")
    meta = records.onnx_metadata(spec, "0" * 64, {}, {"temperature": 2.5})
    export_onnx(edge, folder / "t.onnx", metadata=meta)
    m = onnx.load(folder / "t.onnx")
    keep = [(p.key, p.value) for p in m.metadata_props if p.key != META_KEYS["temperature"]]
    del m.metadata_props[:]
    for k, v in keep:
        m.metadata_props.add(key=k, value=v)
    save_onnx(m, folder / "old.onnx")
    return edge, folder / "t.onnx", folder / "old.onnx"


def test_graph_probabilities_are_softmax_of_logits_over_t_and_match_torch(exported_pair):
    import onnxruntime as ort
    import torch

    from mnist_edge.runtime import load

    edge, path, _ = exported_pair
    x = (np.random.default_rng(1).random((37, 1, 28, 28)) * 255).astype(np.uint8)
    logits, probs = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x})
    clf = load(path, threads=1)
    assert clf.temperature == 2.5
    assert np.allclose(probs, cal.softmax(logits, clf.temperature), atol=1e-6)
    assert not np.allclose(probs, cal.softmax(logits), atol=1e-3)  # T really changed them
    with torch.no_grad():
        t_logits, t_probs = edge(torch.from_numpy(x))
    assert np.allclose(logits, t_logits.numpy(), atol=1e-4) and np.allclose(probs, t_probs.numpy(), atol=1e-6)
    assert np.allclose(clf.predict(x).probabilities, probs, atol=1e-6)  # the runtime applies the same T


def test_a_file_without_the_temperature_key_loads_with_t_one(exported_pair):
    from mnist_edge.runtime import load

    _, path, old = exported_pair
    x = (np.random.default_rng(2).random((5, 1, 28, 28)) * 255).astype(np.uint8)
    clf = load(old, threads=1)
    assert clf.temperature == 1.0
    p = clf.predict(x)
    assert np.allclose(p.probabilities, cal.softmax(p.logits), atol=1e-6)
    assert np.array_equal(p.labels, load(path, threads=1).predict(x).labels)  # T never changes the digit


def test_min_confidence_answers_unsure_exactly_below_the_threshold(exported_pair):
    from mnist_edge.runtime import load
    from mnist_edge.runtime.classifier import UNSURE

    clf = load(exported_pair[1], threads=1)
    x = (np.random.default_rng(3).random((200, 1, 28, 28)) * 255).astype(np.uint8)
    plain = clf.predict(x, top_k=2)
    top = plain.probabilities.max(1)
    p_min = float(np.median(top))
    p = clf.predict(x, top_k=2, min_confidence=p_min)
    assert np.array_equal(p.confident, top >= p_min) and 0 < p.confident.sum() < len(x)
    assert np.array_equal(p.labels, np.where(top >= p_min, plain.labels, UNSURE))
    assert np.array_equal(p.topk, plain.topk) and plain.confident.all()  # the best guess stays in topk
    rows = p.to_list()
    assert all((r["label"] is None) == (not c) for r, c in zip(rows, p.confident))
    assert all(r["top_k"][0]["label"] == str(plain.labels[i]) for i, r in enumerate(rows))
    with pytest.raises(UsageError, match="got 1.5"):
        clf.predict(x, min_confidence=1.5)
    with pytest.raises(UsageError, match="got 0"):
        clf.predict(x[:0], min_confidence=0)  # checked even for an empty batch


def test_predict_cli_min_confidence_in_text_and_json(exported_pair, mnist_dir, tmp_path, capsys):
    from PIL import Image

    from mnist_edge.cli import main
    from mnist_edge.data.mnist import load_mnist
    from mnist_edge.runtime import load
    from mnist_edge.runtime.images import load_image

    x, _ = load_mnist("test", mnist_dir)
    paths = []
    for i in range(8):
        Image.fromarray(x[i]).save(tmp_path / f"d{i}.png")
        paths.append(str(tmp_path / f"d{i}.png"))
    model = str(exported_pair[1])
    top = load(model, threads=1).predict(np.stack([load_image(p) for p in paths])).probabilities.max(1)
    p_min = float(np.sort(top)[4])  # 4 below, 4 at or above
    assert main(["predict", "--model", model, "--min-confidence", repr(p_min), "--json", *paths]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["min_confidence"] == p_min and doc["model"]["temperature"] == 2.5 and doc["unsure"] == 4
    for r, prob in zip(doc["results"], top):
        assert r["confident"] == (prob >= p_min) and (r["label"] is None) == (prob < p_min)
        assert r["top_k"][0]["label"] is not None
    assert main(["predict", "--model", model, "--min-confidence", repr(p_min), *paths]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum(": unsure (best guess " in line for line in lines) == 4 and len(lines) == 8
    assert main(["predict", "--model", model, "--min-confidence", "1", *paths]) != 0
    err = capsys.readouterr().err
    assert "between 0 and 1" in err and "got 1.0" in err and len(err.strip().splitlines()) == 1


def test_the_export_gate_fails_a_graph_whose_probabilities_lack_the_temperature():
    from mnist_edge.evaluate.gates import probabilities_check

    z = np.random.default_rng(4).normal(0, 5, size=(50, 10)).astype(np.float32)
    assert probabilities_check("m.onnx", 64, (z, cal.softmax(z, 2.0).astype(np.float32)), 2.0).passed
    bad = probabilities_check("m.onnx", 64, (z, cal.softmax(z).astype(np.float32)), 2.0)
    assert not bad.passed and "probabilities_max_abs_diff" in bad.describe()
    assert not probabilities_check("m.onnx", 64, RuntimeError("cannot run"), 2.0).passed
