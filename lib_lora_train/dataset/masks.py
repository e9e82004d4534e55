"""Loss masks for masked training: where in each image the loss counts (white) and where it does not (black).

A mask comes from a mask folder (an image with the same file stem, any image extension, greyscale or RGB) or from
the training image's own alpha channel. It goes through the same resize, crop and mirror as the image
(``transforms.prepare_image``) and is then averaged down to the latent grid, the resolution the loss lives at.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from lib_lora_train.dataset.transforms import cover_size, crop_box
from lib_lora_train.images import IMAGE_EXTENSIONS, ImageLoadError

LATENT_FACTOR = 8  # the VAE's downsampling


class MaskError(ValueError):
    """Masks asked for but not usable; the message names the file and the fix."""


def mask_file(image_path: Path, mask_dir: str | os.PathLike) -> Path | None:
    """The mask for ``image_path`` in ``mask_dir``: same stem, any image extension (PNG first)."""
    folder = Path(mask_dir)
    for ext in (".png", *sorted(IMAGE_EXTENSIONS - {".png"})):
        for candidate in (folder / (image_path.stem + ext), folder / (image_path.stem + ext.upper())):
            if candidate.is_file():
                return candidate
    return None


def check_masks(image_paths: list[Path], mask_dir: str) -> None:
    """Refuse before training when the mask folder is missing or lacks masks, naming the files."""
    folder = Path(mask_dir)
    if not folder.is_dir():
        raise MaskError(f"mask_dir {folder}: the folder does not exist; pick the folder of mask images")
    missing = [p for p in image_paths if mask_file(p, folder) is None]
    if missing:
        names = ", ".join(p.name for p in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise MaskError(
            f"mask_dir {folder}: no mask for {len(missing)} of {len(image_paths)} images ({names}); "
            "add a mask image with the same name (white = train) or clear mask_dir to use the alpha channel"
        )


def load_mask(image_path: Path, mask_dir: str = "") -> tuple[Image.Image, bool]:
    """(the mask as an upright "L" image of the training image's size, whether one was found).

    Without ``mask_dir`` the alpha channel is the mask; an image without transparency is all white (found False),
    so it trains everywhere.
    """
    source = mask_file(image_path, mask_dir) if mask_dir else image_path
    if source is None:
        raise MaskError(f"{image_path}: no mask in {mask_dir}; add one with the same file name")
    try:
        with Image.open(source) as opened:
            opened.seek(0)
            image = ImageOps.exif_transpose(opened)
            image.load()
    except (OSError, ValueError) as exc:
        raise ImageLoadError(source, f"the mask cannot be read ({exc}); re-save it as PNG") from None
    if mask_dir:
        return image.convert("L"), True
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if "A" not in image.getbands():
        return Image.new("L", image.size, 255), False
    return image.getchannel("A"), True


def prepare_mask(mask: Image.Image, image_size: tuple[int, int], bucket: tuple[int, int], *, flip: bool = False):
    """The mask as a float tensor (1, h/8, w/8) in [0, 1], cut exactly as ``prepare_image`` cuts its image.

    ``image_size`` is the training image's upright (width, height): a mask of another size is stretched to it.
    """
    import torch

    if mask.size != image_size:
        mask = mask.resize(image_size, Image.Resampling.BILINEAR)
    new_w, new_h = cover_size(*image_size, bucket)
    if (new_w, new_h) != image_size:
        mask = mask.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left, top = crop_box((new_w, new_h), bucket)
    mask = mask.crop((left, top, left + bucket[0], top + bucket[1]))
    if flip:
        mask = mask.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    values = torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255.0)[None, None]
    return torch.nn.functional.avg_pool2d(values, LATENT_FACTOR)[0]
