"""The robustness suite: each transform on small synthetic images where the answer is known exactly, the
suite's determinism, and `mnist-edge robustness` end to end on the committed bn_cnn (fp32 and int8), its
numbers checked against the manifest and an independent run of the runtime. Nothing is trained."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mnist_edge.evaluate import robustness as R
from mnist_edge.cli import main
from mnist_edge.errors import ArtifactError, InputError, UsageError


def _pixel(r: int, c: int, value: int = 255, n: int = 1) -> np.ndarray:
    x = np.zeros((n, 28, 28), np.uint8)
    x[:, r, c] = value
    return x


@pytest.mark.parametrize("name, dr, dc", [("shift_up", -2, 0), ("shift_down", 2, 0), ("shift_left", 0, -2),
                                          ("shift_right", 0, 2)])
def test_a_shift_moves_a_pixel_by_exactly_two(name, dr, dc):
    out = R.transform(_pixel(10, 12, 200), name)
    assert np.argwhere(out[0]).tolist() == [[10 + dr, 12 + dc]] and out[0, 10 + dr, 12 + dc] == 200


def test_a_shift_fills_with_background_and_drops_what_leaves():
    x = np.full((2, 28, 28), 7, np.uint8)
    out = R.shift(x, 2, -2)
    assert (out[:, :2] == 0).all() and (out[:, :, -2:] == 0).all() and (out[:, 2:, :-2] == 7).all()
    assert (R.shift(_pixel(0, 5), -1, 0) == 0).all()  # moved past the top edge: gone


def test_erosion_of_a_three_pixel_bar_leaves_one_and_dilation_grows_it():
    x = np.zeros((1, 28, 28), np.uint8)
    x[0, 5:20, 10:13] = 255  # a vertical bar 3 px wide, 15 long
    thin = R.transform(x, "thin")[0]
    assert np.argwhere(thin.any(axis=0)).ravel().tolist() == [11]  # one column left, the middle one
    assert thin[:, 11].nonzero()[0].tolist() == list(range(6, 19))  # the cross also shortens it by 1 per end
    thick = R.transform(x, "thick")[0]
    assert np.argwhere(thick.any(axis=0)).ravel().tolist() == [9, 10, 11, 12, 13]
    assert thick[:, 11].nonzero()[0].tolist() == list(range(4, 21))
    assert (R.erode(R.dilate(_pixel(9, 9))) == _pixel(9, 9)).all()  # a cross dilated then eroded: back to the dot
    cross = R.dilate(_pixel(9, 9, 100))[0]
    assert sorted(map(tuple, np.argwhere(cross).tolist())) == [(8, 9), (9, 8), (9, 9), (9, 10), (10, 9)]


def test_morphology_is_grey_not_binary_and_the_border_is_background():
    x = np.zeros((1, 28, 28), np.uint8)
    x[0, 4:9, 4:9] = 200
    x[0, 6, 6] = 250
    assert R.erode(x)[0, 6, 6] == 200 and R.dilate(x)[0, 5, 6] == 250
    full = np.full((1, 28, 28), 255, np.uint8)
    eroded = R.erode(full)[0]
    assert (eroded[0] == 0).all() and (eroded[:, 0] == 0).all() and (eroded[1:-1, 1:-1] == 255).all()


def test_quarter_turns_equal_rot90_and_identity_transforms_are_exact():
    x = np.random.default_rng(1).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    assert (R.rotate(x, 90) == np.rot90(x, axes=(1, 2))).all()  # counter-clockwise as seen
    assert (R.rotate(x, -90) == np.rot90(x, -1, axes=(1, 2))).all()
    assert (R.rotate(x, 180) == x[:, ::-1, ::-1]).all()
    assert (R.rotate(x, 0) == x).all() and (R.scale(x, 1.0) == x).all() and (R.rotate(x, 360) == x).all()


def test_rotation_direction_and_bilinear_sampling():
    # A dot right of the centre, turned +15 degrees counter-clockwise on screen, ends up higher (smaller row).
    x = np.zeros((1, 28, 28), np.uint8)
    x[0, 13:15, 22:24] = 255
    ys, xs = np.nonzero(R.transform(x, "rotate_+15")[0])
    assert ys.mean() < 13.5 and R.transform(x, "rotate_-15")[0].nonzero()[0].mean() > 13.5
    # Scaling a constant block by 2 samples inside it: the interior stays exactly 255, bilinear ramps at the edge.
    block = np.zeros((1, 28, 28), np.uint8)
    block[0, 10:18, 10:18] = 255
    big = R.scale(block, 2.0)[0]
    assert (big[8:20, 8:20] == 255).all() and big[0].max() == 0
    assert 0 < big[6, 13] < 255  # between pixels: interpolated, not nearest


@pytest.mark.parametrize("factor, grows", [(0.8, False), (1.2, True)])
def test_scale_shrinks_or_grows_about_the_centre(factor, grows):
    block = np.zeros((1, 28, 28), np.uint8)
    block[0, 9:19, 9:19] = 255  # a 10x10 square centred on 13.5
    out = R.transform(block, f"scale_{factor:g}")[0]
    rows = np.nonzero(out.any(axis=1))[0]
    assert (rows.max() - rows.min() + 1 > 10) == grows
    assert rows.min() + rows.max() == 27  # still centred


def test_noise_is_deterministic_clipped_and_of_the_stated_sigma():
    grey = np.full((20, 28, 28), 128, np.uint8)
    a, b = R.transform(grey, "noise"), R.add_noise(grey)
    assert (a == b).all() and a.dtype == np.uint8
    assert (R.add_noise(grey[:5]) == a[:5]).all()  # image i's noise does not depend on the batch after it
    assert not (R.add_noise(grey, seed=1) == a).all()
    assert abs(float(a.astype(np.float64).std()) - R.NOISE_SIGMA) < 1.0  # 15,680 draws: sampling error ~0.2
    extremes = R.add_noise(np.stack([np.zeros((28, 28), np.uint8), np.full((28, 28), 255, np.uint8)]), sigma=300)
    assert extremes.min() == 0 and extremes.max() == 255 and (extremes == 0).any() and (extremes == 255).any()


def test_conditions_cover_the_suite_keep_shape_and_leave_the_input_alone():
    x = np.random.default_rng(0).integers(0, 256, (4, 1, 28, 28), dtype=np.uint8)
    x.setflags(write=False)  # as load_mnist returns them
    before = x.copy()
    out = R.conditions(x)
    assert list(out) == list(R.CONDITIONS) == [
        "clean", "shift_up", "shift_down", "shift_left", "shift_right", "rotate_+15", "rotate_-15",
        "scale_0.8", "scale_1.2", "thin", "thick", "noise"]
    assert all(v.shape == x.shape and v.dtype == np.uint8 and v is not x for v in out.values())
    assert (out["clean"] == x).all() and (x == before).all()
    again = R.conditions(x[:, 0], ["noise", "thin"])
    assert list(again) == ["noise", "thin"] and (again["thin"] == out["thin"][:, 0]).all()


@pytest.mark.parametrize("bad, match", [
    (np.zeros((2, 28, 28), np.float32), "uint8 arrays"),
    ([[0] * 28] * 28, "got list"),
    (np.zeros((2, 32, 32), np.uint8), r"shape \(2, 32, 32\)"),
    (np.zeros((28, 28), np.uint8), r"shape \(28, 28\)"),
])
def test_bad_images_get_an_input_error_naming_them(bad, match):
    with pytest.raises(InputError, match=match):
        R.conditions(bad)


def test_an_unknown_condition_names_the_closest_and_the_valid_ones():
    with pytest.raises(UsageError, match=r"unknown condition 'thn' \(did you mean thin\?\); valid: clean, "):
        R.transform(np.zeros((1, 28, 28), np.uint8), "thn")
    with pytest.raises(UsageError, match="no condition given"):
        R.check_names([])


@pytest.fixture(scope="module")
def cli_report(model_dir, mnist_dir, tmp_path_factory):
    """`mnist-edge robustness` on the committed bn_cnn, both files, two conditions (keeps the test fast)."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("robust") / "r.json"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(["robustness", str(model_dir), "--conditions", "clean", "thin", "--threads", "1", "--data",
                   str(mnist_dir), "--json", str(out)])
    assert rc == 0
    # Progress on stderr, one line as each condition starts (the full suite runs for tens of seconds).
    assert err.getvalue() == "  condition 1/2 clean (fp32, int8)\n  condition 2/2 thin (fp32, int8)\n"
    return json.loads(out.read_text())


