"""Regularisation (prior-preservation) images, kohya's ``reg_data_dir``: class images that keep the model's idea of
the class while the LoRA learns the subject.

The folder follows the dataset's conventions (``N_class`` sub-folders give repeats; captions are optional: a class
image without one trains with an empty caption, which is not worth a warning). As kohya does, each epoch sees as many
regularisation samples as training samples: the first pass takes each folder's repeats until the count is reached,
and later passes add one repeat per image in turn.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from lib_lora_train.dataset.scan import DatasetScan, scan_dataset


def scan_reg_images(root: str, *, caption_extension: str, default_repeats: int) -> DatasetScan:
    """Scan the regularisation folder; a missing folder or one without images is refused with the fix."""
    folder = Path(root)
    if not folder.is_dir():
        raise FileNotFoundError(f"reg_data_dir {folder}: the folder does not exist; pick a folder of class images")
    scan = scan_dataset(folder, caption_extension=caption_extension, default_repeats=default_repeats)
    scan.problems = [p for p in scan.problems if p.skipped or "no caption file" not in p.message]
    if not scan.items:
        raise ValueError(f"reg_data_dir {folder}: no images found; add class images (N_class folders) or clear it")
    for index, item in enumerate(scan.items):
        scan.items[index] = dataclasses.replace(item, is_reg=True)
    return scan


def balanced_repeats(reg: DatasetScan, num_train_samples: int) -> list:
    """The regularisation items with repeats set so that one epoch holds ``num_train_samples`` of them.

    Images not reached in the first pass are left out (their repeat count would be 0), as kohya leaves them out.
    """
    counts: list[int] = []
    total = 0
    for item in reg.items:
        if total >= num_train_samples:
            break
        counts.append(item.repeats)
        total += item.repeats
    position = 0
    while total < num_train_samples:
        counts[position % len(counts)] += 1
        total += 1
        position += 1
    return [dataclasses.replace(item, repeats=n) for item, n in zip(reg.items, counts, strict=False)]
