"""ML-Danbooru models: found in a folder, downloaded from the hub (mocked), fed with their own preprocessing
(aspect ratio kept, RGB 0-1 NCHW, one image at a time), their logits turned into probabilities, in the tab's logic
and in folder jobs."""

import json
import shutil

import huggingface_hub
import numpy as np
import pytest
from PIL import Image
from tagger_graphs import MLD_TAGS, make_mld_folder, make_model_folder, mld_expected_probs

from lib_lora_train.tagger.folder_job import FolderJobRequest, run_folder_job
from lib_lora_train.tagger.hub import download_model
from lib_lora_train.tagger.inference import predict_images, predict_paths
from lib_lora_train.tagger.models import KNOWN_MODELS, MLD, WD14, list_models
from lib_lora_train.tagger.runtime import LoadedTagger, TaggerLoadError
from lib_lora_train.tagger.service import TaggerConfig, TaggerService
from lib_lora_train.tagger.tab_actions import TagForm, interrogate_single, model_thresholds
from lib_lora_train.tagger.tag_table import TagTableError, load_tag_table

CAFORMER = next(m for m in KNOWN_MODELS if m.name == "mld-caformer.dec-5-97527")
NAMES = [t[0] for t in MLD_TAGS]


@pytest.fixture()
def models_dir(tmp_path):
    root = tmp_path / "models"
    make_mld_folder(root / CAFORMER.name, CAFORMER.model_file)  # as downloaded: the hub's file names
    make_mld_folder(root / "my-mld", "renamed-by-hand.onnx")  # dropped in by a user
    return root


@pytest.fixture()
def service(models_dir):
    return TaggerService(TaggerConfig(str(models_dir), use_gpu=False, allow_download=False))


def test_mld_folders_are_found_known_or_dropped_in(models_dir):
    make_model_folder(models_dir / "a-wd14")
    two = make_mld_folder(models_dir / "two-graphs")
    shutil.copy(two / "ml_tiny.onnx", two / "other.onnx")  # which one? not a model
    entries = {e.name: e for e in list_models(models_dir)}
    assert entries[CAFORMER.name].is_local and entries[CAFORMER.name].family == MLD
    assert entries["my-mld"].family == MLD and entries["my-mld"].general_threshold == 0.7
    assert entries["a-wd14"].family == WD14 and "two-graphs" not in entries
    assert entries["my-mld"].files.model.name == "renamed-by-hand.onnx"


def test_logits_become_probabilities_with_the_aspect_ratio_kept(service):
    tagger = service.load(CAFORMER.name)
    assert tagger.layout.keep_ratio and tagger.input_size == 448 and not tagger.tags.rating_mask.any()
    shapes = []
    real_run = tagger.session.run

    def spy(outputs, feeds):
        shapes.append(next(iter(feeds.values())).shape)
        return real_run(outputs, feeds)

    tagger.session.run = spy
    # a WD14 model would pad this blue 300x200 image with white; ML-Danbooru resizes it whole (no padding)
    probs = predict_images(tagger, [Image.new("RGB", (300, 200), (0, 0, 255)), Image.new("RGB", (64, 64), "red")])
    assert shapes == [(1, 3, 448, 672), (1, 3, 448, 448)]  # one image at a time, each its own shape
    np.testing.assert_allclose(probs[0], mld_expected_probs((0.0, 0.0, 1.0)), rtol=1e-5)
    np.testing.assert_allclose(probs[1], mld_expected_probs((1.0, 0.0, 0.0)), rtol=1e-5)


def test_a_fixed_square_mld_graph_takes_batches_of_squares(tmp_path):
    folder = make_mld_folder(tmp_path / "square", side=64)
    tagger = LoadedTagger("square", folder, use_gpu=False)
    assert tagger.layout.stackable and tagger.input_size == 64
    probs = predict_images(tagger, [Image.new("RGB", (30, 90), "white")] * 3)  # stretched to 64x64, not padded
    np.testing.assert_allclose(probs, np.tile(mld_expected_probs((1.0, 1.0, 1.0)), (3, 1)), rtol=1e-5)


