"""Several files replaced as one set (a search's result and plot in its folder, and the registry entry that
names the same recipe): afterwards all are new or all are old, whatever fails; a run killed half-way is
finished by the next one.

1. Prepare: each new file is written beside its final (``.NAME.set-XXXXXXXX.new``), and each final that
   exists is hard-linked to ``.NAME.set-XXXXXXXX.old``. A full disk or a read-only folder fails here, with
   the file named, and nothing has been replaced.
2. Journal: ``.mnist-edge-set.XXXXXXXX.json``, listing every (final, new, old), is written into each folder
   of the set (one cut short parses as nothing, and nothing was replaced yet). From here on the set counts as
   written.
3. Commit: every new file is renamed over its final, with Ctrl-C and SIGTERM held back. A rename that fails
   puts the replaced finals back from their ``.old`` links; if even that fails, the journal stays.
4. The journal and the ``.old`` links are removed.

A run killed (SIGKILL, power loss) between steps 2 and 4 leaves a journal; :func:`recover` (the next run that
writes the same folder or registry calls it, holding that folder's lock) finishes the renames whose ``.new``
file is still there. Standard library only.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from mnist_edge.errors import WriteError
from mnist_edge.files import (current_umask, describe_os_error, lock_fd, lock_held, note_replaced, read_regular,
                              remove_stale, sigint_deferred)

JOURNAL_PREFIX = ".mnist-edge-set."
_JOURNAL = re.compile(re.escape(JOURNAL_PREFIX) + r"[A-Za-z0-9_]{8}\.json")
_PART = r"\.set-[A-Za-z0-9_]{8}\.(new|old)"  # after ".NAME"
MAX_JOURNAL_BYTES = 1 << 16


def write_set(files: dict, *, what: str = "") -> list[Path]:
    """Replace every ``final: bytes`` of ``files`` as one set (see the module docstring); returns the finals.

    Raises :class:`WriteError` naming the file that could not be written and saying what is unchanged.
    ``what`` names the set in messages (e.g. "the search result and its registry entry").
    """
    finals = [Path(p) for p in files]
    parts: list[dict] = []
    journals: list[dict] = []
    try:
        for final, data in zip(finals, files.values()):
            _prepare(final, data, parts)
        journals = _write_journals(parts)
    except OSError as e:
        _discard(parts, journals)
        failed = Path(e.filename) if getattr(e, "filename", None) else finals[0]
        raise WriteError(f"cannot write '{_final_of(failed, finals)}': {describe_os_error(e)}; "
                         f"{_unchanged(finals, what)}") from None
    except BaseException:
        _discard(parts, journals)
        raise
    _commit(parts, journals, finals, what)
    return finals


def _prepare(final: Path, data: bytes, parts: list[dict]) -> None:
    """The new file written beside ``final`` (and ``final`` linked to its ``.old``): {final, new, old, fd}
    appended to ``parts`` as soon as it exists, so a failure below still removes it."""
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, new = tempfile.mkstemp(prefix=f".{final.name}.set-", suffix=".new", dir=final.parent)
    except OSError as e:
        e.filename = os.fspath(final)  # the file the user knows, not our temporary name
        raise
    part = {"final": os.fspath(final), "new": new, "old": None, "fd": fd}
    parts.append(part)
    with contextlib.suppress(AttributeError, OSError):
        os.fchmod(fd, 0o666 & ~current_umask())  # what a plain open() would give, not mkstemp's 0600
    lock_fd(fd)  # a live writer's: a later run leaves it alone
    _write_all(fd, data, final)
    if final.exists():
        part["old"] = new[:-len(".new")] + ".old"
        try:
            os.link(final, part["old"])
        except OSError:  # no hard links here (some network or FAT file systems): a copy does the same
            shutil.copy2(final, part["old"])


def _write_journals(parts: list[dict]) -> list[dict]:
    """The journal, written into each folder of the set (the next run may come through either), and kept
    flock-ed while this run lives, so that no other run takes it for a dead run's."""
    text = json.dumps([{k: p[k] for k in ("final", "new", "old")} for p in parts], indent=1).encode()
    journals: list[dict] = []
    try:
        for folder in dict.fromkeys(Path(p["final"]).parent for p in parts):
            fd, name = tempfile.mkstemp(prefix=JOURNAL_PREFIX, suffix=".json", dir=folder)
            journals.append({"path": Path(name), "fd": fd})
            lock_fd(fd)
            _write_all(fd, text, Path(name))  # a journal cut short lists nothing: recover() then leaves all as it was
    except BaseException:
        _discard([], journals)
        raise
    return journals


def _write_all(fd: int, data: bytes, path: Path) -> None:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except OSError as e:
        e.filename = os.fspath(path)
        raise


