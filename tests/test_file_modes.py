"""Files written for people to read get 0666 less the umask (0644 under the usual 022), never 0600."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mnist_edge.cli import main
from mnist_edge.files import atomic_path, current_umask, write_text_atomic
from mnist_edge.manifest import read_manifest, write_manifest

EXPORTED = Path(__file__).resolve().parents[1] / "exported"


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_writes_respect_the_umask(umask, tmp_path):
    assert current_umask() == umask
    want = 0o666 & ~umask
    write_text_atomic(tmp_path / "a.txt", "x")
    with atomic_path(tmp_path / "b.png", suffix=".png") as tmp:  # plots and checkpoints write through this
        tmp.write_bytes(b"png")
    assert [_mode(p) for p in (tmp_path / "a.txt", tmp_path / "b.png")] == [want] * 2
    manifest = read_manifest(EXPORTED / "bn_cnn")
    write_manifest(tmp_path / "m", {k: v for k, v in manifest.items() if k not in ("format", "digest")})
    assert _mode(tmp_path / "m" / "manifest.json") == want
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.png", "m"]


def test_files_written_as_one_set_respect_the_umask(umask, tmp_path):
    """A search's result, plot and registry entry (mnist_edge.system.fileset), new or replacing a file."""
    from mnist_edge.system.fileset import write_set

    (tmp_path / "old.json").write_text("{}")
    os.chmod(tmp_path / "old.json", 0o600)
    write_set({tmp_path / "old.json": b"[]", tmp_path / "sub" / "new.png": b"png"})
    assert [_mode(p) for p in (tmp_path / "old.json", tmp_path / "sub" / "new.png")] == [0o666 & ~umask] * 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.json", "sub"]


def test_bench_json_and_markdown_are_readable_by_others(tmp_path, capsys):
    old = os.umask(0o022)
    try:
        a, b = EXPORTED / "bn_cnn" / "bench.json", EXPORTED / "cnn" / "bench.json"
        code = main(["bench", "--compare", str(a), str(b), "--json", str(tmp_path / "c.json"),
                     "--markdown", str(tmp_path / "c.md")])
    finally:
        os.umask(old)
    capsys.readouterr()
    assert code == 0
    assert _mode(tmp_path / "c.json") == _mode(tmp_path / "c.md") == 0o644
