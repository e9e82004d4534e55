"""From a model's probabilities to the tags of one caption, following the user's options."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from lib_lora_train.tagger.tag_table import TagTable

SortBy = Literal["confidence", "name"]
SORT_CHOICES = ("confidence", "name")

# Danbooru tags that are faces drawn with underscores; replacing those would destroy them
KAOMOJI = frozenset(
    {"0_0", "(o)_(o)", "+_+", "+_-", "._.", "<o>_<o>", "<|>_<|>", "=_=", ">_<", "3_3", "6_9", ">_o", "@_@"}
    | {"^_^", "o_o", "u_u", "x_x", "|_|", "||_||", "^_-", "-_-", "t_t", "v_v", ";_;", "*_*", "o_0", "0_o"}
)
_TWO_LETTERS = re.compile(r"[a-z]{2}", re.IGNORECASE)


class TagOptionsError(ValueError):
    """An option that cannot be used; ``field`` names it."""

    def __init__(self, field_name: str, message: str):
        self.field = field_name
        super().__init__(f"{field_name}: {message}")


def is_kaomoji(name: str) -> bool:
    """True for face tags such as ``^_^`` whose underscores are part of the drawing."""
    # beyond the known list: an underscore tag without two letters in a row is a face, never words
    return name in KAOMOJI or ("_" in name and not _TWO_LETTERS.search(name) and len(name) <= 8)


def parse_tag_list(text: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """Comma- or newline-separated text (or a list) -> trimmed non-empty entries, order kept."""
    if not text:
        return ()
    items = text if isinstance(text, (list, tuple)) else re.split(r"[,\n]", text)
    return tuple(item.strip() for item in items if item and item.strip())


def normalize_tag(tag: str) -> str:
    """The form two tags are compared in: lower case, spaces for underscores, brackets unescaped."""
    t = tag.strip().replace("\\(", "(").replace("\\)", ")")
    if not is_kaomoji(t):
        t = t.replace("_", " ")
    return " ".join(t.lower().split())


@dataclass(frozen=True)
class TagOptions:
    """Everything that shapes a caption. Validated on creation; bad values raise ``TagOptionsError``."""

    general_threshold: float = 0.35
    character_threshold: float = 0.85
    include_rating: bool = False
    exclude: tuple[str, ...] = ()  # plain tags, or /regular expressions/ matched against the whole tag
    additional: tuple[str, ...] = ()  # always first, in this order (activation tag, style tag...)
    character_first: bool = False
    replace_underscores: bool = True
    escape_brackets: bool = False
    sort_by: SortBy = "confidence"
    max_tags: int = 0  # 0 = no limit; counts model tags, not additional ones
    _patterns: tuple[re.Pattern, ...] = field(default=(), init=False, repr=False, compare=False)
    _plain: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("general_threshold", "character_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise TagOptionsError(name, f"{value!r} is not a probability; use a value between 0 and 1")
        if self.sort_by not in SORT_CHOICES:
            raise TagOptionsError("sort_by", f"{self.sort_by!r} is not one of: {', '.join(SORT_CHOICES)}")
        if isinstance(self.max_tags, bool) or not isinstance(self.max_tags, int) or self.max_tags < 0:
            raise TagOptionsError("max_tags", f"{self.max_tags!r} must be 0 (no limit) or a positive whole number")
        object.__setattr__(self, "exclude", parse_tag_list(self.exclude))
        object.__setattr__(self, "additional", parse_tag_list(self.additional))
        patterns, plain = [], set()
        for entry in self.exclude:
            if len(entry) > 2 and entry.startswith("/") and entry.endswith("/"):
                try:
                    patterns.append(re.compile(entry[1:-1], re.IGNORECASE))
                except re.error as exc:
                    raise TagOptionsError("exclude", f"{entry} is not a valid regular expression ({exc})") from None
            else:
                plain.add(normalize_tag(entry))
        object.__setattr__(self, "_patterns", tuple(patterns))
        object.__setattr__(self, "_plain", frozenset(plain))

    def is_excluded(self, raw_name: str) -> bool:
        if normalize_tag(raw_name) in self._plain:
            return True
        spaced = raw_name.replace("_", " ")
        return any(p.fullmatch(raw_name) or p.fullmatch(spaced) for p in self._patterns)

    def format(self, raw_name: str) -> str:
        """A model tag as it will be written: underscores and brackets per the options."""
        tag = raw_name
        if self.replace_underscores and not is_kaomoji(tag):
            tag = tag.replace("_", " ")
        if self.escape_brackets:
            tag = tag.replace("(", "\\(").replace(")", "\\)")
        return tag


@dataclass
class TagResult:
    """The tags of one image. ``tags`` is the caption's order; the dicts keep confidences for display."""

    tags: list[str]
    confidences: dict[str, float]  # formatted model tag -> probability, in caption order
    ratings: dict[str, float]  # every rating the model knows -> probability

    @property
    def caption(self) -> str:
        return ", ".join(self.tags)