def test_folder_job_runs_mld_one_image_at_a_time_and_skips_broken_files(service, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    Image.new("RGB", (120, 80), (255, 0, 0)).save(data / "a_red.png")
    Image.new("RGB", (50, 90), (0, 0, 255)).save(data / "b_blue.png")
    (data / "c_broken.png").write_bytes(b"not a png")
    Image.new("RGB", (64, 64), (0, 0, 255)).save(data / "d_blue.jpg")
    tagger = service.load(CAFORMER.name)
    predictions = [p for batch in predict_paths(tagger, sorted(data.iterdir()), batch_size=3) for p in batch]
    assert [p.path.name for p in predictions] == ["a_red.png", "b_blue.png", "c_broken.png", "d_blue.jpg"]
    assert predictions[2].probs is None and "c_broken.png" in predictions[2].error
    red, blue = NAMES.index("red_theme"), NAMES.index("blue_theme")
    assert predictions[0].probs[red] > 0.99 and predictions[1].probs[blue] > 0.99 and predictions[3].probs[blue] > 0.9
    options = service.default_options(CAFORMER.name)
    summary = run_folder_job(tagger, tagger.tags, FolderJobRequest(str(data), options=options, batch_size=2))
    assert summary.written == 3 and len(summary.errors) == 1
    # 0.7 threshold: 1girl (0.95), smile (0.75) and the colour; not mid_tag (0.5)
    assert (data / "a_red.txt").read_text(encoding="utf-8") == "red theme, 1girl, smile"


def test_mld_decodes_jpegs_at_full_size_even_with_fast_jpeg(service, tmp_path, monkeypatch):
    # the fast-JPEG margin keeps the longer side; ML-Danbooru needs the short side at 448, so it gets every pixel
    from lib_lora_train.tagger import inference

    Image.new("RGB", (2400, 600), "red").save(tmp_path / "wide.jpg")
    asked = []
    real = inference.load_rgb
    monkeypatch.setattr(inference, "load_rgb", lambda path, min_side=None: asked.append(min_side) or real(path))
    tagger = service.load(CAFORMER.name)
    (prediction,) = [p for batch in predict_paths(tagger, [tmp_path / "wide.jpg"], fast_jpeg=True) for p in batch]
    assert asked == [None] and prediction.probs[NAMES.index("red_theme")] > 0.99


def test_the_tab_uses_mld_thresholds_and_tags_a_single_image(service):
    assert model_thresholds(service, CAFORMER.name, (0.35, 0.85)) == (0.7, 0.7)
    form = TagForm(general_threshold=0.7, character_threshold=0.7, include_rating=True)
    result = interrogate_single(service, CAFORMER.name, Image.new("RGB", (40, 30), (0, 0, 255)), form)
    assert result.caption == "blue theme, 1girl, smile" and result.ratings == {}  # no ratings in ML-Danbooru
    assert "short side 448px (aspect ratio kept" in result.status


def test_download_fetches_the_mld_files_from_the_hub(tmp_path, monkeypatch):
    source = make_mld_folder(tmp_path / "hub", CAFORMER.model_file)
    calls = []

    def fake_download(repo_id, filename, revision=None, local_dir=None, **_):
        calls.append((repo_id, filename, revision))
        shutil.copy(source / filename, local_dir / filename)
        return str(local_dir / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", lambda url: (_ for _ in ()).throw(OSError("off")))
    monkeypatch.setattr(huggingface_hub, "hf_hub_url", lambda repo, name, revision=None: f"{repo}/{name}")
    service = TaggerService(TaggerConfig(str(tmp_path / "models"), use_gpu=False))
    result = service.interrogate(
        CAFORMER.name, Image.new("RGB", (20, 20), "red"), service.default_options(CAFORMER.name)
    )
    assert calls == [
        ("deepghs/ml-danbooru-onnx", "classes.json", None),
        ("deepghs/ml-danbooru-onnx", "ml_caformer_m36_dec-5-97527.onnx", None),
    ]
    assert "red theme" in result.tags
    pinned = next(m for m in KNOWN_MODELS if m.name == "wd-v1-4-vit-tagger-v2@v2.0")
    wd_source = make_model_folder(tmp_path / "wd-hub")
    monkeypatch.setattr(
        huggingface_hub,
        "hf_hub_download",
        lambda repo_id, filename, revision=None, local_dir=None, **_: calls.append((repo_id, filename, revision))
        or shutil.copy(wd_source / filename, local_dir / filename),
    )
    download_model(pinned, tmp_path / "models")
    assert calls[-2:] == [
        ("SmilingWolf/wd-v1-4-vit-tagger-v2", "selected_tags.csv", "v2.0"),
        ("SmilingWolf/wd-v1-4-vit-tagger-v2", "model.onnx", "v2.0"),
    ]


def test_bad_class_lists_and_graphs_are_refused_with_a_fix(tmp_path):
    folder = make_mld_folder(tmp_path / "m")
    (folder / "classes.json").write_text(json.dumps({"a": 1}), encoding="utf-8")
    with pytest.raises(TagTableError, match="list of tag names"):
        load_tag_table(folder / "classes.json")
    (folder / "classes.json").write_text(json.dumps({"1": "b", "0": "a"}), encoding="utf-8")
    assert load_tag_table(folder / "classes.json").names == ("a", "b")  # an index map is put in order
    (folder / "classes.json").write_text(json.dumps(NAMES[:-1]), encoding="utf-8")
    with pytest.raises(TaggerLoadError, match="different models"):
        LoadedTagger("m", folder, use_gpu=False)
    wd = make_model_folder(tmp_path / "wd")
    (wd / "selected_tags.csv").unlink()
    (wd / "classes.json").write_text(json.dumps(["x"] * 16), encoding="utf-8")  # a WD14 graph passed off as mld
    with pytest.raises(TaggerLoadError, match="not an ML-Danbooru tagger"):
        LoadedTagger("wd", wd, use_gpu=False)
