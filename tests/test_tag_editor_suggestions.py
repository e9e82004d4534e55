"""Meta tags, trait suggestions and synonym groups."""

from tag_editor_helpers import make_folder

from lib_lora_train.tag_editor.dataset import Dataset
from lib_lora_train.tag_editor.operations import MergeTags, RemoveTags
from lib_lora_train.tag_editor.suggestions import (
    find_meta_tags,
    suggest_synonym_groups,
    suggest_trait_tags,
)


def test_meta_tags_are_found_ignoring_case_and_underscores_and_can_be_removed(tmp_path):
    ds = Dataset.load(
        make_folder(
            tmp_path / "ds",
            {"a.png": "1girl, absurdres, commentary_request", "b.png": "highres, Watermark, smile", "c.png": "smile"},
        )
    )
    found = find_meta_tags(ds)
    assert found == [("Watermark", 1), ("absurdres", 1), ("commentary_request", 1), ("highres", 1)]
    assert find_meta_tags(ds, ["smile"]) == [("smile", 2)]  # the list is the user's to edit
    ds.apply(RemoveTags(tuple(t for t, _ in found)))
    assert ds.all_tags() == ["smile", "1girl"]


def test_trait_suggestions_are_tags_in_most_images_without_the_activation_tag(tmp_path):
    captions = {f"{i}.png": "mychar, 1girl, red hair, green eyes" + (", hat" if i < 3 else "") for i in range(10)}
    captions["x.png"] = "mychar, 1girl, red hair, beach"
    ds = Dataset.load(make_folder(tmp_path / "ds", captions))
    suggestions = suggest_trait_tags(ds, keep=["mychar"], min_share=0.8)
    assert [(s.tag, s.count) for s in suggestions] == [("red hair", 11), ("green eyes", 10)]
    assert suggestions[1].reason == "in 10 images (91%)"
    # restricted to a filtered set
    subset = [ds.find("x.png"), ds.find("0.png")]
    assert [s.tag for s in suggest_trait_tags(ds, subset, keep=["mychar"], min_share=1.0)] == ["red hair"]


def test_synonym_groups_join_spellings_and_shared_words_but_not_different_meanings():
    freq = {
        "striped shirt": 5,
        "vertical stripes": 3,
        "vertical-striped shirt": 2,
        "long hair": 9,
        "very long hair": 4,
        "white shirt": 6,
        "black shirt": 2,
        "shirt": 3,
        "blue_eyes": 2,
        "blue eyes": 10,
        "smile": 7,
        "smiling": 1,
        "hair between eyes": 3,
        "hair over eyes": 1,
    }
    groups = {g.tags: g for g in suggest_synonym_groups(freq)}
    assert set(groups) == {
        ("blue eyes", "blue_eyes"),
        ("striped shirt", "vertical stripes", "vertical-striped shirt"),
        ("smile", "smiling"),
    }
    stripes = groups[("striped shirt", "vertical stripes", "vertical-striped shirt")]
    assert stripes.target == "striped shirt"  # the most used one
    assert "vertical stripes / vertical-striped shirt" in stripes.reason


def test_a_suggested_group_merges_through_the_normal_operation(tmp_path):
    ds = Dataset.load(make_folder(tmp_path / "ds", {"a.png": "blue_eyes, smile", "b.png": "blue eyes"}))
    (group,) = suggest_synonym_groups(ds.frequencies())
    ds.apply(MergeTags(group.tags, group.target))
    assert ds.frequencies() == {"blue eyes": 2, "smile": 1}
