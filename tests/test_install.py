"""A runtime-only install: the default model packaged by the build, found and verified where it lies, and
--help / one-line errors for the commands that need an extra.

The wheel itself is built, installed into a fresh venv and run from outside the checkout by
scripts/wheel-smoke.sh (CI); here the build hook and the installed layout are exercised in place: the hook
copies into a temporary ``models_data`` folder and ``mnist_edge.packaged`` is pointed at it.
"""

from __future__ import annotations

import fnmatch
import json
import runpy
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mnist_edge import packaged
from mnist_edge.cli import main
from mnist_edge.errors import ArtifactError
from mnist_edge.evaluate.verify import ABSENT, verify_artifacts
from mnist_edge.system.extras import COMMAND_EXTRAS
from mnist_edge.runtime import classifier, load

ROOT = Path(__file__).resolve().parents[1]


def runtime_files(folder: Path) -> set[str]:
    """What the wheel should carry of ``folder``: the manifest and every file it lists but the torch-only ones."""
    manifest = json.loads((folder / "manifest.json").read_text())
    return {"manifest.json", *(n for n, e in manifest["files"].items() if packaged.shipped(e))}


def _hook():
    return runpy.run_path(str(ROOT / "setup.py"), run_name="setup_hook")  # defines, does not call setup()


def test_build_hook_copies_the_onnx_files_and_manifest_checked(model_dir, tmp_path):
    target = tmp_path / "models_data" / "bn_cnn"
    written = _hook()["copy_default_model"](model_dir, target)
    want = runtime_files(model_dir)
    assert {"model.onnx", "model.int8.onnx", "manifest.json"} <= want and "model.pt" not in want
    assert {p.name for p in written} == {p.name for p in target.iterdir()} == want
    for name in want:
        assert (target / name).read_bytes() == (model_dir / name).read_bytes()
    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    data = bytearray((bad / "model.int8.onnx").read_bytes())
    data[-1] ^= 1
    (bad / "model.int8.onnx").write_bytes(bytes(data))
    with pytest.raises(SystemExit, match=r"model.int8.onnx does not match .*manifest.json"):
        _hook()["copy_default_model"](bad, tmp_path / "out")


@pytest.fixture
def installed(model_dir, tmp_path, monkeypatch) -> Path:
    """The layout of an installed wheel: the packaged bn_cnn, no checkout, run from an unrelated folder."""
    root = tmp_path / "site-packages" / "mnist_edge" / "models_data"
    _hook()["copy_default_model"](model_dir, root / "bn_cnn")
    monkeypatch.setattr(packaged, "PACKAGED_ROOT", root)
    (tmp_path / "home").mkdir()
    monkeypatch.chdir(tmp_path / "home")
    return root / "bn_cnn"


def test_the_packaged_model_is_the_default_everywhere(installed):
    from mnist_edge.artifacts import resolve

    assert resolve() == resolve("bn_cnn") == resolve("BN_CNN")
    assert resolve().folder == installed and resolve().found == "installed with the package"
    assert classifier.resolve_model()[0] == installed / "model.int8.onnx"
    clf = load()
    assert clf.verified and clf.model == "bn_cnn" and clf.precision == "int8"
    from mnist_edge.bench.runner import resolve_folder

    assert resolve_folder() == resolve_folder("bn_cnn") == installed


def test_verify_of_the_packaged_folder_checks_what_is_there_and_names_what_is_absent(installed, mnist_dir,
                                                                                      capsys):
    report = verify_artifacts(installed, hashes_only=True)
    assert sorted(report.absent) == ["checkpoint.pt", "model.pt"]
    status = {r["file"]: r["status"] for r in report.rows}
    shipped = runtime_files(installed) - {"manifest.json"}  # ONNX files, selftest.bin
    assert status == {"checkpoint.pt": ABSENT, "model.pt": ABSENT, **{n: "hash ok" for n in shipped}}
    assert main(["verify", "--data", str(mnist_dir)]) == 0  # no DIR: the default model, accuracy checked
    out = capsys.readouterr().out
    assert f"in {installed}/" in out and "left out of the installed package" in out
    rows = {line.split()[0]: line for line in out.splitlines()[2:] if not line.startswith("note")}
    assert rows["model.onnx"].endswith(" ok") and rows["model.int8.onnx"].endswith(" ok")
    assert rows["model.pt"].endswith(ABSENT)


