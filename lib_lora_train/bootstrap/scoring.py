"""Ranking the generated candidates: do they show the character (trait recall, the same fidelity measure as Epoch
Compare), the view that was asked, nothing that ruins a training image, and something new (perceptual-hash
distance to the dataset and to the better candidates)?"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

from lib_lora_train.bootstrap.prompts import view_shown
from lib_lora_train.compare.scoring import normalize_tag, present_tags

# tags that make an image a bad training image for one character, and what each costs
PENALTIES: dict[str, float] = {
    "multiple views": 0.6, "comic": 0.6, "4koma": 0.6, "split screen": 0.5, "collage": 0.5,
    "watermark": 0.5, "signature": 0.3, "text": 0.3, "english text": 0.3, "artist name": 0.3, "speech bubble": 0.4,
    "extra arms": 0.5, "extra legs": 0.5, "extra hands": 0.5, "extra digits": 0.3, "extra fingers": 0.3,
    "bad anatomy": 0.4, "multiple tails": 0.2,
}  # fmt: skip
# more people than a solo prompt asked for
CROWD = ("2girls", "3girls", "4girls", "5girls", "6+girls", "multiple girls", "2boys", "3boys", "multiple boys",
         "1boy 1girl")  # fmt: skip
CROWD_PENALTY = 0.8
VIEW_BONUS = 0.25  # the asked view shows; its absence costs as much
DUPLICATE_DISTANCE = 6  # of 64 bits: what the Tag Editor's near-duplicate finder uses


@dataclass
class CandidateScore:
    file: str
    view: str
    seed: int
    trait_recall: float
    view_shown: bool | None
    penalties: list[str] = field(default_factory=list)
    hash: int = 0
    duplicate_of: str | None = None
    score: float = 0.0

    @property
    def reasons(self) -> list[str]:
        lines = [f"traits {self.trait_recall:.0%}"]
        if self.view_shown is not None:
            lines.append(f"{self.view}: {'shown' if self.view_shown else 'not shown'}")
        lines += [f"-{p}" for p in self.penalties]
        if self.duplicate_of:
            lines.append(f"near-duplicate of {self.duplicate_of}")
        return lines

    def to_dict(self) -> dict:
        return {**asdict(self), "hash": f"{self.hash:016x}", "reasons": self.reasons}

    @classmethod
    def from_dict(cls, data: Mapping) -> CandidateScore:
        values = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        values["hash"] = int(str(values.get("hash", "0")), 16)
        return cls(**values)


def score_tags(file: str, view: str, seed: int, confidences: Mapping[str, float], traits: Sequence[str], *,
               threshold: float = 0.35, solo: bool = True) -> CandidateScore:  # fmt: skip
    """Score one candidate from its tagger output (before duplicates are known)."""
    present = present_tags(confidences, threshold)
    wanted = [normalize_tag(t) for t in traits if normalize_tag(t)]
    recall = sum(t in present for t in wanted) / len(wanted) if wanted else 1.0
    shown = view_shown(view, present)
    penalties = [tag for tag in PENALTIES if tag in present]
    if solo:
        penalties += [tag for tag in CROWD if tag in present]
    result = CandidateScore(file, view, seed, round(recall, 4), shown, penalties)
    result.score = _total(result)
    return result


def _total(score: CandidateScore) -> float:
    value = score.trait_recall
    if score.view_shown is not None:
        value += VIEW_BONUS if score.view_shown else -VIEW_BONUS
    value -= sum(PENALTIES.get(p, CROWD_PENALTY) for p in score.penalties)
    if score.duplicate_of:
        value -= 1.0
    return round(value, 4)


def hamming(a: int, b: int) -> int:
    return bin(a ^ b).count("1")


def mark_duplicates(scores: Sequence[CandidateScore], dataset_hashes: Mapping[str, int], *,
                    max_distance: int = DUPLICATE_DISTANCE) -> None:  # fmt: skip
    """Best first, a candidate that looks like a dataset image, or like a better candidate, is a near-duplicate:
    it would add nothing new (and a second copy of a view is how a LoRA overfits to it)."""
    kept: list[CandidateScore] = []
    for score in sorted(scores, key=lambda s: -s.score):
        twin = next((name for name, h in dataset_hashes.items() if hamming(score.hash, h) <= max_distance), None)
        if twin is None:
            twin = next((k.file for k in kept if hamming(score.hash, k.hash) <= max_distance), None)
        if twin is None:
            kept.append(score)
        else:
            score.duplicate_of = twin
            score.score = _total(score)


def ranked(scores: Sequence[CandidateScore]) -> list[CandidateScore]:
    """Best first; ties by file name, so the order is the same on every run."""
    return sorted(scores, key=lambda s: (-s.score, s.file))
