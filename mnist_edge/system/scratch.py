"""A run's own scratch folder: every temporary file of a search or quantization (ours and onnxruntime's
``ort.quant.*`` / ``pre.quant.*`` folders) goes into one private folder, removed when the run ends, on
Ctrl-C or SIGTERM too; what a killed run left (its pid is in the name) is removed by the next run.

``gettempdir()/mnist-edge-scratch-PID-XXXXXXXX``: the folder is flock-ed while its run lives, so a folder
whose pid is dead and whose lock is free belongs to no one (a reused pid does not keep it, the free lock
decides; a folder of a live run in another pid namespace is kept, its lock is held). Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import tempfile
import threading
from pathlib import Path

from mnist_edge.files import lock_fd, lock_held, remove_stale

PREFIX = "mnist-edge-scratch-"
_NAME = re.compile(re.escape(PREFIX) + r"(\d+)-[A-Za-z0-9_]{8}")
# names an earlier version left in the temporary folder; removed once an hour old (they were never locked)
LEGACY = r"mnist-edge-int8-(search|report)-[A-Za-z0-9_]{8}"
LEGACY_AGE_S = 3600.0
_active = threading.local()  # this thread's scratch folder while a run holds one


def system_temp() -> Path:
    """The system's temporary folder, not a scratch folder a run has made the default."""
    return Path(getattr(_active, "system", None) or tempfile.gettempdir())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True


def remove_dead(base: str | os.PathLike | None = None) -> list[Path]:
    """Remove the scratch folders in ``base`` (default: the system's) whose run is dead; returns them."""
    base = Path(base) if base is not None else system_temp()
    removed = []
    try:
        entries = list(base.iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = _NAME.fullmatch(entry.name)
        if m is None or entry.is_symlink() or not entry.is_dir() or int(m.group(1)) == os.getpid():
            continue
        if not _alive(int(m.group(1))) and not lock_held(entry):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    removed += remove_stale(base, LEGACY, min_age_s=LEGACY_AGE_S)
    return removed


@contextlib.contextmanager
def run_scratch():
    """Yield this run's scratch folder; meanwhile it is also ``tempfile``'s default folder, so libraries that
    make their own temporary files (onnxruntime's quantizer) make them inside it. Nested calls in one thread
    share the outer folder. ``tempfile.tempdir`` is process-wide: a run should not share its process with
    other threads making temporary files (the CLI does not)."""
    if getattr(_active, "path", None) is not None:
        yield _active.path
        return
    base = Path(tempfile.gettempdir())
    remove_dead(base)
    path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=base))
    fd = os.open(path, os.O_RDONLY)
    lock_fd(fd)
    _active.path, _active.system = path, base
    try:
        with _terminate_raises(), temp_dir_as(path):
            yield path
    finally:
        _active.path = _active.system = None
        os.close(fd)
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def temp_dir_as(folder: str | os.PathLike):
    """Make ``folder`` ``tempfile``'s default folder for the block (onnxruntime's quantizer puts its
    ``ort.quant.*`` and ``pre.quant.*`` folders there)."""
    saved = tempfile.tempdir
    tempfile.tempdir = os.fspath(folder)
    try:
        yield
    finally:
        tempfile.tempdir = saved


class Terminated(SystemExit):
    """SIGTERM during a run: raised so that ``finally`` blocks (scratch removal) run; exit status 143."""

    def __init__(self):
        super().__init__(128 + signal.SIGTERM)


def _raise_terminated(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def _terminate_raises():
    """SIGTERM raises :class:`Terminated` for the block (only where nothing else handles it: the default
    action ends the process without running any cleanup)."""
    sig = getattr(signal, "SIGTERM", None)
    if sig is None or threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(sig) is not signal.SIG_DFL:
        yield
        return
    signal.signal(sig, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(sig, signal.SIG_DFL)