def test_a_packaged_file_that_is_shipped_must_be_there_and_intact(installed, tmp_path):
    copy = tmp_path / "copied" / "bn_cnn"  # the same three files outside the package: strict as ever
    shutil.copytree(installed, copy)
    with pytest.raises(ArtifactError, match="checkpoint.pt: missing"):
        verify_artifacts(copy, hashes_only=True)
    (installed / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match="model.onnx: missing"):
        verify_artifacts(installed, hashes_only=True)
    (installed / "model.pt").write_bytes(b"not the file")  # present: checked, not excused
    with pytest.raises(ArtifactError, match="model.pt: size"):
        verify_artifacts(installed, hashes_only=True)


def test_the_working_directory_comes_before_the_package(installed, model_dir):
    shutil.copytree(model_dir, Path.cwd() / "exported" / "bn_cnn")
    assert classifier.resolve_model()[0] == Path.cwd() / "exported" / "bn_cnn" / "model.int8.onnx"


def test_help_marks_the_commands_that_need_an_extra(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    lines = {}
    for line in out.splitlines():  # "    name      help..." then wrapped continuation lines
        words = line.split()
        if line.startswith("    ") and not line.startswith("     ") and words:
            current = words[0]
            lines[current] = line
        elif line.startswith("              ") and lines:
            lines[current] += " " + line.strip()
    for command, extra in COMMAND_EXTRAS.items():
        assert f"[needs the '{extra}' extra]" in lines[command], command
    assert "needs a source checkout" in lines["demo"]
    for command in ("list", "verify", "bench", "robustness"):
        assert "needs" not in lines[command], command
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert 'whl[train]' in capsys.readouterr().out


def test_a_command_without_its_extra_names_an_install_that_exists(tmp_path):
    """Not `pip install mnist-edge[...]` (not on PyPI): the wheel the user installed, or a checkout."""
    script = """
        import sys
        sys.modules["torch"] = None  # as on a runtime-only install
        sys.modules["PIL"] = None
        from mnist_edge.cli import main
        sys.exit(main(sys.argv[1:]))
    """
    for argv, extra, missing in ((["train", "--model", "mlp"], "train", "torch"),
                                 (["predict", str(tmp_path / "x.png")], "images", "pillow")):
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *argv], capture_output=True,
                              text=True, timeout=120, cwd=tmp_path)
        assert proc.returncode == 1 and proc.stdout == "", argv
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert missing in proc.stderr and f'"mnist_edge-0.1.0-py3-none-any.whl[{extra}]"' in proc.stderr
        assert f'pip install -e ".[{extra}]"' in proc.stderr and '"mnist-edge[' not in proc.stderr
    assert not list(tmp_path.iterdir())  # nothing was written


def test_build_and_runtime_agree_on_what_ships_and_the_sdist_carries_it(model_dir):
    manifest = json.loads((model_dir / "manifest.json").read_text())
    ships = _hook()["packaged_files"](manifest)
    assert ships == sorted(n for n, e in manifest["files"].items() if packaged.shipped(e))
    assert {"model.onnx", "model.int8.onnx"} <= set(ships) and not {"checkpoint.pt", "model.pt"} & set(ships)
    bundle = {"files": {**manifest["files"], "selftest.bin": {"kind": "selftest", "sha256": "0" * 64, "size": 1}}}
    assert "selftest.bin" in _hook()["packaged_files"](bundle) and packaged.shipped(bundle["files"]["selftest.bin"])
    patterns = [line.split()[1] for line in (ROOT / "MANIFEST.in").read_text().splitlines()
                if line.startswith("include ")]  # a wheel built from the sdist needs them
    for name in ships + ["manifest.json"]:
        assert any(fnmatch.fnmatch(f"exported/bn_cnn/{name}", p) for p in patterns), name
    assert not any(fnmatch.fnmatch(f"exported/bn_cnn/{n}", p) for n in ("model.pt", "checkpoint.pt") for p in patterns)


