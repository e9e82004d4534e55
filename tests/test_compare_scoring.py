"""Fidelity / flexibility scoring, the best trade-off, trait tags from a dataset, and the score chart."""

import pytest
from PIL import Image

from lib_lora_train.compare.score_chart import score_chart
from lib_lora_train.compare.scoring import (
    CellScore,
    TableEntry,
    aggregate,
    best_tradeoff,
    frequent_tags,
    normalize_tag,
    other_prompt_tags,
    pareto_front,
    prompt_tags,
    score_image,
)
from lib_lora_train.compare.traits import collect_traits


def test_tags_are_compared_like_users_write_them():
    assert normalize_tag("(Long_Hair:1.2)") == "long hair"
    assert normalize_tag("[blue eyes]") == "blue eyes"
    assert normalize_tag("bow_(weapon)") == normalize_tag("(bow \\(weapon\\):1.1)") == "bow (weapon)"
    assert normalize_tag("hatsune miku \\(cosplay\\)") == "hatsune miku (cosplay)"
    assert prompt_tags("mychar, (smile:1.1), BREAK outdoors\n<lora:x:1>, smile") == ["mychar", "smile", "outdoors"]


def test_score_counts_tags_above_threshold():
    conf = {"blue_hair": 0.9, "red_eyes": 0.2, "smile": 0.5, "outdoors": 0.34}
    s = score_image(conf, ["blue hair", "red eyes"], ["smile", "outdoors"], threshold=0.35)
    assert (s.fidelity, s.flexibility) == (0.5, 0.5)
    assert s.found_traits == ["blue hair"] and s.found_other == ["smile"]
    assert score_image(conf, [], ["smile"], 0.35).fidelity is None


def test_other_tags_skip_activation_traits_and_unknown_words():
    vocab = {"smile", "outdoors", "blue hair"}
    tags = other_prompt_tags("mychar, masterpiece, blue hair, smile, outdoors", ["blue hair"], "mychar", vocab)
    assert tags == ["smile", "outdoors"]


def _entry(row, col, f, x, ref=False):
    return TableEntry(row, col, f"epoch {row + 1}", f"w{col}", f, x, 1, ref)


def test_harmonic_mean_prefers_balance_over_a_burnt_epoch():
    burnt = _entry(2, 1, 1.0, 0.4)  # arithmetic mean 0.70
    balanced = _entry(1, 1, 0.65, 0.65)  # arithmetic mean 0.65
    weak = _entry(0, 1, 0.2, 1.0)
    table = [weak, balanced, burnt]
    assert best_tradeoff(table, [0.5, 1.0]) is balanced
    assert {(e.row, e.col) for e in pareto_front(table)} == {(0, 1), (1, 1), (2, 1)}


def test_best_tradeoff_ties_and_reference_column():
    early, late = _entry(0, 0, 0.8, 0.8), _entry(1, 0, 0.8, 0.8)
    ref = _entry(0, 2, 1.0, 1.0, ref=True)  # the no-LoRA column is never the pick
    assert best_tradeoff([late, early, ref], [0.6, 1.0, None]) is early
    near_one = _entry(0, 1, 0.8, 0.8)
    assert best_tradeoff([early, near_one], [0.6, 1.0]) is near_one
    assert best_tradeoff([ref], [None]) is None


def test_pareto_drops_dominated_entries():
    a, b, c = _entry(0, 0, 0.9, 0.5), _entry(0, 1, 0.8, 0.4), _entry(1, 0, 0.5, 0.9)
    assert pareto_front([a, b, c]) == [a, c]


def test_aggregate_means_over_prompts_and_seeds():
    scores = [
        (0, 0, "epoch 1", "w", False, CellScore(1.0, 0.0)),
        (0, 0, "epoch 1", "w", False, CellScore(0.5, None)),
        (1, 0, "epoch 2", "w", False, CellScore(None, None)),
    ]
    table = aggregate(scores)
    assert [(e.row, e.fidelity, e.flexibility, e.images) for e in table] == [(0, 0.75, 0.0, 2), (1, None, None, 1)]
    assert table[0].balance == 0.0 and table[1].balance is None


def test_frequent_tags_are_the_traits():
    sets = [["blue hair", "smile", "solo"], ["blue_hair", "solo"], ["Blue Hair", "red eyes"]]
    assert frequent_tags(sets, 0.6) == ["blue hair", "solo"]


def _dataset(tmp_path):
    folder = tmp_path / "dataset" / "10_char"
    folder.mkdir(parents=True)
    for i, caption in enumerate(
        ["mychar, blue hair, solo, smile", "mychar, blue hair, solo", "mychar, red eyes, solo"]
    ):
        Image.new("RGB", (16, 16), (i * 40, 0, 0)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(caption)
    (folder / "broken.png").write_bytes(b"not a png")
    return tmp_path / "dataset"


def test_traits_from_tagger_beat_captions_and_skip_composition(tmp_path):
    dataset = _dataset(tmp_path)

    def tagger(images):
        return [{"blue_eyes": 0.9, "solo": 0.99, "white_background": 0.9, "long_hair": 0.2} for _ in images]

    traits, source, problems = collect_traits(dataset=dataset, tag_images=tagger, activation_tag="mychar")
    assert (traits, source) == (["blue eyes"], "tagger")
    assert len(problems) == 1 and "broken.png" in problems[0]
    traits, source, _ = collect_traits(dataset=dataset, activation_tag="mychar")
    assert (traits, source) == (["blue hair"], "captions")  # activation tag and "solo" are not traits
    assert collect_traits(explicit=["Red_Eyes", "solo"], dataset=dataset) == (["red eyes"], "given", [])
    assert collect_traits(dataset=tmp_path / "missing") == ([], "none", [])


def test_score_chart_marks_the_best_entry():
    from lib_lora_train.compare.scoring import ScoreReport

    table = [_entry(0, 0, 0.2, 0.9), _entry(0, 1, 0.8, 0.8), _entry(1, 0, 1.0, 0.1), _entry(1, 1, None, None)]
    report = ScoreReport(["blue hair"], "given", [["smile"]], 0.35, table, table[1], pareto_front(table))

    def blue_pixels(image):
        return sum(1 for p in image.getdata() if p == (20, 60, 220))

    chart = score_chart(report)
    assert chart.mode == "RGB" and chart.width > 200
    no_best = score_chart(ScoreReport(["blue hair"], "given", [["smile"]], 0.35, table, None, report.pareto))
    # the best box's thick frame (4 px) holds far more blue than the thin frame (1 px) it has without being best
    assert blue_pixels(chart) > blue_pixels(no_best) + 2 * 300
    assert report.to_dict()["best"]["balance"] == pytest.approx(0.8)
