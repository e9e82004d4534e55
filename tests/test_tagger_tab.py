"""The tab's button logic (core, no gradio) and that the gradio tab builds outside the WebUI."""

import importlib.util

import pytest
from PIL import Image
from tagger_graphs import make_model_folder

from lib_lora_train.tagger.service import TaggerConfig, TaggerService
from lib_lora_train.tagger.tab_actions import (
    FolderForm,
    TagForm,
    interrogate_single,
    model_thresholds,
    tag_folder,
    unload_models,
)
from lib_lora_train.ui.tagger import settings as tagger_settings


@pytest.fixture()
def service(tmp_path):
    make_model_folder(tmp_path / "models" / "tiny-local")
    return TaggerService(TaggerConfig(str(tmp_path / "models"), use_gpu=False, allow_download=False))


FORM = TagForm(general_threshold=0.35, character_threshold=0.85, exclude="solo", max_tags=4.0)


def test_single_image_gives_caption_confidences_and_status(service):
    result = interrogate_single(service, "tiny-local", Image.new("RGB", (9, 9), "white"), FORM)
    assert result.caption == "white background, 1girl, hatsune miku, long hair"
    assert result.tags["1girl"] == pytest.approx(0.9) and set(result.ratings) >= {"general", "explicit"}
    assert "tiny-local: 32px, 16 tags, dynamic batch, on CPU" in result.status


def test_single_image_problems_become_status_messages(service):
    assert "Drop an image" in interrogate_single(service, "tiny-local", None, FORM).status
    bad = TagForm(general_threshold=0.35, character_threshold=0.85, exclude="/(/")
    assert interrogate_single(service, "tiny-local", Image.new("RGB", (4, 4)), bad).status.startswith("Error: exclude")
    assert "unknown tagger model" in interrogate_single(service, "missing", Image.new("RGB", (4, 4)), FORM).status


def test_folder_button_reports_or_explains(service, tmp_path):
    assert tag_folder(service, "tiny-local", FolderForm(str(tmp_path / "nope")), FORM).startswith("Not started")
    assert "Not started" in tag_folder(service, "tiny-local", FolderForm(str(tmp_path), pattern="[name].png"), FORM)
    (tmp_path / "data").mkdir()
    Image.new("RGB", (8, 8), "white").save(tmp_path / "data" / "a.png")
    seen = []
    report = tag_folder(
        service,
        "tiny-local",
        FolderForm(str(tmp_path / "data"), batch_size=2.0),
        FORM,
        progress=lambda done, total, text: seen.append((done, total)),
    )
    assert "1 captions written" in report and "Tag frequencies" in report and seen[-1] == (1, 1)
    assert (tmp_path / "data" / "a.txt").read_text(encoding="utf-8").startswith("white background, 1girl")


def test_thresholds_follow_the_model(service):
    assert model_thresholds(service, "wd-vit-tagger-v3", (0.5, 0.5)) == (pytest.approx(0.2614), 0.85)
    assert model_thresholds(service, "no-such", (0.4, 0.9)) == (0.4, 0.9)


def test_unload_message(service):
    interrogate_single(service, "tiny-local", Image.new("RGB", (4, 4)), FORM)
    assert unload_models(service).startswith("Unloaded 1 model")


def test_settings_outside_the_webui_are_the_defaults():
    if importlib.util.find_spec("modules") is not None:
        pytest.skip("inside a WebUI process the values come from its settings")
    settings = tagger_settings.read_tagger_settings()
    assert settings.config.models_dir.replace("\\", "/").endswith("models/tagger")
    assert settings.general_threshold == 0.35 and settings.character_threshold == 0.85
    assert settings.config.use_gpu and settings.use_model_thresholds


def test_tab_builds_without_the_webui(service, monkeypatch):
    gr = pytest.importorskip("gradio")
    from lib_lora_train.ui.tagger.tab import build_tagger_tab

    monkeypatch.setattr(tagger_settings, "_service", service)
    monkeypatch.setattr(
        tagger_settings,
        "read_tagger_settings",
        lambda: tagger_settings.TaggerSettings(service.config, True, 0.35, 0.85),
    )
    monkeypatch.setattr("lib_lora_train.ui.tagger.tab.read_tagger_settings", tagger_settings.read_tagger_settings)
    tab = build_tagger_tab()
    assert isinstance(tab, gr.Blocks)
    dropdowns = [b for b in tab.blocks.values() if isinstance(b, gr.Dropdown)]
    assert dropdowns and dropdowns[0].choices in (["tiny-local"], [("tiny-local", "tiny-local")])


def test_first_use_download_shows_in_the_folder_progress(tmp_path):
    src = make_model_folder(tmp_path / "src")

    def fake_download(spec, models_dir, progress):
        progress(0.5, f"downloading {spec.repo_id}")
        import shutil

        return shutil.copytree(src, tmp_path / "models" / spec.name)

    service = TaggerService(TaggerConfig(str(tmp_path / "models"), use_gpu=False), downloader=fake_download)
    (tmp_path / "data").mkdir()
    Image.new("RGB", (8, 8), "white").save(tmp_path / "data" / "a.png")
    seen = []
    tag_folder(
        service,
        "wd-vit-tagger-v3",
        FolderForm(str(tmp_path / "data")),
        FORM,
        progress=lambda done, total, text: seen.append((done, total, text)),
    )
    assert seen[0] == (500, 1000, "downloading SmilingWolf/wd-vit-tagger-v3") and seen[-1][:2] == (1, 1)
