"""Download the four MNIST files from mirrors into ``<dest>/MNIST/raw/``, each verified before it appears.

Each file streams into a temporary file beside its final path, with the download and the decompressed
size both capped; only when the SHA-256 of the decompressed bytes matches is it renamed into place
(``os.replace``, atomic). A failure leaves no temporary file and nothing new at the final path.

A mirror may carry credentials (``https://user:password@host/mnist/``): they are sent as HTTP basic
authentication to that host only (never to a redirect's target) and never shown: every message and
progress line writes them as ``***``. A ``file://`` mirror is a local folder, read as regular files only
(a FIFO or device there is refused, not opened).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import re
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from mnist_edge.data.mnist import SLACK, ENV_VAR, FILES, read_capped
from mnist_edge.errors import DataError, DownloadError, UsageError, first_line
from mnist_edge.files import describe_os_error, read_regular

# Tried in order; each is a base URL to which "<name>.gz" is appended.
MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
]
# Compressed sizes on the usual mirrors. Another gzip of the same bytes can differ a little, so the cap
# allows 50% + 64 KiB; the real check is the SHA-256 of the decompressed bytes.
GZ_SIZES = {
    "train-images-idx3-ubyte": 9_912_422,
    "train-labels-idx1-ubyte": 28_881,
    "t10k-images-idx3-ubyte": 1_648_877,
    "t10k-labels-idx1-ubyte": 4_542,
}
_CHUNK = 1 << 16
DEADLINE_S = 1800.0  # the whole download (11 MB); at 10 kB/s it takes ~20 minutes


# "//user:password@" in any text: what :func:`redact` replaces (over-redacting a path holding "@" is harmless)
_USERINFO = re.compile(r"(?<=//)[^\s@]*@")


def redact(text: str) -> str:
    """``text`` with every URL's credentials (``//user:password@``) written as ``//***@``."""
    return _USERINFO.sub("***@", text)


def download_cap(name: str) -> int:
    """Most bytes accepted when downloading ``<name>.gz``."""
    return GZ_SIZES[name] * 3 // 2 + (64 << 10)


class _Failure(Exception):
    """One mirror failing for one file; ``network`` when the server could not be reached at all."""

    def __init__(self, reason: str, network: bool = False):
        super().__init__(reason)
        self.network = network


def download_mnist(
    dest: str | os.PathLike, mirrors=None, progress: bool = True, timeout: float = 30.0,
    deadline: float = DEADLINE_S,
) -> Path:
    """Fetch the four files into ``<dest>/MNIST/raw/<name>.gz`` (files already there and valid are kept).

    ``mirrors``: base URLs tried in order (default :data:`MIRRORS`). ``timeout``: seconds a single
    network operation may stall; ``deadline``: seconds the whole call may take (a mirror trickling one
    byte a second never trips ``timeout``, so the deadline is what ends it). Returns the raw folder.
    Raises DownloadError naming every URL tried and why it failed.
    """
    mirrors = list(MIRRORS if mirrors is None else mirrors)
    if not mirrors:
        raise UsageError("no mirrors given; pass at least one base URL")
    for name, value in (("timeout", timeout), ("deadline", deadline)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
            raise UsageError(f"{name} must be a positive number of seconds, got {value!r}")
    end = time.monotonic() + deadline
    dest = Path(dest).expanduser()
    raw = dest / "MNIST" / "raw"
    try:
        raw.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(f"cannot create {raw}: {e}") from e
    for name in FILES:
        final = raw / f"{name}.gz"
        if final.is_file() and _is_valid(final, name):
            continue
        failures: list[tuple[str, _Failure]] = []
        for base in mirrors:
            url = (base if base.endswith("/") else base + "/") + f"{name}.gz"
            if time.monotonic() >= end:
                failures.append((url, _Failure(f"not tried: the {deadline:g} s deadline had passed")))
                continue
            try:
                _fetch(url, name, final, progress, timeout, end)
                break
            except _Failure as e:
                failures.append((url, e))
        else:
            tried = "; ".join(f"{url}: {e}" for url, e in failures)
            offline = "no network? " if all(e.network for _, e in failures) else ""
            raise DownloadError(redact(
                f"could not download {name}.gz ({tried}). {offline.capitalize()}Put the four files "
                f"({', '.join(f'{n}.gz' for n in FILES)}, plain or .gz) in a folder such as {dest} "
                f"and set {ENV_VAR} to it (or pass --data DIR)."
            ))
    return raw


def _is_valid(path: Path, name: str) -> bool:
    try:
        data = read_capped(path, FILES[name].size + SLACK, gz=True)
    except DataError:
        return False
    return hashlib.sha256(data).hexdigest() == FILES[name].sha256


def _fetch(url: str, name: str, final: Path, progress: bool, timeout: float, end: float) -> None:
    """Download ``url`` to a temp file beside ``final``, verify, then rename; raise _Failure otherwise."""
    cap = download_cap(name)
    try:
        fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".part")
    except OSError as e:
        raise _Failure(f"cannot write in {final.parent}: {e}") from e
    done = False
    try:
        with os.fdopen(fd, "wb") as out:
            _stream(url, out, cap, progress, timeout, end)
            out.flush()
            os.fsync(out.fileno())
        info = FILES[name]
        try:
            data = read_capped(Path(tmp), info.size + SLACK, gz=True)
        except DataError as e:
            raise _Failure(f"bad gzip data (truncated or oversized): {e}") from e
        found = hashlib.sha256(data).hexdigest()
        if found != info.sha256:
            raise _Failure(f"SHA-256 of decompressed data {found}, expected {info.sha256}")
        os.replace(tmp, final)
        done = True
    except OSError as e:  # disk full, permissions (network errors are mapped inside _stream)
        raise _Failure(f"cannot write {final}: {e}") from e
    finally:
        if not done:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass


