"""The dataset model: loading, the incremental index, frequencies, per-image edits, undo/redo."""

import random

import pytest
from tag_editor_helpers import make_folder, rebuilt_index, tags_by_name

from lib_lora_train.tag_editor.dataset import Dataset, DatasetError
from lib_lora_train.tag_editor.operations import AddTags, MergeTags, RemoveTags, ReplaceTag, SortTags, Truncate


@pytest.fixture
def folder(tmp_path):
    return make_folder(
        tmp_path / "ds",
        {
            "a.png": "mychar, blue eyes, long hair",
            "b.jpg": "blue eyes, smile",
            "c.webp": None,
            "sub/d.png": "long hair, smile, smile",
            ".hidden/e.png": "should not load",
        },
    )


def test_load_reads_captions_lists_images_without_caption_and_skips_hidden(folder):
    ds = Dataset.load(folder)
    assert tags_by_name(ds) == {
        "a.png": ["mychar", "blue eyes", "long hair"],
        "b.jpg": ["blue eyes", "smile"],
        "c.webp": [],
        "sub/d.png": ["long hair", "smile", "smile"],
    }
    assert not ds.entry(ds.find("c.webp")).has_caption_file
    assert not ds.dirty


def test_load_without_recursion_and_with_another_caption_extension(folder):
    (folder / "a.caption").write_text("other, tags", encoding="utf-8")
    ds = Dataset.load(folder, recursive=False, caption_extension=".caption")
    assert tags_by_name(ds) == {"a.png": ["other", "tags"], "b.jpg": [], "c.webp": []}


def test_load_rejects_a_missing_folder_and_a_bad_extension(tmp_path):
    with pytest.raises(DatasetError, match="not a folder"):
        Dataset.load(tmp_path / "nope")
    with pytest.raises(DatasetError, match="should look like"):
        Dataset.load(tmp_path, caption_extension="txt")


def test_non_utf8_caption_is_reported_and_locked(tmp_path):
    folder = make_folder(tmp_path / "ds", {"a.png": b"caf\xe9, latin1", "b.png": "ok"})
    ds = Dataset.load(folder)
    bad = ds.entry(ds.find("a.png"))
    assert bad.locked and "not valid UTF-8" in bad.error and str(bad.caption_path) in ds.load_errors[0]
    assert ds.apply(AddTags(("x",))) == 1  # only b.png
    assert bad.tags == [] and not bad.dirty
    with pytest.raises(DatasetError, match="UTF-8"):
        ds.set_caption(bad.id, "new")


def test_frequencies_count_images_not_occurrences(folder):
    ds = Dataset.load(folder)
    freq = ds.frequencies()
    assert freq["smile"] == 2 and freq["blue eyes"] == 2 and freq["mychar"] == 1
    assert ds.frequencies([ds.find("sub/d.png")]) == {"long hair": 1, "smile": 1}
    assert ds.all_tags()[:3] == ["blue eyes", "long hair", "smile"]


def test_edit_updates_only_the_changed_entries_index(folder):
    ds = Dataset.load(folder)
    b = ds.find("b.jpg")
    untouched = {tag: set(ids) for tag, ids in ds.index.items() if b not in ids}
    assert ds.set_caption(b, "smile, new tag")
    assert ds.index["new tag"] == {b}
    assert b not in ds.index["blue eyes"]
    assert ds.index == rebuilt_index(ds)
    for tag, ids in untouched.items():
        assert ds.index[tag] == ids
    assert ds.dirty_ids() == [b]


def test_editing_back_to_the_saved_text_is_not_dirty(folder):
    ds = Dataset.load(folder)
    b = ds.find("b.jpg")
    ds.set_caption(b, "x")
    ds.set_caption(b, "blue eyes,smile")
    assert not ds.dirty


def test_unchanged_caption_edit_is_not_an_undo_step(folder):
    ds = Dataset.load(folder)
    assert not ds.set_caption(ds.find("b.jpg"), " blue eyes ,  smile")
    assert not ds.history.can_undo


def test_undo_redo_restore_tags_index_and_dirty_state(folder):
    ds = Dataset.load(folder)
    original = tags_by_name(ds)
    ds.apply(AddTags(("mychar",)))
    ds.apply(RemoveTags(("smile",)))
    after = tags_by_name(ds)
    assert ds.undo() == "remove smile"
    assert ds.undo() == "add mychar at the front"
    assert ds.undo() is None
    assert tags_by_name(ds) == original and not ds.dirty and ds.index == rebuilt_index(ds)
    assert ds.redo() == "add mychar at the front"
    assert ds.redo() == "remove smile"
    assert ds.redo() is None
    assert tags_by_name(ds) == after and ds.index == rebuilt_index(ds)


def test_new_edit_clears_redo(folder):
    ds = Dataset.load(folder)
    ds.apply(AddTags(("x",)))
    ds.undo()
    ds.apply(AddTags(("y",)))
    assert ds.redo() is None and ds.history.undo_labels() == ["add y at the front"]


def test_remove_entry_drops_it_from_index_and_undo_skips_it(folder):
    ds = Dataset.load(folder)
    ds.apply(AddTags(("x",)))
    a = ds.find("a.png")
    ds.remove_entry(a)
    assert a not in ds.index["x"] and "mychar" not in ds.index
    ds.undo()
    assert a not in ds.entries and ds.index == rebuilt_index(ds)


def test_index_stays_equal_to_a_rebuild_over_random_edits_and_undos(tmp_path):
    rng = random.Random(7)
    vocab = [f"t{i}" for i in range(15)]
    folder = make_folder(
        tmp_path / "ds", {f"{i}.png": ", ".join(rng.sample(vocab, rng.randint(0, 6))) for i in range(30)}
    )
    ds = Dataset.load(folder)
    for _ in range(60):
        choice = rng.randrange(7)
        ids = rng.sample(ds.ids(), 10)
        if choice == 0:
            ds.apply(AddTags((rng.choice(vocab),), rng.choice(["front", "end"])), ids)
        elif choice == 1:
            ds.apply(RemoveTags((rng.choice(vocab),)), ids)
        elif choice == 2:
            ds.apply(ReplaceTag(rng.choice(vocab), (rng.choice(vocab), "new")))
        elif choice == 3:
            ds.apply(MergeTags(tuple(rng.sample(vocab, 2)), rng.choice(vocab)))
        elif choice == 4:
            ds.apply(SortTags("frequency", 1, ds.frequencies()))
        elif choice == 5:
            ds.apply(Truncate(rng.randint(1, 4)), ids)
        else:
            ds.undo() if rng.random() < 0.7 else ds.redo()
        assert ds.index == rebuilt_index(ds)
        assert set(ds.dirty_ids()) == {i for i, e in ds.entries.items() if e.dirty}


def test_two_images_sharing_one_caption_file_lock_the_second(tmp_path):
    folder = make_folder(tmp_path / "ds", {"a.jpg": "x", "a.png": None})
    ds = Dataset.load(folder)
    first, second = ds.entry(ds.find("a.jpg")), ds.entry(ds.find("a.png"))
    assert not first.locked and second.locked and "shares the caption a.txt with a.jpg" in ds.load_errors[0]
    assert second.tags == ["x"]  # shown with its (shared) caption, but never edited or saved
    ds.apply(AddTags(("y",)))
    assert first.tags == ["y", "x"] and second.tags == ["x"] and ds.dirty_ids() == [first.id]
