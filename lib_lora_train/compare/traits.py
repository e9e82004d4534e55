"""The trait tags of a version: what its subject shows in (most of) its training images.

Sources, best first:
1. tags the user gave (the tab's field, the API's ``traits``, or ``traits`` recorded in the version's ``version.json``);
2. the tagger run on the version's dataset snapshot: tags it sees in at least ``min_share`` of the images. This is
   the better automatic source because the guides tell users to *prune* trait tags from captions (so the activation
   tag absorbs them): the captions no longer name the traits, the images still show them;
3. the captions: tags in at least ``min_share`` of them.
Composition tags (``solo``, ``1girl``, ``simple background``…) are frequent in every dataset but say nothing about the
subject, and would reward an overcooked LoRA that repeats its training backgrounds, so they are never traits.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from lib_lora_train.images import ImageLoadError, iter_image_files, load_rgb

from .scoring import TagImages, frequent_tags, normalize_tag, present_tags

MAX_DATASET_IMAGES = 64  # enough to find what most images share; bounds the tagging time
_COMPOSITION = re.compile(
    r"^(\d\+?(girl|boy|other)s?|multiple (girls|boys)|solo( focus)?|.*background|looking at viewer|"
    r"(upper|full|lower) body|portrait|cowboy shot|standing|sitting|simple background|no humans)$"
)


def is_trait_candidate(tag: str, activation_tag: str = "") -> bool:
    """False for composition tags and for the activation tag itself."""
    norm = normalize_tag(tag)
    return bool(norm) and norm != normalize_tag(activation_tag) and not _COMPOSITION.match(norm)


def _dataset_images(dataset: Path) -> list[Path]:
    return list(iter_image_files(dataset, recursive=True))[:MAX_DATASET_IMAGES] if dataset.is_dir() else []


def caption_tag_sets(dataset: Path, caption_extension: str = ".txt") -> list[list[str]]:
    """Tags of each caption file beside the dataset's images (images without one are skipped)."""
    sets = []
    for image in _dataset_images(dataset):
        caption = image.with_suffix(caption_extension)
        if caption.is_file():
            sets.append([t for t in caption.read_text(encoding="utf-8", errors="replace").split(",") if t.strip()])
    return sets


def collect_traits(
    *,
    explicit: Sequence[str] = (),
    dataset: Path | None = None,
    tag_images: TagImages | None = None,
    threshold: float = 0.35,
    min_share: float = 0.6,
    activation_tag: str = "",
) -> tuple[list[str], str, list[str]]:
    """(traits, source, problems): source is "given", "tagger", "captions" or "none"; problems name skipped files."""
    given = [normalize_tag(t) for t in explicit if is_trait_candidate(t, activation_tag)]
    if given:
        return list(dict.fromkeys(given)), "given", []
    problems: list[str] = []
    if dataset is not None and tag_images is not None:
        images = []
        for path in _dataset_images(dataset):
            try:
                images.append(load_rgb(path))
            except ImageLoadError as exc:
                problems.append(str(exc))
        if images:
            sets = [present_tags(conf, threshold) for conf in tag_images(images)]
            traits = [t for t in frequent_tags(sets, min_share) if is_trait_candidate(t, activation_tag)]
            if traits:
                return traits, "tagger", problems
    if dataset is not None:
        traits = [
            t for t in frequent_tags(caption_tag_sets(dataset), min_share) if is_trait_candidate(t, activation_tag)
        ]
        if traits:
            return traits, "captions", problems
    return [], "none", problems
