"""Thresholds, categories, exclusions, ordering and formatting of tags (pure functions, no model)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tagger_graphs import TAGS, expected_probs

from lib_lora_train.tagger.postprocess import (
    TagOptions,
    TagOptionsError,
    is_kaomoji,
    normalize_tag,
    raw_confidences,
    select_tags,
)
from lib_lora_train.tagger.tag_table import TagTable

TABLE = TagTable(tuple(t[0] for t in TAGS), np.array([t[1] for t in TAGS]))
WHITE = expected_probs((1.0, 1.0, 1.0))
RED = expected_probs((0.0, 0.0, 1.0))


def tags_for(probs=WHITE, **options):
    return select_tags(probs, TABLE, TagOptions(**options)).tags


def test_general_and_character_thresholds_apply_to_their_own_category():
    tags = tags_for(general_threshold=0.35, character_threshold=0.85, replace_underscores=False)
    assert "hatsune_miku" in tags and "kagamine_rin" not in tags  # characters 0.9 / 0.6 against 0.85
    assert "mid_tag" in tags and "bow_(weapon)" in tags and "low_tag" not in tags  # 0.5, 0.4, 0.3 against 0.35
    lower_char = tags_for(general_threshold=0.35, character_threshold=0.5, replace_underscores=False)
    assert "kagamine_rin" in lower_char
    higher_general = tags_for(general_threshold=0.45, replace_underscores=False)
    assert "mid_tag" in higher_general and "bow_(weapon)" not in higher_general


def test_ratings_only_when_asked_and_only_the_top_one():
    assert not {"general", "sensitive"} & set(tags_for())
    with_rating = tags_for(include_rating=True)
    assert with_rating[-1] == "general" and "sensitive" not in with_rating


def test_colour_dependent_tags_follow_the_image():
    assert "white background" in tags_for(WHITE) and "red background" not in tags_for(WHITE)
    assert "red background" in tags_for(RED) and "white background" not in tags_for(RED)


def test_sorted_by_confidence_then_by_name():
    by_conf = tags_for(replace_underscores=False, character_threshold=0.5)
    probs = {t[0]: p for t, p in zip(TAGS, WHITE, strict=False)}
    assert [probs[t] for t in by_conf] == sorted((probs[t] for t in by_conf), reverse=True)
    by_name = tags_for(sort_by="name")
    assert by_name == sorted(by_name, key=normalize_tag)


def test_character_tags_first_keeps_order_within_groups():
    tags = tags_for(character_first=True, character_threshold=0.5, replace_underscores=False)
    assert tags[:2] == ["hatsune_miku", "kagamine_rin"]
    assert tags[2:] == tags_for(character_threshold=1.0, replace_underscores=False)


def test_exclude_plain_tags_in_either_spelling_and_regex():
    tags = tags_for(exclude="1girl, long hair, /.*_background/, /^mid.*/")
    assert "1girl" not in tags and "long hair" not in tags
    assert not [t for t in tags if t.endswith("background") or t.startswith("mid")]
    assert "solo" in tags


def test_bad_regex_and_bad_values_are_reported_by_field():
    with pytest.raises(TagOptionsError, match="exclude"):
        TagOptions(exclude="/[unclosed/")
    with pytest.raises(TagOptionsError, match="general_threshold"):
        TagOptions(general_threshold=1.5)
    with pytest.raises(TagOptionsError, match="sort_by"):
        TagOptions(sort_by="random")
    with pytest.raises(TagOptionsError, match="max_tags"):
        TagOptions(max_tags=-1)


def test_additional_tags_lead_and_are_not_duplicated():
    tags = tags_for(additional="my_character, solo")
    assert tags[:2] == ["my_character", "solo"]
    assert tags.count("solo") == 1


def test_max_tags_keeps_the_most_confident_then_sorts():
    tags = tags_for(max_tags=3, sort_by="name")
    # 0.993, then the two at 0.9 (ties broken by name); solo (0.8) is cut
    assert tags == ["1girl", "hatsune miku", "white background"]


def test_underscores_become_spaces_but_kaomoji_stay():
    tags = tags_for()
    assert "long hair" in tags and "^_^" in tags and "long_hair" not in tags


def test_escape_brackets_for_prompts():
    assert "bow \\(weapon\\)" in tags_for(escape_brackets=True)
    assert "bow (weapon)" in tags_for()


def test_raw_confidences_have_the_api_shape():
    ratings, tags = raw_confidences(WHITE, TABLE, 0.5)
    assert set(ratings) == {"general", "sensitive", "questionable", "explicit"}
    assert all(v > 0.5 for v in tags.values()) and "long_hair" in tags and "mid_tag" not in tags
    # the model's tag-list order by default (the WD14 tagger extension's), most confident first on request
    assert list(tags) == [name for name in TABLE.names if name in tags]
    assert list(tags) != sorted(tags, key=tags.get, reverse=True)  # the two orders differ for this image
    _, by_confidence = raw_confidences(WHITE, TABLE, 0.5, "confidence")
    assert list(by_confidence.values()) == sorted(tags.values(), reverse=True) and by_confidence == tags
    with pytest.raises(TagOptionsError, match="tag_order"):
        raw_confidences(WHITE, TABLE, 0.5, "alphabet")


@pytest.mark.parametrize("face", ["^_^", ">_<", "o_o", "0_0", "(o)_(o)", "=_="])
def test_kaomoji_recognised(face):
    assert is_kaomoji(face)


@pytest.mark.parametrize("tag", ["long_hair", "1girl", "hat_(object)", "x_hair_ornament"])
def test_words_are_not_kaomoji(tag):
    assert not is_kaomoji(tag)


@given(st.lists(st.floats(0, 1, width=32), min_size=len(TAGS), max_size=len(TAGS)), st.floats(0, 1))
def test_every_selected_tag_meets_its_threshold(probs, threshold):
    result = select_tags(np.array(probs), TABLE, TagOptions(general_threshold=threshold, replace_underscores=False))
    for tag, confidence in result.confidences.items():
        category = TAGS[TABLE.names.index(tag)][1]
        assert confidence >= (threshold if category == 0 else 0.85)
    assert len(result.tags) == len(set(result.tags))
