"""Tests for mnist_edge.data.mnist and mnist_edge.data.download: locating, strict IDX parsing, hashes, download, splits.

The real MNIST files come from $MNIST_EDGE_DATA (CI: ../shared/data/mnist); the test fails, not skips,
without it. Downloads go to a local HTTP server on 127.0.0.1; no test touches the network.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from mnist_edge.data import mnist as data
from mnist_edge.data import download
from mnist_edge.data.mnist import (
    DATASET_SHA256,
    ENV_VAR,
    FILES,
    class_balanced_indices,
    data_sha256,
    find_mnist_dir,
    load_mnist,
    parse_idx,
    train_val_split,
)
from mnist_edge.data.download import download_cap, download_mnist
from mnist_edge.errors import ChecksumError, DataNotFoundError, DownloadError, IdxFormatError, UsageError

TEST_NAMES = data.SPLITS["test"]


def real(mnist_dir: Path, name: str) -> Path:
    for p in (mnist_dir / name, mnist_dir / f"{name}.gz"):
        if p.is_file():
            return p
    raise FileNotFoundError(name)


def link_all(mnist_dir: Path, folder: Path) -> Path:
    """Symlink the four real files into ``folder`` (created)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        src = real(mnist_dir, name)
        (folder / src.name).symlink_to(src)
    return folder


def idx_images(n: int, rows: int = 28, cols: int = 28, magic: int = 0x803, body: int | None = None) -> bytes:
    header = b"".join(v.to_bytes(4, "big") for v in (magic, n, rows, cols))
    return header + b"\x07" * (n * rows * cols if body is None else body)


def idx_labels(values, magic: int = 0x801, count: int | None = None) -> bytes:
    values = bytes(values)
    return magic.to_bytes(4, "big") + (len(values) if count is None else count).to_bytes(4, "big") + values


# --- the real data -------------------------------------------------------------------------------------


@pytest.mark.parametrize("split,n", [("train", 60000), ("test", 10000)])
def test_load_real_split(mnist_dir, split, n):
    x, y = load_mnist(split)  # found through $MNIST_EDGE_DATA
    assert x.shape == (n, 28, 28) and x.dtype == np.uint8 and x.flags.c_contiguous
    assert y.shape == (n,) and y.dtype == np.uint8
    assert set(np.unique(y)) == set(range(10))
    assert 0 < x.mean() < 255
    # cached and read-only: a caller cannot corrupt what the next caller gets
    x2, y2 = load_mnist(split, data_dir=mnist_dir)
    assert x2 is x and y2 is y
    assert not x.flags.writeable and not y.flags.writeable
    with pytest.raises(ValueError):
        x[0, 0, 0] = 1


def test_known_hashes_match_shipped_sums(mnist_dir):
    sums = mnist_dir / "SHA256SUMS.raw"
    assert sums.is_file(), f"{sums} is missing: point {ENV_VAR} at the folder shipped with SHA256SUMS.raw"
    listed = dict(line.split()[::-1] for line in sums.read_text().splitlines() if line.strip())
    assert listed == {name: f.sha256 for name, f in FILES.items()}


def test_data_sha256(mnist_dir):
    assert data_sha256(mnist_dir) == DATASET_SHA256
    assert len(DATASET_SHA256) == 64 and DATASET_SHA256 not in {f.sha256 for f in FILES.values()}


def test_unknown_split_lists_choices(mnist_dir):
    with pytest.raises(UsageError, match="'train', 'test'"):
        load_mnist("val", data_dir=mnist_dir)


def test_no_torch_import():
    code = "import sys, mnist_edge.data.mnist, mnist_edge.data.download; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# --- locating ------------------------------------------------------------------------------------------


def test_flat_and_torchvision_layouts(mnist_dir, tmp_path):
    flat = link_all(mnist_dir, tmp_path / "flat")
    assert find_mnist_dir(flat) == flat
    tv = link_all(mnist_dir, tmp_path / "tv" / "MNIST" / "raw")
    assert find_mnist_dir(tmp_path / "tv") == tv
    assert load_mnist("test", data_dir=tmp_path / "tv")[0].shape == (10000, 28, 28)


