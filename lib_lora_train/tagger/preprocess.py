"""Turn an image into the tensor a WD14 model was trained on.

The contract of SmilingWolf's models: transparency composited onto white, padded to a square with white (image
centred), resized to the model's input size with area averaging when shrinking and bicubic when enlarging,
channels in BGR order, float32 in 0-255, laid out NHWC.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from lib_lora_train.images import BACKGROUND, flatten_to_rgb


def pad_to_square(image: Image.Image, fill: tuple[int, int, int] = BACKGROUND) -> Image.Image:
    """Centre ``image`` on a white square whose side is its longer side."""
    width, height = image.size
    side = max(width, height)
    if width == height:
        return image
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def resize_square(image: Image.Image, size: int) -> Image.Image:
    """Resize a square image to ``size`` px: box (area) filter to shrink, bicubic to enlarge."""
    side = image.size[0]
    if side == size:
        return image
    # BOX averages every source pixel under each target pixel, i.e. OpenCV's INTER_AREA for downscaling
    method = Image.Resampling.BOX if side > size else Image.Resampling.BICUBIC
    return image.resize((size, size), method)


def preprocess(image: Image.Image, size: int, out: np.ndarray | None = None) -> np.ndarray:
    """``image`` (any PIL mode) -> (size, size, 3) float32 BGR 0-255, written into ``out`` when given."""
    square = resize_square(pad_to_square(flatten_to_rgb(image)), size)
    rgb = np.asarray(square, dtype=np.uint8)
    if out is None:
        out = np.empty((size, size, 3), dtype=np.float32)
    # reversing the channel axis turns RGB into BGR; the assignment casts to float32 in the same pass
    out[...] = rgb[:, :, ::-1]
    return out
