"""Documents: the one bounded JSON loader (strict, finite, shallow), the schema table, the typed fields and the typed
manifest read from the committed zoo."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import pytest

from mnist_edge.documents import SCHEMAS, load_json, parse_json
from mnist_edge.documents.fields import MS, PERCENT, RATIO, Where, count, dict_of, list_of, optional, parse, spec
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


@pytest.mark.parametrize("text, match", [
    (b'{"x": 1e400}', "1e400 is out of the range of a finite number"),
    (b'{"x": [-1E+309]}', "-1E\\+309 is out of the range of a finite number"),
    (b'{"x": Infinity}', "Infinity is not a JSON number"),
    (b"[" * 33 + b"]" * 33, "nested more than 32 deep"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"x": 123456789012345678901}', "21-digit integer"),
])
def test_json_that_no_float_holds_or_that_nests_too_deep_is_refused_when_parsed(text, match):
    with pytest.raises(ArtifactError, match=f"'d.json' is not valid JSON.*{match}"):
        parse_json(text, "d.json")
    assert parse_json(b"[" * 32 + b"]" * 32, "d.json") is not None  # the limit itself is fine


def test_a_bad_item_of_a_list_or_an_object_is_named_by_its_path():
    @dataclass
    class Doc:
        sizes: list = spec(list_of(count(0)), factory=list)
        share: dict = spec(optional(dict_of(PERCENT)))

    with pytest.raises(ArtifactError, match=r"'d.json': sizes\[2\] is -1, expected an integer >= 0$"):
        parse(Doc, {"sizes": [1, 2, -1]}, Where("d.json"))
    with pytest.raises(ArtifactError, match=r"'d.json': share.b is 101, expected a percentage from 0 to 100$"):
        parse(Doc, {"share": {"a": 1, "b": 101}}, Where("d.json"))
    with pytest.raises(ArtifactError, match=r"'d.json': share is \[1\], expected an object, each value a percentage"):
        parse(Doc, {"share": [1]}, Where("d.json"))  # the wrong container is named itself, not its items


def test_bounded_times_keep_every_ratio_of_two_finite():
    assert MS(1e-6) and MS(1e9) and not MS(0) and not MS(1e-7) and not MS(2e9) and not MS(True)
    assert 1e9 / 1e-6 < float("inf") and RATIO(1e6) and not RATIO(1e7)
