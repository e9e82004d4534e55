"""Caption augmentation for each step: tag shuffling around fixed leading tags, tag dropout, caption dropout.

Tags are comma-separated. The first ``keep_tokens`` tags (usually the activation tag) stay first and are never
dropped; the others may be shuffled and dropped. Every random choice comes from the ``random.Random`` passed in, so
a run with the same seed sees the same captions.
"""

from __future__ import annotations

import random

from lib_lora_train.dataset.scan import split_tags


def process_caption(
    caption: str,
    rng: random.Random,
    *,
    shuffle: bool = True,
    keep_tokens: int = 1,
    tag_dropout: float = 0.0,
    caption_dropout: float = 0.0,
) -> str:
    """The caption to train one step with.

    With probability ``caption_dropout`` the whole caption becomes "" (the image trains unconditioned). Otherwise
    each tag after the first ``keep_tokens`` is dropped with probability ``tag_dropout`` and, with ``shuffle``, the
    remaining ones are shuffled; tags are re-joined with ", ". With neither shuffling nor tag dropout the caption is
    returned as written (natural-language captions keep their punctuation).
    """
    # draw only for the features that are on, so turning one on does not change the others' random stream
    if caption_dropout > 0 and rng.random() < caption_dropout:
        return ""
    if not shuffle and tag_dropout <= 0:
        return caption.strip()
    tags = split_tags(caption)
    keep = max(0, keep_tokens)
    kept, rest = tags[:keep], tags[keep:]
    if tag_dropout > 0:
        rest = [tag for tag in rest if rng.random() >= tag_dropout]
    if shuffle:
        rng.shuffle(rest)
    return ", ".join(kept + rest)
