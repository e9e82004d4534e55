"""Batches that never mix buckets, reproducible per (seed, epoch).

Every image appears ``repeats`` times per epoch. Within each bucket the repeated indices are shuffled and cut into
batches (the last one may be short); then the batches of all buckets are shuffled together, so that consecutive
steps see different aspect ratios.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any


def _repeats_of(entry: Any) -> int:
    # an item (anything with .repeats, such as DatasetItem) or a plain repeat count
    repeats = entry if isinstance(entry, int) else getattr(entry, "repeats", None)
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a whole number of at least 1, got {repeats!r}")
    return repeats


class BucketBatchSampler:
    """Per-epoch batches of item indices.

    ``items_with_buckets`` is a sequence of ``(item_or_repeats, (width, height))`` pairs in item order;
    ``epoch_batches(epoch)`` returns the same batches for the same seed and epoch.
    """

    def __init__(self, items_with_buckets: Sequence[tuple[Any, tuple[int, int]]], batch_size: int, seed: int):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.batch_size = batch_size
        self.seed = seed
        self.buckets: dict[tuple[int, int], list[int]] = {}
        for index, (entry, bucket) in enumerate(items_with_buckets):
            self.buckets.setdefault(tuple(bucket), []).extend([index] * _repeats_of(entry))
        self.num_items = len(items_with_buckets)

    def __len__(self) -> int:
        """Batches per epoch (the same for every epoch)."""
        return sum(-(-len(indices) // self.batch_size) for indices in self.buckets.values())

    @property
    def num_samples(self) -> int:
        """Images per epoch, repeats included."""
        return sum(len(indices) for indices in self.buckets.values())

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """The batches of ``epoch``: lists of item indices, each list from one bucket."""
        # a string seed is hashed with SHA-512 by random.Random, stable across processes and Python versions
        rng = random.Random(f"bucket-batches:{self.seed}:{epoch}")
        batches: list[list[int]] = []
        for bucket in sorted(self.buckets):
            indices = list(self.buckets[bucket])
            rng.shuffle(indices)
            batches.extend(indices[i : i + self.batch_size] for i in range(0, len(indices), self.batch_size))
        rng.shuffle(batches)
        return batches
