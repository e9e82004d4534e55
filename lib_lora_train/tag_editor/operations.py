"""Batch edits, each a small immutable object with a pure ``transform(tags) -> tags``.

``Dataset.apply`` runs one over a set of entries and records the before/after tags of those it changed as one undo
step. An operation that can only change captions holding certain tags says so in ``touches``; the dataset then
visits just those entries through its index (removing a tag from 10,000 captions visits the 300 that have it).
Operations never reorder or deduplicate tags they are not about, so an edit does exactly what its label says.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from lib_lora_train.tag_editor.captions import join_tags, normalize_tag, split_tags, unique_in_order


def _clean(tags: tuple[str, ...] | list[str], what: str) -> tuple[str, ...]:
    cleaned = tuple(unique_in_order(t for t in (normalize_tag(x) for x in tags) if t))
    if not cleaned:
        raise ValueError(f"{what}: no tag given; type one or more tags separated by commas")
    return cleaned


@dataclass(frozen=True)
class AddTags:
    """Add tags at the front (after the first ``keep_first`` tags) or at the end.

    At the front, tags already present elsewhere move to the front, so an activation tag added with
    ``keep_first=0`` always ends up first. At the end, only missing tags are appended.
    """

    tags: tuple[str, ...]
    position: Literal["front", "end"] = "front"
    keep_first: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "tags", _clean(self.tags, "add tags"))
        if self.position not in ("front", "end"):
            raise ValueError(f"position must be 'front' or 'end', got {self.position!r}")
        if self.keep_first < 0:
            raise ValueError("keep_first must be 0 or more")

    @property
    def label(self) -> str:
        return f"add {join_tags(self.tags)} at the {self.position}"

    @property
    def touches(self) -> None:
        return None

    def transform(self, tags: list[str]) -> list[str]:
        if self.position == "end":
            present = set(tags)
            return tags + [t for t in self.tags if t not in present]
        if not self.keep_first:
            moving = set(self.tags)
            if moving.isdisjoint(tags):  # the usual case (a new activation tag): no filtering pass needed
                return [*self.tags, *tags]
            return [*self.tags, *[t for t in tags if t not in moving]]
        head = tags[: self.keep_first]
        head_set = set(head)
        adding = [t for t in self.tags if t not in head_set]
        moving = set(adding)
        return head + adding + [t for t in tags[self.keep_first :] if t not in moving]


@dataclass(frozen=True)
class RemoveTags:
    """Remove every occurrence of the given tags."""

    tags: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "tags", _clean(self.tags, "remove tags"))

    @property
    def label(self) -> str:
        return f"remove {join_tags(self.tags)}"

    @property
    def touches(self) -> frozenset[str]:
        return frozenset(self.tags)

    def transform(self, tags: list[str]) -> list[str]:
        gone = self.touches
        return [t for t in tags if t not in gone]


def _replace(tags: list[str], mapping: Mapping[str, tuple[str, ...]]) -> list[str]:
    """Replace each tag in ``mapping`` in place; a replacement tag that already appears earlier is not repeated."""
    produced = {t for new in mapping.values() for t in new}
    out: list[str] = []
    seen: set[str] = set()
    for tag in tags:
        for item in mapping.get(tag, (tag,)):
            if item in produced:
                if item in seen:
                    continue
                seen.add(item)
            out.append(item)
    return out


@dataclass(frozen=True)
class ReplaceTag:
    """Rename ``old`` to ``new`` where it stands (``new`` may be several tags, e.g. ``white background, simple
    background`` for ``transparent background``)."""

    old: str
    new: tuple[str, ...]

    def __post_init__(self) -> None:
        old = normalize_tag(self.old)
        if not old:
            raise ValueError("replace: type the tag to replace")
        object.__setattr__(self, "old", old)
        object.__setattr__(self, "new", _clean(self.new, "replace with"))

    @property
    def label(self) -> str:
        return f"replace {self.old} with {join_tags(self.new)}"

    @property
    def touches(self) -> frozenset[str]:
        return frozenset((self.old,))

    def transform(self, tags: list[str]) -> list[str]:
        return _replace(tags, {self.old: self.new})


@dataclass(frozen=True)
class MergeTags:
    """Merge synonyms: every tag of ``sources`` becomes ``target``, kept once, where the first of them stood."""

    sources: tuple[str, ...]
    target: str

    def __post_init__(self) -> None:
        target = normalize_tag(self.target)
        if not target:
            raise ValueError("merge: type the tag to merge into")
        object.__setattr__(self, "target", target)
        object.__setattr__(self, "sources", _clean(self.sources, "merge"))

    @property
    def label(self) -> str:
        return f"merge {join_tags(self.sources)} into {self.target}"

    @property
    def touches(self) -> frozenset[str]:
        return frozenset(self.sources) | {self.target}

    def transform(self, tags: list[str]) -> list[str]:
        return _replace(tags, {s: (self.target,) for s in (*self.sources, self.target)})


@dataclass(frozen=True)
class RegexReplace:
    """``re.sub`` on each tag (or, with ``whole_caption``, on the caption text); the result is split into tags
    again, so a replacement may produce several tags or none."""

    pattern: str
    replacement: str
    whole_caption: bool = False
    compiled: re.Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.pattern:
            raise ValueError("regex replace: type a pattern")
        try:
            object.__setattr__(self, "compiled", re.compile(self.pattern))
        except re.error as exc:
            raise ValueError(f"regex replace: {self.pattern!r} is not a valid regular expression ({exc})") from None

    @property
    def label(self) -> str:
        return f"regex replace /{self.pattern}/ with {self.replacement!r}"

    @property
    def touches(self) -> None:
        return None

    def transform(self, tags: list[str]) -> list[str]:
        if self.whole_caption:
            return split_tags(self.compiled.sub(self.replacement, join_tags(tags)))
        out: list[str] = []
        for tag in tags:
            new = self.compiled.sub(self.replacement, tag)
            if new == tag:
                out.append(tag)
            else:
                out.extend(split_tags(new))
        return out


@dataclass(frozen=True)
class RemoveDuplicates:
    """Keep the first occurrence of each tag."""

    label: str = "remove duplicate tags"

    @property
    def touches(self) -> None:
        return None

    def transform(self, tags: list[str]) -> list[str]:
        return unique_in_order(tags)


@dataclass(frozen=True)
class SortTags:
    """Sort tags by name or by dataset frequency (most frequent first), leaving the first ``keep_first`` in place.

    ``frequencies`` is a snapshot taken when the operation is made (``Dataset.frequencies()``) so that sorting is
    a pure function and undo/redo reproduce it exactly.
    """

    by: Literal["name", "frequency"] = "name"
    keep_first: int = 0
    frequencies: Mapping[str, int] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.by not in ("name", "frequency"):
            raise ValueError(f"sort by must be 'name' or 'frequency', got {self.by!r}")
        if self.by == "frequency" and self.frequencies is None:
            raise ValueError("sorting by frequency needs the dataset's frequencies")
        if self.keep_first < 0:
            raise ValueError("keep_first must be 0 or more")

    @property
    def label(self) -> str:
        kept = f", first {self.keep_first} fixed" if self.keep_first else ""
        return f"sort tags by {self.by}{kept}"

    @property
    def touches(self) -> None:
        return None

    def transform(self, tags: list[str]) -> list[str]:
        head, rest = tags[: self.keep_first], tags[self.keep_first :]
        if self.by == "name":
            return head + sorted(rest)
        freq = self.frequencies or {}
        return head + sorted(rest, key=lambda t: (-freq.get(t, 0), t))


@dataclass(frozen=True)
class Truncate:
    """Keep only the first ``count`` tags (the activation tag, first, always survives a count of 1 or more)."""

    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"truncate: keep at least 1 tag (got {self.count})")

    @property
    def label(self) -> str:
        return f"truncate to {self.count} tags"

    @property
    def touches(self) -> None:
        return None

    def transform(self, tags: list[str]) -> list[str]:
        return tags[: self.count]
