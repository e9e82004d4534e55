"""The bootstrap loop's pieces: crops, the view matrix, candidate scoring and duplicates, auto-select, captions and
the round bookkeeping on disk."""

from __future__ import annotations

import pytest
from PIL import Image

from lib_lora_train.bootstrap.captions import caption_for, common_traits
from lib_lora_train.bootstrap.crops import CropError, crop_to_training_size, parse_boxes, quadrant_boxes, write_crops
from lib_lora_train.bootstrap.prompts import CandidatePrompt, base_prompt, parse_views, view_matrix, view_shown
from lib_lora_train.bootstrap.rounds import LoopState, RoundFiles, grow, read_state, write_state
from lib_lora_train.bootstrap.scoring import CandidateScore, mark_duplicates, ranked, score_tags
from lib_lora_train.bootstrap.selection import auto_select, needed, parse_targets
from lib_lora_train.store import ProjectStore

# --- crops -----------------------------------------------------------------------------------------------------


def test_quadrants_cover_the_image_and_overlap_across_the_middle():
    boxes = quadrant_boxes(200, 100, overlap=0.2)
    assert len(boxes) == 4
    assert (boxes[0].left, boxes[0].top) == (0, 0) and (boxes[3].right, boxes[3].bottom) == (200, 100)
    assert boxes[0].right > 100 > boxes[1].left  # a face on the centre line is whole in one of them
    assert boxes[0].bottom > 50 > boxes[2].top


@pytest.mark.parametrize(
    "text, message",
    [("0, 0, 50", "write left, top, right, bottom"), ("0, 0, 300, 50", "outside the 200x100 image"),
     ("10, 10, 5, 50", "outside the 200x100 image or empty"), ("\n", "no boxes given")],
)  # fmt: skip
def test_bad_boxes_are_named_with_their_line(text, message):
    with pytest.raises(CropError, match=message):
        parse_boxes(text, 200, 100)


def test_a_small_crop_is_enlarged_to_the_training_resolution_and_written(tmp_path):
    image = Image.new("RGB", (120, 80), "red")
    assert crop_to_training_size(image, parse_boxes("0, 0, 60, 40", 120, 80)[0], 64).size == (96, 64)
    assert crop_to_training_size(image, parse_boxes("0, 0, 120, 80", 120, 80)[0], 64).size == (120, 80)
    source = tmp_path / "alice.png"
    image.save(source)
    files = write_crops(source, quadrant_boxes(120, 80), tmp_path / "crops", 64)
    assert [f.name for f in files] == [f"alice-crop{i}.png" for i in range(1, 5)]
    assert all(min(Image.open(f).size) >= 64 for f in files)


# --- the view matrix ------------------------------------------------------------------------------------------


def test_the_view_matrix_is_every_view_times_the_same_seeds():
    prompts = view_matrix("alicechan", ["fox ears", "blonde hair"], ["from side", "from behind"], 2, seed=10)
    assert [(p.view, p.seed) for p in prompts] == [("from side", 10), ("from side", 11), ("from behind", 10),
                                                   ("from behind", 11)]  # fmt: skip
    assert prompts[0].prompt == "alicechan, from side, 1girl, solo, fox ears, blonde hair"  # the view before the traits
    assert prompts[0].with_lora("alice-v1-000004", 0.8) == prompts[0].prompt + " <lora:alice-v1-000004:0.8>"
    assert parse_views("from side, from_behind\n\nFrom Side\nclose-up") == ["from side", "from behind", "close-up"]
    assert base_prompt("a", ["solo", "x"]) == "a, 1girl, solo, x"  # each tag once
    with pytest.raises(ValueError, match="view list is empty"):
        view_matrix("a", [], [], 1, seed=0)


def test_a_view_is_checked_by_the_tags_that_show_it():
    assert view_shown("from behind", {"from behind", "1girl"}) is True
    assert view_shown("from side", {"profile"}) is True
    assert view_shown("from above", {"from below"}) is False
    assert view_shown("wearing a hat", {"hat"}) is None  # nothing to check it by


# --- scoring ---------------------------------------------------------------------------------------------------


def _score(file, view, tags, traits=("fox ears", "blonde hair"), seed=1):
    return score_tags(file, view, seed, {t: 0.9 for t in tags}, list(traits))


def test_scores_reward_traits_and_the_view_and_penalise_what_ruins_a_training_image():
    good = _score("a.png", "from behind", ["fox ears", "blonde hair", "from behind"])
    wrong_view = _score("b.png", "from behind", ["fox ears", "blonde hair"])
    crowded = _score("c.png", "from behind", ["fox ears", "blonde hair", "from behind", "2girls", "watermark"])
    half = _score("d.png", "from behind", ["fox ears", "from behind"])
    assert good.score == 1.25 and good.trait_recall == 1.0 and good.view_shown
    assert wrong_view.score == 0.75 and half.score == 0.75
    assert crowded.penalties == ["watermark", "2girls"] and crowded.score == pytest.approx(1.25 - 0.5 - 0.8)
    assert [s.file for s in ranked([crowded, half, good, wrong_view])] == ["a.png", "b.png", "d.png", "c.png"]
    assert "-watermark" in crowded.reasons and "from behind: not shown" in wrong_view.reasons


