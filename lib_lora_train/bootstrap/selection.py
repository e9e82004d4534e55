"""Which candidates join the dataset: the user's keep/reject marks, or the automatic choice of the top K that reach
the round's target with the views spread evenly (the point of the loop is the views the start images lack)."""

from __future__ import annotations

from collections.abc import Sequence

from lib_lora_train.bootstrap.scoring import CandidateScore, ranked

MIN_SCORE = 0.5  # below this a candidate lacks too many traits (or shows the wrong thing) to teach the character


def eligible(score: CandidateScore, min_score: float = MIN_SCORE) -> bool:
    return score.duplicate_of is None and score.score >= min_score


def auto_select(scores: Sequence[CandidateScore], count: int, *, min_score: float = MIN_SCORE) -> list[CandidateScore]:
    """Up to ``count`` eligible candidates, taken round-robin over the views (each view's best first, the views in
    the order of their best candidate), so that no view crowds out the others."""
    by_view: dict[str, list[CandidateScore]] = {}
    for score in ranked(scores):
        if eligible(score, min_score):
            by_view.setdefault(score.view, []).append(score)
    order = sorted(by_view, key=lambda v: (-by_view[v][0].score, v))
    chosen: list[CandidateScore] = []
    depth = 0
    while len(chosen) < count and any(depth < len(by_view[v]) for v in order):
        for view in order:
            if depth < len(by_view[view]) and len(chosen) < count:
                chosen.append(by_view[view][depth])
        depth += 1
    return chosen


def needed(target: int, dataset_size: int) -> int:
    """How many candidates a round must add to reach ``target`` images."""
    return max(0, target - dataset_size)


def parse_targets(text: str) -> list[int]:
    """``16,40`` -> [16, 40]: growing, each above the last."""
    try:
        targets = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise ValueError(f"targets {text!r}: write image counts separated by commas, e.g. 16,40") from None
    if not targets or any(b <= a for a, b in zip(targets, targets[1:], strict=False)) or targets[0] < 2:
        raise ValueError(f"targets {text!r}: give growing image counts of 2 or more, e.g. 16,40")
    return targets
