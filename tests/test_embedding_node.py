"""examples/node: the exported model in Node.js (onnxruntime-node) gives the Python runtime's labels.

Runs ``node examples/node/classify.mjs`` on the MNIST test file and on PNG and JPEG files, fp32 and int8, and
compares with :mod:`mnist_edge.runtime` (the oracle) on the same artifact folder: the real ``exported/bn_cnn``
when it is there, else the test session's short-trained artifact. Node.js and ``npm ci`` in examples/node
are install steps of ``.ci/run``; without them these tests fail (never skip) and say so.
"""

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from mnist_edge.data.mnist import find_mnist_dir, load_mnist
from mnist_edge.runtime import load
from mnist_edge.runtime.images import load_image

ROOT = Path(__file__).resolve().parents[1]
NODE_DIR = ROOT / "examples" / "node"
CLASSIFY = NODE_DIR / "classify.mjs"
N_DIGITS = 2000  # >= 1,000 test digits, per precision
INSTALL = ("run the install steps of .ci/run (Node.js 18+, then `ONNXRUNTIME_NODE_INSTALL=skip npm ci` in "
           "examples/node)")


@pytest.fixture(scope="module")
def node():
    exe = shutil.which("node")
    if exe is None:
        pytest.fail(f"node is not on PATH: {INSTALL}")
    for package in ("onnxruntime-node", "pngjs", "jpeg-js"):
        if not (NODE_DIR / "node_modules" / package / "package.json").is_file():
            pytest.fail(f"examples/node/node_modules/{package} is missing: {INSTALL}")
    return exe


def classify(node, *args, check=True):
    """classify.mjs with ``args``; with ``check``, its --json document (exit status 0 required)."""
    if check:
        args = ("--json", *args)
    proc = subprocess.run([node, str(CLASSIFY), *map(str, args)], capture_output=True, text=True, timeout=120)
    if check:
        assert proc.returncode == 0, f"classify.mjs failed ({proc.returncode}):\n{proc.stderr}"
        return json.loads(proc.stdout)
    return proc


def test_node_labels_equal_the_python_runtimes_on_the_mnist_test_file(node, model_dir, mnist_dir):
    folder = find_mnist_dir(mnist_dir)
    images = next(p for p in (folder / "t10k-images-idx3-ubyte", folder / "t10k-images-idx3-ubyte.gz")
                  if p.is_file())
    x, y = load_mnist("test", mnist_dir)
    out = classify(node, "--model-dir", model_dir, "--idx", images, "--count", N_DIGITS)
    assert out["input"]["count"] == N_DIGITS and out["truth"] == y[:N_DIGITS].tolist()
    assert set(out["models"]) == {"fp32", "int8"}
    for precision, got in out["models"].items():
        clf = load(model_dir, precision=precision)
        want = clf.predict(x[:N_DIGITS])
        labels = np.array(got["labels"])
        mismatches = np.flatnonzero(labels != want.labels)
        assert mismatches.size == 0, (f"{precision}: Node and Python disagree on {mismatches.size} of {N_DIGITS} "
                                      f"digits, e.g. indices {mismatches[:10].tolist()}")
        top = want.probabilities[np.arange(N_DIGITS), want.labels]
        np.testing.assert_allclose(got["confidence"], top, atol=2e-5)
        assert got["accuracy"] == pytest.approx(float((want.labels == y[:N_DIGITS]).mean()), abs=1e-6)
        # What Node read from the file's bytes is what onnx reads: metadata, IR version, contract names.
        model = onnx.load(str(model_dir / Path(got["path"]).name))
        assert got["metadata"] == {p.key: p.value for p in model.metadata_props}
        assert got["ir_version"] == model.ir_version
        assert got["metadata"]["mnist_edge.precision"] == precision
        assert got["class_names"] == json.loads(got["metadata"]["mnist_edge.labels"])
        assert got["inputs"] == ["image"] and got["outputs"] == ["logits", "probabilities"]
        assert got["sha256"] == clf.sha256


