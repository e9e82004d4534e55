"""From a scanned dataset to training batches: buckets, per-epoch batch order, latents and processed captions.

Everything random here (batch order, caption shuffles and dropouts, flips) is derived from (seed, epoch) or
(seed, step, micro-batch, sample position), so a resumed run sees exactly the batches an uninterrupted run sees, and a
batch split over processes sees what it sees whole.
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
    loss_weights: torch.Tensor | None = None  # (B,): prior_loss_weight for regularisation images, else 1
    masks: torch.Tensor | None = None  # (B, 1, h, w) in [0, 1] at the latent grid, with masked_loss


class BatchFeed:
    """Batches of a dataset scan for a given host and settings. ``micro_batches(step)`` is what one optimiser step eats."""

    def __init__(self, host: TrainingHost, scan, settings, cache: LatentCache, reg_scan=None, *, world: int = 1):
        from lib_lora_train.dataset.buckets import make_buckets

        self.host = host
        self.settings = settings
        self.scan = scan
        self.reg_scan = reg_scan  # regularisation images, mixed into every epoch (kohya's reg_data_dir)
        self.cache = cache
        # a data-parallel run deals out global batches of batch_size x world; each process trains its shard of them
        self.world = world
        self._masks: dict[tuple[int, bool], torch.Tensor] = {}
        self.unmasked: set = set()  # images whose alpha channel is missing (masked_loss without a mask folder)
        s = settings
        if s.enable_buckets:
            # a small training resolution (64-192 px tests and previews) would have no bucket above the default 256
            min_side = min(s.min_bucket_side, s.resolution)
            self.bucket_sizes = make_buckets(
                s.resolution, step=s.bucket_step, min_side=min_side, max_side=s.max_bucket_side
            )
        else:
            self.bucket_sizes = [(s.resolution, s.resolution)]
        self._index()

    def _index(self) -> None:
        """Buckets and the batch sampler of the scan's current items; rebuilt after images are skipped."""
        from lib_lora_train.dataset.buckets import choose_bucket
        from lib_lora_train.dataset.sampler import BucketBatchSampler

        scan, s = self.scan, self.settings
        if not scan.items:
            raise ValueError(f"{scan.root}: no usable images in the dataset folder; add images (with .txt captions)")
        self.items = list(scan.items)
        if self.reg_scan is not None and self.reg_scan.items:
            from lib_lora_train.dataset.reg_images import balanced_repeats

            self.items += balanced_repeats(self.reg_scan, scan.num_repeated)
        self._masks.clear()
        self.buckets = [
            choose_bucket(
                *item.size,
                self.bucket_sizes,
                resolution=s.resolution,
                step=s.bucket_step,
                no_upscale=s.bucket_no_upscale,
            )
            if s.enable_buckets
            else (s.resolution, s.resolution)
            for item in self.items
        ]
        pairs = list(zip(self.items, self.buckets, strict=False))
        self.sampler = BucketBatchSampler(pairs, s.batch_size * self.world, s.seed)
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

    def precache(self, on_progress=None, on_skip=None) -> int:
        """Decode every image once before training, skipping the ones that fail; returns the images kept.

        With a latent cache each image is encoded (both orientations with flip), so the VAE cost is not per step;
        without one it is only decoded, so that a truncated file is found now rather than mid-run. A file that
        cannot be decoded leaves the scan (``DatasetScan.skip``), ``on_skip(problem)`` is called, and buckets and
        the sampler are rebuilt after the last skip, so no batch ever names a skipped image. A resumed run makes
        the same skips in the same order, so its batches match the interrupted run's.
        """
        from lib_lora_train.images import ImageLoadError, load_rgb

        flips = (False, True) if self.settings.flip else (False,)
        bad = []
        for index, item in enumerate(self.items):
            try:
                if self.cache.mode == "none":
                    load_rgb(item.image_path)
                else:
                    for flip in flips:
                        self.latent(index, flip)
            except ImageLoadError as exc:
                bad.append((item, exc.reason))
            if on_progress is not None:
                on_progress(index + 1, len(self.items))
        for item, reason in bad:
            problem = (self.reg_scan if item.is_reg else self.scan).skip(item, reason)
            if on_skip is not None:
                on_skip(problem)
        if bad:
            if not self.scan.items:
                raise ValueError(
                    f"{self.scan.root}: none of the {len(bad)} images in the dataset folder could be decoded; "
                    "re-export them as PNG or JPEG (see the skipped files above)"
                )
            self._index()
        return len(self.items)

    def load(self, indices: list[int], step: int, micro: int, positions: list[int] | None = None) -> Batch:
        """Latents and processed captions of one micro-batch; each sample's caption and flip drawn from (seed, step,
        micro, its position in the global micro-batch; by default 0, 1, ...)."""
        from lib_lora_train.dataset.captions import process_caption

        positions = list(range(len(indices))) if positions is None else positions
        s = self.settings
        latents, captions, geometry, masks = [], [], [], []
        for index, position in zip(indices, positions, strict=True):
            rng = random.Random(derived_seed(s.seed, step, micro, position, "batch"))
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
            masks.append(self.mask(index, flip) if s.masked_loss else None)
        weights = None
        if any(self.items[i].is_reg for i in indices):
            weights = torch.tensor([s.prior_loss_weight if self.items[i].is_reg else 1.0 for i in indices])
        return Batch(torch.stack(latents), captions, geometry, weights, torch.stack(masks) if s.masked_loss else None)

    def mask(self, index: int, flip: bool) -> torch.Tensor:
        """The loss mask of an item at the latent grid (kept in memory: a few KB each). Regularisation images have
        no mask: they train everywhere."""
        key = (index, flip)
        if key not in self._masks:
            from lib_lora_train.dataset.masks import load_mask, prepare_mask

            item = self.items[index]
            if item.is_reg:
                w, h = self.buckets[index]
                self._masks[key] = torch.ones((1, h // 8, w // 8))
            else:
                image, found = load_mask(item.image_path, self.settings.mask_dir)
                self._masks[key] = prepare_mask(image, item.size, self.buckets[index], flip=flip)
                if not found:
                    self.unmasked.add(item.image_path)
        return self._masks[key]

    def mask_summary(self) -> str:
        """One line for the run log: where the masks come from, and which images have none (they train
        everywhere), computed for every image now so that a file that cannot be read is found before step 1."""
        images = [i for i, item in enumerate(self.items) if not item.is_reg]
        for index in images:
            self.mask(index, False)
        source = f"the mask folder {self.settings.mask_dir}" if self.settings.mask_dir else "the alpha channels"
        line = f"masked loss: masks of {len(images)} images from {source}"
        if self.unmasked:
            names = ", ".join(sorted(p.name for p in self.unmasked)[:5])
            line += f"; {len(self.unmasked)} have no transparency and train everywhere ({names})"
        return line
