"""One writer per output: an OS lock on ``.NAME.lock`` beside a folder or file that an export, a search or a
registry update replaces, so a second writer waits or stops with one line naming the holder instead of
silently replacing (or mixing with) the first one's files.

The lock is ``flock`` on an open file: the kernel releases it when the holder exits, however it exits
(SIGKILL included), so a killed holder never blocks the next run. The file holds the holder's pid, command
and start time for the message; the holder removes it when done (see :func:`_acquire` for why that is safe).
Where ``flock`` does not exist (Windows) writers are not serialized. Standard library only.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shlex
import sys
import threading
import time
from pathlib import Path

from mnist_edge.errors import WriteError
from mnist_edge.files import read_regular

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

POLL_S = 0.1
_held: dict[tuple[str, int], list] = {}  # (lock file, thread) -> [fd, depth]: a run may lock what it holds
_held_guard = threading.Lock()


def lock_path(target: str | os.PathLike) -> Path:
    """The lock file of ``target`` (a folder or file): ``.NAME.lock`` in its (real) parent folder."""
    target = Path(os.path.abspath(target))
    return target.parent.resolve() / f".{target.name}.lock"


@contextlib.contextmanager
def hold(target: str | os.PathLike, *, wait_s: float = 0.0, flag: str = "--out", say=None):
    """Hold ``target``'s lock for the block. Held by another process: wait up to ``wait_s`` seconds (``say``
    told once), then raise :class:`WriteError` naming ``target`` and the holder (pid, command, since when).
    Re-entrant within one thread (an export that runs a search on its own folder)."""
    path = lock_path(target)
    key = (os.fspath(path), threading.get_ident())
    with _held_guard:
        if key in _held:
            _held[key][1] += 1
            outer = True
        else:
            outer = False
    if outer:
        try:
            yield path
        finally:
            with _held_guard:
                _held[key][1] -= 1
        return
    fd = _acquire(path, Path(target), wait_s, flag, say)
    if fd is not None:
        with _held_guard:
            _held[key] = [fd, 1]
    try:
        yield path
    finally:
        if fd is not None:
            with _held_guard:
                del _held[key]
            _release(path, fd)


def _acquire(path: Path, target: Path, wait_s: float, flag: str, say) -> int | None:
    """An fd holding the lock on ``path`` (None where locking is impossible: no flock, or a folder we may not
    create the lock file in, where the write itself will report why).

    The holder unlinks the file before closing it; a waiter may then hold a lock on a file that is no longer
    at ``path``, so after locking we check that ``path`` still names the file we locked, else start again."""
    if fcntl is None:
        return None
    deadline, told = time.monotonic() + max(0.0, wait_s), False
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0),
                         0o644)
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                return None
            raise WriteError(f"cannot create the lock file '{path}': {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            if time.monotonic() >= deadline:
                raise WriteError(busy_message(target, holder(path), flag)) from None
            if say is not None and not told:
                say(f"waiting for {describe(holder(path))} to finish with '{target}'")
                told = True
            time.sleep(POLL_S)
            continue
        if _same_file(fd, path):
            _write_holder(fd)
            return fd
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _write_holder(fd: int) -> None:
    """Who holds the lock, for the message another writer prints (best effort: the lock is what counts)."""
    argv = [os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python", *sys.argv[1:]]
    record = {"pid": os.getpid(), "command": shlex.join(argv)[:300], "since": time.time()}
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)


def _release(path: Path, fd: int) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)  # while still locked: see _acquire
    os.close(fd)


def holder(path: Path) -> dict:
    """The holder record in lock file ``path`` ({} when unreadable, e.g. not yet written)."""
    for _ in range(5):  # the holder writes its record just after locking
        try:
            record = json.loads(read_regular(path, 4096) or b"null")
        except (OSError, ValueError):
            record = None
        if isinstance(record, dict) and isinstance(record.get("pid"), int):
            return record
        time.sleep(0.02)
    return {}


def describe(record: dict) -> str:
    """``pid 123 (mnist-edge export --model mlp --out D), since 2026-12-07 10:00:00 (42 s ago)``."""
    if not record:
        return "another process"
    text = f"pid {record['pid']}"
    if isinstance(record.get("command"), str):
        text += f" ({record['command']})"
    since = record.get("since")
    if isinstance(since, (int, float)):
        text += f", since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))} " \
                f"({max(0, round(time.time() - since))} s ago)"
    return text


def busy_message(target: Path, record: dict, flag: str) -> str:
    return (f"'{target}' is being written by {describe(record)}; nothing was changed: wait for it to finish, "
            f"or choose another {flag}")
