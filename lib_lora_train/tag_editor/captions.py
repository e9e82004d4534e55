"""Caption text <-> tag lists.

A caption is a comma-separated list of booru tags. Parsing keeps the user's order (the first tag is usually the
activation tag, kept first by ``keep_tokens``) and keeps duplicates (removing them is an explicit operation), but
normalises whitespace so that ``"blue  eyes"`` and ``" blue eyes"`` are the same tag.
"""

from __future__ import annotations

from collections.abc import Iterable

SEPARATOR = ", "


def normalize_tag(tag: str) -> str:
    """One tag with surrounding whitespace removed and inner runs of whitespace (newlines too) made one space."""
    return " ".join(tag.split())


def split_tags(text: str) -> list[str]:
    """Caption text -> tags in order; empty items (``"a,,b"``, a trailing comma) are dropped."""
    if text.startswith("\ufeff"):  # a BOM left by some Windows editors is not part of the first tag
        text = text[1:]
    text = text.strip()
    # ASCII and printable means no tab, newline or other control character: with no double space, every tag is
    # already normalised once stripped (three C-speed scans instead of a regex)
    if text.isascii() and text.isprintable() and "  " not in text:
        # the common case, a caption already written as "a, b, c": stripping each tag is all it needs
        return [tag for tag in map(str.strip, text.split(",")) if tag]
    # str.split() with no argument splits on runs of any whitespace and drops the ends
    return [tag for tag in (" ".join(part.split()) for part in text.split(",")) if tag]


def join_tags(tags: Iterable[str]) -> str:
    """Tags -> the caption text that is written to disk (``"a, b, c"``)."""
    return SEPARATOR.join(tags)


def parse_tag_list(text: str) -> list[str]:
    """What a user types into a "tags" box: commas or new lines separate tags; duplicates are dropped."""
    seen: dict[str, None] = {}
    for line in text.splitlines():
        for tag in split_tags(line):
            seen.setdefault(tag, None)
    return list(seen)


def unique_in_order(tags: Iterable[str]) -> list[str]:
    """Tags with repeats removed, keeping the first occurrence of each."""
    return list(dict.fromkeys(tags))
