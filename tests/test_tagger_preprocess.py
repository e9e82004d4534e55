"""The model's input contract: white alpha and padding, area/cubic resize, BGR float32 0-255 NHWC."""

import numpy as np
from PIL import Image

from lib_lora_train.tagger.preprocess import pad_to_square, preprocess


def test_output_is_float32_square_bgr_in_0_255():
    out = preprocess(Image.new("RGB", (40, 40), (255, 0, 0)), 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.float32
    assert (out[..., 2] == 255).all() and (out[..., 0] == 0).all()  # red lands in the last (R of BGR) channel


def test_wide_image_is_centred_on_white_padding():
    image = Image.new("RGB", (32, 16), (0, 0, 255))
    out = preprocess(image, 32)
    assert (out[:8] == 255).all() and (out[24:] == 255).all()  # white bands above and below
    assert (out[8:24, :, 0] == 255).all() and (out[8:24, :, 2] == 0).all()  # blue band in the middle (BGR)
    assert pad_to_square(Image.new("RGB", (10, 30))).size == (30, 30)


def test_transparency_becomes_white():
    image = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    image.paste((0, 0, 0, 255), (0, 0, 16, 32))  # left half opaque black
    out = preprocess(image, 32)
    assert (out[:, 16:] == 255).all() and (out[:, :16] == 0).all()


def test_shrinking_averages_areas():
    checker = np.indices((64, 64)).sum(axis=0) % 2 * 255  # 1-px checkerboard
    image = Image.fromarray(np.repeat(checker[..., None], 3, axis=2).astype(np.uint8))
    out = preprocess(image, 32)
    # every 2x2 block holds two black and two white pixels: an area average is mid-grey everywhere
    assert np.abs(out - 127.5).max() <= 1.0


def test_enlarging_is_bicubic():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    expected = np.asarray(image.resize((32, 32), Image.Resampling.BICUBIC))[:, :, ::-1]
    assert np.array_equal(preprocess(image, 32), expected.astype(np.float32))


def test_writes_into_a_batch_slot_without_copying():
    batch = np.zeros((2, 32, 32, 3), dtype=np.float32)
    result = preprocess(Image.new("L", (8, 8), 100), 32, out=batch[1])
    assert result.base is batch or np.shares_memory(result, batch)
    assert (batch[1] == 100).all() and (batch[0] == 0).all()


def test_shrinking_by_an_odd_factor_matches_an_area_resize():
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (60, 60, 3), dtype=np.uint8))
    expected = np.asarray(image.resize((32, 32), Image.Resampling.BOX))[:, :, ::-1]
    assert np.array_equal(preprocess(image, 32), expected.astype(np.float32))
