"""Bucket batches: one bucket per batch, repeats honoured, deterministic per (seed, epoch)."""

from __future__ import annotations

from collections import Counter

import pytest

from lib_lora_train.dataset.sampler import BucketBatchSampler

ITEMS = [(2, (512, 512)), (1, (512, 512)), (3, (640, 384)), (1, (384, 640)), (1, (640, 384))]


def _bucket_of(index):
    return ITEMS[index][1]


def test_every_item_appears_repeats_times_and_batches_never_mix_buckets():
    sampler = BucketBatchSampler(ITEMS, batch_size=2, seed=5)
    batches = sampler.epoch_batches(0)
    counts = Counter(i for batch in batches for i in batch)
    assert counts == {0: 2, 1: 1, 2: 3, 3: 1, 4: 1}
    for batch in batches:
        assert 1 <= len(batch) <= 2
        assert len({_bucket_of(i) for i in batch}) == 1
    # 3 in (512,512) -> 2 batches; 4 in (640,384) -> 2; 1 in (384,640) -> 1
    assert len(sampler) == len(batches) == 5 and sampler.num_samples == 8


def test_same_seed_and_epoch_repeat_and_epochs_differ():
    items = [(1, (512, 512))] * 40 + [(1, (640, 384))] * 40
    a = BucketBatchSampler(items, batch_size=4, seed=1)
    b = BucketBatchSampler(items, batch_size=4, seed=1)
    assert a.epoch_batches(3) == b.epoch_batches(3)
    assert a.epoch_batches(3) != a.epoch_batches(4)
    assert a.epoch_batches(3) != BucketBatchSampler(items, batch_size=4, seed=2).epoch_batches(3)


def test_items_with_a_repeats_attribute_are_accepted():
    class Item:
        repeats = 4

    sampler = BucketBatchSampler([(Item(), (512, 512))], batch_size=3, seed=0)
    assert sorted(len(b) for b in sampler.epoch_batches(0)) == [1, 3]


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        BucketBatchSampler(ITEMS, batch_size=0, seed=0)
    with pytest.raises(ValueError):
        BucketBatchSampler([(0, (512, 512))], batch_size=1, seed=0)