def _request(url: str) -> urllib.request.Request:
    """A request for ``url`` without its credentials; they go in an Authorization header that urllib does
    not pass on to a redirect's target (another host must not get them)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return urllib.request.Request(url)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    req = urllib.request.Request(urlunsplit(parts._replace(netloc=hostport)))
    user, _, password = userinfo.partition(":")
    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode("ascii")
    req.add_unredirected_header("Authorization", f"Basic {token}")
    return req


def _copy_local(url: str, out, cap: int) -> None:
    """A file:// mirror: the regular file only (a FIFO would block open() for ever), at most ``cap`` bytes."""
    path = urllib.request.url2pathname(urlsplit(url).path)
    try:
        out.write(read_regular(path, cap))
    except FileNotFoundError as e:
        raise _Failure("no such file") from e
    except OSError as e:
        if e.filename == path:  # the mirror's file, not our output
            raise _Failure(describe_os_error(e)) from e
        raise


def _stream(url: str, out, cap: int, progress: bool, timeout: float, end: float) -> None:
    if urlsplit(url).scheme == "file":
        return _copy_local(url, out, cap)
    bar = _Progress(redact(url), progress)
    ok = False
    try:
        with urllib.request.urlopen(_request(url),
                                    timeout=max(0.001, min(timeout, end - time.monotonic()))) as resp:
            header = resp.headers.get("Content-Length")
            length = int(header) if header and header.isdigit() else None
            if length is not None and length > cap:
                raise _Failure(f"oversized: server announces {length} bytes, cap is {cap}")
            bar.start(length)
            got = 0
            # read1: whatever has arrived (read(n) would wait for all n bytes, past any deadline)
            while chunk := resp.read1(_CHUNK):
                if time.monotonic() > end:
                    raise _Failure(f"too slow: the download deadline passed after {got:,} bytes")
                got += len(chunk)
                if got > cap:
                    raise _Failure(f"oversized: more than {cap} bytes")
                out.write(chunk)
                bar.update(len(chunk))
            if length is not None and got < length:
                raise _Failure(f"truncated: got {got} of {length} bytes")
        ok = True
    except urllib.error.HTTPError as e:
        if 300 <= e.code < 400:  # urllib's own text for this spans three lines
            raise _Failure(f"redirect loop or too many redirects (HTTP {e.code})") from e
        raise _Failure(f"HTTP {e.code} {first_line(e.reason)}") from e
    except urllib.error.URLError as e:
        raise _Failure(f"unreachable ({first_line(e.reason)})", network=True) from e
    except TimeoutError as e:
        raise _Failure(f"timed out after {timeout:g} s", network=True) from e
    except (http.client.HTTPException, ConnectionError, zlib.error) as e:
        raise _Failure(f"truncated or broken connection: {first_line(repr(e))}") from e
    except ValueError as e:  # e.g. an unknown URL scheme
        raise _Failure(f"bad URL: {first_line(e)}") from e
    finally:
        bar.close(ok)


class _Progress:
    """A tqdm bar on stderr when tqdm is installed, else one plain line per file."""

    def __init__(self, url: str, enabled: bool):
        self.url, self.enabled, self.bar, self.line = url, enabled, None, False

    def start(self, total: int | None) -> None:
        if not self.enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            size = f" ({total} bytes)" if total else ""
            print(f"downloading {self.url}{size} ...", end="", file=sys.stderr, flush=True)
            self.line = True
            return
        name = self.url.rsplit("/", 1)[-1]
        self.bar = tqdm(total=total, desc=name, unit="B", unit_scale=True, file=sys.stderr)

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self, ok: bool) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.line:
            print(" done" if ok else " failed", file=sys.stderr)
