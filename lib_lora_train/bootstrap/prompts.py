"""The view matrix: the views, poses and framings the start images lack, each written into a prompt with the
activation tag and the traits, times N seeds.

Each view names the tags a WD14 tagger puts on an image that shows it, so that scoring can tell whether a "from
behind" candidate really is seen from behind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lib_lora_train.compare.lora_tags import format_lora_tag
from lib_lora_train.compare.scoring import normalize_tag

# view prompt -> tags that show it (any one); a view with no entry is only asked, never checked
VIEW_TAGS: dict[str, tuple[str, ...]] = {
    "from side": ("from side", "profile"),
    "from behind": ("from behind",),
    "from above": ("from above",),
    "from below": ("from below",),
    "full body": ("full body",),
    "upper body": ("upper body",),
    "close-up": ("portrait", "close-up", "face"),
    "cowboy shot": ("cowboy shot",),
    "sitting": ("sitting",),
    "standing": ("standing",),
    "looking back": ("looking back",),
    "dutch angle": ("dutch angle",),
}
DEFAULT_VIEWS = ("from side", "from behind", "from above", "from below", "full body", "upper body", "close-up",
                 "sitting", "standing")  # fmt: skip


@dataclass(frozen=True)
class CandidatePrompt:
    view: str
    seed: int
    prompt: str  # without the LoRA tag: that is added at render time with the round's epoch and weight

    def with_lora(self, lora_name: str, weight: float) -> str:
        return f"{self.prompt} {format_lora_tag(lora_name, weight)}"


def parse_views(text: str) -> list[str]:
    """The editable list: one view per line (or comma-separated), normalised, repeats dropped."""
    parts = [p for line in text.splitlines() for p in line.split(",")]
    return list(dict.fromkeys(v for v in (normalize_tag(p) for p in parts) if v))


def base_prompt(activation_tag: str, traits: Sequence[str], extra: str = "1girl, solo") -> str:
    """``activation, extra, traits`` with each tag once (the activation tag first, as in the captions)."""
    tags = [activation_tag, *[t.strip() for t in extra.split(",")], *traits]
    seen, kept = set(), []
    for tag in tags:
        key = normalize_tag(tag)
        if key and key not in seen:
            seen.add(key)
            kept.append(tag.strip())
    return ", ".join(kept)


def view_matrix(activation_tag: str, traits: Sequence[str], views: Sequence[str], seeds_per_view: int, seed: int,
                extra: str = "1girl, solo") -> list[CandidatePrompt]:  # fmt: skip
    """Every view x ``seeds_per_view`` seeds (``seed``, ``seed + 1``, …; the same seeds for every view, so views
    compare on equal terms)."""
    if seeds_per_view < 1:
        raise ValueError("seeds per view must be 1 or more")
    if not views:
        raise ValueError("the view list is empty: give one view per line (from side, from behind, …)")
    # the view right after the activation tag: at the end a long trait list would push it past CLIP's 75 tokens
    head, _, rest = base_prompt(activation_tag, traits, extra).partition(", ")
    return [CandidatePrompt(view, seed + i, f"{head}, {view}, {rest}" if rest else f"{head}, {view}")
            for view in views for i in range(seeds_per_view)]  # fmt: skip


def view_shown(view: str, present: set[str]) -> bool | None:
    """Whether the tagger's tags (normalised) show ``view``; None when the view has no tag to check."""
    wanted = VIEW_TAGS.get(normalize_tag(view))
    if not wanted:
        return None
    return any(normalize_tag(t) in present for t in wanted)
