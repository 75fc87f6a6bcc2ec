"""Replace an artifact folder atomically: readers see the old folder or the new one, never a mix.

On Linux the two folders are exchanged in one renameat2(RENAME_EXCHANGE) call; elsewhere two renames run
with Ctrl-C held back between them, and a failed second rename puts the old folder back.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import sys
import tempfile
from pathlib import Path

from mnist_edge.files import sigint_deferred as _sigint_deferred


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths (Linux renameat2 RENAME_EXCHANGE); False where that is unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # glibc < 2.28, musl
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):  # filesystem cannot exchange
        return False
    raise OSError(err, os.strerror(err), os.fspath(b))


def swap_into_place(new: Path, out: Path) -> None:
    """Make ``new`` the folder at ``out``; the old folder is removed only once the new one is in place."""
    if not out.exists():
        os.rename(new, out)
        return
    if _exchange(new, out):
        remove_tree(new)  # now holds the previous artifacts
        return
    backup = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    try:
        with _sigint_deferred():  # between the two renames `out` does not exist: no Ctrl-C there
            os.rename(out, backup / out.name)
            try:
                os.rename(new, out)
            except BaseException:
                os.rename(backup / out.name, out)
                raise
    finally:
        remove_tree(backup)  # the previous artifacts after success; empty after a restored failure


def remove_tree(path: Path) -> None:
    """Delete a folder we made (temporary or replaced); errors are ignored, it is only cleanup."""
    shutil.rmtree(path, ignore_errors=True)
