"""Turn an image into the tensor a tagger model was trained on.

WD14 (SmilingWolf's models): transparency composited onto white, padded to a square with white (image centred) whose
side is at least the model's, shrunk to the model's input size with area averaging, channels in BGR order, float32
in 0-255, laid out NHWC. An image smaller than the model is padded up to its size, never enlarged: that is what the
reference code does (the WD 1.4 demo's ``make_square`` and the tagger extension that copied it), so small images get
the tags they get there.

ML-Danbooru: transparency onto white, resized with Lanczos so that the short side is the model's side (448) and
both sides are multiples of 4, RGB float32 in 0-1, laid out NCHW; each image keeps its own shape, so such images
go through the model one at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from lib_lora_train.images import BACKGROUND, flatten_to_rgb
from lib_lora_train.tagger.models import MLD, WD14


def pad_to_square(image: Image.Image, fill: tuple[int, int, int] = BACKGROUND, *, min_side: int = 0) -> Image.Image:
    """Centre ``image`` on a white square whose side is its longer side, or ``min_side`` when that is larger."""
    width, height = image.size
    side = max(width, height, min_side)
    if width == height == side:
        return image
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def shrink_square(image: Image.Image, size: int) -> Image.Image:
    """Shrink a square image of at least ``size`` px to ``size`` px with a box (area) filter."""
    if image.size[0] == size:
        return image
    # BOX averages every source pixel under each target pixel, i.e. OpenCV's INTER_AREA for downscaling
    return image.resize((size, size), Image.Resampling.BOX)


def preprocess(image: Image.Image, size: int, out: np.ndarray | None = None) -> np.ndarray:
    """``image`` (any PIL mode) -> (size, size, 3) float32 BGR 0-255, written into ``out`` when given."""
    square = shrink_square(pad_to_square(flatten_to_rgb(image), min_side=size), size)
    rgb = np.asarray(square, dtype=np.uint8)
    if out is None:
        out = np.empty((size, size, 3), dtype=np.float32)
    # reversing the channel axis turns RGB into BGR; the assignment casts to float32 in the same pass
    out[...] = rgb[:, :, ::-1]
    return out


def mld_target_size(width: int, height: int, side: int) -> tuple[int, int]:
    """(width, height) with the short side scaled to ``side`` and both rounded down to a multiple of 4."""
    short = min(width, height)
    # the same arithmetic as ML-Danbooru's reference resize, so that sizes agree to the pixel
    scaled = (int(width / short * side), int(height / short * side))
    return scaled[0] & ~3, scaled[1] & ~3


def preprocess_mld(
    image: Image.Image, side: int, *, keep_ratio: bool = True, out: np.ndarray | None = None
) -> np.ndarray:
    """``image`` -> (3, H, W) float32 RGB 0-1 for an ML-Danbooru graph. ``keep_ratio`` False: a ``side`` square."""
    rgb = flatten_to_rgb(image)
    size = mld_target_size(*rgb.size, side) if keep_ratio else (side, side)
    if rgb.size != size:
        rgb = rgb.resize(size, Image.Resampling.LANCZOS)
    pixels = np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1)
    if out is None:
        out = np.empty(pixels.shape, dtype=np.float32)
    np.divide(pixels, np.float32(255), out=out)
    return out


@dataclass(frozen=True)
class InputLayout:
    """How one model wants its pixels: the family's preprocessing at the model's size.

    ``keep_ratio`` (ML-Danbooru graphs with a free height and width): every image keeps its own shape, so images
    cannot share a batch; ``stackable`` says whether they can.
    """

    family: str
    size: int
    keep_ratio: bool = False

    @property
    def stackable(self) -> bool:
        return not self.keep_ratio

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """The shape of one prepared image when ``stackable``."""
        return (self.size, self.size, 3) if self.family == WD14 else (3, self.size, self.size)

    def prepare(self, image: Image.Image, out: np.ndarray | None = None) -> np.ndarray:
        """One image as the model takes it (without the batch axis), written into ``out`` when given."""
        if self.family == MLD:
            return preprocess_mld(image, self.size, keep_ratio=self.keep_ratio, out=out)
        return preprocess(image, self.size, out=out)

    def describe(self) -> str:
        if self.keep_ratio:
            return f"short side {self.size}px (aspect ratio kept, one image at a time)"
        return f"{self.size}px"
