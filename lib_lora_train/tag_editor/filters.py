"""Which images the gallery, the tag list and the batch edits work on.

Tag conditions are set algebra on the dataset's index (no caption is scanned for them); only a text or regex
search looks at caption text, and only over the entries the tag conditions left.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from lib_lora_train.tag_editor.captions import normalize_tag
from lib_lora_train.tag_editor.dataset import Dataset

Mode = Literal["and", "or"]


@dataclass(frozen=True)
class TagFilter:
    """A filter; the default lets every image through.

    ``include`` with ``include_mode`` "and" keeps images that have all the tags, "or" those with any.
    ``exclude`` with ``exclude_mode`` "or" drops images with any of the tags, "and" only those with all of them.
    ``text`` is a substring (or, with ``regex``, a regular expression) searched in the caption text.
    ``without_caption`` keeps only images whose caption is missing or empty.
    """

    include: tuple[str, ...] = ()
    include_mode: Mode = "and"
    exclude: tuple[str, ...] = ()
    exclude_mode: Mode = "or"
    text: str = ""
    regex: bool = False
    case_sensitive: bool = False
    without_caption: bool = False
    compiled: re.Pattern | None = field(default=None, init=False, repr=False, compare=False)
    lowered: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("include_mode", "exclude_mode"):
            if getattr(self, name) not in ("and", "or"):
                raise ValueError(f"{name} must be 'and' or 'or', got {getattr(self, name)!r}")
        object.__setattr__(self, "include", tuple(t for t in map(normalize_tag, self.include) if t))
        object.__setattr__(self, "exclude", tuple(t for t in map(normalize_tag, self.exclude) if t))
        if self.text:
            lowered = not self.case_sensitive and not (self.regex and _has_upper_literal(self.text))
            if lowered:
                # re.IGNORECASE is 10-20x slower than matching lowercased text (cached by the dataset)
                source = self.text.lower() if not self.regex else self.text
                flags = 0
            else:
                source = self.text
                flags = 0 if self.case_sensitive else re.IGNORECASE
            if not self.regex:
                source = re.escape(source)
            try:
                object.__setattr__(self, "compiled", re.compile(source, flags))
            except re.error as exc:
                raise ValueError(f"search: {self.text!r} is not a valid regular expression ({exc})") from None
            object.__setattr__(self, "lowered", lowered)

    @property
    def is_empty(self) -> bool:
        return not (self.include or self.exclude or self.text or self.without_caption)


def _has_upper_literal(pattern: str) -> bool:
    """True if a regex has an upper-case letter that is not an escape like ``\\S``. Without one, a
    case-insensitive search can run on lowercased captions with a plain (fast) pattern."""
    escaped = False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char != char.lower():
            return True
    return False


def _combine(dataset: Dataset, tags: tuple[str, ...], mode: Mode) -> set[int]:
    sets = [dataset.index.get(tag, set()) for tag in tags]
    if mode == "or":
        return set().union(*sets)
    sets.sort(key=len)  # intersect from the smallest set: cost is bounded by the rarest tag
    result = set(sets[0])
    for members in sets[1:]:
        result &= members
        if not result:
            break
    return result


def apply_filter(dataset: Dataset, tag_filter: TagFilter) -> list[int]:
    """The ids of the entries that pass, in load order."""
    if tag_filter.is_empty:
        return dataset.ids()
    keep: set[int] | None = None
    if tag_filter.include:
        keep = _combine(dataset, tag_filter.include, tag_filter.include_mode)
    if tag_filter.without_caption:
        untagged = {i for i, e in dataset.entries.items() if not e.tags and not e.locked}
        keep = untagged if keep is None else keep & untagged
    if tag_filter.exclude:
        dropped = _combine(dataset, tag_filter.exclude, tag_filter.exclude_mode)
        keep = (set(dataset.entries) if keep is None else keep) - dropped
    candidates = dataset.ids() if keep is None else sorted(keep)
    if tag_filter.compiled is not None:
        search = tag_filter.compiled.search
        text = dataset.caption_lower if tag_filter.lowered else dataset.caption_text
        candidates = [i for i in candidates if search(text(i))]
    return candidates


def invert_selection(selected: Iterable[int], visible: Iterable[int]) -> list[int]:
    """The visible entries that are not selected (the selection is always within what the filter shows)."""
    chosen = set(selected)
    return [i for i in visible if i not in chosen]
