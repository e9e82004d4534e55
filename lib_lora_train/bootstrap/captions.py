"""Captions for the images that join the dataset: the activation tag first (``keep_tokens = 1``), then what the
tagger sees and the prompt asked for; during the rounds the traits stay in (the guides' "detailed tags" for the
weak style LoRA), for the final character round they are pruned so that the activation tag absorbs them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lib_lora_train.bootstrap.scoring import CROWD, PENALTIES
from lib_lora_train.compare.scoring import normalize_tag

# tagger tags that describe the picture, not the character, and must not be learned as part of it
_NEVER = {*PENALTIES, *CROWD, "general", "sensitive", "questionable", "explicit"}


def caption_for(activation_tag: str, confidences: Mapping[str, float], view: str, traits: Sequence[str], *,
                threshold: float = 0.35, prune_traits: bool = False) -> str:  # fmt: skip
    """``activation, view, tagger tags by confidence…`` with each tag once; traits left out when pruning."""
    pruned = {normalize_tag(t) for t in traits} if prune_traits else set()
    ordered = [activation_tag, view] + [t for t, c in sorted(confidences.items(), key=lambda kv: -kv[1])
                                        if c >= threshold]  # fmt: skip
    if not prune_traits:
        ordered[2:2] = list(traits)
    seen, kept = set(), []
    for tag in ordered:
        key = normalize_tag(tag)
        if not key or key in seen or key in _NEVER or (key in pruned and key != normalize_tag(activation_tag)):
            continue
        seen.add(key)
        kept.append(key)
    return ", ".join(kept)


def common_traits(tag_sets: Sequence[Mapping[str, float]], activation_tag: str, *, threshold: float = 0.35,
                  min_share: float = 0.75) -> list[str]:  # fmt: skip
    """What the tagger sees in most start crops: the traits to prefill (composition tags never count)."""
    from lib_lora_train.compare.scoring import frequent_tags, present_tags
    from lib_lora_train.compare.traits import is_trait_candidate

    sets = [present_tags(tags, threshold) for tags in tag_sets]
    return [t for t in frequent_tags(sets, min_share) if is_trait_candidate(t, activation_tag) and t not in _NEVER]
