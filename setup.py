"""Build hook: put the default model into the wheel, checked against its manifest.

Everything else about the package is in pyproject.toml. The wheel carries bn_cnn's ONNX files (and its
self-test bundle when the export wrote one) and its manifest.json so that `mnist-edge predict`, `verify` and `bench` work right after `pip install` on a
device. They are copied at build time from the committed ``exported/bn_cnn`` (the one source of truth;
the source tree gets no second copy) into ``mnist_edge/models_data/bn_cnn/`` of the build, and the build
fails if a file's size or SHA-256 differs from the manifest's. Which files go in is the rule of
``mnist_edge.packaged.shipped`` (all but checkpoint and TorchScript, which are for torch users).
An editable install copies nothing: it finds ``exported/bn_cnn`` in the checkout.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
MODEL = "bn_cnn"
SOURCE = ROOT / "exported" / MODEL
TARGET = Path("mnist_edge", "models_data", MODEL)  # inside the build's library folder


def packaged_files(manifest: dict) -> list[str]:
    """The files of the default model that go into the wheel: all but the torch-only ones (checkpoint,
    TorchScript), as mnist_edge.packaged.shipped decides (a test keeps the two rules equal)."""
    return sorted(name for name, entry in manifest["files"].items()
                  if entry.get("kind") != "checkpoint" and entry.get("format") != "torchscript")


def copy_default_model(source: Path, target: Path) -> list[Path]:
    """Copy the default model's ONNX files and manifest from ``source`` to ``target``, each checked."""
    manifest_path = source / "manifest.json"
    if not manifest_path.is_file():
        raise SystemExit(f"build: {manifest_path} is missing; the wheel must carry the default model")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    names = packaged_files(manifest)
    if not any(manifest["files"][n].get("format") == "onnx" for n in names):
        raise SystemExit(f"build: {manifest_path} lists no ONNX model to package")
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        data = (source / name).read_bytes()
        entry = manifest["files"][name]
        if len(data) != entry["size"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise SystemExit(f"build: {source / name} does not match {manifest_path} (size or SHA-256); "
                             "re-export it before building the wheel")
        (target / name).write_bytes(data)
        written.append(target / name)
    shutil.copyfile(manifest_path, target / "manifest.json")
    return written + [target / "manifest.json"]


class BuildPyWithModel(build_py):
    """The standard build_py, then the default model copied into the build (not for editable installs)."""

    def run(self):
        super().run()
        if not getattr(self, "editable_mode", False):
            copy_default_model(SOURCE, Path(self.build_lib) / TARGET)


if __name__ == "__main__":
    setup(cmdclass={"build_py": BuildPyWithModel})
