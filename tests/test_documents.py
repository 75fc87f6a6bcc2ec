"""Documents: the one bounded JSON loader, the schema table, and the typed manifest read from the committed zoo."""

from __future__ import annotations

import json
import os

import pytest

from mnist_edge.documents import SCHEMAS, load_json
from mnist_edge.errors import ArtifactError, UsageError
from mnist_edge.manifest import Manifest, load_manifest, read_manifest

from conftest import EXPORTED

FOLDERS = sorted(p for p in EXPORTED.iterdir() if (p / "manifest.json").is_file())


def test_every_schema_name_is_unique_and_versioned():
    assert len(set(SCHEMAS.values())) == len(SCHEMAS)
    assert all(name.startswith("mnist-edge") and name.rsplit("/", 1)[-1].isdigit() for name in SCHEMAS.values())


@pytest.mark.parametrize("folder", FOLDERS, ids=[p.name for p in FOLDERS])
def test_the_typed_manifest_reads_and_writes_back_every_committed_one(folder):
    m = load_manifest(folder)
    assert m.to_json() == read_manifest(folder)
    assert m.model == folder.name and m.files["model.onnx"].format == "onnx" and m.evaluation.images == 10_000
    assert m.recommended in m.files


def test_a_bad_field_is_an_error_naming_the_file_and_the_field():
    raw = read_manifest(EXPORTED / "bn_cnn")
    raw["files"]["model.onnx"]["size"] = -1
    with pytest.raises(ArtifactError, match=r"'m.json': files.model.onnx.size is -1, expected an integer >= 0"):
        Manifest.from_json(raw, "m.json")


def test_load_json_refuses_what_is_not_a_small_document_of_its_kind(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ArtifactError, match="fifo.*not a regular file"):
        load_json(fifo)  # returns at once: never opened for reading
    big = tmp_path / "big.json"
    big.write_text(" " * 200 + "{}")
    with pytest.raises(UsageError, match="over 100 bytes"):
        load_json(big, limit=100, error=UsageError)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"schema": SCHEMAS["bench"]}))
    with pytest.raises(ArtifactError, match="not a manifest document: schema 'mnist-edge-bench/1'"):
        load_json(other, kind="manifest")
    nan = tmp_path / "nan.json"
    nan.write_text('{"x": NaN}')
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_json(nan)
    assert load_json(other, kind="bench") == {"schema": SCHEMAS["bench"]}