def test_the_self_test_bundle_ships_and_runs_from_the_package(artifact_dir, tmp_path, monkeypatch, capsys):
    """An export writes selftest.bin (listed in its manifest): the wheel carries it, so `verify --self-test`
    checks the packaged model on the device without MNIST files, TorchScript reported as not shipped."""
    assert (artifact_dir / "selftest.bin").is_file()
    root = tmp_path / "site-packages" / "mnist_edge" / "models_data"
    written = {p.name for p in _hook()["copy_default_model"](artifact_dir, root / "bn_cnn")}
    assert "selftest.bin" in written and "model.pt" not in written
    monkeypatch.setattr(packaged, "PACKAGED_ROOT", root)
    monkeypatch.chdir(tmp_path)
    assert main(["verify", "--self-test"]) == 0  # torch is installed here: model.pt is still not run
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:]}
    assert " ok" in rows["model.onnx"] and " ok" in rows["model.int8.onnx"]
    assert "not in the installed package" in rows["model.pt"]


SIZE_TOLERANCE = 0.10  # the docs round sizes to ~10 kB; a drift past 10% must update them


def stated_kb(pattern: str) -> int:
    """The "~N kB" figure docs/install.md gives right after ``pattern`` (a regular expression)."""
    import re

    found = re.search(pattern + r"\s*\(~(\d+) kB", (ROOT / "docs" / "install.md").read_text())
    assert found, f"docs/install.md states no size after {pattern!r}"
    return int(found.group(1))


def test_the_packaged_models_size_in_the_docs_is_what_the_wheel_carries():
    """docs/install.md's "~N kB" of the default model: the committed files the build copies (no build)."""
    folder = ROOT / "exported" / "bn_cnn"
    size = sum((folder / name).stat().st_size for name in runtime_files(folder))
    stated = stated_kb(r"`selftest.bin` and `manifest.json`") * 1000
    assert abs(stated - size) <= SIZE_TOLERANCE * size, (
        f"docs/install.md gives the packaged model as ~{stated // 1000} kB; the files are {size:,} bytes")


def check_wheel_size(smoke_output: str) -> int:
    """The wheel's size as scripts/wheel-smoke.sh printed it, checked against docs/install.md's figure."""
    import re

    found = re.search(r"^mnist_edge-[^:\s]+\.whl: (\d+) bytes$", smoke_output, re.M)
    assert found, "wheel-smoke.sh did not print the wheel's size"
    size = int(found.group(1))
    stated = stated_kb(r"py3-none-any\.whl") * 1000
    assert abs(stated - size) <= SIZE_TOLERANCE * size, (
        f"docs/install.md gives the wheel as ~{stated // 1000} kB; the build made {size:,} bytes")
    return size


def test_the_wheel_size_check_reads_the_smoke_scripts_line():
    stated = stated_kb(r"py3-none-any\.whl") * 1000
    assert check_wheel_size(f"== build\nmnist_edge-0.1.0-py3-none-any.whl: {stated} bytes\n") == stated
    with pytest.raises(AssertionError, match="docs/install.md gives the wheel as"):
        check_wheel_size(f"mnist_edge-0.1.0-py3-none-any.whl: {stated * 2} bytes\n")


def test_the_wheel_builds_installs_with_no_extras_and_works_outside_the_checkout(mnist_dir):
    """What CI must show for a Pi user (scripts/wheel-smoke.sh): `python -m build`, a fresh venv with the
    wheel and no extras (numpy + onnxruntime only; torch, onnx, Pillow absent), then list, verify (hashes,
    accuracy, self-test), bench and predict from a folder outside the checkout; then [images] and --model."""
    import os

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, MNIST_EDGE_DATA=str(mnist_dir), PYTHON=sys.executable)
    p = subprocess.run(["bash", str(root / "scripts" / "wheel-smoke.sh")], capture_output=True, text=True,
                       env=env, timeout=600)
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-3000:])
    check_wheel_size(p.stdout)  # the docs' figure is the build's, within SIZE_TOLERANCE
