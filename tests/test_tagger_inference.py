"""Batched, pipelined inference on a tiny WD14-contract graph: same answers as one at a time, in order, robust."""

import threading

import numpy as np
import pytest
from PIL import Image
from tagger_graphs import expected_probs, make_model_folder

from lib_lora_train.tagger import inference
from lib_lora_train.tagger.inference import auto_batch_size, predict_images, predict_paths
from lib_lora_train.tagger.runtime import LoadedTagger, TaggerLoadError

COLOURS = [(255, 0, 0), (0, 0, 255), (255, 255, 255), (30, 200, 90), (0, 0, 0), (128, 64, 32), (9, 99, 199)]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {
        "dynamic": LoadedTagger("tiny", make_model_folder(root / "tiny"), use_gpu=False),
        "fixed1": LoadedTagger("tiny1", make_model_folder(root / "tiny1", fixed_batch=1), use_gpu=False),
        "fixed3": LoadedTagger("tiny3", make_model_folder(root / "tiny3", fixed_batch=3), use_gpu=False),
    }


@pytest.fixture()
def image_files(tmp_path):
    paths = []
    rng = np.random.default_rng(0)
    for i, colour in enumerate(COLOURS):
        path = tmp_path / f"{i:02d}.{'png' if i % 2 else 'jpg'}"
        Image.new("RGB", (40 + 7 * i, 30 + 5 * i), colour).save(path)
        paths.append(path)
    noisy = tmp_path / "noise.png"
    Image.fromarray(rng.integers(0, 256, (50, 70, 4), dtype=np.uint8), "RGBA").save(noisy)
    return [*paths, noisy]


def _flatten(batches):
    return [p for batch in batches for p in batch]


def test_batched_results_equal_one_at_a_time(models, image_files):
    model = models["dynamic"]
    batched = _flatten(predict_paths(model, image_files, batch_size=3, workers=2))
    single = _flatten(predict_paths(model, image_files, batch_size=1, workers=1))
    assert [p.index for p in batched] == list(range(len(image_files)))
    assert [p.path for p in batched] == image_files
    for a, b in zip(batched, single, strict=False):
        np.testing.assert_allclose(a.probs, b.probs, rtol=0, atol=1e-6)


def test_solid_colours_give_the_predicted_probabilities(models, image_files):
    preds = _flatten(predict_paths(models["dynamic"], image_files[:2], batch_size=2))
    for pred, (r, g, b) in zip(preds, COLOURS[:2], strict=False):
        # JPEG may shift a solid colour by a level or two; the expectation is computed from the exact colour
        np.testing.assert_allclose(pred.probs, expected_probs((b / 255, g / 255, r / 255)), atol=0.05)


@pytest.mark.parametrize("fixed", ["fixed1", "fixed3"])
def test_fixed_batch_graphs_are_fed_their_own_batch_size(models, image_files, fixed):
    model = models[fixed]
    assert auto_batch_size(model) == model.fixed_batch
    fixed_preds = _flatten(predict_paths(model, image_files))  # 8 images: 3+3+2 padded to 3 for fixed3
    dynamic_preds = _flatten(predict_paths(models["dynamic"], image_files, batch_size=4))
    for a, b in zip(fixed_preds, dynamic_preds, strict=False):
        np.testing.assert_allclose(a.probs, b.probs, atol=1e-6)
    # asking for a larger batch still works: the model chunks it
    assert model.run(np.zeros((5, model.input_size, model.input_size, 3), np.float32)).shape[0] == 5


def test_corrupt_and_empty_images_are_reported_and_skipped(models, image_files, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    files = [image_files[0], bad, image_files[1], empty, image_files[2]]
    preds = _flatten(predict_paths(models["dynamic"], files, batch_size=2))
    assert [p.path for p in preds] == files
    assert preds[1].probs is None and "broken.jpg" in preds[1].error
    assert preds[3].probs is None and "empty.png" in preds[3].error and "empty" in preds[3].error
    good = [p for p in preds if p.probs is not None]
    assert len(good) == 3 and not any(p.error for p in good)


def test_a_batch_where_every_image_fails_does_not_reach_the_model(tmp_path):
    class Refuses:
        input_size, fixed_batch, on_gpu = 32, None, False

        def run(self, batch):
            raise AssertionError("the model must not run on a batch of failed images")

    files = [tmp_path / "a.png", tmp_path / "b.png"]
    for f in files:
        f.write_bytes(b"junk")
    preds = _flatten(predict_paths(Refuses(), files, batch_size=2))
    assert all(p.error for p in preds)


def test_decoding_overlaps_inference(monkeypatch, tmp_path):
    """While batch 0 is in the model, images of batch 1 must already be decoding (the pipeline, not a loop)."""
    second_batch_started = threading.Event()
    original = inference.preprocess_file

    def spying_preprocess(path, size, out, min_side=None, layout=None):
        if path.stem.startswith("b1"):
            second_batch_started.set()
        return original(path, size, out, min_side, layout)

    class WaitsForOverlap:
        input_size, fixed_batch, on_gpu = 32, None, False
        calls = 0
        overlapped = []

        def run(self, batch):
            if self.calls == 0:
                self.overlapped.append(second_batch_started.wait(timeout=10))
            self.calls += 1
            return np.zeros((len(batch), 4), np.float32)

    files = []
    for name in ("b0_0", "b0_1", "b1_0", "b1_1"):
        files.append(tmp_path / f"{name}.png")
        Image.new("RGB", (32, 32)).save(files[-1])
    monkeypatch.setattr(inference, "preprocess_file", spying_preprocess)
    model = WaitsForOverlap()
    assert len(_flatten(predict_paths(model, files, batch_size=2, workers=2))) == 4
    assert model.overlapped == [True]


def test_stopping_early_leaves_no_threads_running(models, image_files):
    batches = predict_paths(models["dynamic"], image_files * 3, batch_size=2)
    first = next(batches)
    batches.close()
    assert len(first) == 2
    names = [t.name for t in threading.enumerate()]
    assert not [n for n in names if n.startswith(("tagger-decode", "tagger-infer"))]


def test_in_memory_images(models):
    probs = predict_images(models["dynamic"], [Image.new("RGB", (16, 32), (0, 0, 255))])
    assert probs.shape == (1, 16)
    # half of the padded square is white: mean B=1, G=R=0.5
    np.testing.assert_allclose(probs[0], expected_probs((1.0, 0.5, 0.5)), atol=1e-3)
    # smaller than the model (32 px): padded with white up to 32x32, so 200 of 1024 pixels are blue
    small = predict_images(models["dynamic"], [Image.new("RGB", (10, 20), (0, 0, 255))])
    np.testing.assert_allclose(small[0], expected_probs((1.0, 824 / 1024, 824 / 1024)), atol=1e-3)


def test_mismatched_tag_list_is_refused_with_a_fix(tmp_path):
    folder = make_model_folder(tmp_path / "m")
    lines = (folder / "selected_tags.csv").read_text().splitlines()
    (folder / "selected_tags.csv").write_text("\n".join(lines[:-3]) + "\n")
    with pytest.raises(TaggerLoadError, match="different models"):
        LoadedTagger("m", folder, use_gpu=False)
