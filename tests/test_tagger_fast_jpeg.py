"""Fast JPEG decoding for the tagger: reduced-scale decode that keeps twice the model's size, and inputs that stay
close to the exact path."""

import numpy as np
import pytest
from PIL import Image, ImageDraw
from tagger_graphs import make_model_folder

from lib_lora_train import images
from lib_lora_train.images import load_rgb
from lib_lora_train.tagger import inference
from lib_lora_train.tagger.folder_job import FolderJobRequest, run_folder_job
from lib_lora_train.tagger.preprocess import preprocess
from lib_lora_train.tagger.runtime import LoadedTagger


def photo(size=(1600, 1200)) -> Image.Image:
    """Smooth gradients and shapes, like a photo: what a reduced-scale decode is meant for."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width * 255, y / height * 255, (x + y) / (width + height) * 255], axis=-1)
    image = Image.fromarray(base.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    draw.ellipse([width // 4, height // 4, width // 2, height // 2], fill=(200, 30, 60))
    draw.rectangle([width // 2, height // 3, width - 100, height - 100], fill=(20, 160, 90))
    return image


def test_a_big_jpeg_is_decoded_small_but_never_below_min_side(tmp_path):
    path = tmp_path / "big.jpg"
    photo().save(path, quality=92)
    assert load_rgb(path).size == (1600, 1200)
    assert load_rgb(path, min_side=400).size == (400, 300)  # 1/4 scale: exactly the longer side asked for
    assert load_rgb(path, min_side=500).size == (800, 600)  # 1/4 would be 400 < 500: 1/2
    assert load_rgb(path, min_side=1000).size == (1600, 1200)  # no scale fits
    png = tmp_path / "big.png"
    photo().save(png)
    assert load_rgb(png, min_side=400).size == (1600, 1200)  # only JPEG decoders can scale


def test_reduced_decode_keeps_the_exif_orientation(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": a portrait phone photo stored landscape
    photo().save(path, exif=exif.tobytes(), quality=92)
    assert load_rgb(path).size == (1200, 1600)
    assert load_rgb(path, min_side=400).size == (300, 400)


def test_fast_input_stays_within_a_level_or_two_of_the_exact_input(tmp_path):
    path = tmp_path / "p.jpg"
    photo().save(path, quality=92)
    size = 224
    exact = preprocess(load_rgb(path), size)
    fast = preprocess(load_rgb(path, min_side=inference.FAST_JPEG_MARGIN * size), size)
    diff = np.abs(exact - fast)
    assert load_rgb(path, min_side=2 * size).size[0] < 1600  # the fast path did decode at a reduced scale
    assert diff.mean() < 1.5 and np.percentile(diff, 99) < 12


@pytest.mark.parametrize("fast", [True, False])
def test_folder_job_decodes_as_asked(tmp_path, monkeypatch, fast):
    model = LoadedTagger("tiny", make_model_folder(tmp_path / "model"), use_gpu=False)
    data = tmp_path / "data"
    data.mkdir()
    photo((400, 300)).save(data / "a.jpg")
    asked = []
    real = images.load_rgb

    def recording(path, *, min_side=None):
        asked.append(min_side)
        return real(path, min_side=min_side)

    monkeypatch.setattr(inference, "load_rgb", recording)
    summary = run_folder_job(model, model.tags, FolderJobRequest(str(data), existing="overwrite", fast_jpeg=fast))
    assert summary.written == 1 and not summary.errors
    assert asked == [2 * model.input_size if fast else None]
