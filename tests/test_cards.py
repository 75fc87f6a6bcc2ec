"""`mnist-edge card` and the pictures: confusion matrices, misclassified galleries, the zoo plot, training
curves; stale bench results are marked; a folder without artifacts is refused. Runs on a temporary copy of
the committed exported/bn_cnn (nothing is trained)."""

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

from mnist_edge import plots
from mnist_edge.bench.document import BenchReport
from mnist_edge.cards import card as cards
from mnist_edge.cards.folder import training_of
from mnist_edge.cli import main
from mnist_edge.errors import ArtifactError
from mnist_edge.training.checkpoint import read_checkpoint


@pytest.fixture(scope="module")
def carded(model_dir, mnist_dir, tmp_path_factory):
    """A copy of exported/bn_cnn with its cards and pictures written (once for the module)."""
    root = tmp_path_factory.mktemp("cards") / "exported"
    shutil.copytree(model_dir, root / "bn_cnn", ignore=shutil.ignore_patterns(*cards.PICTURES, "README.md"))
    written = cards.write_cards(root, pictures=True, data_dir=mnist_dir)
    return root, written


def _png_size(path):
    from PIL import Image

    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def test_card_has_confusion_matrix_and_galleries_for_fp32_and_int8(carded, model_dir, mnist_dir):
    root, written = carded
    folder = root / "bn_cnn"
    for name in ("confusion.png", "misclassified.png"):
        assert folder / name in written and min(_png_size(folder / name)) > 300
    card = (folder / "README.md").read_text()
    assert "![confusion matrix](confusion.png)" in card and "![misclassified test digits](misclassified.png)" in card
    from mnist_edge.data.mnist import load_mnist
    from mnist_edge.runtime import load

    x, y = load_mnist("test", mnist_dir)
    fp32, int8 = (load(model_dir, precision=p).predict(x).labels for p in ("fp32", "int8"))
    # The committed fp32 and int8 files disagree on a few digits: int8 gets its own gallery then.
    assert (fp32 != int8).any() == (folder / "misclassified_int8.png").is_file()
    if (fp32 != int8).any():
        assert "(misclassified_int8.png)" in card
    m = plots.confusion_matrix(y, fp32)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert m.sum() == 10_000 and np.trace(m) / 100 == pytest.approx(manifest["files"]["model.onnx"]["accuracy"])
    assert (m.sum(axis=1) == np.bincount(y, minlength=10)).all()  # rows are the true classes


def test_zoo_index_has_the_accuracy_latency_plot(carded):
    root, written = carded
    assert root / "zoo.png" in written and min(_png_size(root / "zoo.png")) > 300
    index = (root / "README.md").read_text()
    assert "](zoo.png)" in index and "marker's area is the file's size" in index
    points = cards.zoo_points([cards.load_card_folder(root / "bn_cnn", "bn_cnn")])
    assert {p["format"] for p in points} == {"ONNX fp32", "ONNX int8"}  # one point per model and format
    assert all(p["size_bytes"] > 0 and p["latency_ms"] > 0 for p in points)


def test_a_bench_result_for_other_files_is_marked_stale(carded, tmp_path):
    root, _ = carded
    folder = tmp_path / "bn_cnn"
    shutil.copytree(root / "bn_cnn", folder)
    assert cards.stale_formats(folder, BenchReport.from_json(folder / "bench.json")) == {}
    bench = json.loads((folder / "bench.json").read_text())
    next(e for e in bench["formats"] if e["format"] == "onnx")["sha256"] = "0" * 64
    (folder / "bench.json").write_text(json.dumps(bench))
    (folder / "model.pt").unlink()
    loaded = cards.load_card_folder(folder, "bn_cnn")
    assert loaded.stale == {"onnx": "model.onnx changed since it was timed", "torchscript": "model.pt is gone"}
    card = cards.model_card(loaded)
    assert "| ONNX fp32 (stale) |" in card and "| ONNX int8 |" in card and "**Stale:**" in card


def test_the_parity_table_names_the_int8_files_format_from_the_manifest(carded):
    root, _ = carded
    loaded = cards.load_card_folder(root / "bn_cnn", "bn_cnn")
    assert "| `model.int8.onnx` | ONNX int8 (QDQ) |" in cards.model_card(loaded)
    loaded.manifest["settings"]["quantization"]["quant_format"] = "qoperator"
    assert "| `model.int8.onnx` | ONNX int8 (QOperator) |" in cards.model_card(loaded)