def _commit(parts: list[dict], journals: list[dict], finals: list[Path], what: str) -> None:
    done: list[dict] = []
    with sigint_deferred():  # the renames go together: Ctrl-C or SIGTERM waits until all are made
        try:
            for part in parts:
                os.replace(part["new"], part["final"])
                done.append(part)
        except OSError as e:
            _roll_back(done, parts, journals, finals, what, e)
        for part in parts:
            note_replaced(part["final"])
    _discard(parts, journals)


def _roll_back(done, parts, journals, finals, what, error: OSError) -> None:
    failed = parts[len(done)]["final"]  # the renames run in order: ``done`` is a prefix
    try:
        for part in reversed(done):
            # the new file is linked back to its ``.new`` name first: should putting back fail half-way, the
            # journal still lists a complete set for the next run to finish
            os.link(part["final"], part["new"])
            if part["old"] is not None:
                os.replace(part["old"], part["final"])
            else:
                os.unlink(part["final"])
    except OSError:
        for item in parts + journals:
            _close(item)  # the journal stays, unlocked: the next run finishes the set
        raise WriteError(f"cannot replace '{failed}': {describe_os_error(error)}; the set is half written and "
                         f"could not be put back: the next run that writes there completes it") from None
    _discard(parts, journals)
    raise WriteError(f"cannot replace '{failed}': {describe_os_error(error)}; {_unchanged(finals, what)}") from None


def _discard(parts: list[dict], journals: list[dict]) -> None:
    """Remove journals first (while they exist the set counts as written), then the leftovers."""
    for journal in journals:
        with contextlib.suppress(OSError):
            journal["path"].unlink()
        _close(journal)
    for part in parts:
        _close(part)
        for key in ("new", "old"):
            if part[key] is not None:
                with contextlib.suppress(OSError):
                    os.unlink(part[key])


def _close(part: dict) -> None:
    fd = part.pop("fd", None)
    if fd is not None:
        os.close(fd)


def _final_of(path: Path, finals: list[Path]) -> Path:
    """The final a temporary name belongs to (errors name the file the user knows; a journal, its folder)."""
    if _JOURNAL.fullmatch(path.name):
        return path.parent
    return next((f for f in finals if path == f or path.name.startswith(f".{f.name}.") and path.parent == f.parent),
                path)


def _unchanged(finals: list[Path], what: str) -> str:
    named = ", ".join(f"'{f}'" for f in finals)
    return f"nothing was replaced ({what}: {named})" if what else f"nothing was replaced ({named})"


def recover(folder: str | os.PathLike) -> list[Path]:
    """Finish the sets a killed run left journals for in ``folder``; returns the finals it renamed.

    Call it holding the lock of what the set writes (a live writer's journal must not be taken over); a
    journal whose writer still holds it (flock) is left alone anyway. Leftover ``.new``/``.old`` files of a
    run killed before its journal was written (so, before anything was replaced) are removed.
    """
    folder = Path(folder)
    renamed: list[Path] = []
    try:
        journals = [p for p in folder.iterdir() if _JOURNAL.fullmatch(p.name)]
    except OSError:
        return renamed
    for journal in journals:
        if lock_held(journal):
            continue
        parts = _read_journal(journal)
        for part in parts:
            if os.path.lexists(part["new"]):  # not renamed yet: the set was written, finish it
                with contextlib.suppress(OSError):
                    os.replace(part["new"], part["final"])
                    renamed.append(Path(part["final"]))
        for part in parts:
            if part.get("old"):
                with contextlib.suppress(OSError):
                    os.unlink(part["old"])
        with contextlib.suppress(OSError):
            journal.unlink()
    for final_name in {m.group(1) for p in _safe_list(folder) if (m := re.fullmatch(r"\.(.+)" + _PART, p.name))}:
        remove_stale(folder, re.escape(f".{final_name}") + _PART)
    return renamed


def _read_journal(journal: Path) -> list[dict]:
    """The parts a journal lists; [] for one that is unreadable or not ours (then nothing is touched)."""
    try:
        parts = json.loads(read_regular(journal, MAX_JOURNAL_BYTES))
    except (OSError, ValueError, RecursionError):
        return []
    ok = isinstance(parts, list) and all(isinstance(p, dict) and _ours(p) for p in parts)
    return parts if ok else []


def _ours(part: dict) -> bool:
    """A part as :func:`_prepare` makes it: its ``.new`` and ``.old`` files beside the final, named after it
    (a journal names no other path, so recovery renames nothing else)."""
    final, new, old = part.get("final"), part.get("new"), part.get("old")
    if not isinstance(final, str) or not isinstance(new, str) or not (old is None or isinstance(old, str)):
        return False
    final = Path(final)
    name = re.escape(f".{final.name}") + _PART
    return all(Path(p).parent == final.parent and re.fullmatch(name, Path(p).name) for p in (new, old) if p) \
        and new.endswith(".new") and (old is None or old == new[:-len(".new")] + ".old")


def _safe_list(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError:
        return []

