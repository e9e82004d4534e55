"""Deleting the files a save displaced, after the save has returned.

A save swaps each new caption into place (``fileio.exchange_files``), which leaves the previous version of every
caption in a hidden temporary file. Deleting 10,000 small files costs seconds of disk time (4-5 s on the build
machine) and nobody needs to wait for it: every caption is already complete and on disk. So the deletions run in
a background thread. It is not a daemon thread, so the interpreter finishes it before it exits; a process that is
killed leaves hidden ``.<caption>.<pid>.<n>.tmp`` files, which the next load of the folder sweeps away
(``stale_temp``) and which every reader ignores meanwhile (hidden names).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable

_lock = threading.Lock()
_threads: list[threading.Thread] = []
_sequence = 0

# temp names written by saving.py: ".<caption name>.<pid>.<save number>.tmp" (older builds: no save number)
_TEMP_NAME = re.compile(r"\..+?\.(\d+)(?:\.\d+)?\.tmp")  # the shortest name: "a.txt", pid, number


def next_save_number() -> int:
    """A number unique in this process, so that a save never reuses a temp name still waiting to be deleted."""
    global _sequence
    with _lock:
        _sequence += 1
        return _sequence


def discard_later(paths: Iterable[str]) -> None:
    """Delete ``paths`` in a background thread; a file already gone is fine."""
    paths = list(paths)
    if not paths:
        return
    thread = threading.Thread(target=_unlink_all, args=(paths,), name="tag-editor-cleanup")
    with _lock:
        _threads[:] = [t for t in _threads if t.is_alive()]
        _threads.append(thread)
    thread.start()


def wait_for_cleanup(timeout: float | None = None) -> bool:
    """Block until the background deletions started so far are done; False if ``timeout`` ran out first."""
    with _lock:
        pending = list(_threads)
    for thread in pending:
        thread.join(timeout)
        if thread.is_alive():
            return False
    return True


def stale_temp(name: str) -> bool:
    """Whether a hidden file name is a temp file of a save by a process that no longer runs (POSIX only)."""
    match = _TEMP_NAME.fullmatch(name)
    if match is None or os.name != "posix":
        return False
    pid = int(match[1])
    if pid == os.getpid():
        return False  # ours: a save or a cleanup of this process may still be using it
    try:
        os.kill(pid, 0)  # signal 0 only asks whether the process exists
    except ProcessLookupError:
        return True
    except OSError:  # it exists (owned by another user)
        return False
    return False


def _unlink_all(paths: list[str]) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except OSError:
            pass  # gone already, or the folder went away: nothing is left to clean