def _pngs(folder: Path, x: np.ndarray) -> list[Path]:
    """MNIST digits as PNG files of the kinds people have: inverted, larger and off-centre, transparent,
    noisy paper, small RGB."""
    rng = np.random.default_rng(7)
    paths = []
    for i, digit in enumerate(x):
        kind = i % 6
        if kind == 0:
            img = Image.fromarray(digit)
        elif kind == 1:
            img = Image.fromarray(255 - digit)
        elif kind == 2:
            img = Image.new("L", (200, 150), 0)
            img.paste(Image.fromarray(digit).resize((112, 84), Image.Resampling.BICUBIC),
                      (int(rng.integers(0, 80)), int(rng.integers(0, 60))))
        elif kind == 3:
            rgba = np.zeros((40, 50, 4), np.uint8)
            rgba[..., :3] = 20
            rgba[6:34, 11:39, 3] = digit
            img = Image.fromarray(rgba, "RGBA")
        elif kind == 4:
            paper = np.clip(255.0 - digit + rng.normal(0, 6, digit.shape), 0, 255).astype(np.uint8)
            img = Image.fromarray(np.pad(paper, 10, constant_values=250))
        else:
            img = Image.fromarray(digit).resize((14, 14), Image.Resampling.BILINEAR).convert("RGB")
        paths.append(folder / f"digit{i:02d}.png")
        img.save(paths[-1])
    return paths


def test_png_files_are_normalized_exactly_like_the_python_runtime(node, model_dir, mnist_dir, tmp_path):
    x, _ = load_mnist("test", mnist_dir)
    paths = _pngs(tmp_path, x[:24])
    out = classify(node, "--model-dir", model_dir, "--precision", "int8", "--emit-inputs", *paths)
    js = np.stack([np.frombuffer(base64.b64decode(b), np.uint8).reshape(28, 28) for b in out["inputs_base64"]])
    py = np.stack([load_image(p) for p in paths])
    diff = np.abs(js.astype(int) - py.astype(int)).reshape(len(paths), -1).max(axis=1)
    assert diff.max() == 0, f"JS and Python normalization differ: max |diff| per file {diff.tolist()}"
    assert out["models"]["int8"]["labels"] == load(model_dir, precision="int8").predict(py).labels.tolist()


@pytest.mark.parametrize("case", ["missing", "not_png", "blank", "bad_precision", "tampered", "foreign_model"])
def test_bad_input_is_one_line_naming_it(node, model_dir, mnist_dir, tmp_path, case):
    args, expected = ["--model-dir", model_dir], None
    if case == "missing":
        args += [tmp_path / "nope.png"]
        expected = "nope.png: no such file"
    elif case == "not_png":
        (tmp_path / "text.png").write_text("hello")
        args += [tmp_path / "text.png"]
        expected = "text.png: not an image this example reads (PNG and JPEG)"
    elif case == "blank":
        Image.new("L", (30, 30), 255).save(tmp_path / "blank.png")
        args += [tmp_path / "blank.png"]
        expected = "blank.png: no digit found"
    elif case == "bad_precision":
        args += ["--precision", "fp16", tmp_path / "x.png"]
        expected = "--precision must be fp32, int8 or both"
    elif case == "foreign_model":  # an ONNX file without our contract metadata is refused, naming the keys
        model = onnx.load(str(model_dir / "model.onnx"))
        del model.metadata_props[:]
        (tmp_path / "foreign").mkdir()
        onnx.save(model, str(tmp_path / "foreign" / "model.onnx"))
        Image.fromarray(load_mnist("test", mnist_dir)[0][0]).save(tmp_path / "d.png")
        args = ["--model-dir", tmp_path / "foreign", tmp_path / "d.png"]
        expected = "not an mnist-edge model: metadata lacks mnist_edge.contract"
    else:  # a model file whose bytes differ from the manifest's hash is refused
        copy = tmp_path / "art"
        shutil.copytree(model_dir, copy)
        if not (copy / "manifest.json").is_file():
            pytest.fail(f"{model_dir} has no manifest.json")
        data = bytearray((copy / "model.onnx").read_bytes())
        data[-1] ^= 0xFF
        (copy / "model.onnx").write_bytes(bytes(data))
        Image.fromarray(load_mnist("test", mnist_dir)[0][0]).save(tmp_path / "d.png")
        args = ["--model-dir", copy, "--precision", "fp32", tmp_path / "d.png"]
        expected = "differs from the manifest's"
    proc = classify(node, *args, check=False)
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("classify.mjs: error: ") and expected in lines[0], proc.stderr
    assert "    at " not in proc.stderr  # no stack trace