def test_plain_and_gz_files(mnist_dir, tmp_path):
    """Plain (decompressed) test files beside .gz train files; both load to the same arrays."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in FILES:
        src = real(mnist_dir, name)
        blob = src.read_bytes()
        if name in TEST_NAMES:
            (folder / name).write_bytes(gzip.decompress(blob) if src.suffix == ".gz" else blob)
        else:
            (folder / f"{name}.gz").write_bytes(blob if src.suffix == ".gz" else gzip.compress(blob, 1))
    assert find_mnist_dir(folder) == folder
    x, y = load_mnist("test", data_dir=folder)
    x0, y0 = load_mnist("test", data_dir=mnist_dir)
    assert np.array_equal(x, x0) and np.array_equal(y, y0)
    assert load_mnist("train", data_dir=folder)[0].shape == (60000, 28, 28)


def test_resolution_order(mnist_dir, tmp_path, monkeypatch):
    explicit = link_all(mnist_dir, tmp_path / "explicit")
    env = link_all(mnist_dir, tmp_path / "env")
    xdg = tmp_path / "xdg"
    cache = link_all(mnist_dir, xdg / "mnist-edge")
    home = tmp_path / "home"
    home_cache = link_all(mnist_dir, home / ".cache" / "mnist-edge")
    monkeypatch.setenv(ENV_VAR, str(env))
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    monkeypatch.setenv("HOME", str(home))
    assert find_mnist_dir(explicit) == explicit
    assert find_mnist_dir() == env
    monkeypatch.delenv(ENV_VAR)
    assert find_mnist_dir() == cache
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert find_mnist_dir() == home_cache


def test_given_source_is_authoritative(mnist_dir, tmp_path, monkeypatch):
    """An explicit root (or the env var) that lacks the files is an error, never a silent fallback."""
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(ENV_VAR, str(mnist_dir))
    with pytest.raises(DataNotFoundError, match="empty"):
        find_mnist_dir(empty)
    monkeypatch.setenv("XDG_CACHE_HOME", str(link_all(mnist_dir, tmp_path / "xdg" / "mnist-edge").parent))
    monkeypatch.setenv(ENV_VAR, str(empty))
    with pytest.raises(DataNotFoundError):
        find_mnist_dir()


def test_missing_files_message(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "nocache"))
    (tmp_path / "some" / "t10k-labels-idx1-ubyte.gz").parent.mkdir()
    (tmp_path / "some" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"")  # one of four is not enough
    for call in (lambda: find_mnist_dir(tmp_path / "some"), lambda: load_mnist("test")):
        with pytest.raises(DataNotFoundError) as info:
            call()
        msg = str(info.value)
        assert ENV_VAR in msg and "--data" in msg and "download" in msg
        assert "t10k-images-idx3-ubyte" in msg and "MNIST/raw" in msg


# --- strict IDX parsing (BAD_INPUTS.md, "data" rows) -------------------------------------------------------

BAD_IDX = {
    "images shorter than header": (idx_images(1)[:10], "images", "shorter than the 16-byte"),
    "labels shorter than header": (idx_labels([1])[:4], "labels", "shorter than the 8-byte"),
    "empty file": (b"", "images", "0 bytes"),
    "images wrong magic": (idx_images(1, magic=0x801), "images", "expected 0x00000803"),
    "labels wrong magic": (idx_labels([1], magic=0x803), "labels", "expected 0x00000801"),
    "gzip not decompressed": (gzip.compress(idx_labels([1])), "labels", "gzip"),
    "wrong dims": (idx_images(1, rows=32, cols=32), "images", "32x32, expected 28x28"),
    "images body shorter": (idx_images(3, body=2 * 784), "images", "shorter than the 2352"),
    "images body longer": (idx_images(2, body=2 * 784 + 1), "images", "longer than the 1568"),
    "labels body shorter": (idx_labels([1, 2], count=3), "labels", "shorter"),
    "labels body longer": (idx_labels([1, 2], count=1), "labels", "longer"),
    "label > 9": (idx_labels([1, 2, 10, 3]), "labels", "label 10 at index 2, expected 0..9"),
}


@pytest.mark.parametrize("case", BAD_IDX)
def test_parse_idx_rejects(case):
    blob, kind, expected = BAD_IDX[case]
    with pytest.raises(IdxFormatError) as info:
        parse_idx(blob, "some-file-ubyte", kind)
    assert "some-file-ubyte" in str(info.value) and expected in str(info.value)


def test_parse_idx_accepts_small_and_empty():
    assert parse_idx(idx_images(2), "f", "images").shape == (2, 28, 28)
    assert parse_idx(idx_labels([0, 9]), "f", "labels").tolist() == [0, 9]
    assert parse_idx(idx_labels([]), "f", "labels").shape == (0,)
    with pytest.raises(UsageError):
        parse_idx(idx_labels([]), "f", "label")


def write_test_split(folder: Path, images: bytes, labels: bytes, gz: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, blob in zip(TEST_NAMES, (images, labels)):
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(blob))
        else:
            (folder / name).write_bytes(blob)
    return folder


@pytest.mark.parametrize("gz", [False, True])
def test_load_count_mismatch(tmp_path, gz):
    folder = write_test_split(tmp_path / "d", idx_images(3), idx_labels([1, 2]), gz)
    with pytest.raises(IdxFormatError, match="3 images but .*2 labels") as info:
        load_mnist("test", data_dir=folder)
    assert "t10k-images-idx3-ubyte" in str(info.value)


def test_load_bad_label_names_file(tmp_path):
    folder = write_test_split(tmp_path / "d", idx_images(2), idx_labels([1, 11]))
    with pytest.raises(IdxFormatError, match="t10k-labels-idx1-ubyte.*label 11"):
        load_mnist("test", data_dir=folder)


def test_checksum_mismatch(mnist_dir, tmp_path):
    # a well-formed file that is not the original: one test label changed
    labels = bytearray(gzip.decompress(real(mnist_dir, TEST_NAMES[1]).read_bytes()))
    labels[8] = (labels[8] + 1) % 10
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / f"{TEST_NAMES[0]}.gz").symlink_to(real(mnist_dir, TEST_NAMES[0]))
    (folder / TEST_NAMES[1]).write_bytes(bytes(labels))
    with pytest.raises(ChecksumError) as info:
        load_mnist("test", data_dir=folder)
    msg = str(info.value)
    assert TEST_NAMES[1] in msg and FILES[TEST_NAMES[1]].sha256 in msg
    assert hashlib.sha256(labels).hexdigest() in msg


def test_checksum_small_synthetic(tmp_path):
    folder = write_test_split(tmp_path / "d", idx_images(2), idx_labels([1, 2]))
    with pytest.raises(ChecksumError, match="t10k-images-idx3-ubyte"):
        load_mnist("test", data_dir=folder)


def test_gzip_bomb_and_corrupt_gzip(tmp_path):
    folder = write_test_split(tmp_path / "bomb", idx_images(1), idx_labels([1]), gz=True)
    bomb = idx_labels([1]) + bytes(4 << 20)  # 4 MiB of zeros for a 10 kB file
    (folder / f"{TEST_NAMES[1]}.gz").write_bytes(gzip.compress(bomb, 9))
    with pytest.raises(IdxFormatError, match="t10k-labels-idx1-ubyte.*more than"):
        load_mnist("test", data_dir=folder)
    (folder / f"{TEST_NAMES[1]}.gz").write_bytes(gzip.compress(idx_labels([1]))[:-6])
    with pytest.raises(IdxFormatError, match="t10k-labels-idx1-ubyte.*not a readable gzip"):
        load_mnist("test", data_dir=folder)


# --- download (local server only) ---------------------------------------------------------------------


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files, plus /lying/ (announces more bytes than it sends) and /endless/ (no length, no end)."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.startswith("/auth/"):  # 401 without the mirror URL's credentials, corrupt/ with them
            if self.headers.get("Authorization") != "Basic dXNlcjpzM2NyZXQ=":  # user:s3cret
                self.send_error(401)
                return
            self.path = self.path.replace("/auth/", "/corrupt/", 1)
        if self.path.startswith("/hop/"):  # redirects to /auth/: credentials must not follow a redirect
            self.send_response(302)
            self.send_header("Location", "/auth/" + self.path.rsplit("/", 1)[-1])
            self.end_headers()
            return
        if self.path.startswith("/loop/"):  # redirects to itself
            self.send_response(302)
            self.send_header("Location", self.path)
            self.end_headers()
            return
        if self.path.startswith("/lying/"):
            self.send_response(200)
            self.send_header("Content-Length", "5000")
            self.end_headers()
            self.wfile.write(b"\x1f\x8b" + bytes(998))
            return
        if self.path.startswith("/endless/"):
            self.send_response(200)
            self.end_headers()
            try:
                for _ in range(400):  # up to 25 MiB; the client hangs up at its cap
                    self.wfile.write(bytes(1 << 16))
            except OSError:
                pass
            return
        try:
            super().do_GET()
        except (BrokenPipeError, ConnectionResetError):  # the client hung up at its size cap
            pass


@pytest.fixture(scope="module")
def server(mnist_dir, tmp_path_factory):
    """Base URL of a 127.0.0.1 server; its folders are mirrors (good/, corrupt/, truncated/, empty/, ...)."""
    root = tmp_path_factory.mktemp("mirrors")
    link_all(mnist_dir, root / "good")  # mnist_dir holds the .gz files the mirrors serve
    first = next(iter(FILES))  # the first file downloaded: failures there leave the folder empty
    bad = {
        "corrupt": gzip.compress(idx_images(1)),
        "truncated": real(mnist_dir, first).read_bytes()[:5000],
        "oversized": os.urandom(download_cap(first) + 1),
        "bomb": gzip.compress(bytes(FILES[first].size + (1 << 20)), 9),
    }
    for folder, blob in bad.items():
        (root / folder).mkdir()
        (root / folder / f"{first}.gz").write_bytes(blob)
    (root / "empty").mkdir()
    handler = functools.partial(_Handler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_first_mirror_fails_second_succeeds(server, tmp_path, capsys):
    dest = tmp_path / "dl"
    raw = download_mnist(dest, mirrors=[f"{server}/empty/", f"{server}/good"], progress=True)
    assert raw == dest / "MNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(f"{n}.gz" for n in FILES)
    assert "t10k-labels" in capsys.readouterr().err  # a progress bar or line on stderr
    x, y = load_mnist("train", data_dir=dest)
    assert x.shape == (60000, 28, 28) and y.shape == (60000,)
    # files already there and valid are kept: no mirror is contacted
    download_mnist(dest, mirrors=[f"{server}/empty/"], progress=False)


@pytest.mark.parametrize(
    "mirror,reason",
    [
        ("corrupt", "SHA-256"),
        ("truncated", "truncated"),
        ("lying", "truncated"),
        ("empty", "HTTP 404"),
        ("oversized", "oversized"),
        ("endless", "oversized"),
        ("bomb", "more than"),
    ],
)
def test_download_failure_leaves_nothing(server, tmp_path, mirror, reason):
    dest = tmp_path / "dl"
    url = f"{server}/{mirror}/"
    with pytest.raises(DownloadError) as info:
        download_mnist(dest, mirrors=[url], progress=False)
    msg = str(info.value)
    assert url + next(iter(FILES)) + ".gz" in msg and reason in msg and ENV_VAR in msg
    assert list((dest / "MNIST" / "raw").iterdir()) == []  # no final file, no temp file


def test_download_failure_keeps_existing_file(server, tmp_path):
    raw = tmp_path / "dl" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    old = raw / f"{next(iter(FILES))}.gz"
    old.write_bytes(b"previous bytes")
    with pytest.raises(DownloadError):
        download_mnist(tmp_path / "dl", mirrors=[f"{server}/corrupt/"], progress=False)
    assert old.read_bytes() == b"previous bytes" and list(raw.iterdir()) == [old]


def test_download_no_network_says_what_to_do(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mirrors = [f"http://127.0.0.1:{port}/a/", f"http://127.0.0.1:{port}/b/"]
    with pytest.raises(DownloadError) as info:
        download_mnist(tmp_path / "dl", mirrors=mirrors, progress=False, timeout=5)
    msg = str(info.value)
    assert "No network?" in msg and ENV_VAR in msg and str(tmp_path / "dl") in msg
    assert all(m in msg for m in mirrors)
    assert list((tmp_path / "dl" / "MNIST" / "raw").iterdir()) == []


def test_load_with_download_uses_user_cache(server, tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(download, "MIRRORS", [f"{server}/good/"])
    with pytest.raises(DataNotFoundError):
        load_mnist("test")
    download.download_mnist(data.data_home()[0], progress=False)  # into the per-user cache
    x, y = load_mnist("test")
    assert x.shape == (10000, 28, 28)
    assert find_mnist_dir() == tmp_path / "xdg" / "mnist-edge" / "MNIST" / "raw"


def test_download_never_shows_the_mirror_credentials_and_uses_them_only_there(server, tmp_path, capsys,
                                                                                monkeypatch):
    host = server.removeprefix("http://")
    for folder, status in (("auth", "SHA-256"), ("hop", "HTTP 401")):  # hop: not sent on to the redirect
        for tqdm in (True, False):  # the progress bar, and the plain line printed without tqdm
            if not tqdm:
                monkeypatch.setitem(sys.modules, "tqdm", None)
            code, out, err = run_data_cli("download", "--data", str(tmp_path / "dl"), "--mirror",
                                          f"http://user:s3cret@{host}/{folder}/")
            error = err.strip().splitlines()[-1]  # after the progress bar or line
            assert code == 1 and error.startswith("mnist-edge data: error:") and status in error, err
            assert f"http://***@{host}/{folder}/{next(iter(FILES))}.gz" in err, err
            if folder == "auth" and not tqdm:  # the plain progress line names the URL
                assert err.startswith(f"downloading http://***@{host}/auth/"), err
            assert "s3cret" not in out + err and "user:" not in out + err
            monkeypatch.delitem(sys.modules, "tqdm", raising=False)
    with pytest.raises(DownloadError) as info:  # an unknown scheme's error quotes the URL: redacted too
        download_mnist(tmp_path / "dl", mirrors=["htp://user:s3cret@example.invalid/"], progress=False)
    assert "s3cret" not in str(info.value) and "htp://***@example.invalid/" in str(info.value)


def test_a_redirect_loop_is_one_line(server, tmp_path):
    code, out, err = run_data_cli("download", "--data", str(tmp_path / "dl"), "--mirror", f"{server}/loop/",
                                  "--no-progress")
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert f"{server}/loop/{next(iter(FILES))}.gz: redirect loop or too many redirects (HTTP 302)" in err


def test_a_file_mirror_is_a_local_folder_read_as_regular_files(mnist_dir, tmp_path):
    mirror = link_all(mnist_dir, tmp_path / "mirror")
    raw = download_mnist(tmp_path / "dl", mirrors=[mirror.as_uri()], progress=False)
    assert sorted(p.name for p in raw.iterdir()) == sorted(f"{n}.gz" for n in FILES)
    fifo_mirror = tmp_path / "fifo"
    fifo_mirror.mkdir()
    os.mkfifo(fifo_mirror / f"{next(iter(FILES))}.gz")  # would block a plain open() for ever
    with pytest.raises(DownloadError, match="is a FIFO, not a regular file"):
        download_mnist(tmp_path / "dl2", mirrors=[fifo_mirror.as_uri()], progress=False)
    assert list((tmp_path / "dl2" / "MNIST" / "raw").iterdir()) == []
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / f"{next(iter(FILES))}.gz").symlink_to("/dev/zero")  # endless: the cap ends it
    with pytest.raises(DownloadError, match="is a device, not a regular file"):
        download_mnist(tmp_path / "dl3", mirrors=[(tmp_path / "dev").as_uri()], progress=False)


# --- splits --------------------------------------------------------------------------------------------


def test_train_val_split():
    tr, va = train_val_split(60000, 12000, seed=4)
    assert len(tr) == 48000 and len(va) == 12000
    assert np.intersect1d(tr, va).size == 0
    assert np.array_equal(np.sort(np.concatenate([tr, va])), np.arange(60000))
    tr2, va2 = train_val_split(60000, 12000, seed=4)
    assert np.array_equal(tr, tr2) and np.array_equal(va, va2)
    assert not np.array_equal(va, train_val_split(60000, 12000, seed=5)[1])
    for bad in (-1, 60001):
        with pytest.raises(UsageError):
            train_val_split(60000, bad, seed=0)


def test_class_balanced_indices(mnist_dir):
    _, y = load_mnist("train", data_dir=mnist_dir)
    idx = class_balanced_indices(y, 1000, seed=0)
    assert len(np.unique(idx)) == 1000
    assert np.bincount(y[idx], minlength=10).tolist() == [100] * 10
    assert np.array_equal(idx, class_balanced_indices(y, 1000, seed=0))
    assert not np.array_equal(idx, class_balanced_indices(y, 1000, seed=1))
    counts = np.bincount(y[class_balanced_indices(y, 1005, seed=0)], minlength=10)
    assert counts.sum() == 1005 and counts.max() - counts.min() == 1


def test_class_balanced_indices_scarce_class():
    labels = np.array([0] * 3 + [c for c in range(1, 10) for _ in range(50)], dtype=np.uint8)
    counts = np.bincount(labels[class_balanced_indices(labels, 48, seed=3)], minlength=10)
    assert counts.tolist() == [3] + [5] * 9  # class 0's shortfall is shared by the others
    with pytest.raises(UsageError):
        class_balanced_indices(labels, len(labels) + 1, seed=0)


# --- the `mnist-edge data` command ---------------------------------------------------------------------


def run_data_cli(*argv) -> tuple[int, str, str]:
    import contextlib
    import io

    from mnist_edge.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["data", *argv])
    return code, out.getvalue(), err.getvalue()


def test_data_command_shows_where_it_looks_and_what_verifies(mnist_dir, tmp_path):
    code, out, err = run_data_cli("--data", str(mnist_dir))
    assert code == 0 and f"MNIST folder: {mnist_dir} (from the data argument)" in out
    assert out.count(" verified ") == 4 and "all 4 files verified" in out
    folder = tmp_path / "partial"
    folder.mkdir()
    shutil.copyfile(real(mnist_dir, "t10k-labels-idx1-ubyte"), folder / "t10k-labels-idx1-ubyte.gz")
    (folder / "t10k-images-idx3-ubyte").write_bytes(idx_images(2))  # right format, wrong bytes
    code, out, err = run_data_cli("--data", str(folder))
    assert code == 1
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "verified" in rows["t10k-labels-idx1-ubyte"] and "SHA-256 differs" in rows["t10k-images-idx3-ubyte"]
    assert rows["train-images-idx3-ubyte"].split()[1] == "missing"
    assert err.strip() == f"3 of 4 files missing or wrong; get them with: mnist-edge data download --data {folder}"


def test_data_download_fetches_verified_files_atomically(server, tmp_path):
    dest = tmp_path / "fresh"
    code, out, err = run_data_cli("download", "--data", str(dest), "--mirror", f"{server}/empty/",
                                  "--mirror", f"{server}/good/")
    assert code == 0 and "all 4 files verified" in out
    assert "t10k-labels" in err  # the progress bar (or line) on stderr
    assert sorted(p.name for p in (dest / "MNIST" / "raw").iterdir()) == sorted(f"{n}.gz" for n in FILES)
    # a mirror serving a corrupt file: one line, nothing at the final path, no temporary file
    bad = tmp_path / "bad"
    code, out, err = run_data_cli("download", "--data", str(bad), "--mirror", f"{server}/corrupt/", "--no-progress")
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert err.startswith("mnist-edge data: error: could not download") and "SHA-256" in err
    assert list((bad / "MNIST" / "raw").iterdir()) == []


def test_data_command_without_data_names_the_download_command(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    code, out, err = run_data_cli()
    assert code == 1 and f"MNIST folder: {tmp_path / 'xdg' / 'mnist-edge'} (from the per-user cache)" in out
    assert err.strip() == "4 of 4 files missing or wrong; get them with: mnist-edge data download"
