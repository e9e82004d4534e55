"""Aspect-ratio buckets: train portrait, landscape and square images at about the same pixel count without squashing.

The bucket list covers every (width, height) whose sides are multiples of ``step`` between ``min_side`` and
``max_side`` and whose area stays within ``resolution**2`` (the largest such height for each width, and its
transpose). Each image goes to the bucket whose aspect ratio is closest to its own, then is resized to cover it and
cropped (see ``transforms.prepare_image``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def make_buckets(resolution: int, step: int = 64, min_side: int = 256, max_side: int = 1024) -> list[tuple[int, int]]:
    """All (width, height) buckets for ``resolution``, sorted by width then height.

    ``min_side`` is rounded up and ``max_side`` down to multiples of ``step``.
    """
    if step <= 0 or resolution < step:
        raise ValueError(f"bucket step {step} must be positive and no larger than the resolution {resolution}")
    low = math.ceil(min_side / step) * step
    high = max_side // step * step
    if low > high:
        raise ValueError(f"no bucket side fits between min_side {min_side} and max_side {max_side} in steps of {step}")
    area = resolution * resolution
    buckets: set[tuple[int, int]] = set()
    for width in range(low, high + 1, step):
        height = min(high, area // width // step * step)
        if height >= low:
            buckets.add((width, height))
            buckets.add((height, width))
    if not buckets:
        raise ValueError(
            f"no bucket of at least {low}x{low} px fits in {resolution}x{resolution}; lower min_side or raise the resolution"
        )
    return sorted(buckets)


def choose_bucket(
    width: int,
    height: int,
    buckets: Sequence[tuple[int, int]],
    *,
    resolution: int,
    step: int = 64,
    no_upscale: bool = False,
) -> tuple[int, int]:
    """The bucket for an upright ``width`` x ``height`` image.

    Normally the bucket of closest aspect ratio (compared on a log scale so that 2:1 and 1:2 are equally far from
    1:1; ties go to the larger area). With ``no_upscale`` an image smaller than ``resolution**2`` gets a bucket of its
    own size rounded down to ``step`` (at least one step), so it is never enlarged.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size {width}x{height} has no pixels")
    if no_upscale and width * height <= resolution * resolution:
        return _own_size_bucket(width, height, buckets, resolution, step)
    if not buckets:
        raise ValueError("no buckets to choose from; build them with make_buckets")
    target = math.log(width / height)
    return min(buckets, key=lambda b: (abs(math.log(b[0] / b[1]) - target), -b[0] * b[1], b[0]))


def _own_size_bucket(
    width: int, height: int, buckets: Sequence[tuple[int, int]], resolution: int, step: int
) -> tuple[int, int]:
    """The image's own size rounded down to ``step``, for ``no_upscale``.

    A side thinner than one step still becomes one step, which can push a long strip (16x4160) past the area
    budget; its long side is then shortened to fit the budget and the largest bucket side (the strip is cropped
    along it, as any image is cropped to its bucket).
    """
    bw, bh = max(step, width // step * step), max(step, height // step * step)
    longest = max((max(b) for b in buckets), default=None)
    budget = max(resolution * resolution, step * step)
    if bw >= bh:
        bw = max(step, min(bw, budget // bh // step * step, longest or bw))
    else:
        bh = max(step, min(bh, budget // bw // step * step, longest or bh))
    return bw, bh


def assign_buckets(
    sizes: Sequence[tuple[int, int]],
    *,
    resolution: int,
    step: int = 64,
    min_side: int = 256,
    max_side: int = 1024,
    no_upscale: bool = False,
    enable: bool = True,
) -> list[tuple[int, int]]:
    """The bucket of each (width, height) in ``sizes``; with ``enable=False`` every image is a square at
    ``resolution``."""
    if not enable:
        return [(resolution, resolution)] * len(sizes)
    buckets = make_buckets(resolution, step, min_side, max_side)
    return [choose_bucket(w, h, buckets, resolution=resolution, step=step, no_upscale=no_upscale) for w, h in sizes]