def select_tags(probs: np.ndarray, table: TagTable, options: TagOptions) -> TagResult:
    """Apply thresholds, exclusions, ordering and formatting to one image's probabilities."""
    # float64 so that a threshold compares against exactly the value that is reported
    probs = np.asarray(probs, dtype=np.float64)
    ratings = {table.names[i]: float(probs[i]) for i in np.flatnonzero(table.rating_mask)}
    keep = (table.general_mask & (probs >= options.general_threshold)) | (
        table.character_mask & (probs >= options.character_threshold)
    )
    picked = [int(i) for i in np.flatnonzero(keep) if not options.is_excluded(table.names[i])]
    if options.max_tags and len(picked) > options.max_tags:
        picked = sorted(picked, key=lambda i: (-probs[i], table.names[i]))[: options.max_tags]
    if options.sort_by == "confidence":
        picked.sort(key=lambda i: (-probs[i], table.names[i]))
    else:
        picked.sort(key=lambda i: normalize_tag(table.names[i]))
    if options.character_first:
        picked.sort(key=lambda i: not table.character_mask[i])  # stable: keeps the order within each group
    model_tags = [(options.format(table.names[i]), float(probs[i])) for i in picked]
    if options.include_rating and ratings:
        top = max(ratings, key=ratings.get)
        if not options.is_excluded(top):
            model_tags.append((options.format(top), ratings[top]))
    seen = {normalize_tag(t) for t in options.additional}
    tags, confidences = list(dict.fromkeys(options.additional)), {}
    for tag, confidence in model_tags:
        key = normalize_tag(tag)
        if key not in seen:
            seen.add(key)
            tags.append(tag)
            confidences[tag] = confidence
    return TagResult(tags, confidences, ratings)


TagOrder = Literal["model", "confidence"]
TAG_ORDERS = ("model", "confidence")


def raw_confidences(
    probs: np.ndarray, table: TagTable, threshold: float, order: TagOrder = "model"
) -> tuple[dict[str, float], dict[str, float]]:
    """(ratings, tags above ``threshold``) with the model's own tag names: the shape the tagger API returns.

    ``order`` "model": the tags in the order of the model's tag list (what the WD14 tagger extension answers);
    "confidence": most confident first.
    """
    if order not in TAG_ORDERS:
        raise TagOptionsError("tag_order", f"{order!r} is not one of: {', '.join(TAG_ORDERS)}")
    probs = np.asarray(probs, dtype=np.float64)
    ratings = {table.names[i]: float(probs[i]) for i in np.flatnonzero(table.rating_mask)}
    above = [int(i) for i in np.flatnonzero(~table.rating_mask & (probs > threshold))]
    if order == "confidence":
        above.sort(key=lambda i: -probs[i])
    return ratings, {table.names[i]: float(probs[i]) for i in above}
