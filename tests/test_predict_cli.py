"""`mnist-edge predict`: one line per image or JSON, the default model, and one-line errors (no traceback)."""

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from mnist_edge.cli import main
from mnist_edge.data.mnist import load_mnist
from mnist_edge.runtime import classifier, load
from mnist_edge.runtime.images import load_image


@pytest.fixture(scope="module")
def pngs(mnist_dir, tmp_path_factory):
    x, y = load_mnist("test", mnist_dir)
    folder = tmp_path_factory.mktemp("pngs")
    paths = []
    for i in range(6):
        p = folder / f"digit{i}_label{y[i]}.png"
        Image.fromarray(x[i]).save(p)
        paths.append(str(p))
    return paths, x[:6]


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_one_line_per_image_with_label_and_probability(artifact_dir, pngs, capsys):
    paths, x = pngs
    code, out, err = _run(capsys, "predict", "--model", str(artifact_dir), *paths)
    assert code == 0
    lines = out.splitlines()
    want = load(artifact_dir).predict(x).labels  # file path and array path agree on MNIST digits
    assert len(lines) == len(paths)
    for line, path, label in zip(lines, paths, want):
        head, _, rest = line.rpartition(": ")
        assert head == path
        digit, prob = rest.split(" ")
        assert int(digit) == label and 0 < float(prob.strip("()")) <= 1
    assert "model: " in err and "int8" in err and "verified" in err and "CPUExecutionProvider" in err


def test_json_and_top_k(artifact_dir, pngs, capsys):
    paths, _ = pngs
    code, out, _ = _run(capsys, "predict", "--model", str(artifact_dir), "--json", "--top-k", "3",
                        "--threads", "1", *paths[:2])
    assert code == 0
    doc = json.loads(out)  # stdout is pure JSON
    assert doc["model"]["name"] == "bn_cnn" and doc["model"]["verified"] is True
    assert doc["model"]["provider"] == "CPUExecutionProvider" and len(doc["model"]["sha256"]) == 64
    assert [r["image"] for r in doc["results"]] == paths[:2]
    for r in doc["results"]:
        assert len(r["top_k"]) == 3 and r["top_k"][0]["label"] == r["label"]
        assert r["top_k"][0]["probability"] == r["probability"] >= r["top_k"][1]["probability"]
    code, out, _ = _run(capsys, "predict", "--model", str(artifact_dir), "--top-k", "2", paths[0])
    assert code == 0 and "top-2: " in out


def test_model_file_instead_of_folder(artifact_dir, pngs, capsys):
    code, out, err = _run(capsys, "predict", "--model", str(artifact_dir / "model.onnx"), pngs[0][0])
    assert code == 0 and "fp32" in err and out.startswith(pngs[0][0])


def test_default_model_is_exported_bn_cnn_int8(artifact_dir, pngs, capsys, tmp_path, monkeypatch):
    shutil.copytree(artifact_dir, tmp_path / "exported" / "bn_cnn")
    monkeypatch.chdir(tmp_path)  # the working directory's exported/bn_cnn comes first
    code, _, err = _run(capsys, "predict", pngs[0][0])
    assert code == 0 and str(tmp_path / "exported" / "bn_cnn" / "model.int8.onnx") in err
    assert "verified" in err and "not hash-checked" not in err


def test_absent_default_model_says_what_to_do(pngs, capsys, tmp_path, monkeypatch):
    from mnist_edge import packaged

    monkeypatch.chdir(tmp_path)  # no exported/bn_cnn here...
    monkeypatch.setattr(packaged, "CHECKOUT", tmp_path / "site-packages")  # ...nor a checkout or packaged copy
    code, out, err = _run(capsys, "predict", pngs[0][0])
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "mnist-edge export --model bn_cnn --quantize" in err and "pass --model DIR" in err
    assert f"no exported/bn_cnn/ in {tmp_path}" in err


