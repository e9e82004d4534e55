"""Caption parsing and joining."""

from hypothesis import given
from hypothesis import strategies as st

from lib_lora_train.tag_editor.captions import join_tags, normalize_tag, parse_tag_list, split_tags, unique_in_order


def test_split_keeps_order_and_duplicates_and_normalises_whitespace():
    assert split_tags("mychar,  blue   eyes ,\nlong hair,, blue eyes, ") == [
        "mychar",
        "blue eyes",
        "long hair",
        "blue eyes",
    ]


def test_split_handles_bom_tabs_and_non_ascii_whitespace():
    assert split_tags("\ufeffa,\tb\u3000c , d\r\n") == ["a", "b c", "d"]


def test_empty_caption_has_no_tags():
    assert split_tags("") == [] and split_tags(" , ,\n") == []


def test_join_then_split_round_trips():
    tags = ["1girl", "solo", "striped shirt"]
    assert join_tags(tags) == "1girl, solo, striped shirt"
    assert split_tags(join_tags(tags)) == tags


def test_parse_tag_list_accepts_commas_and_lines_without_repeats():
    assert parse_tag_list("a, b\nc\n\nb") == ["a", "b", "c"]


def test_unique_in_order_and_normalize():
    assert unique_in_order(["b", "a", "b"]) == ["b", "a"]
    assert normalize_tag("  x \n y ") == "x y"


tag_text = st.text(alphabet=st.characters(blacklist_characters=",", blacklist_categories=("Cs",)), max_size=12)


@given(st.lists(tag_text, max_size=8))
def test_split_of_joined_normalised_tags_is_identity(raw):
    tags = [t for t in map(normalize_tag, raw) if t]
    assert split_tags(join_tags(tags)) == tags


@given(st.text(max_size=60))
def test_split_never_yields_empty_or_padded_tags(text):
    for tag in split_tags(text):
        assert tag and tag == normalize_tag(tag) and "," not in tag
