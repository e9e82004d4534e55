"""From a scanned dataset to training batches: buckets, per-epoch batch order, latents and processed captions.

Everything random here (batch order, caption shuffles and dropouts, flips) is derived from (seed, epoch) or
(seed, step, micro-batch), so a resumed run sees exactly the batches an uninterrupted run sees.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch

from lib_lora_train.host import ImageGeometry, TrainingHost
from lib_lora_train.train.latents import LatentCache, LatentKey
from lib_lora_train.train.noise import derived_seed


@dataclass
class Batch:
    latents: torch.Tensor  # (B, C, h, w) fp32, CPU
    captions: list[str]
    geometry: list[ImageGeometry]


class BatchFeed:
    """Batches of a dataset scan for a given host and settings. ``micro_batches(step)`` is what one optimiser step eats."""

    def __init__(self, host: TrainingHost, scan, settings, cache: LatentCache):
        from lib_lora_train.dataset.buckets import choose_bucket, make_buckets
        from lib_lora_train.dataset.sampler import BucketBatchSampler

        if not scan.items:
            raise ValueError(f"{scan.root}: no usable images in the dataset folder; add images (with .txt captions)")
        self.host = host
        self.settings = settings
        self.items = list(scan.items)
        self.cache = cache
        s = settings
        if s.enable_buckets:
            # a small training resolution (64-192 px tests and previews) would have no bucket above the default 256
            min_side = min(s.min_bucket_side, s.resolution)
            buckets = make_buckets(s.resolution, step=s.bucket_step, min_side=min_side, max_side=s.max_bucket_side)
        else:
            buckets = [(s.resolution, s.resolution)]
        self.buckets = [
            choose_bucket(
                *item.size, buckets, resolution=s.resolution, step=s.bucket_step, no_upscale=s.bucket_no_upscale
            )
            if s.enable_buckets
            else (s.resolution, s.resolution)
            for item in self.items
        ]
        self.sampler = BucketBatchSampler(list(zip(self.items, self.buckets, strict=False)), s.batch_size, s.seed)
        self._epoch_cache: tuple[int, list[list[int]]] | None = None
        self.batches_per_epoch = len(self.sampler.epoch_batches(0))
        self.steps_per_epoch = max(1, math.ceil(self.batches_per_epoch / s.grad_accum))

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            self._epoch_cache = (epoch, self.sampler.epoch_batches(epoch))
        return self._epoch_cache[1]

    def micro_batches(self, step: int) -> list[list[int]]:
        """Item-index batches for optimiser step ``step`` (0-based, counted over the whole run)."""
        epoch, index = divmod(step, self.steps_per_epoch)
        accum = self.settings.grad_accum
        return self.epoch_batches(epoch)[index * accum : (index + 1) * accum]

    def _encode(self, index: int, flip: bool):
        from lib_lora_train.dataset.transforms import prepare_image
        from lib_lora_train.images import load_rgb

        def encode(_key: LatentKey):
            pixels, geometry = prepare_image(load_rgb(self.items[index].image_path), self.buckets[index], flip=flip)
            return self.host.encode_images(pixels.unsqueeze(0))[0], geometry

        return encode

    def latent(self, index: int, flip: bool):
        key = LatentKey.of(self.items[index].image_path, self.buckets[index], flip)
        return self.cache.get(key, self._encode(index, flip))

    def precache(self, on_progress=None) -> int:
        """Encode every image (both orientations with flip) before training, so the VAE cost is not per step."""
        flips = (False, True) if self.settings.flip else (False,)
        todo = [(i, f) for i in range(len(self.items)) for f in flips]
        for n, (i, f) in enumerate(todo, 1):
            self.latent(i, f)
            if on_progress is not None:
                on_progress(n, len(todo))
        return len(todo)

    def load(self, indices: list[int], step: int, micro: int) -> Batch:
        """Latents and processed captions of one micro-batch; captions/flips drawn from (seed, step, micro)."""
        from lib_lora_train.dataset.captions import process_caption

        rng = random.Random(derived_seed(self.settings.seed, step, micro, "batch"))
        s = self.settings
        latents, captions, geometry = [], [], []
        for index in indices:
            flip = s.flip and rng.random() < 0.5
            latent, geo = self.latent(index, flip)
            caption = process_caption(
                self.items[index].caption,
                rng,
                shuffle=s.shuffle_tags,
                keep_tokens=s.keep_tokens,
                tag_dropout=s.tag_dropout,
                caption_dropout=s.caption_dropout,
            )
            latents.append(latent)
            captions.append(caption)
            geometry.append(geo)
        return Batch(torch.stack(latents), captions, geometry)
