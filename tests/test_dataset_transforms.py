"""From image to tensor: cover-resize, centre crop, flip, value range and the SDXL geometry."""

from __future__ import annotations

import random

import pytest
import torch
from dataset_image_makers import gradient
from PIL import Image

from lib_lora_train.dataset.transforms import cover_size, prepare_image
from lib_lora_train.host import ImageGeometry


def test_tensor_shape_range_and_geometry_for_a_wide_image():
    image = gradient(300, 100)
    tensor, geometry = prepare_image(image, (128, 64))
    assert tensor.shape == (3, 64, 128) and tensor.dtype == torch.float32
    assert tensor.min() >= -1.0 and tensor.max() <= 1.0
    # 300x100 covers 128x64 at 192x64: 32 px cropped from each side
    assert geometry == ImageGeometry(original_size=(100, 300), crop_top_left=(0, 32), target_size=(64, 128))


def test_centre_crop_keeps_the_middle():
    image = Image.new("RGB", (300, 100), (0, 0, 0))
    image.paste((255, 255, 255), (100, 0, 200, 100))  # white middle third
    tensor, _ = prepare_image(image, (64, 64))
    assert tensor[:, 32, 32].min() > 0.9  # the centre is white
    assert tensor[:, 32, 0].max() > 0.9  # the crop is the middle: its left edge is still inside the white band


def test_flip_mirrors_pixels_and_the_crop():
    image = gradient(300, 100)
    plain, geometry = prepare_image(image, (128, 64))
    flipped, flipped_geometry = prepare_image(image, (128, 64), flip=True)
    assert torch.equal(flipped, plain.flip(-1))
    assert plain[0, 0, 0] < plain[0, 0, -1] and flipped[0, 0, 0] > flipped[0, 0, -1]
    assert flipped_geometry.crop_top_left == (0, 192 - 128 - geometry.crop_top_left[1])


def test_random_crop_uses_the_rng_and_stays_inside():
    image = gradient(400, 100)
    lefts = {prepare_image(image, (64, 64), rng=random.Random(s))[1].crop_top_left[1] for s in range(20)}
    assert len(lefts) > 1 and all(0 <= left <= 256 - 64 for left in lefts)


def test_small_images_are_enlarged_to_cover():
    tensor, geometry = prepare_image(Image.new("RGB", (10, 20), (255, 0, 0)), (64, 64))
    assert tensor.shape == (3, 64, 64) and geometry.original_size == (20, 10)
    assert tensor[0].min() > 0.9 and tensor[1].max() < -0.9


def test_non_rgb_input_is_converted():
    tensor, _ = prepare_image(Image.new("L", (64, 64), 255), (64, 64))
    assert tensor.shape == (3, 64, 64) and tensor.min() == pytest.approx(1.0)


@pytest.mark.parametrize(("size", "bucket"), [((300, 100), (128, 64)), ((64, 64), (64, 64)), ((99, 333), (320, 832))])
def test_cover_size_covers(size, bucket):
    w, h = cover_size(*size, bucket)
    assert w >= bucket[0] and h >= bucket[1] and (w == bucket[0] or h == bucket[1])
