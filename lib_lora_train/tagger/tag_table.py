"""The label side of a WD14 model: ``selected_tags.csv`` with columns ``tag_id,name,category,count``.

Row *i* of the file names output *i* of the model. Categories: 9 rating, 0 general, 4 character (others, such as
artist or copyright in third-party models, are treated as general).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RATING = 9
GENERAL = 0
CHARACTER = 4


class TagTableError(ValueError):
    """A ``selected_tags.csv`` that cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class TagTable:
    names: tuple[str, ...]
    categories: np.ndarray  # int, one per output

    def __len__(self) -> int:
        return len(self.names)

    @property
    def rating_mask(self) -> np.ndarray:
        return self.categories == RATING

    @property
    def character_mask(self) -> np.ndarray:
        return self.categories == CHARACTER

    @property
    def general_mask(self) -> np.ndarray:
        return ~(self.rating_mask | self.character_mask)


def load_tag_table(path: str | os.PathLike) -> TagTable:
    """Read ``selected_tags.csv``; needs at least the ``name`` and ``category`` columns."""
    p = Path(path)
    try:
        with p.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            fields = set(reader.fieldnames or ())
            if not {"name", "category"} <= fields:
                raise TagTableError(
                    f"{p}: expected the columns tag_id,name,category,count but found {sorted(fields)}; "
                    "download selected_tags.csv again from the model's page"
                )
            names, categories = [], []
            for row_no, row in enumerate(reader, start=2):
                try:
                    categories.append(int(row["category"]))
                except (TypeError, ValueError):
                    raise TagTableError(
                        f"{p}: line {row_no} has category {row['category']!r}, not a number; "
                        "the file is damaged, download it again"
                    ) from None
                names.append(row["name"])
    except OSError as exc:
        raise TagTableError(f"{p}: cannot be read ({exc})") from None
    if not names:
        raise TagTableError(f"{p}: holds no tags; download selected_tags.csv again")
    return TagTable(tuple(names), np.asarray(categories, dtype=np.int32))