def test_near_duplicates_of_the_dataset_or_of_a_better_candidate_are_marked():
    a, b, c = (_score(f"{n}.png", "from side", ["fox ears", "blonde hair", "from side"]) for n in "abc")
    a.hash, b.hash, c.hash = 0b1111, 0b1110, 0xFF00FF00FF
    b.score = 1.0  # a is better than b
    mark_duplicates([a, b, c], {"crop1.png": 0xFF00FF00FE})
    assert a.duplicate_of is None
    assert b.duplicate_of == "a.png" and b.score == pytest.approx(0.25 - 1.0 + 1.0)  # recomputed, -1
    assert c.duplicate_of == "crop1.png"
    again = CandidateScore.from_dict(b.to_dict())
    assert (again.hash, again.duplicate_of, again.score) == (b.hash, "a.png", b.score)


# --- selection -------------------------------------------------------------------------------------------------


def test_auto_select_takes_the_best_of_every_view_in_turn():
    scores = []
    for view, values in (("from side", [1.2, 1.1, 1.0]), ("from behind", [0.9, 0.8]), ("sitting", [0.3])):
        for i, value in enumerate(values):
            s = CandidateScore(f"{view}-{i}.png", view, i, 1.0, True)
            s.score = value
            scores.append(s)
    chosen = [s.file for s in auto_select(scores, 4)]
    assert chosen == ["from side-0.png", "from behind-0.png", "from side-1.png", "from behind-1.png"]
    assert len(auto_select(scores, 10)) == 5  # "sitting" is below the minimum score
    assert needed(16, 4) == 12 and needed(16, 20) == 0
    assert parse_targets("16, 40") == [16, 40]
    for bad in ("40,16", "x", "1"):
        with pytest.raises(ValueError, match="targets"):
            parse_targets(bad)


# --- captions --------------------------------------------------------------------------------------------------


def test_captions_put_the_activation_tag_first_and_prune_traits_for_the_character_round():
    tags = {"fox_ears": 0.95, "blonde_hair": 0.9, "smile": 0.6, "watermark": 0.8, "general": 0.9, "low": 0.1}
    assert caption_for("alicechan", tags, "from side", ["fox ears", "blonde hair"]) == \
        "alicechan, from side, fox ears, blonde hair, smile"  # fmt: skip
    assert caption_for("alicechan", tags, "from side", ["fox ears", "blonde hair"], prune_traits=True) == \
        "alicechan, from side, smile"  # fmt: skip
    crops = [{"fox_ears": 0.9, "solo": 0.9, "smile": 0.5}, {"fox_ears": 0.8, "solo": 0.9}, {"fox_ears": 0.9}]
    assert common_traits(crops, "alicechan") == ["fox ears"]  # composition tags are never traits


# --- rounds on disk --------------------------------------------------------------------------------------------


def test_state_scores_selection_and_missing_candidates_survive_a_restart(tmp_path):
    version = ProjectStore(tmp_path).create_version("alice", "v1")
    state = LoopState("alicechan", ["fox ears"], [16, 40], ["from side"], phase="generate")
    write_state(version, state)
    assert read_state(version).phase == "generate" and read_state(version).targets == [16, 40]
    round_files = RoundFiles(version, 1)
    prompts = [CandidatePrompt("from side", s, "p") for s in (1, 2, 3)]
    round_files.candidates.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(round_files.candidate_file(prompts[0]))
    assert [p.seed for p in round_files.missing(prompts)] == [2, 3]  # a resumed round renders only these
    round_files.save_scores([_score("from-side-s1.png", "from side", ["fox ears"])])
    assert round_files.load_scores()[0].file == "from-side-s1.png"
    round_files.save_selection(["from-side-s1.png"], [], auto=True, target=16)
    assert round_files.load_selection()["kept"] == ["from-side-s1.png"]
    with pytest.raises(ValueError, match="phase"):
        LoopState("a", [], [16], [], phase="dreaming")


def test_grow_builds_the_next_versions_dataset_with_repeats_and_records_where_it_came_from(tmp_path):
    store = ProjectStore(tmp_path)
    parent, child = store.create_version("alice", "v1"), store.create_version("alice", "v2")
    (parent.dataset / "75_alice").mkdir()
    for i in range(4):
        Image.new("RGB", (8, 8)).save(parent.dataset / "75_alice" / f"crop{i}.png")
        (parent.dataset / "75_alice" / f"crop{i}.txt").write_text("alicechan, fox ears", encoding="utf-8")
    round_files = RoundFiles(parent, 1)
    round_files.candidates.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(round_files.candidates / "from-side-s1.png")
    grow(parent, child, round_files, {"from-side-s1.png": "alicechan, from side"}, folder_name="alice", repeats=60)
    files = sorted(p.name for p in (child.dataset / "60_alice").iterdir())
    assert len(files) == 10 and "r1-from-side-s1.png" in files and "alice-crop0.txt" in files
    assert (child.dataset / "60_alice" / "r1-from-side-s1.txt").read_text(encoding="utf-8") == "alicechan, from side"
    info = child.read_info()
    assert info["parent"] == "v1" and info["bootstrap_round"] == 1 and info["selection"].endswith("selection.json")
