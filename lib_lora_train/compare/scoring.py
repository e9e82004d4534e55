"""Automatic epoch scoring from tagger confidences: fidelity (does it look like the subject?) and flexibility (does it
still follow the rest of the prompt?).

- **Fidelity** of an image: the share of the version's *trait tags* (what the subject always has: hair colour, eye
  colour, outfit…) that the tagger finds in it at or above the threshold.
- **Flexibility**: the share of the prompt's *other* tags (pose, background, clothing the prompt asks for, excluding
  the activation tag and the traits) that the tagger finds. An overcooked LoRA redraws its training images and ignores
  them; an undercooked one follows the prompt but misses the traits.

The best trade-off maximises the **harmonic mean** of the two (like an F1 score). The arithmetic mean would let a burnt
epoch with fidelity 1.0 and flexibility 0.4 (mean 0.70) beat a balanced one at 0.65 / 0.65; the harmonic mean (0.57 vs
0.65) does not, because it is dominated by the weaker of the two. Ties go to the earlier epoch (less overfit risk),
then to the weight nearest 1. The Pareto front is returned as well so the chart can show every non-dominated cell.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

from .lora_tags import strip_lora_tags

# what a tagger does for scoring: images in, one {tag: confidence} per image out
TagImages = Callable[[Sequence[object]], list[dict[str, float]]]

DEFAULT_THRESHOLD = 0.35
_WEIGHT_SYNTAX = re.compile(r":\s*-?[\d.]+\s*$")


def normalize_tag(tag: str) -> str:
    """Compare tags the way users write them: case-, underscore- and prompt-syntax-insensitive.

    ``(Long_Hair:1.2)`` -> ``long hair``; ``\\(artist\\)`` escapes are undone.
    """
    text = tag.strip().replace("\\(", "\x00").replace("\\)", "\x01")
    # emphasis brackets wrap the whole tag: strip as many closing brackets as there are opening ones, so that a tag
    # ending in its own bracket (bow_(weapon)) keeps it
    opening = len(text) - len(text.lstrip("([{"))
    text = text[opening:]
    for _ in range(opening):
        text = text[:-1] if text.endswith((")", "]", "}")) else text
    text = _WEIGHT_SYNTAX.sub("", text).strip()
    text = text.replace("\x00", "(").replace("\x01", ")")
    return " ".join(text.replace("_", " ").lower().split())


def prompt_tags(prompt: str) -> list[str]:
    """The comma-separated tags of a prompt, normalised, without LoRA tags, ``BREAK`` or repeats."""
    parts = re.split(r"[,\n]|\bBREAK\b", strip_lora_tags(prompt))
    return list(dict.fromkeys(t for t in (normalize_tag(p) for p in parts) if t))


def frequent_tags(tag_sets: Iterable[Iterable[str]], min_share: float = 0.5) -> list[str]:
    """Tags present in at least ``min_share`` of the sets (most frequent first): the traits of a dataset."""
    sets = [{normalize_tag(t) for t in tags if normalize_tag(t)} for tags in tag_sets]
    if not sets:
        return []
    counts: dict[str, int] = {}
    for tags in sets:
        for tag in tags:
            counts[tag] = counts.get(tag, 0) + 1
    needed = min_share * len(sets)
    kept = [t for t, n in counts.items() if n >= needed]
    return sorted(kept, key=lambda t: (-counts[t], t))


def present_tags(confidences: Mapping[str, float], threshold: float) -> set[str]:
    """The normalised tags a tagger result holds at or above ``threshold``."""
    return {normalize_tag(t) for t, c in confidences.items() if c >= threshold}


@dataclass
class CellScore:
    """Scores of one image; None where there was nothing to score (no traits, or no other prompt tags)."""

    fidelity: float | None
    flexibility: float | None
    found_traits: list[str] = field(default_factory=list)
    found_other: list[str] = field(default_factory=list)


def score_image(
    confidences: Mapping[str, float], traits: Sequence[str], other: Sequence[str], threshold: float
) -> CellScore:
    """Fidelity and flexibility of one tagger result."""
    present = present_tags(confidences, threshold)
    found_traits = [t for t in traits if t in present]
    found_other = [t for t in other if t in present]
    return CellScore(
        len(found_traits) / len(traits) if traits else None,
        len(found_other) / len(other) if other else None,
        found_traits,
        found_other,
    )


def other_prompt_tags(
    prompt: str, traits: Sequence[str], activation_tag: str, vocabulary: set[str] | None
) -> list[str]:
    """The prompt's tags that measure flexibility: not the activation tag, not a trait, and known to the tagger
    (a tagger cannot see "masterpiece"; counting it would make every epoch look inflexible)."""
    skip = set(traits) | {normalize_tag(activation_tag)}
    tags = [t for t in prompt_tags(prompt) if t not in skip]
    return [t for t in tags if t in vocabulary] if vocabulary is not None else tags


@dataclass
class TableEntry:
    """Mean scores of one epoch x weight over all prompts and seeds."""

    row: int
    col: int
    row_label: str
    col_label: str
    fidelity: float | None
    flexibility: float | None
    images: int
    is_reference: bool = False

    @property
    def balance(self) -> float | None:
        """Harmonic mean of fidelity and flexibility; the one that exists when only one does."""
        f, x = self.fidelity, self.flexibility
        if f is None or x is None:
            return f if x is None else x
        return 0.0 if f + x == 0 else 2 * f * x / (f + x)


def _mean(values: Sequence[float | None]) -> float | None:
    real = [v for v in values if v is not None]
    return sum(real) / len(real) if real else None


def aggregate(
    cells: Iterable[tuple[int, int, str, str, bool, CellScore]],
) -> list[TableEntry]:
    """(row, col, row label, col label, is reference, score) per image -> one entry per (row, col), row-major."""
    groups: dict[tuple[int, int], list] = {}
    for row, col, row_label, col_label, is_ref, score in cells:
        groups.setdefault((row, col), [row_label, col_label, is_ref, []])[3].append(score)
    table = []
    for (row, col), (row_label, col_label, is_ref, scores) in sorted(groups.items()):
        table.append(
            TableEntry(
                row,
                col,
                row_label,
                col_label,
                _mean([s.fidelity for s in scores]),
                _mean([s.flexibility for s in scores]),
                len(scores),
                is_ref,
            )
        )
    return table


def best_tradeoff(table: Sequence[TableEntry], weights: Sequence[float | None]) -> TableEntry | None:
    """The entry with the highest ``balance``; ties: earlier epoch row, then weight nearest 1. Reference excluded."""
    candidates = [e for e in table if not e.is_reference and e.balance is not None]
    if not candidates:
        return None

    def key(e: TableEntry) -> tuple:
        weight = weights[e.col] if e.col < len(weights) and weights[e.col] is not None else 1.0
        return (-round(e.balance or 0.0, 9), e.row, abs(1.0 - weight))

    return min(candidates, key=key)


def pareto_front(table: Sequence[TableEntry]) -> list[TableEntry]:
    """Entries that no other entry beats on both fidelity and flexibility (reference excluded)."""
    pts = [e for e in table if not e.is_reference and e.fidelity is not None and e.flexibility is not None]
    front = []
    for e in pts:
        dominated = any(
            o.fidelity >= e.fidelity
            and o.flexibility >= e.flexibility
            and (o.fidelity, o.flexibility) != (e.fidelity, e.flexibility)
            for o in pts
        )
        if not dominated:
            front.append(e)
    return front


@dataclass
class ScoreReport:
    """What the tab shows beside the grid and what the API returns."""

    traits: list[str]
    traits_source: str  # "given", "tagger", "captions" or "none"
    other_tags: list[list[str]]  # per prompt
    threshold: float
    table: list[TableEntry]
    best: TableEntry | None
    pareto: list[TableEntry]
    note: str = ""

    def to_dict(self) -> dict:
        data = asdict(self)
        for entry, src in zip(data["table"], self.table, strict=True):
            entry["balance"] = src.balance
        if self.best is not None:
            data["best"]["balance"] = self.best.balance
        return data
