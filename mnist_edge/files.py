"""Small file helpers shared by every reader and writer: bounded reads of regular files, atomic writes,
hashing, cleanup of what a killed run left behind, and a record of what this process replaced (no torch,
no numpy).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import signal
import stat
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock; staleness is then judged by age alone
    fcntl = None

STALE_AGE_S = 60.0  # a temporary file or folder this old, and unlocked, belongs to a run that died
_replaced: list[str] = []  # final paths this process has replaced (what an interrupt message must mention)


class NotRegularFileError(OSError):
    """A path that is a FIFO, device, socket or folder where a regular file was expected."""


class FileTooLargeError(OSError):
    """A file with more bytes than the reader accepts (counted while reading, not taken from st_size)."""


def read_regular(path: str | os.PathLike, limit: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them.

    Never blocks on a FIFO (opened non-blocking, then refused), never reads a device (``/dev/zero``
    has st_size 0 and no end: the limit is counted on the bytes read, not trusted from ``stat``).
    Raises OSError: FileNotFoundError, PermissionError, :class:`NotRegularFileError`,
    :class:`FileTooLargeError`, or whatever the read raises.
    """
    path = os.fspath(path)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else \
                "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) \
                else "not a regular file"
            raise NotRegularFileError(errno.EINVAL, f"is {kind}, not a regular file", path)
        chunks, total = [], 0
        while block := os.read(fd, min(1 << 20, limit + 1 - total)):
            chunks.append(block)
            total += len(block)
            if total > limit:
                raise FileTooLargeError(errno.EFBIG, f"has more than {limit:,} bytes", path)
        return b"".join(chunks)
    finally:
        os.close(fd)


def describe_os_error(e: OSError) -> str:
    """``e`` as a short phrase without the path (the caller names the file)."""
    if isinstance(e, (NotRegularFileError, FileTooLargeError)):
        return e.strerror
    if isinstance(e, FileNotFoundError):
        return "no such file"
    if isinstance(e, PermissionError):
        return "permission denied"
    return e.strerror or str(e) or type(e).__name__


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def sigint_deferred():
    """Hold Ctrl-C (and SIGTERM) back for a few syscalls; a signal that came meanwhile is delivered when the
    block ends. Done with Python handlers, not a signal mask: a mask covers only the calling thread, and
    onnxruntime's or torch's threads would still take the signal and interrupt the block."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {}
    for sig in (signal.SIGINT, getattr(signal, "SIGTERM", None)):
        if sig is not None and signal.getsignal(sig) is not None:  # None: a handler not set from Python
            previous[sig] = signal.signal(sig, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(pending):
            signal.raise_signal(sig)  # now handled as it would have been: KeyboardInterrupt for Ctrl-C


def note_replaced(path: str | os.PathLike) -> None:
    """Record that ``path`` now holds new, complete content (see :func:`replaced_paths`)."""
    _replaced.append(os.fspath(path))


def replaced_paths() -> list[str]:
    """Final paths replaced by this process since :func:`forget_replaced` and still there (a file written
    into a temporary folder that was later removed does not count), for an honest interrupt message."""
    return [p for p in dict.fromkeys(_replaced) if os.path.lexists(p)]


def forget_replaced() -> None:
    _replaced.clear()


def lock_held(path: str | os.PathLike) -> bool:
    """True when another open file description holds an flock on ``path`` (a live writer owns it)."""
    if fcntl is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return True  # cannot tell: leave it alone
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing releases our own lock
    return False


def lock_fd(fd: int) -> None:
    """flock ``fd`` for as long as it stays open: marks a temporary file or folder as in use."""
    if fcntl is not None:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def remove_stale(folder: str | os.PathLike, pattern: str, min_age_s: float = STALE_AGE_S) -> list[Path]:
    """Delete what killed runs left in ``folder``: entries whose whole name matches the regex ``pattern``
    (only our own temporary names), not locked by a live writer, and untouched for ``min_age_s``.

    Returns what was removed; errors are ignored (it is only cleanup).
    """
    folder, rx, removed = Path(folder), re.compile(pattern), []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        if not rx.fullmatch(entry.name):
            continue
        try:
            st = entry.lstat()
        except OSError:
            continue
        if stat.S_ISLNK(st.st_mode) or now - st.st_mtime < min_age_s or lock_held(entry):
            continue
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
        removed.append(entry)
    return removed


def temp_file_pattern(final_name: str) -> str:
    """The regex of the temporary names :func:`atomic_path` makes for ``final_name``."""
    return re.escape(f".{final_name}.") + r"[A-Za-z0-9_]{8}(\.[A-Za-z0-9_.-]+)?\.tmp"


@contextmanager
def atomic_path(final: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path beside ``final``; on success rename it over ``final``, on error delete it.

    The rename is atomic on one filesystem, so readers see either the old file or the new one, never half.
    The file gets the permissions a plain ``open(final, "w")`` would give (0644 under the usual umask),
    not mkstemp's private 0600.
    The temporary file is flock-ed while it exists, so a later writer can tell a live one from the leftover
    of a killed run, and removes such leftovers (older than a minute) first.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(final.parent, temp_file_pattern(final.name))
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=suffix + ".tmp", dir=final.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
    except (AttributeError, OSError):  # no fchmod (Windows): the default is fine there
        pass
    lock_fd(fd)
    try:
        yield Path(tmp)
        with sigint_deferred():  # the rename and its record go together: an interrupt message tells the truth
            os.replace(tmp, final)
            note_replaced(final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)


def current_umask() -> int:
    """This process's umask: read from /proc where Linux shows it (setting it to read it would race with
    other threads creating files), else set and put straight back."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes_atomic(final: str | os.PathLike, data: bytes) -> None:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(final: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(final, text.encode("utf-8"))


def format_size(n: int | None) -> str:
    """A file size as every command prints it: binary units, one decimal (``116.1 KiB``, ``2.1 MiB``)."""
    if n is None:
        return "-"
    if n < 1024:
        return f"{n} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}"
