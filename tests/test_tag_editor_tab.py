"""The tab's handlers and routes with gradio 3.41 and FastAPI, without a WebUI."""

import json
from types import SimpleNamespace

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from tag_editor_helpers import make_folder

gr = pytest.importorskip("gradio")

from lib_lora_train.ui.tag_editor import handlers as h  # noqa: E402
from lib_lora_train.ui.tag_editor import tools as tools  # noqa: E402
from lib_lora_train.ui.tag_editor.api import mount_tag_editor_api  # noqa: E402
from lib_lora_train.ui.tag_editor.tab import build_tag_editor_tab, current_dataset_folder  # noqa: E402


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setattr(h.SESSION, "dataset", None)
    monkeypatch.setattr(h.SESSION.thumbnails, "cache_dir", tmp_path / "thumbs")
    return make_folder(
        tmp_path / "outside_webui" / "ds",
        {"a.png": "mychar, absurdres, blue eyes", "b.png": "blue eyes, smile", "c.png": None},
    )


def select(index):
    return SimpleNamespace(index=index, value=None)


def test_load_filter_edit_undo_save_through_the_handlers(folder):
    image, _, caption, gallery, page, label, table, tags_json, status = h.load(str(folder), True, ".txt")
    assert "3 images" in status and "1 without caption" in status
    assert image == str(folder / "a.png") and caption == "mychar, absurdres, blue eyes"
    assert gallery == gr.update()  # thumbnails come with the follow-up page event
    gallery, *_ = h.go_to_page(1)
    assert len(gallery) == 3 and gallery[0][1] == "a.png" and "3 of 3 images shown" in label
    assert table[0] == ["blue eyes", 2] and "smile" in json.loads(tags_json)
    assert current_dataset_folder() == str(folder)

    gallery, *_, status = h.apply_filter("blue eyes", "AND", "smile", "OR", "", False, False)
    assert [g[1] for g in gallery] == ["a.png"] and "1 image(s) match" in status
    *_, status = h.add_tags("filtered images", "solo", "front", 1)
    assert "1 caption(s) changed" in status
    assert h.SESSION.dataset.entry(0).tags == ["mychar", "solo", "absurdres", "blue eyes"]
    *_, status = h.undo()
    assert status == "undone: add solo at the front"
    h.remove_tags("all images", "absurdres")
    *_, status = h.save(False)
    assert status.startswith("✔ saved 1 caption(s)")
    assert (folder / "a.txt").read_text(encoding="utf-8") == "mychar, blue eyes"


def test_errors_become_status_messages(folder):
    *_, status = h.load(str(folder / "missing"), True, ".txt")
    assert status.startswith("⚠") and "not a folder" in status
    h.load(str(folder), True, ".txt")
    *_, status = h.apply_filter("", "AND", "", "OR", "(", True, False)
    assert "not a valid regular expression" in status
    *_, status = h.add_tags("selected images", "x", "front", 0)
    assert "no image is selected" in status


def test_gallery_click_selects_and_opens_the_per_image_editor(folder):
    h.load(str(folder), True, ".txt")
    h.go_to_page(1)
    image, _, caption, gallery, *_ = h.gallery_click(True, select(1))
    assert image == str(folder / "b.png") and caption == "blue eyes, smile"
    assert gallery[1][1].startswith("✔ ")
    h.quick_add("new tag")
    assert h.SESSION.dataset.entry(1).tags == ["blue eyes", "smile", "new tag"]
    h.quick_remove("smile")
    image, _, caption, *_ = h.step_image(1)
    assert image == str(folder / "c.png") and caption == ""
    h.edit_caption("written, by hand")
    *_, status = h.trash_current()
    assert "moved 1 file(s)" in status and (folder / ".trash" / "c.png").exists()
    assert len(h.SESSION.dataset) == 2


def test_tag_click_adds_to_the_include_filter(folder):
    h.load(str(folder), True, ".txt")
    assert h.tag_clicked("smile", select([0, 0])) == "smile, blue eyes"


def test_suggestion_panels_apply_only_what_is_checked(folder):
    h.load(str(folder), True, ".txt")
    update, note = tools.find_meta("absurdres\nhighres")
    assert update["choices"] == ["absurdres"] and "absurdres (1)" in note
    tools.remove_checked("all images", ["absurdres"])
    update, _ = tools.find_traits("all images", "mychar", 0.6)
    assert update["choices"] == ["blue eyes"] and update["value"] == []


