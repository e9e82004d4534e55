"""The label side of a model: WD14's ``selected_tags.csv`` with columns ``tag_id,name,category,count``, or
ML-Danbooru's ``classes.json`` (a JSON list of tag names).

Row *i* of the file names output *i* of the model. Categories: 9 rating, 0 general, 4 character (others, such as
artist or copyright in third-party models, are treated as general). ML-Danbooru has no categories: all general.
"""

from __future__ import annotations

import csv
import json
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
    """Read ``selected_tags.csv`` (at least the ``name`` and ``category`` columns) or a ``.json`` class list."""
    p = Path(path)
    if p.suffix.lower() == ".json":
        return load_class_list(p)
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


def load_class_list(path: str | os.PathLike) -> TagTable:
    """Read ML-Danbooru's ``classes.json``: a list of names in output order (or ``{"0": name, ...}``); all general."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TagTableError(f"{p}: cannot be read as JSON ({exc}); download classes.json again") from None
    if isinstance(data, dict) and all(str(k).isdigit() for k in data):
        data = [data[k] for k in sorted(data, key=int)]
    if not isinstance(data, list) or not data or not all(isinstance(name, str) for name in data):
        raise TagTableError(f"{p}: expected a JSON list of tag names; download classes.json again")
    return TagTable(tuple(data), np.full(len(data), GENERAL, dtype=np.int32))
