"""Filtering by tags (AND / OR), exclusion, text and regex search, images without captions, selection."""

import pytest
from tag_editor_helpers import make_folder

from lib_lora_train.tag_editor.dataset import Dataset
from lib_lora_train.tag_editor.filters import TagFilter, apply_filter, invert_selection


@pytest.fixture
def ds(tmp_path):
    return Dataset.load(
        make_folder(
            tmp_path / "ds",
            {
                "1.png": "mychar, blue eyes, smile",
                "2.png": "mychar, red eyes",
                "3.png": "blue eyes, Striped Shirt",
                "4.png": None,
                "5.png": "",
            },
        )
    )


def names(ds, ids):
    return [ds.relative(i) for i in ids]


def test_empty_filter_passes_everything(ds):
    assert names(ds, apply_filter(ds, TagFilter())) == ["1.png", "2.png", "3.png", "4.png", "5.png"]


def test_include_and_or(ds):
    assert names(ds, apply_filter(ds, TagFilter(include=("mychar", "blue eyes")))) == ["1.png"]
    assert names(ds, apply_filter(ds, TagFilter(include=("red eyes", "smile"), include_mode="or"))) == [
        "1.png",
        "2.png",
    ]
    assert apply_filter(ds, TagFilter(include=("absent", "mychar"))) == []


def test_exclude_or_and(ds):
    assert names(ds, apply_filter(ds, TagFilter(exclude=("smile", "red eyes")))) == ["3.png", "4.png", "5.png"]
    assert names(
        ds, apply_filter(ds, TagFilter(include=("mychar",), exclude=("mychar", "smile"), exclude_mode="and"))
    ) == ["2.png"]


def test_text_search_is_case_insensitive_by_default_and_regex_works(ds):
    assert names(ds, apply_filter(ds, TagFilter(text="striped shirt"))) == ["3.png"]
    assert apply_filter(ds, TagFilter(text="striped shirt", case_sensitive=True)) == []
    assert names(ds, apply_filter(ds, TagFilter(text=r"\b(red|blue) eyes", regex=True))) == ["1.png", "2.png", "3.png"]
    # a plain search treats regex characters literally
    assert apply_filter(ds, TagFilter(text="eyes.*")) == []


def test_bad_regex_is_a_clear_error():
    with pytest.raises(ValueError, match="not a valid regular expression"):
        TagFilter(text="(", regex=True)


def test_without_caption_lists_missing_and_empty_captions(ds):
    assert names(ds, apply_filter(ds, TagFilter(without_caption=True))) == ["4.png", "5.png"]


def test_filter_follows_edits(ds):
    ds.set_caption(ds.find("4.png"), "mychar")
    assert names(ds, apply_filter(ds, TagFilter(include=("mychar",)))) == ["1.png", "2.png", "4.png"]


def test_invert_selection_stays_within_the_visible_set():
    assert invert_selection([2, 9], [1, 2, 3]) == [1, 3]


def test_case_insensitive_search_matches_upper_and_lower_case_in_both_modes(ds):
    assert names(ds, apply_filter(ds, TagFilter(text="STRIPED"))) == ["3.png"]
    assert names(ds, apply_filter(ds, TagFilter(text=r"strip\w+ shirt", regex=True))) == ["3.png"]
    assert names(ds, apply_filter(ds, TagFilter(text=r"Strip\S+ SHIRT", regex=True))) == ["3.png"]  # re.I path
    assert names(ds, apply_filter(ds, TagFilter(text=r"\bStriped", regex=True, case_sensitive=True))) == ["3.png"]
    assert apply_filter(ds, TagFilter(text=r"\bstriped", regex=True, case_sensitive=True)) == []


def test_search_sees_edits(ds):
    apply_filter(ds, TagFilter(text="red"))  # fills the text cache
    ds.set_caption(ds.find("3.png"), "RED hat")
    assert names(ds, apply_filter(ds, TagFilter(text="red hat"))) == ["3.png"]