def test_thumbnails_of_a_dataset_outside_the_app_folder_are_served(folder, tmp_path):
    tab = build_tag_editor_tab()
    h.load(str(folder), True, ".txt")
    gallery_value, *_ = h.go_to_page(1)
    gallery = next(b for b in tab.blocks.values() if isinstance(b, gr.Gallery))
    served = gallery.postprocess(gallery_value)
    client = TestClient(gr.routes.App.create_app(tab))
    response = client.get(f"/file={served[0][0]['name']}")
    assert response.status_code == 200 and response.content[:3] == b"\xff\xd8\xff"  # a JPEG thumbnail
    # the user's own files are not exposed through /file=
    assert client.get(f"/file={folder / 'a.txt'}").status_code == 403


def test_api_serves_only_images_of_the_open_dataset(folder, tmp_path):
    app = FastAPI()
    mount_tag_editor_api(app)
    client = TestClient(app)
    assert client.get("/train-tools/v1/tag-editor/status").json()["folder"] is None
    h.load(str(folder), True, ".txt")
    assert client.get("/train-tools/v1/tag-editor/image", params={"path": str(folder / "a.png")}).status_code == 200
    assert client.get("/train-tools/v1/tag-editor/image", params={"path": str(folder / "a.txt")}).status_code == 404
    assert client.get("/train-tools/v1/tag-editor/image", params={"path": "/etc/passwd"}).status_code == 404
    assert client.get("/train-tools/v1/tag-editor/tags").json()[0] == "blue eyes"


def test_api_auth_dependency_guards_the_routes(folder):
    from fastapi import HTTPException

    def deny():
        raise HTTPException(status_code=401, detail="no")

    app = FastAPI()
    mount_tag_editor_api(app, deny)
    assert TestClient(app).get("/train-tools/v1/tag-editor/tags").status_code == 401


def test_image_fix_panels_find_and_fix(folder):
    from PIL import Image

    Image.new("RGBA", (40, 10), (0, 0, 0, 0)).save(folder / "c.png")  # transparent and 4:1
    h.load(str(folder), True, ".txt")
    gallery, note = tools.find_transparent("all images")
    assert note == "1 transparent image(s)" and len(gallery) == 1
    *_, status = tools.flatten_found()
    assert "flattened 1 image(s)" in status
    update, gallery, note = tools.find_wide("all images", 3.0)
    assert update["choices"] == ["c.png (40x10, 4.0:1)"] and "1 image(s) beyond" in note
    assert tools.pick_wide(None, 3.0)[-1] == ""  # refilled list, nothing picked: no warning
    left, top, right, bottom, image, size = tools.pick_wide("c.png (40x10, 4.0:1)", 3.0)
    assert (left, top, right, bottom) == (5, 0, 35, 10) and size == "40x10"
    *_, status = tools.crop_current(left, top, right, bottom)
    assert status.startswith("cropped c.png")
    with Image.open(folder / "c.png") as cropped:
        assert cropped.size == (30, 10)


def test_synonym_and_duplicate_panels(folder):
    from PIL import Image

    (folder / "c.txt").write_text("blue_eyes", encoding="utf-8")
    Image.new("RGB", (32, 32), (10, 200, 30)).save(folder / "c.png")
    Image.new("RGB", (64, 64), (10, 200, 30)).save(folder / "d.png")
    h.load(str(folder), True, ".txt")
    update, target, note = tools.find_synonyms()
    assert update["choices"] == ["1: blue eyes / blue_eyes"] and target == "blue eyes" and "same words" in note
    assert tools.synonym_target("1: blue eyes / blue_eyes") == "blue eyes"
    *_, status = tools.merge_group("all images", "1: blue eyes / blue_eyes", "blue eyes")
    assert "1 caption(s) changed" in status and h.SESSION.dataset.frequencies()["blue eyes"] == 3
    gallery, note = tools.find_duplicates("all images", "phash", 6)
    # a.png and b.png are the same solid colour too
    assert "2 group(s)" in note
    assert [label for _, label in gallery] == ["group 1: a.png", "group 1: b.png", "group 2: c.png", "group 2: d.png"]
    _, _, caption, *_ = tools.duplicate_clicked(select(3))
    assert h.SESSION.current == h.SESSION.dataset.find("d.png") and caption == ""