def test_an_editable_install_finds_its_checkouts_model_from_any_folder(pngs, capsys, tmp_path, monkeypatch):
    """`pip install -e .`, then `mnist-edge predict x.png` outside the checkout: the checkout's exported/
    plays the packaged copy's part (as the README says); the working directory's exported/ still comes first."""
    from mnist_edge import packaged

    root = Path(__file__).resolve().parents[1]
    assert packaged.CHECKOUT == root and not packaged.PACKAGED_ROOT.exists()  # this run imports the checkout
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(capsys, "predict", pngs[0][0])
    assert code == 0, err
    assert f"model: {root / 'exported' / 'bn_cnn' / 'model.int8.onnx'} (bn_cnn, int8, verified)" in err
    assert out.startswith(f"{pngs[0][0]}: ")
    fake = tmp_path / "elsewhere"  # a package in site-packages (no pyproject.toml beside it): no such copy
    (fake / "exported" / "bn_cnn").mkdir(parents=True)
    monkeypatch.setattr(packaged, "CHECKOUT", fake)
    assert packaged.installed_model_dir("bn_cnn") is None


def test_progress_while_reading_many_images_is_throttled(artifact_dir, pngs, tmp_path):
    """A folder of photos takes seconds to read: predict says how far it is on stderr, but only once the
    run has taken 2 s, then at most once a second (a few images answer silently)."""
    import io

    from mnist_edge.cli.predict_cmd import Throttled
    from mnist_edge.runtime import classify_files

    said: list[str] = []
    out = classify_files(pngs[0][:3], model=artifact_dir, progress=said.append)
    assert said == ["read 1 of 3 images", "read 2 of 3 images", "read 3 of 3 images"] and out["failed"] == 0
    times = iter([0.0, 0.5, 2.0, 2.5, 3.1, 3.2])  # construction, then one reading per message
    stream = io.StringIO()
    line = Throttled(clock=lambda: next(times), stream=stream)
    for i in range(1, 6):
        line(f"read {i} of 5 images")
    assert stream.getvalue() == "  read 2 of 5 images\n  read 4 of 5 images\n"


@pytest.mark.parametrize("case, expected", [
    ("missing.png", "missing.png: no such file"),
    ("empty.png", "empty.png is empty"),
    ("text.png", "text.png is not an image"),
    ("blank.png", "blank.png: no digit found (no ink 32 grey levels from the background 255"),
])
def test_a_bad_file_gets_its_own_error_line_and_the_others_are_classified(artifact_dir, pngs, capsys, tmp_path,
                                                                         case, expected):
    bad = tmp_path / case
    if case == "empty.png":
        bad.write_bytes(b"")
    elif case == "text.png":
        bad.write_text("hello, not a picture\n")
    elif case == "blank.png":
        Image.fromarray(np.full((40, 40), 255, np.uint8)).save(bad)  # white paper: named as 255, not 0
    code, out, err = _run(capsys, "predict", "--model", str(artifact_dir), pngs[0][0], str(bad), pngs[0][1])
    assert code == 1  # any failure: non-zero exit, after every good file was classified
    assert [line.rpartition(": ")[0] for line in out.splitlines()] == [pngs[0][0], pngs[0][1]]
    errors = [line for line in err.splitlines() if line.startswith("mnist-edge predict: error: ")]
    assert len(errors) == 1 and expected in errors[0] and "Traceback" not in err
    assert "1 of 3 images failed" in err
    code, out, _ = _run(capsys, "predict", "--model", str(artifact_dir), "--json", pngs[0][0], str(bad))
    doc = json.loads(out)
    assert code == 1 and doc["schema"] == "mnist-edge-predict/1" and doc["failed"] == 1
    good, failed = doc["results"]
    assert good["image"] == pngs[0][0] and isinstance(good["label"], str) and "error" not in good
    assert failed["image"] == str(bad) and failed["label"] is None and expected in failed["error"]


