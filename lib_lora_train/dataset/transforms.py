"""From a dataset item to the pixel tensor the VAE encodes, recording the geometry SDXL conditions on.

Decoding happens here (when latents are cached), not during the scan; a file that turns out to be truncated or
corrupt raises ``ImageLoadError`` naming it, so the engine can report it and carry on with the other images.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from lib_lora_train.host import ImageGeometry
from lib_lora_train.images import load_rgb

if TYPE_CHECKING:
    import torch

    from lib_lora_train.dataset.scan import DatasetItem


def load_training_image(item: DatasetItem) -> Image.Image:
    """The item's image as upright 8-bit RGB; raises ``lib_lora_train.images.ImageLoadError`` if it is unusable."""
    return load_rgb(item.image_path)


def cover_size(width: int, height: int, bucket: tuple[int, int]) -> tuple[int, int]:
    """The smallest size with the image's aspect ratio that covers ``bucket`` (each side at least the bucket's)."""
    bucket_w, bucket_h = bucket
    scale = max(bucket_w / width, bucket_h / height)
    return max(bucket_w, round(width * scale)), max(bucket_h, round(height * scale))


def crop_box(resized: tuple[int, int], bucket: tuple[int, int], rng: random.Random | None = None) -> tuple[int, int]:
    """Top-left (left, top) of the ``bucket`` crop inside a ``resized`` image: centred, or random with ``rng``."""
    spare_w, spare_h = resized[0] - bucket[0], resized[1] - bucket[1]
    if rng is None:
        return spare_w // 2, spare_h // 2
    return rng.randint(0, spare_w), rng.randint(0, spare_h)


def prepare_image(
    image: Image.Image,
    bucket: tuple[int, int],
    *,
    flip: bool = False,
    rng: random.Random | None = None,
) -> tuple[torch.Tensor, ImageGeometry]:
    """Resize ``image`` to cover ``bucket`` (width, height), crop to it and optionally mirror it.

    Returns a float tensor (3, H, W) in [-1, 1] and the ImageGeometry (original size, crop top-left in the resized
    image, target size; all (height, width)). The crop is centred unless ``rng`` asks for a random one. A mirrored
    image reports the crop measured from the mirrored side, as the pixels it holds came from there.
    """
    import torch

    if image.mode != "RGB":
        image = image.convert("RGB")
    width, height = image.size
    new_w, new_h = cover_size(width, height, bucket)
    if (new_w, new_h) != (width, height):
        # LANCZOS keeps detail when shrinking (the common case) and is smooth enough when enlarging
        image = image.resize((new_w, new_h), Image.Resampling.LANCZOS)
    left, top = crop_box((new_w, new_h), bucket, rng)
    image = image.crop((left, top, left + bucket[0], top + bucket[1]))
    if flip:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        left = new_w - bucket[0] - left
    pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
    tensor = pixels.to(torch.float32) / 127.5 - 1.0
    geometry = ImageGeometry(
        original_size=(height, width), crop_top_left=(top, left), target_size=(bucket[1], bucket[0])
    )
    return tensor, geometry