def test_digit_mjs_normalizes_noisy_scans_exactly_like_python(mnist_dir, tmp_path):
    """The synthesized scans of tests/scans.py (noise, clipping, grey paper, gradients, JPEG, a 1,000+ pixel
    photo) through digit.mjs's normalizeDigit and through Python's normalize_digit: identical bytes.
    Needs only node (digit.mjs has no dependencies)."""
    import scans

    from mnist_edge.errors import InputError
    from mnist_edge.runtime.images import normalize_digit

    exe = shutil.which("node")
    if exe is None:
        pytest.fail(f"node is not on PATH: {INSTALL}")
    x, _ = load_mnist("test", mnist_dir)
    pages = [scans.scan(x[i], kind, i) for kind in scans.KINDS for i in range(3)]
    photo = np.full((1100, 1300), 200.0)
    photo[300:804, 400:904] -= 150 * np.kron(x[5] / 255.0, np.ones((18, 18)))
    pages += [(photo + np.random.default_rng(5).normal(0, 20, photo.shape)).clip(0, 255).astype(np.uint8),
              np.full((40, 40), 255, np.uint8)]  # the last: blank
    (tmp_path / "pages.json").write_text(json.dumps([{"w": p.shape[1], "h": p.shape[0], "data": p.ravel().tolist()}
                                                     for p in pages]))
    script = tmp_path / "run.mjs"
    script.write_text(
        f'import {{ readFileSync }} from "node:fs";\n'
        f'import {{ normalizeDigit }} from {json.dumps((ROOT / "examples" / "web" / "digit.mjs").as_uri())};\n'
        f'const pages = JSON.parse(readFileSync({json.dumps(str(tmp_path / "pages.json"))}, "utf8"));\n'
        'console.log(JSON.stringify(pages.map((p) => { const o = normalizeDigit(p.data, p.w, p.h); '
        'return o ? Array.from(o) : null; })));\n')
    proc = subprocess.run([exe, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    js = json.loads(proc.stdout)
    for i, (page, got) in enumerate(zip(pages, js)):
        try:
            want = normalize_digit(page).ravel().tolist()
        except InputError:
            want = None
        assert got == want, f"page {i} ({page.shape}): JS and Python normalization differ"
    assert js[-1] is None and all(j is not None for j in js[:-1])


def test_readme_commands_work_from_the_example_folder(node, mnist_dir, tmp_path):
    """Each `node classify.mjs ...` line of examples/node/README.md, run in examples/node (my_digit.png: a
    real PNG; the IDX path: this run's MNIST folder when the checkout's default one is elsewhere)."""
    x, _ = load_mnist("test", mnist_dir)
    digit = tmp_path / "my_digit.png"
    Image.fromarray(255 - x[0]).resize((112, 112)).save(digit)
    readme = (NODE_DIR / "README.md").read_text()
    block = readme.split("```bash\n")[1].split("```")[0]
    lines = [line for line in block.splitlines() if line.startswith("node classify.mjs")]
    assert len(lines) >= 3
    idx = find_mnist_dir(mnist_dir) / "t10k-images-idx3-ubyte.gz"
    for line in lines:
        args = line.split()[2:]
        args = [str(digit) if a == "my_digit.png" else a for a in args]
        args = [str(idx) if a.endswith("t10k-images-idx3-ubyte.gz") and not (NODE_DIR / a).is_file() else a
                for a in args]
        proc = subprocess.run([node, "classify.mjs", *args], cwd=NODE_DIR, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, f"{line}: {proc.stderr}"
        if "--json" in args:
            assert all(m["labels"] == [7] for m in json.loads(proc.stdout)["models"].values())
        elif "my_digit.png" in line:  # one line per image: "file: label (probability)"
            assert proc.stdout.startswith(f"{digit}: ") and proc.stdout.count("\n") == 1, proc.stdout
            assert all(answer.split("(")[0].split()[-1] == "7" for answer in proc.stdout.split(", "))
        elif "--idx" in args:
            assert all(": 1000 images, accuracy " in line for line in proc.stdout.splitlines())


def test_node_runs_the_folders_self_test_before_classifying(node, artifact_dir, tmp_path):
    png = tmp_path / "d.png"
    Image.fromarray(load_mnist("test")[0][0]).save(png)
    out = classify(node, "--model-dir", artifact_dir, png)
    for precision in ("fp32", "int8"):
        st = out["models"][precision]["self_test"]
        assert st["passed"] and st["label_changes"] == 0, st
        assert st["max_abs_diff"] <= st["tolerance"]["max_abs_diff"]
    # a bundle whose references say otherwise (as a device computing other outputs would see it): refused
    from mnist_edge.manifest import file_record, read_manifest, write_manifest
    from mnist_edge.evaluate.bundle import BUNDLE_NAME, pack, unpack

    folder = tmp_path / "a"
    shutil.copytree(artifact_dir, folder)
    header, arrays = unpack((folder / BUNDLE_NAME).read_bytes())
    arrays = {k: np.array(v) for k, v in arrays.items()}
    arrays["logits/model.onnx"][5, 3] += 0.01
    del header["arrays"]
    (folder / BUNDLE_NAME).write_bytes(pack(header, arrays))
    m = read_manifest(folder)
    m["files"][BUNDLE_NAME].update(file_record(folder / BUNDLE_NAME))
    write_manifest(folder, m)
    proc = classify(node, "--model-dir", folder, png, check=False)
    assert proc.returncode == 1 and proc.stdout == ""
    assert ("model.onnx fails its self-test on 100 images: batch 1: max |Δ logits| 0.0100 vs tolerance 0.0001; "
            "batch 100: max |Δ logits| 0.0100 vs tolerance 0.0001") in proc.stderr


def _exif_jpeg(digit: np.ndarray, orientation: int, path: Path, rgb: bool) -> Path:
    """``digit`` (dark on light) stored turned so that EXIF ``orientation`` makes it upright, as a phone does."""
    undo = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
            4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
            7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}[orientation]
    img = Image.fromarray(255 - digit).resize((84, 84), Image.Resampling.BILINEAR)
    img = img if undo is None else img.transpose(undo)
    exif = Image.Exif()
    exif[0x0112] = orientation
    (img.convert("RGB") if rgb else img).save(path, exif=exif, quality=85)
    return path


def test_jpeg_files_and_their_exif_orientation_are_read_as_python_reads_them(node, model_dir, mnist_dir, tmp_path):
    """Every EXIF orientation, grey and colour JPEGs: the model's input within one grey level of Python's
    (another JPEG decoder; an orientation applied wrongly would move whole strokes) and the same labels."""
    x, _ = load_mnist("test", mnist_dir)
    paths = [_exif_jpeg(x[i], o, tmp_path / f"d{i}-o{o}.jpg", rgb=o % 2 == 0) for i in (0, 2) for o in range(1, 9)]
    out = classify(node, "--model-dir", model_dir, "--precision", "int8", "--emit-inputs", *paths)
    js = np.stack([np.frombuffer(base64.b64decode(b), np.uint8).reshape(28, 28) for b in out["inputs_base64"]])
    py = np.stack([load_image(p) for p in paths])
    diff = np.abs(js.astype(int) - py.astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.1, f"max |diff| per file {diff.reshape(len(paths), -1).max(1)}"
    assert out["models"]["int8"]["labels"] == load(model_dir, precision="int8").predict(py).labels.tolist()


def test_a_folder_is_read_like_pythons_and_files_it_cannot_use_are_named_and_skipped(node, model_dir, mnist_dir,
                                                                                     tmp_path):
    """A folder of mixed files: PNG and JPEG classified, one compact line each, in name order; a GIF (which
    `mnist-edge predict` reads) and a text file each get one line saying why, and the rest goes on; exit 1."""
    x, _ = load_mnist("test", mnist_dir)
    folder = tmp_path / "scans"
    folder.mkdir()
    Image.fromarray(255 - x[0]).save(folder / "a.png")
    Image.fromarray(255 - x[1]).save(folder / "b.gif")
    Image.fromarray(255 - x[2]).save(folder / "c.jpg", quality=90)
    (folder / "d.png").write_text("not a picture")
    (folder / "notes.txt").write_text("not an image suffix: not read")
    proc = classify(node, "--model-dir", model_dir, folder, check=False)
    assert proc.returncode == 1, proc.stderr
    labels = load(model_dir, precision="int8").predict(np.stack([x[0], x[2]])).labels.tolist()
    lines = proc.stdout.splitlines()
    assert [line.split(": ")[0] for line in lines] == [str(folder / "a.png"), str(folder / "c.jpg")]
    for line, label in zip(lines, labels):  # "file: fp32 7 (0.999), int8 7 (0.999)"
        assert re.fullmatch(rf".*: fp32 {label} \(\d\.\d{{3}}\), int8 {label} \(\d\.\d{{3}}\)", line), line
    errors = [line for line in proc.stderr.splitlines() if line.startswith("classify.mjs: error: ")]
    assert errors == [f"classify.mjs: error: {folder / 'b.gif'}: skipped, a GIF file: this example reads PNG and "
                      "JPEG (mnist-edge predict reads GIF)",
                      f"classify.mjs: error: {folder / 'd.png'}: not an image this example reads (PNG and JPEG)"]
    assert "classify.mjs: 2 of 4 images failed" in proc.stderr and "model: " in proc.stderr