def test_a_checkpoint_whose_batchnorm_statistics_were_reestimated_says_so(carded):
    root, _ = carded
    loaded = cards.load_card_folder(root / "bn_cnn", "bn_cnn")
    assert "| batch-norm statistics |" not in cards.model_card(loaded)
    ckpt = read_checkpoint(root / "bn_cnn" / "checkpoint.pt")
    ckpt["metrics"]["reestimate_bn"] = {"layers": 7, "images": 55000, "batch": 500, "val_loss_before": 0.077,
                                        "val_acc_before": 99.38, "val_loss": 0.068, "val_acc": 99.36}
    card = cards.model_card(replace(loaded, training=training_of(ckpt, "checkpoint.pt")))
    assert ("| batch-norm statistics | re-estimated on 55,000 clean training images after the final epoch; "
            "validation loss 0.0770 -> 0.0680, accuracy 99.38% -> 99.36% |") in card


def test_a_checkpoint_without_training_history_gives_a_card_without_that_row(carded):
    """A network trained elsewhere: no history, metrics or recipe; the card leaves those out (no
    ZeroDivisionError), and the rest of the card is drawn as before."""
    root, _ = carded
    loaded = cards.load_card_folder(root / "bn_cnn", "bn_cnn")
    bare = replace(loaded, training=training_of({"recipe": {}, "history": [], "metrics": {}}, "checkpoint.pt"))
    card = cards.model_card(bare)
    assert "| training |" not in card and "| achieved accuracy" not in card and "## Recipe" not in card
    assert "| parameters |" in card and "## Accuracy and parity per format" in card and "## Latency" in card
    index = cards.zoo_index([bare])
    row = next(line for line in index.splitlines() if line.startswith("| [`bn_cnn`]"))
    assert row.split(" | ")[2] == "-" and row.split(" | ")[-2] == "-"  # PyTorch accuracy, training time


@pytest.mark.parametrize("edit, match", [
    (lambda c: c["metrics"].update(test_accuracy="high"), "metrics.test_accuracy is 'high', expected a percentage"),
    (lambda c: c["metrics"].pop("device"), "metrics lacks device"),
    (lambda c: c["history"].append({"epoch": 99}), r"history\[\d+\].seconds is missing"),
    (lambda c: c["metrics"].update(reestimate_bn={"images": 5, "val_loss": 0.1}), "not all four"),
])
def test_a_checkpoint_the_card_cannot_trust_is_refused_at_load(carded, edit, match):
    root, _ = carded
    ckpt = read_checkpoint(root / "bn_cnn" / "checkpoint.pt")
    edit(ckpt)
    with pytest.raises(ArtifactError, match=match):
        training_of(ckpt, "checkpoint.pt")


def test_a_malformed_bench_or_int8_report_is_a_typed_error_naming_the_field(carded, tmp_path, capsys):
    root, _ = carded
    exported = tmp_path / "exported"
    shutil.copytree(root / "bn_cnn", exported / "bn_cnn", ignore=shutil.ignore_patterns("README.md"))
    good = (exported / "bn_cnn" / "bench.json").read_text()
    bench = json.loads(good)
    bench["results"][0]["p99_ms"] = [None]
    (exported / "bn_cnn" / "bench.json").write_text(json.dumps(bench))
    assert main(["card", "--exported", str(exported), "--no-pictures"]) == 1
    err = capsys.readouterr().err
    assert "cannot make the card of" in err and "results[0].p99_ms is [None]" in err and len(err.splitlines()) == 1
    (exported / "bn_cnn" / "bench.json").write_text(good)
    (exported / "bn_cnn" / "int8_report.json").write_text("[" * 100_000 + "]" * 100_000)
    assert main(["card", "--exported", str(exported), "--no-pictures"]) == 1
    assert "int8_report.json' is not valid JSON" in capsys.readouterr().err
    report = json.loads((root / "bn_cnn" / "int8_report.json").read_text())
    next(iter(report["profile"].values()))["int8"]["ops"][0]["ms"] = "fast"
    (exported / "bn_cnn" / "int8_report.json").write_text(json.dumps(report))
    assert main(["card", "--exported", str(exported), "--no-pictures"]) == 1
    assert "ops[0]" in capsys.readouterr().err
    assert not (exported / "bn_cnn" / "README.md").exists() and not (exported / "README.md").exists()


def test_card_refuses_a_folder_without_artifacts(tmp_path, capsys):
    empty = tmp_path / "exported"
    empty.mkdir()
    with pytest.raises(ArtifactError, match="holds no exported model"):
        cards.write_cards(empty, pictures=False)
    assert not (empty / "README.md").exists()
    assert main(["card", "--exported", str(empty), "--no-pictures"]) == 1
    assert "holds no exported model" in capsys.readouterr().err and not (empty / "README.md").exists()
    (empty / "mlp").mkdir()
    assert main(["card", "--exported", str(empty), "--model", "MLP", "--no-pictures"]) == 1
    assert "manifest.json' is missing" in capsys.readouterr().err
    assert not (empty / "mlp" / "README.md").exists() and not (empty / "README.md").exists()


