"""Suggestions from the training guides: junk meta tags, trait tags to prune, synonyms to merge.

Everything here only *suggests*: the user confirms, then a normal operation (undoable) applies it. The rules are
deterministic and each suggestion carries a reason a user can check.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from lib_lora_train.tag_editor.dataset import Dataset

# Booru meta tags: about the file, the post or the site, never about what the image shows. Editable in the UI.
DEFAULT_META_TAGS: tuple[str, ...] = (
    "absurdres",
    "highres",
    "incredibly absurdres",
    "lowres",
    "commentary",
    "commentary request",
    "english commentary",
    "chinese commentary",
    "korean commentary",
    "symbol-only commentary",
    "check commentary",
    "translated",
    "translation request",
    "partially translated",
    "check translation",
    "artist name",
    "signature",
    "watermark",
    "sample watermark",
    "web address",
    "dated",
    "username",
    "twitter username",
    "patreon username",
    "pixiv id",
    "bad id",
    "bad pixiv id",
    "bad twitter id",
    "md5 mismatch",
    "jpeg artifacts",
    "image sample",
    "third-party edit",
    "non-web source",
    "paid reward available",
)

# Frequent in almost every dataset but describing the picture, not the character: never offered as traits.
DEFAULT_NOT_TRAITS: tuple[str, ...] = (
    "1girl",
    "1boy",
    "solo",
    "looking at viewer",
    "simple background",
    "white background",
    "upper body",
    "full body",
    "cowboy shot",
    "standing",
    "smile",
    "closed mouth",
    "open mouth",
    "blush",
)

# Words that make two otherwise similar tags mean different things ("long hair" / "very long hair").
_DISTINGUISHING = frozenset(
    "very absurdly extremely short long medium large huge small big tiny no multiple two three single "
    "over under between behind on in from above below across through "
    "red blue green yellow orange purple pink black white grey gray brown aqua silver gold blonde light dark "
    "left right upper lower front back side".split()
)


def _key(tag: str) -> str:
    """Spelling-insensitive form: ``Blue_Eyes`` and ``blue eyes`` are the same tag to a user."""
    return " ".join(tag.replace("_", " ").lower().split())


def find_meta_tags(dataset: Dataset, meta_tags: Iterable[str] = DEFAULT_META_TAGS) -> list[tuple[str, int]]:
    """Dataset tags that are meta tags (matched ignoring case and ``_`` vs space), with image counts."""
    wanted = {_key(t) for t in meta_tags if t.strip()}
    return sorted(
        ((tag, len(ids)) for tag, ids in dataset.index.items() if _key(tag) in wanted), key=lambda x: (-x[1], x[0])
    )


@dataclass(frozen=True)
class TraitSuggestion:
    tag: str
    count: int
    share: float  # fraction of the images considered

    @property
    def reason(self) -> str:
        return f"in {self.count} images ({self.share:.0%})"


def suggest_trait_tags(
    dataset: Dataset,
    ids: Iterable[int] | None = None,
    *,
    min_share: float = 0.6,
    keep: Iterable[str] = (),
    not_traits: Iterable[str] = DEFAULT_NOT_TRAITS,
) -> list[TraitSuggestion]:
    """Tags present in at least ``min_share`` of the images: the character's fixed traits (hair and eye colour,
    outfit) that an activation tag should absorb. ``keep`` (the activation tag) and ``not_traits`` are left out.
    Most common first."""
    if not 0 < min_share <= 1:
        raise ValueError(f"min_share must be in (0, 1], got {min_share}")
    id_list = dataset.ids() if ids is None else list(ids)
    if not id_list:
        return []
    counts = dataset.frequencies(None if ids is None else id_list)
    skip = {_key(t) for t in (*keep, *not_traits)}
    total = len(id_list)
    out = [
        TraitSuggestion(tag, n, n / total)
        for tag, n in counts.items()
        if n / total >= min_share and _key(tag) not in skip
    ]
    return sorted(out, key=lambda s: (-s.count, s.tag))


def _stem(word: str) -> str:
    """A crude, predictable stemmer: striped / stripes / stripe -> strip, smiling / smile -> smil."""
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not (suffix == "s" and word.endswith("ss")):
            word = word[: -len(suffix)]
            break
    if word.endswith("e") and len(word) > 3:
        word = word[:-1]
    return word


def _stems(tag: str) -> tuple[str, ...]:
    words = re.findall(r"[^\W_]+", tag.lower())
    return tuple(_stem(w) for w in words) or (tag.lower(),)


@dataclass(frozen=True)
class SynonymGroup:
    """Tags that probably mean the same thing; ``target`` is the most used of them, the one to merge into."""

    tags: tuple[str, ...]
    target: str
    reason: str


def suggest_synonym_groups(frequencies: Mapping[str, int], *, max_groups: int = 50) -> list[SynonymGroup]:
    """Group tags that are spelled alike or share their words.

    Two tags are linked when (a) their words are the same after case, ``_``/``-`` and a crude stemming
    (``blue_eyes`` / ``blue eyes``, ``smile`` / ``smiling``), or (b) they share at least half of their stemmed
    words, at least one shared word is a modifier (not the last word of both), and the words they do not share
    include no colour, size, position or degree word (so ``long hair`` / ``very long hair`` stay apart).
    ``striped shirt`` / ``vertical stripes`` / ``vertical-striped shirt`` form one group this way.
    """
    tags = sorted(frequencies)
    stems = {t: _stems(t) for t in tags}
    by_stem: dict[str, list[str]] = defaultdict(list)
    for tag in tags:
        for s in set(stems[tag]):
            by_stem[s].append(tag)
    parent = {t: t for t in tags}
    reasons: dict[str, set[str]] = defaultdict(set)

    def find(t: str) -> str:
        while parent[t] != t:
            parent[t] = parent[parent[t]]
            t = parent[t]
        return t

    def link(a: str, b: str, why: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
        reasons[a].add(why)

    same_words: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for tag in tags:
        same_words[tuple(sorted(stems[tag]))].append(tag)
    for group in same_words.values():
        for other in group[1:]:
            link(group[0], other, f"same words: {group[0]} / {other}")

    for shared_stem, members in by_stem.items():
        if len(members) > 200:  # a word in hundreds of tags ("hair") says nothing about synonymy
            continue
        for i, a in enumerate(members):
            sa = set(stems[a])
            for b in members[i + 1 :]:
                sb = set(stems[b])
                common = sa & sb
                if min(common) != shared_stem or len(common) * 2 < len(sa | sb):
                    continue  # each pair once (from its smallest shared stem), and half the words shared
                if all(s == stems[a][-1] and s == stems[b][-1] for s in common):
                    continue  # only the head noun is shared: "white shirt" / "black shirt"
                if (sa ^ sb) & _DISTINGUISHING or find(a) == find(b):
                    continue
                words = [w for w in re.findall(r"[^\W_]+", a.lower()) if _stem(w) in common]
                link(a, b, f"share {' '.join(words)}: {a} / {b}")

    groups: dict[str, list[str]] = defaultdict(list)
    for tag in tags:
        groups[find(tag)].append(tag)
    out = []
    for members in groups.values():
        if len(members) < 2:
            continue
        # ties: the spelling with spaces (the WebUI's prompt style), then the shorter, then by name
        target = min(members, key=lambda t: (-frequencies[t], "_" in t, len(t), t))
        why = "; ".join(sorted({r for m in members for r in reasons[m]}))
        out.append(SynonymGroup(tuple(sorted(members, key=lambda t: (-frequencies[t], t))), target, why))
    out.sort(key=lambda g: (-sum(frequencies[t] for t in g.tags), g.target))
    return out[:max_groups]