def test_the_cli_measures_both_files_and_agrees_with_the_manifest_and_the_runtime(cli_report, model_dir,
                                                                                  mnist_dir):
    from mnist_edge.data.mnist import load_mnist
    from mnist_edge.runtime import load

    report = R.validate_report(cli_report, "r.json")
    assert report["schema"] == R.SCHEMA and report["model"] == "bn_cnn" and report["images"] == 10_000
    assert [e["precision"] for e in report["files"]] == ["fp32", "int8"]
    assert [c["name"] for c in report["conditions"]] == ["clean", "thin"]
    manifest = json.loads((model_dir / "manifest.json").read_text())
    for e in report["files"]:
        assert e["verified"] and e["sha256"] == manifest["files"][e["file"]]["sha256"]
        assert e["accuracy"]["clean"] == pytest.approx(manifest["files"][e["file"]]["accuracy"], abs=1e-9)
        assert e["accuracy"]["thin"] == pytest.approx(e["correct"]["thin"] / 100)
    x, y = load_mnist("test", mnist_dir)
    thin = (load(model_dir, precision="int8", threads=1).predict(R.erode(x)).labels == y).sum()
    assert report["files"][1]["correct"]["thin"] == thin
    assert report["files"][1]["correct"]["thin"] < report["files"][1]["correct"]["clean"]  # the suite bites


