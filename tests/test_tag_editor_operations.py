"""Each batch edit on its own (pure functions) and through the dataset (only the filtered set, one undo step)."""

import pytest
from tag_editor_helpers import make_folder, rebuilt_index, tags_by_name

from lib_lora_train.tag_editor.dataset import Dataset
from lib_lora_train.tag_editor.operations import (
    AddTags,
    MergeTags,
    RegexReplace,
    RemoveDuplicates,
    RemoveTags,
    ReplaceTag,
    SortTags,
    Truncate,
)


def test_add_at_front_moves_an_existing_activation_tag_first():
    assert AddTags(("mychar",)).transform(["a", "mychar", "b"]) == ["mychar", "a", "b"]
    assert AddTags(("x", "y")).transform(["a"]) == ["x", "y", "a"]


def test_add_at_front_after_kept_tags_keeps_the_activation_tag_first():
    assert AddTags(("solo",), "front", keep_first=1).transform(["mychar", "a", "solo"]) == ["mychar", "solo", "a"]


def test_add_at_end_appends_only_missing_tags():
    assert AddTags(("a", "z"), "end").transform(["a", "b"]) == ["a", "b", "z"]


def test_add_rejects_no_tags_and_bad_position():
    with pytest.raises(ValueError, match="no tag given"):
        AddTags((" ", ""))
    with pytest.raises(ValueError, match="front"):
        AddTags(("a",), "middle")


def test_remove_tags_removes_every_occurrence():
    assert RemoveTags(("a", "c")).transform(["a", "b", "a", "c"]) == ["b"]


def test_replace_renames_in_place_and_can_expand_to_several_tags():
    assert ReplaceTag("old", ("new",)).transform(["x", "old", "y"]) == ["x", "new", "y"]
    op = ReplaceTag("transparent background", ("white background", "simple background"))
    assert op.transform(["1girl", "transparent background", "smile"]) == [
        "1girl",
        "white background",
        "simple background",
        "smile",
    ]


def test_replace_does_not_duplicate_a_tag_already_present():
    assert ReplaceTag("old", ("new",)).transform(["new", "a", "old"]) == ["new", "a"]


def test_replace_leaves_unrelated_duplicates_alone():
    assert ReplaceTag("old", ("new",)).transform(["a", "a", "old"]) == ["a", "a", "new"]


def test_merge_keeps_the_target_once_where_the_first_synonym_stood():
    op = MergeTags(("striped shirt", "vertical stripes"), "vertical-striped shirt")
    assert op.transform(["1girl", "vertical stripes", "smile", "striped shirt", "vertical-striped shirt"]) == [
        "1girl",
        "vertical-striped shirt",
        "smile",
    ]


def test_regex_replace_per_tag_and_on_the_whole_caption():
    assert RegexReplace(r"^(\w+) hair$", r"\1-hair").transform(["long hair", "smile"]) == ["long-hair", "smile"]
    assert RegexReplace(r"_", " ").transform(["blue_eyes"]) == ["blue eyes"]
    # a replacement may split a tag into several, or remove it
    assert RegexReplace(r"^a b$", "a, b").transform(["a b", "c"]) == ["a", "b", "c"]
    assert RegexReplace(r"^junk.*", "").transform(["junk1", "keep"]) == ["keep"]
    assert RegexReplace(r"x, y", "z", whole_caption=True).transform(["x", "y", "w"]) == ["z", "w"]


def test_regex_replace_rejects_a_bad_pattern():
    with pytest.raises(ValueError, match="not a valid regular expression"):
        RegexReplace("(", "x")


def test_remove_duplicates_keeps_first_occurrences():
    assert RemoveDuplicates().transform(["a", "b", "a", "c", "b"]) == ["a", "b", "c"]


def test_sort_by_name_and_frequency_with_fixed_head():
    assert SortTags("name", keep_first=1).transform(["mychar", "c", "a", "b"]) == ["mychar", "a", "b", "c"]
    freq = {"a": 1, "b": 5, "c": 5}
    assert SortTags("frequency", 0, freq).transform(["a", "c", "b"]) == ["b", "c", "a"]
    with pytest.raises(ValueError, match="frequencies"):
        SortTags("frequency")


def test_truncate_keeps_the_first_n():
    assert Truncate(2).transform(["a", "b", "c"]) == ["a", "b"]
    with pytest.raises(ValueError, match="at least 1"):
        Truncate(0)


def test_batch_edit_changes_only_the_given_ids_as_one_undo_step(tmp_path):
    folder = make_folder(tmp_path / "ds", {"a.png": "x, y", "b.png": "x", "c.png": "y"})
    ds = Dataset.load(folder)
    only = [ds.find("a.png"), ds.find("c.png")]
    assert ds.apply(RemoveTags(("x", "y")), only) == 2
    assert tags_by_name(ds) == {"a.png": [], "b.png": ["x"], "c.png": []}
    assert ds.history.undo_labels() == ["remove x, y"]
    ds.undo()
    assert tags_by_name(ds) == {"a.png": ["x", "y"], "b.png": ["x"], "c.png": ["y"]}


def test_an_edit_that_changes_nothing_is_not_recorded(tmp_path):
    ds = Dataset.load(make_folder(tmp_path / "ds", {"a.png": "x"}))
    assert ds.apply(RemoveTags(("absent",))) == 0
    assert ds.apply(RemoveDuplicates()) == 0
    assert not ds.history.can_undo


def test_sort_by_dataset_frequency(tmp_path):
    ds = Dataset.load(make_folder(tmp_path / "ds", {"a.png": "mychar, rare, common", "b.png": "common"}))
    ds.apply(SortTags("frequency", 1, ds.frequencies()))
    assert ds.entry(ds.find("a.png")).tags == ["mychar", "common", "rare"]


def _every_operation(ds):
    return [
        AddTags(("mychar",)),
        AddTags(("extra",), "end"),
        RemoveTags(("x",)),
        ReplaceTag("y", ("y1", "y2")),
        MergeTags(("x", "z"), "xz"),
        RegexReplace(r"^(\w)$", r"\1\1"),
        RemoveDuplicates(),
        SortTags("frequency", 1, ds.frequencies()),
        SortTags("name"),
        Truncate(2),
    ]


@pytest.mark.parametrize("index", range(10))
def test_every_operation_undoes_and_redoes_exactly(tmp_path, index):
    folder = make_folder(tmp_path / "ds", {"a.png": "z, x, y, x", "b.png": "y, w", "c.png": "q"})
    ds = Dataset.load(folder)
    operation = _every_operation(ds)[index]
    before = tags_by_name(ds)
    assert ds.apply(operation) > 0, operation.label
    after = tags_by_name(ds)
    assert after != before
    assert ds.undo() == operation.label
    assert tags_by_name(ds) == before and not ds.dirty
    assert ds.redo() == operation.label
    assert tags_by_name(ds) == after
    assert ds.index == rebuilt_index(ds)
