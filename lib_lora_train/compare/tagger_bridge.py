"""The WD14 tagger as the scorer needs it: images -> {tag: confidence}, and the set of tags it can see.

Scoring never downloads a model (a comparison must not stall on a multi-hundred-MB download): it uses a model that
is already on disk, preferring the one the user chose, and otherwise reports that scores were skipped.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .scoring import TagImages, normalize_tag

CONFIDENCE_FLOOR = 0.05  # below any threshold anyone uses; keeps the per-image dicts small (models have ~10k tags)


def local_tagger_folder(models_dir: str | os.PathLike | None, preferred: str = "") -> tuple[str, Path] | None:
    """(name, folder) of a tagger model on disk: ``preferred`` when present, else the first local one; or None."""
    from lib_lora_train.tagger.models import list_models

    local = [e for e in list_models(models_dir) if e.is_local and e.folder is not None]
    for entry in local:
        if preferred and (entry.name == preferred or preferred in entry.aliases):
            return entry.name, entry.folder
    return (local[0].name, local[0].folder) if local else None


def tagger_functions(tagger, floor: float = CONFIDENCE_FLOOR) -> tuple[TagImages, set[str]]:
    """For a loaded tagger (``lib_lora_train.tagger.runtime.LoadedTagger``): its ``tag_images`` function and its
    vocabulary of normalised general and character tags (ratings are not image content)."""
    import numpy as np

    from lib_lora_train.tagger.inference import predict_images

    names = tagger.tags.names
    keep = np.flatnonzero(~tagger.tags.rating_mask)

    def tag_images(images: Sequence) -> list[dict[str, float]]:
        if not images:
            return []
        probs = predict_images(tagger, list(images))
        return [{names[i]: float(row[i]) for i in keep if row[i] >= floor} for row in probs]

    return tag_images, {normalize_tag(names[i]) for i in keep}
