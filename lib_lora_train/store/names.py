"""Project and version names: each becomes one folder name, so none may reach outside the store."""

from __future__ import annotations

import re

MAX_NAME_LENGTH = 100
# characters Windows forbids in file names, plus both separators; control characters are checked separately
_RESERVED_CHARS = frozenset('<>:"/\\|?*')
# device names Windows reserves with or without an extension ("con", "nul.txt")
_WINDOWS_DEVICES = re.compile(r"^(con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³])(\..*)?$", re.IGNORECASE)


class StoreError(ValueError):
    """A store operation that cannot be done; the message names the project/version and the fix."""


def validate_name(name: object, what: str = "project") -> str:
    """Return ``name`` unchanged if it is safe as a single folder name, else raise :class:`StoreError`.

    Refused: empty or longer than 100 characters, path separators, "..", a leading dot (hidden folders; the trash
    lives in ``.trash``), characters Windows forbids (``<>:"|?*``) and control characters, leading or trailing
    spaces and a trailing dot (Windows strips them, so two names would share a folder), and Windows device names.
    """
    if not isinstance(name, str):
        raise StoreError(f"the {what} name must be text, got {type(name).__name__}")
    if not name:
        raise StoreError(f"the {what} name is empty; type a name such as 'mychar'")
    if len(name) > MAX_NAME_LENGTH:
        raise StoreError(f"the {what} name is {len(name)} characters long; use at most {MAX_NAME_LENGTH}")
    bad = sorted({c for c in name if c in _RESERVED_CHARS or ord(c) < 32 or ord(c) == 127})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise StoreError(f"the {what} name {name!r} contains {shown}; use letters, digits, '-', '_' or spaces")
    if ".." in name:
        raise StoreError(f"the {what} name {name!r} contains '..'; use a plain name without dots in a row")
    if name.startswith("."):
        raise StoreError(f"the {what} name {name!r} starts with a dot; start it with a letter or digit")
    if name != name.strip() or name.endswith("."):
        raise StoreError(f"the {what} name {name!r} starts or ends with a space or ends with a dot; remove them")
    if _WINDOWS_DEVICES.match(name):
        raise StoreError(f"the {what} name {name!r} is reserved by Windows; choose another name")
    return name