def test_a_folder_is_its_image_files_in_name_order(artifact_dir, pngs, capsys, tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    for p in pngs[0][:3]:
        shutil.copy(p, folder)
    (folder / "notes.txt").write_text("not an image, not read")
    (folder / ".hidden.png").write_bytes(b"")
    code, out, err = _run(capsys, "predict", "--model", str(artifact_dir), str(folder))
    assert code == 0, err
    want = sorted(str(folder / Path(p).name) for p in pngs[0][:3])
    assert [line.rpartition(": ")[0] for line in out.splitlines()] == want
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    code, out, err = _run(capsys, "predict", "--model", str(artifact_dir), str(empty), pngs[0][0])
    assert code == 1 and out.startswith(pngs[0][0]) and f"folder {empty} holds no image files" in err


def test_save_inputs_writes_what_the_model_saw(artifact_dir, pngs, capsys, tmp_path):
    paths, x = pngs
    twin = tmp_path / "other" / Path(paths[0]).name  # the same name from another folder: not overwritten
    twin.parent.mkdir()
    shutil.copy(paths[1], twin)
    seen = tmp_path / "seen"
    code, out, _ = _run(capsys, "predict", "--model", str(artifact_dir), "--save-inputs", str(seen), "--json",
                        paths[0], str(twin), paths[2])
    assert code == 0
    doc = json.loads(out)
    stem = Path(paths[0]).stem
    assert [Path(r["input"]).name for r in doc["results"]] == [f"{stem}.png", f"{stem}-2.png",
                                                               f"{Path(paths[2]).stem}.png"]
    for r, want in zip(doc["results"], (x[0], x[1], x[2])):
        saved = np.asarray(Image.open(r["input"]))
        assert saved.shape == (28, 28) and saved.dtype == np.uint8
        assert np.array_equal(saved, load_image(r["image"]))  # exactly the array that was classified
        assert np.abs(saved.astype(int) - want).max() <= 1  # (an MNIST digit: itself)
    assert load(artifact_dir).predict(np.asarray(Image.open(doc["results"][0]["input"]))).to_list()[0]["label"] \
        == doc["results"][0]["label"]
    (tmp_path / "afile").write_text("")
    code, _, err = _run(capsys, "predict", "--model", str(artifact_dir), "--save-inputs", str(tmp_path / "afile"),
                        paths[0])
    assert code == 1 and "is a file, not a folder" in err


def test_model_names_and_options_are_forgiving_where_safe(capsys):
    with pytest.raises(SystemExit) as e:
        main(["predict", "--top_k", "3", "x.png"])
    assert e.value.code == 2 and "did you mean --top-k?" in capsys.readouterr().err


@pytest.fixture
def no_cuda(monkeypatch):
    """This onnxruntime as a CPU-only build would be (a no-op where CUDA is absent)."""
    real = ort.get_available_providers()
    monkeypatch.setattr(ort, "get_available_providers", lambda: [p for p in real if p != "CUDAExecutionProvider"])


def test_device_cuda_without_cuda_names_the_providers(artifact_dir, pngs, capsys, no_cuda):
    code, out, err = _run(capsys, "predict", "--model", str(artifact_dir), "--device", "cuda", pngs[0][0])
    assert code == 1 and out == "" and err.count("\n") == 1
    assert "CPUExecutionProvider" in err and "onnxruntime-gpu" in err


def test_device_auto_reports_its_choice(artifact_dir, pngs, capsys, no_cuda):
    code, _, err = _run(capsys, "predict", "--model", str(artifact_dir), "--device", "auto", pngs[0][0])
    assert code == 0 and "on cpu via CPUExecutionProvider" in err
    assert "note: auto: CPU, because CUDAExecutionProvider is not in this onnxruntime" in err


@pytest.mark.parametrize("argv, expected", [
    (["--device", "gpu"], "unknown device 'gpu'"),
    (["--top-k", "0"], "top_k must be an integer from 1 to 10"),
    (["--top-k", "11"], "top_k must be an integer from 1 to 10"),
    (["--threads", "0"], "threads must be a positive integer"),
])
def test_bad_options_are_one_line_usage_errors(artifact_dir, pngs, capsys, argv, expected):
    code, out, err = _run(capsys, "predict", "--model", str(artifact_dir), *argv, pngs[0][0])
    assert code == 1 and out == "" and err.count("\n") == 1 and expected in err


def test_tampered_model_is_refused_with_one_line(artifact_dir, pngs, capsys, tmp_path):
    art = tmp_path / "art"
    shutil.copytree(artifact_dir, art)
    data = bytearray((art / "model.int8.onnx").read_bytes())
    data[len(data) // 2] ^= 1
    (art / "model.int8.onnx").write_bytes(bytes(data))
    code, out, err = _run(capsys, "predict", "--model", str(art), pngs[0][0])
    assert code == 1 and out == "" and err.count("\n") == 1 and "hash check" in err


def test_no_image_is_an_argparse_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["predict"])
    assert e.value.code == 2 and "IMAGE" in capsys.readouterr().err


def test_array_and_file_paths_agree_on_mnist_digits(artifact_dir, pngs):
    paths, x = pngs
    clf = load(artifact_dir)
    assert np.array_equal(clf.predict_files(paths).labels, clf.predict(x).labels)
