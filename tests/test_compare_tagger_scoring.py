"""Scoring with a real (tiny) ONNX tagger graph through the tagger bridge."""

from pathlib import Path

import pytest
from PIL import Image

from lib_lora_train.compare.plan import ComparePlan, epoch_entries, expand
from lib_lora_train.compare.run import RenderedCell, run_comparison
from lib_lora_train.compare.tagger_bridge import local_tagger_folder, tagger_functions

tagger_graphs = pytest.importorskip("tagger_graphs", reason="the tagger test graphs are not on this branch")


@pytest.fixture(scope="module")
def tiny_tagger(tmp_path_factory):
    from lib_lora_train.tagger.runtime import LoadedTagger

    models = tmp_path_factory.mktemp("taggers")
    tagger_graphs.make_model_folder(models / "tiny-tagger")
    name, folder = local_tagger_folder(models, preferred="tiny-tagger")
    assert name == "tiny-tagger"
    tagger = LoadedTagger(name, folder, use_gpu=False)
    yield tagger
    tagger.close()


def test_no_local_model_means_no_scoring(tmp_path):
    assert local_tagger_folder(tmp_path) is None


def test_bridge_returns_confidences_without_ratings(tiny_tagger):
    tag_images, vocabulary = tagger_functions(tiny_tagger)
    red, blue = Image.new("RGB", (40, 40), (255, 0, 0)), Image.new("RGB", (40, 40), (0, 0, 255))
    out = tag_images([red, blue])
    assert out[0]["red_background"] > 0.9 and out[0].get("blue_background", 0) < 0.05
    assert out[1]["blue_background"] > 0.9
    assert "general" not in out[0]  # a rating, not content
    assert {"red background", "long hair", "bow (weapon)"} <= vocabulary and "general" not in vocabulary


def test_scores_from_the_tiny_tagger(tmp_path, tiny_tagger):
    tag_images, vocabulary = tagger_functions(tiny_tagger)
    checkpoints = [(i, Path(f"/x/p-v-{i:06d}.safetensors")) for i in (1, 2, 3)]
    plan = ComparePlan(
        "p",
        "v",
        epoch_entries(checkpoints),
        [0.5, 1.0],
        ["mychar, blue background, masterpiece"],
        [1],
        activation_tag="mychar",
        width=64,
        height=64,
    )

    def render(cell):
        # the stronger the LoRA, the redder (trait "red background") and the less blue (the prompt's tag)
        strength = (cell.epoch.epoch or 0) * (cell.weight or 0.0) / 3
        return RenderedCell(Image.new("RGB", (64, 64), (int(255 * strength), 0, int(255 * (1 - strength)))))

    result = run_comparison(
        plan,
        expand(plan),
        render,
        tmp_path,
        tag_images=tag_images,
        traits=["red background"],
        traits_source="given",
        vocabulary=vocabulary,
    )
    report = result.scores
    assert report.other_tags == [["blue background"]]  # "masterpiece" is not something the tagger can see
    by_cell = {(e.row, e.col): (e.fidelity, e.flexibility) for e in report.table}
    assert by_cell[(0, 0)] == (0.0, 1.0)  # weak: prompt followed, trait missing
    assert by_cell[(2, 1)] == (1.0, 0.0)  # burnt: trait only
    # only epoch 3 at weight 0.5 (half red, half blue) keeps both
    assert (report.best.row, report.best.col, report.best.balance) == (2, 0, 1.0)
    assert result.score_chart.is_file()
