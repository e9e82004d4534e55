"""Merging new tags into existing captions (pure functions, property-based)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lib_lora_train.tagger.captions import free_backup_suffix, merge_caption, split_caption
from lib_lora_train.tagger.postprocess import normalize_tag

TAG = st.sampled_from(["1girl", "solo", "long_hair", "long hair", "Solo", "red_eyes", "^_^", "hat \\(object\\)"])
TAGS = st.lists(TAG, max_size=6)


def keys(tags):
    return [normalize_tag(t) for t in tags]


@given(TAGS, TAGS)
def test_append_keeps_every_old_tag_first_and_adds_only_new_ones(old, new):
    merged = split_caption(merge_caption(", ".join(old), new, "append"))
    assert len(set(keys(merged))) == len(merged)  # no duplicates in any spelling
    old_unique = list(dict.fromkeys(keys(old)))
    assert keys(merged)[: len(old_unique)] == old_unique
    assert set(keys(merged)) == set(keys(old)) | set(keys(new))


@given(TAGS, TAGS)
def test_prepend_puts_new_tags_first(old, new):
    merged = split_caption(merge_caption(", ".join(old), new, "prepend"))
    new_unique = list(dict.fromkeys(keys(new)))
    assert keys(merged)[: len(new_unique)] == new_unique
    assert set(keys(merged)) == set(keys(old)) | set(keys(new))


@given(TAGS, TAGS)
def test_overwrite_and_skip(old, new):
    assert set(keys(split_caption(merge_caption(", ".join(old), new, "overwrite")))) == set(keys(new))
    expected_skip = None if old else ", ".join(split_caption(merge_caption(None, new, "overwrite")))
    assert merge_caption(", ".join(old), new, "skip") == expected_skip  # an empty caption counts as none


def test_always_first_and_unknown_mode():
    assert merge_caption("a, b", ["c", "mychar"], "append", always_first=("mychar",)) == "mychar, a, b, c"
    with pytest.raises(ValueError, match="clobber"):
        merge_caption("a", ["b"], "clobber")


def test_backup_names_never_repeat(tmp_path):
    caption = tmp_path / "a.txt"
    assert free_backup_suffix(caption) == ".bak"
    (tmp_path / "a.txt.bak").write_text("1")
    (tmp_path / "a.txt.1.bak").write_text("2")
    assert free_backup_suffix(caption) == ".2.bak"
