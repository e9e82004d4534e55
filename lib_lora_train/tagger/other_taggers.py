"""Another installed extension that serves the WD14 tagger's HTTP routes (``/tagger/v1/...``), found by its files.

The WD14 tagger extension (toriato's original, picobyte's maintained fork and their forks) mounts
``/tagger/v1/interrogate``, ``/interrogators`` and ``/unload-interrogators``; with it installed beside us, both would
claim the same paths. Host-neutral: the host adapter passes the folders of its installed extensions.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

API_PREFIX = "/tagger/v1"
# where such an extension keeps its Python files; bounded so that a huge extension cannot slow the start down
_SEARCHED = ("tagger/*.py", "scripts/*.py", "*.py")
_MAX_FILES = 64
_MAX_BYTES = 512 * 1024


def serves_tagger_api(folder: str | os.PathLike) -> bool:
    """True when the extension in ``folder`` has Python code naming the tagger API's path prefix."""
    root = Path(folder)
    seen = 0
    for pattern in _SEARCHED:
        for path in sorted(root.glob(pattern)):
            seen += 1
            if seen > _MAX_FILES:
                return False
            try:
                small = path.is_file() and path.stat().st_size <= _MAX_BYTES
                if small and API_PREFIX in path.read_text(encoding="utf-8", errors="replace"):
                    return True
            except OSError:
                continue
    return False


def other_tagger_extensions(
    extensions: Iterable[tuple[str, str | os.PathLike]], own_folder: str | os.PathLike
) -> list[str]:
    """The names of the ``(name, folder)`` extensions, other than the one in ``own_folder``, that serve the API."""
    own = Path(own_folder).resolve()
    found = []
    for name, folder in extensions:
        try:
            if Path(folder).resolve() == own:
                continue
        except OSError:
            continue
        if serves_tagger_api(folder):
            found.append(name)
    return found
