"""From a request as typed in the tab or the API to a saved comparison of a stored version."""

import json

import pytest
from PIL import Image

from lib_lora_train.compare.plan import PlanError
from lib_lora_train.compare.run import RenderedCell
from lib_lora_train.compare.service import CompareRequest, Scorer, build_plan, compare_version, guess_activation_tag
from lib_lora_train.store import ProjectStore


@pytest.fixture
def version(tmp_path):
    v = ProjectStore(tmp_path / "train_tools").create_version("alice", "v1")
    v.checkpoints.mkdir(parents=True, exist_ok=True)
    for epoch in (1, 2, 3):
        v.checkpoint_file(epoch).write_bytes(b"lora")
    data = v.dataset / "10_alice"
    data.mkdir(parents=True)
    for i, caption in enumerate(["alice_x, smile, blue hair", "alice_x, sitting, blue hair", "alice_x, blue hair"]):
        Image.new("RGB", (8, 8)).save(data / f"{i}.png")
        (data / f"{i}.txt").write_text(caption)
    return v


def test_activation_tag_is_the_shared_first_caption_tag(version, tmp_path):
    assert guess_activation_tag(version.dataset) == "alice_x"
    assert guess_activation_tag(tmp_path / "none") == ""


def test_plan_from_text_inputs(version):
    request = CompareRequest(
        "alice",
        "v1",
        epochs="subset",
        subset="1, 3",
        weights="0.5-1:0.25",
        prompts=["alice_x, smile", " "],
        seeds="5, 6",
    )
    plan = build_plan(request, version)
    assert [e.lora_name for e in plan.epochs] == ["alice-v1-000001", "alice-v1-000003"]
    assert plan.weights == [0.5, 0.75, 1.0] and plan.seeds == [5, 6] and plan.prompts == ["alice_x, smile"]
    assert plan.activation_tag == "alice_x" and "alice-v1" in plan.version_names
    with pytest.raises(PlanError, match="alice_x, solo"):
        build_plan(CompareRequest("alice", "v1"), version)  # no prompt: the message suggests one


def test_compare_version_saves_into_the_version_and_scores(version):
    request = CompareRequest(
        "alice", "v1", weights="0.5, 1", prompts=["alice_x, smile", "sitting"], seeds="3", width=64, height=64
    )

    def render(plan, cell):
        return RenderedCell(Image.new("RGB", (64, 64), ((cell.epoch.epoch or 0) * 50, 0, 0)), cell.prompt)

    def tag_images(images):
        return [{"blue_hair": 0.9, "smile": 0.8} for _ in images]

    plan, result = compare_version(
        request, version, render, scorer=Scorer(tag_images), before_render=lambda p, g: ["published 3"]
    )
    assert result.folder.parent == version.compare
    assert len(result.grids) == 2 and result.scores is not None
    # what the tagger sees in most dataset images (the fake sees both everywhere)
    assert result.scores.traits == ["blue hair", "smile"] and result.scores.traits_source == "tagger"
    assert result.scores.other_tags == [[], ["sitting"]]
    assert result.notes[0] == "published 3"
    assert any("without the activation tag" in n and "sitting" in n for n in result.notes)
    saved = json.loads((result.folder / "result.json").read_text())
    assert saved["notes"] == result.notes and saved["scores"]["best"] is not None


def test_scoring_can_be_turned_off(version):
    request = CompareRequest(
        "alice", "v1", weights="1", prompts=["alice_x"], seeds="1", score=False, width=64, height=64, no_lora=False
    )
    _, result = compare_version(
        request,
        version,
        lambda p, c: RenderedCell(Image.new("RGB", (64, 64))),
        scorer=Scorer(lambda ims: [{} for _ in ims]),
    )
    assert result.scores is None and "scoring turned off" in result.notes
    assert len(result.cells) == 3
