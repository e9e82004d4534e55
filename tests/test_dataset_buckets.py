"""Aspect-ratio buckets: the kohya rules (area, step, min/max side), closest-ratio choice, no-upscale."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lib_lora_train.dataset.buckets import assign_buckets, choose_bucket, make_buckets


def test_buckets_at_512_follow_the_kohya_rules():
    buckets = make_buckets(512, step=64, min_side=256, max_side=1024)
    assert (512, 512) in buckets and (256, 1024) in buckets and (1024, 256) in buckets
    assert (576, 448) in buckets and (448, 576) in buckets
    for w, h in buckets:
        assert w * h <= 512 * 512
        assert w % 64 == 0 and h % 64 == 0
        assert 256 <= w <= 1024 and 256 <= h <= 1024
    assert len(set(buckets)) == len(buckets) and buckets == sorted(buckets)
    # each width gets the tallest height that fits
    for w, h in buckets:
        assert h == 1024 or (w * (h + 64) > 512 * 512) or (h, w) in buckets


def test_max_side_and_min_side_limit_the_list():
    buckets = make_buckets(1024, step=64, min_side=512, max_side=1536)
    assert min(min(b) for b in buckets) >= 512 and max(max(b) for b in buckets) <= 1536
    assert (1024, 1024) in buckets


def test_impossible_settings_raise():
    with pytest.raises(ValueError):
        make_buckets(512, min_side=1024, max_side=512)
    with pytest.raises(ValueError):
        make_buckets(256, min_side=512, max_side=1024)


@pytest.mark.parametrize(
    ("size", "bucket"),
    [((1000, 1000), (512, 512)), ((3000, 2000), (640, 384)), ((2000, 3000), (384, 640)), ((4000, 1000), (1024, 256))],
)
def test_choose_bucket_picks_the_closest_aspect_ratio(size, bucket):
    buckets = make_buckets(512, 64, 256, 1024)
    assert choose_bucket(*size, buckets, resolution=512, step=64) == bucket


def test_choose_bucket_is_symmetric_for_portrait_and_landscape():
    buckets = make_buckets(768, 64, 256, 1536)
    for w, h in [(1200, 800), (1920, 1080), (3000, 1000), (900, 700)]:
        bw, bh = choose_bucket(w, h, buckets, resolution=768, step=64)
        assert choose_bucket(h, w, buckets, resolution=768, step=64) == (bh, bw)


def test_no_upscale_keeps_small_images_at_their_own_size():
    buckets = make_buckets(512)
    assert choose_bucket(300, 200, buckets, resolution=512, step=64, no_upscale=True) == (256, 192)
    assert choose_bucket(40, 40, buckets, resolution=512, step=64, no_upscale=True) == (64, 64)
    # larger images still shrink into the normal buckets
    assert choose_bucket(2000, 2000, buckets, resolution=512, step=64, no_upscale=True) == (512, 512)
    # without no_upscale the small image is enlarged to a full-size bucket
    assert choose_bucket(300, 200, buckets, resolution=512, step=64) == (640, 384)


def test_assign_buckets_without_bucketing_uses_squares():
    sizes = [(100, 300), (900, 400)]
    assert assign_buckets(sizes, resolution=512, enable=False) == [(512, 512), (512, 512)]
    assert assign_buckets(sizes, resolution=512) == [(256, 832), (704, 320)]


def test_a_strip_thinner_than_a_step_stays_within_the_area_and_the_largest_side():
    # found by the property test below: 16x4160 became a 64x4160 bucket, over 512**2 and longer than any bucket
    buckets = make_buckets(512, 64, 256, 2048)
    assert max(max(b) for b in buckets) == 1024
    assert choose_bucket(16, 4160, buckets, resolution=512, step=64, no_upscale=True) == (64, 1024)
    assert choose_bucket(4160, 16, buckets, resolution=512, step=64, no_upscale=True) == (1024, 64)
    large = make_buckets(1024, 64, 256, 2048)
    assert choose_bucket(40, 3000, large, resolution=1024, step=64, no_upscale=True) == (64, 2048)
    assert choose_bucket(40, 900, large, resolution=1024, step=64, no_upscale=True) == (64, 896)  # fits: own size


@given(
    st.integers(16, 8000),
    st.integers(16, 8000),
    st.sampled_from([512, 768, 1024]),
    st.booleans(),
)
def test_chosen_bucket_always_fits_the_area_and_the_step(width, height, resolution, no_upscale):
    buckets = make_buckets(resolution, 64, 256, 2048)
    bw, bh = choose_bucket(width, height, buckets, resolution=resolution, step=64, no_upscale=no_upscale)
    assert bw % 64 == 0 and bh % 64 == 0
    assert bw * bh <= max(resolution * resolution, 64 * 64)
    if no_upscale and width * height <= resolution * resolution:
        assert (bw <= max(width, 64)) and (bh <= max(height, 64))
