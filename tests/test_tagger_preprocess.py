"""The models' input contracts. WD14: white alpha and padding (small images padded up to the model's size, never
enlarged), area resize, BGR float32 0-255 NHWC. ML-Danbooru: short side to the model's side in multiples of 4,
Lanczos, RGB float32 0-1 NCHW."""

import numpy as np
import pytest
from PIL import Image

from lib_lora_train.tagger.models import MLD, WD14
from lib_lora_train.tagger.preprocess import InputLayout, mld_target_size, pad_to_square, preprocess, preprocess_mld


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


def test_small_images_are_padded_up_to_the_model_size_not_enlarged():
    # the reference (the WD 1.4 demo's make_square, copied by the WD14 tagger extension) pads to at least the
    # model's side with white and only ever shrinks, so a small image keeps its pixels, centred
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (8, 16, 3), dtype=np.uint8)  # 16 wide, 8 high
    out = preprocess(Image.fromarray(pixels), 32)
    assert np.array_equal(out[12:20, 8:24], pixels[:, :, ::-1].astype(np.float32))
    out[12:20, 8:24] = 255
    assert (out == 255).all()  # everything else is the white padding
    assert pad_to_square(Image.new("RGB", (10, 30)), min_side=40).size == (40, 40)


def test_writes_into_a_batch_slot_without_copying():
    batch = np.zeros((2, 32, 32, 3), dtype=np.float32)
    result = preprocess(Image.new("L", (40, 40), 100), 32, out=batch[1])
    assert result.base is batch or np.shares_memory(result, batch)
    assert (batch[1] == 100).all() and (batch[0] == 0).all()


def test_shrinking_by_an_odd_factor_matches_an_area_resize():
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (60, 60, 3), dtype=np.uint8))
    expected = np.asarray(image.resize((32, 32), Image.Resampling.BOX))[:, :, ::-1]
    assert np.array_equal(preprocess(image, 32), expected.astype(np.float32))


@pytest.mark.parametrize(
    ("size", "expected"), [((300, 200), (672, 448)), ((448, 448), (448, 448)), ((101, 333), (448, 1476))]
)
def test_mld_keeps_the_ratio_with_the_short_side_at_the_model_side_in_multiples_of_4(size, expected):
    # 101x333: 333/101*448 = 1477.07 -> 1477 -> 1476 (multiple of 4)
    assert mld_target_size(*size, 448) == expected
    out = preprocess_mld(Image.new("RGB", size, (255, 0, 51)), 448)
    assert out.shape == (3, expected[1], expected[0]) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0, 0], [1.0, 0.0, 0.2], atol=1e-6)  # RGB order, 0-1


def test_mld_resizes_with_lanczos_and_flattens_alpha_onto_white():
    rng = np.random.default_rng(2)
    image = Image.fromarray(rng.integers(0, 256, (50, 60, 3), dtype=np.uint8))
    # 60x50 -> short side 52: 62.4 -> 62 -> 60 (multiple of 4) wide
    expected = np.asarray(image.resize((60, 52), Image.Resampling.LANCZOS), dtype=np.float32).transpose(2, 0, 1)
    np.testing.assert_array_equal(preprocess_mld(image, 52), expected / np.float32(255))
    clear = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    assert (preprocess_mld(clear, 8) == 1.0).all()


def test_layouts_prepare_each_family():
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    assert InputLayout(WD14, 32).prepare(image).shape == (32, 32, 3)
    assert InputLayout(MLD, 32).prepare(image).shape == (3, 32, 32)  # a fixed square graph: squares
    assert InputLayout(MLD, 32, keep_ratio=True).prepare(image).shape == (3, 32, 64)
    assert not InputLayout(MLD, 32, keep_ratio=True).stackable and InputLayout(MLD, 32).stackable