def test_the_table_shows_every_condition_and_the_worst(cli_report, capsys):
    text = R.render_table(cli_report)
    thin = [line for line in text.splitlines() if line.startswith("thin ")][0]
    assert f"{cli_report['files'][0]['accuracy']['thin']:.2f}%" in thin
    assert f"{cli_report['files'][1]['accuracy']['thin']:.2f}%" in thin
    assert "worst" in text and "(thin)" in text
    md = R.render_table(cli_report, markdown=True)
    assert md.startswith("| condition | what | fp32 (model.onnx) | int8 (model.int8.onnx) |\n|---|---|---|---|\n")


@pytest.mark.parametrize("argv, message", [
    (["--conditions", "shift"], "unknown condition 'shift' (did you mean shift_up?); valid: clean, shift_up"),
    (["--precision", "fp16"], "unknown precision 'fp16'; valid: fp32, int8"),
    (["--threads", "0"], "threads must be a positive integer, got 0"),
])
def test_bad_options_get_one_line_before_any_work(argv, message, model_dir, capsys, monkeypatch):
    monkeypatch.setattr(R, "_predict_suite", lambda *a, **k: pytest.fail("the suite ran"))
    assert main(["robustness", str(model_dir), *argv]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_missing_data_or_model_get_one_line_saying_what_to_do(model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("mnist_edge.runtime.classifier.load", lambda *a, **k: pytest.fail("a model was loaded"))
    assert main(["robustness", str(model_dir), "--data", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"MNIST files not found in {tmp_path}" in err
    assert f"Get them with: mnist-edge data download --data {tmp_path}" in err
    assert main(["robustness", str(model_dir / "model.int8.onnx"), "--precision", "int8"]) == 1
    assert "precision chooses a file inside an artifact folder" in capsys.readouterr().err
    assert main(["robustness", str(tmp_path / "nothing")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_a_report_that_is_not_one_is_refused(tmp_path):
    path = tmp_path / "robustness.json"
    path.write_text('{"schema": "mnist-edge-bench/1"}')
    with pytest.raises(ArtifactError, match="not a robustness report"):
        R.read_report(path)
    path.write_text("{")
    with pytest.raises(ArtifactError, match="is not valid JSON"):
        R.read_report(path)


def test_it_runs_on_a_runtime_only_install(model_dir, mnist_dir):
    """torch and onnx unimportable, as with only numpy and onnxruntime installed."""
    import subprocess
    import sys

    code = ("import sys\n"
            "for m in ('torch', 'onnx', 'onnxscript'): sys.modules[m] = None\n"
            "from mnist_edge.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    p = subprocess.run([sys.executable, "-c", code, "robustness", str(model_dir), "--precision", "int8",
                        "--conditions", "clean", "--data", str(mnist_dir), "--threads", "1", "--quiet"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "condition" not in p.stderr  # --quiet: no progress lines
    accuracy = json.loads((model_dir / "manifest.json").read_text())["files"]["model.int8.onnx"]["accuracy"]
    assert f"{accuracy:.2f}%" in [line for line in p.stdout.splitlines() if line.startswith("clean ")][0]


def test_cards_show_the_report_and_mark_files_measured_before_they_changed(cli_report, model_dir, tmp_path):
    import shutil

    from mnist_edge.cards import card as cards

    folder = tmp_path / "bn_cnn"
    folder.mkdir()
    for name in ("model.onnx", "model.int8.onnx"):
        shutil.copy(model_dir / name, folder / name)
    assert R.stale_files(folder, cli_report) == {}
    section = "\n".join(cards.robustness_lines("bn_cnn", cli_report))
    assert section.startswith("## Robustness") and cli_report["command"] in section
    assert R.render_table(cli_report, markdown=True).rstrip() in section and "Stale" not in section
    (folder / "model.int8.onnx").write_bytes(b"other bytes")
    (folder / "model.onnx").unlink()
    stale = R.stale_files(folder, cli_report)
    assert stale == {"fp32": "model.onnx is gone", "int8": "model.int8.onnx changed since it was measured"}
    assert "**Stale:** fp32: model.onnx is gone" in "\n".join(cards.robustness_lines("bn_cnn", cli_report, stale))
    index = cards.robustness_index([("bn_cnn", cli_report, {"int8": "changed"}), ("mlp", None, {})])
    head = next(line for line in index if line.startswith("| model |"))
    assert head == "| model | file | clean | thin | worst |"
    fp32 = cli_report["files"][0]["accuracy"]
    assert (f"| [`bn_cnn`](bn_cnn/README.md) | fp32 | {fp32['clean']:.2f} | {fp32['thin']:.2f} | "
            f"{fp32['thin']:.2f} (thin) |") in index
    assert any(line.startswith("| [`bn_cnn`](bn_cnn/README.md) | int8 (stale) |") for line in index)
    missing = next(line for line in index if line.startswith("| [`mlp`]"))
    assert "not measured" in missing and missing.count("|") == head.count("|")
    assert "Not measured yet: run `mnist-edge robustness mlp" in "\n".join(cards.robustness_lines("mlp", None))


def test_every_committed_model_has_a_current_robustness_report():
    """exported/NAME/robustness.json measured the files there now, with today's suite (cheap: hashes only)."""
    from pathlib import Path

    from mnist_edge.zoo.registry import MODELS

    exported = Path(__file__).resolve().parents[1] / "exported"
    for name in (n for n in MODELS if (exported / n / "manifest.json").is_file()):
        folder = exported / name
        redo = (f"run `mnist-edge robustness {name} --threads 1 --json exported/{name}/robustness.json` "
                "and `mnist-edge card`")
        assert (folder / R.REPORT_NAME).is_file(), f"exported/{name} has no robustness.json: {redo}"
        report = R.read_report(folder / R.REPORT_NAME)
        assert R.stale_files(folder, report) == {}, f"exported/{name}/robustness.json is stale: {redo}"
        assert [c["name"] for c in report["conditions"]] == list(R.CONDITIONS), redo
        assert report["settings"] == R.settings() and report["images"] == 10_000, redo
        assert sorted(e["precision"] for e in report["files"]) == ["fp32", "int8"], redo