def test_training_curves_have_whole_epoch_ticks_and_read_for_one_epoch(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, dpi=100: figures.append(fig) or path)
    one = [{"epoch": 1, "train_loss": 0.3, "train_acc": 91.0, "test_loss": 0.15, "test_acc": 95.5}]
    plots.plot_history(one, tmp_path / "one.png")
    many = [{**one[0], "epoch": e} for e in range(1, 8)]
    plots.plot_history(many, tmp_path / "many.png")
    for fig in figures:
        for ax in fig.axes:
            lo, hi = ax.get_xlim()
            ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
            assert ticks and all(float(t).is_integer() for t in ticks)
    one_ax = figures[0].axes[1]
    assert one_ax.get_xlim() == (0.0, 2.0)  # the single epoch in the middle, not at an edge
    assert any("95.50%" in t.get_text() for t in one_ax.texts)  # its values written next to the points
    assert not figures[1].axes[1].texts  # many epochs: the curve speaks for itself


def test_recipe_notes_name_settings_that_differ_from_the_registry():
    from dataclasses import asdict

    from mnist_edge.zoo.registry import get_spec

    spec = get_spec("edge_cnn")
    trained = {**asdict(spec.recipe), "notes": "notes written when it was trained"}
    assert cards._recipe_notes(trained, spec) == spec.recipe.notes  # the registered recipe: its notes
    trained["epochs"] = spec.recipe.epochs // 2
    text = cards._recipe_notes(trained, spec)
    assert text.startswith("notes written when it was trained")
    assert f"epochs {spec.recipe.epochs // 2} (registry: {spec.recipe.epochs})" in text



def test_recipe_notes_count_a_setting_the_checkpoint_predates_as_its_default():
    from dataclasses import asdict, replace

    from mnist_edge.zoo.registry import get_spec

    spec = get_spec("edge_cnn")
    spec = replace(spec, recipe=replace(spec.recipe, augment_tail=10))  # a registry that gained a setting
    trained = {k: v for k, v in asdict(spec.recipe).items() if k != "augment_tail"}  # an older checkpoint
    assert "augment_tail 0 (registry: 10)" in cards._recipe_notes(trained, spec)
    assert cards._recipe_notes({**trained, "augment_tail": 10}, spec) == spec.recipe.notes


def test_the_card_names_every_choice_of_the_int8_recipe():
    from mnist_edge import artifacts as A
    from mnist_edge.cards.int8 import int8_recipe_lines

    def line(**q):
        manifest = {"int8_recipe": {"source": "registry:x.json", "recommended": "model.int8.onnx"},
                    "files": {A.INT8: {"quantization": q}}}
        return int8_recipe_lines(manifest)[1]

    text = line(quant_format="qoperator", activation_type="uint8", weight_type="int8", per_channel=False,
                calibration_method="percentile", percentile=99.99, keep_float=["Conv[0]"], pad_channels=["Conv[1]"],
                nhwc_flatten=True, reduce_range=False, relu_before_pool=[])
    assert text.startswith("**int8 recipe** (registry:x.json): QOperator, uint8 activations, int8 weights per tensor, "
                           "percentile 99.99 calibration, keep_float ['Conv[0]'], nhwc_flatten True, "
                           "pad_channels ['Conv[1]']."), text
    assert "reduce_range" not in text and "relu_before_pool" not in text  # defaults are not listed
    assert "QDQ, int8 activations, int8 weights per channel, entropy calibration." in line(
        quant_format="qdq", activation_type="int8", weight_type="int8", per_channel=True, calibration_method="entropy",
        percentile=99.999)


def test_card_says_which_card_it_is_writing(carded, tmp_path, capsys):
    """A newcomer's `mnist-edge card` is not silent for half a minute: one progress line per card on stderr
    (--quiet: none), the written paths on stdout."""
    root, _ = carded
    exported = tmp_path / "exported"
    shutil.copytree(root / "bn_cnn", exported / "bn_cnn")
    assert main(["card", "--exported", str(exported), "--no-pictures"]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == ["  card 1/1: bn_cnn"] and str(exported / "bn_cnn" / "README.md") in out
    assert main(["card", "--exported", str(exported), "--no-pictures", "--quiet"]) == 0
    assert capsys.readouterr().err == ""
