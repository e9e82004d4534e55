"""The editor's view state: lazy paged thumbnails, selection, scopes, stepping, refusing to drop unsaved edits."""

import pytest
from tag_editor_helpers import make_folder

from lib_lora_train.tag_editor.dataset import DatasetError
from lib_lora_train.tag_editor.filters import TagFilter
from lib_lora_train.tag_editor.operations import AddTags
from lib_lora_train.tag_editor.session import EditorSession


@pytest.fixture
def session(tmp_path):
    folder = make_folder(tmp_path / "ds", {f"{i:02d}.png": "even" if i % 2 == 0 else "odd" for i in range(12)})
    s = EditorSession(tmp_path / "thumbs", page_size=5, thumbnail_size=32)
    s.open(str(folder))
    return s


def test_only_the_shown_page_gets_thumbnails(session, tmp_path):
    assert session.page_count == 3
    assert not (tmp_path / "thumbs").exists()  # opening makes none
    items = session.page_items(1)
    assert [i.label for i in items] == ["05.png", "06.png", "07.png", "08.png", "09.png"]
    assert len(list((tmp_path / "thumbs").rglob("*.jpg"))) == 5
    assert len(session.page_items(7)) == 2 and session.page == 2  # clamped to the last page


def test_tag_counts_follow_the_filter(session):
    assert session.tag_counts() == [("even", 6), ("odd", 6)]
    session.set_filter(TagFilter(include=("odd",)))
    assert session.tag_counts() == [("odd", 6)]


def test_scopes_and_selection(session):
    session.set_filter(TagFilter(include=("odd",)))
    assert session.target_ids("all") is None
    assert session.target_ids("filtered") == session.visible
    with pytest.raises(DatasetError, match="no image is selected"):
        session.target_ids("selected")
    session.toggle(session.visible[0])
    session.invert()
    assert sorted(session.selected) == session.visible[1:]
    message = session.apply(AddTags(("picked",)), "selected")
    assert message == "add picked at the front: 5 caption(s) changed"
    picked = set(session.selected)
    session.set_filter(TagFilter())
    assert session.selected == picked  # still visible: still selected
    session.set_filter(TagFilter(include=("even",)))
    assert session.selected == set()  # the selection never holds hidden images


def test_step_wraps_and_follows_the_page(session):
    session.select_image(session.visible[-1])
    assert session.step(1) == session.visible[0] and session.page == 0
    assert session.step(-1) == session.visible[-1] and session.page == 2


def test_opening_another_folder_with_unsaved_edits_is_refused(session, tmp_path):
    session.apply(AddTags(("x",)), "all")
    with pytest.raises(DatasetError, match="not saved"):
        session.open(str(tmp_path))
    folder = session.dataset.root
    session.open(str(folder), discard_unsaved=True)  # reload: the edit is gone, the files untouched
    assert not session.dataset.dirty and "x" not in session.dataset.index
    session.apply(AddTags(("x",)), "all")
    session.save()
    other = make_folder(tmp_path / "other", {"a.png": "y"})
    assert session.open(str(other)).startswith("1 images")


def test_trashing_an_image_keeps_a_caption_that_another_image_shares(tmp_path):
    folder = make_folder(tmp_path / "ds", {"a.jpg": "x", "a.png": None, "b.png": "y"})
    s = EditorSession(tmp_path / "thumbs")
    s.open(str(folder))
    s.select_image(s.dataset.find("a.png"))
    s.trash_current()
    assert (folder / "a.txt").read_text(encoding="utf-8") == "x" and not (folder / "a.png").exists()
    s.select_image(s.dataset.find("b.png"))
    s.trash_current()
    assert not (folder / "b.txt").exists() and (folder / ".trash" / "b.txt").exists()
