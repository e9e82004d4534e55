"""The comparison runner with a fake host: files written, reference rendered once, interrupt, scores."""

import json
from pathlib import Path

from PIL import Image

from lib_lora_train.compare.plan import ComparePlan, epoch_entries, expand
from lib_lora_train.compare.run import RenderedCell, run_comparison


def _plan(**kw):
    checkpoints = [(i, Path(f"/x/proj-v1-{i:06d}.safetensors")) for i in (1, 2, 3)]
    args = dict(
        project="proj",
        version="v1",
        epochs=epoch_entries(checkpoints),
        weights=[0.5, 1.0],
        prompts=["mychar, smile, outdoors"],
        seeds=[7],
        activation_tag="mychar",
        width=64,
        height=64,
    )
    args.update(kw)
    return ComparePlan(**args)


class FakeHost:
    """Renders a flat colour from the cell's epoch and weight; records what it was asked."""

    def __init__(self, stop_after=None):
        self.calls = []
        self.stop_after = stop_after

    def render(self, cell):
        self.calls.append(cell)
        epoch = cell.epoch.epoch or 0
        weight = 0.0 if cell.weight is None else cell.weight
        colour = (epoch * 60, int(weight * 200), 30)
        return RenderedCell(Image.new("RGB", (64, 64), colour), f"{cell.prompt}\nSeed: {cell.seed}")

    def should_stop(self):
        return self.stop_after is not None and len(self.calls) >= self.stop_after


def test_run_writes_cells_grids_and_parameters(tmp_path):
    plan = _plan()
    host = FakeHost()
    result = run_comparison(plan, expand(plan), host.render, tmp_path / "compare")
    assert len(host.calls) == 3 * 2 + 1  # the no-LoRA reference once
    assert len(result.cells) == 7 and len(result.grids) == 1
    grid = Image.open(result.grids[0])
    assert json.loads(grid.text["lora_compare"])["weights"] == [0.5, 1.0]
    assert grid.text["parameters"].startswith("mychar, smile, outdoors <lora:proj-v1-000001:0.5>")
    cell = Image.open(result.folder / "cells" / "p1-s7-e000002-w1.png")
    assert cell.text["parameters"] == "mychar, smile, outdoors <lora:proj-v1-000002:1>\nSeed: 7"
    saved = json.loads((result.folder / "result.json").read_text())
    assert saved["xyz"][0]["y_values"] == "-000001,-000002,-000003" and saved["scores"] is None
    assert any("no tagger" in n for n in result.notes)
    assert json.loads((result.folder / "plan.json").read_text())["seeds"] == [7]
    # a second run never overwrites the first
    again = run_comparison(plan, expand(plan), host.render, tmp_path / "compare")
    assert again.folder != result.folder


def test_interrupt_keeps_what_was_rendered(tmp_path):
    plan = _plan()
    host = FakeHost(stop_after=3)
    result = run_comparison(plan, expand(plan), host.render, tmp_path, should_stop=host.should_stop)
    assert result.interrupted and len(host.calls) == 3 and len(result.cells) == 3
    assert len(result.grids) == 1  # a partial grid, missing cells drawn dark


def test_scores_prefer_the_epoch_that_keeps_both(tmp_path):
    plan = _plan()

    def tagger(images):
        out = []
        for im in images:
            r, g, _ = im.getpixel((0, 0))
            epoch, weight = r // 60, g / 200
            strength = epoch * weight  # 0 for the reference, 3 for the last epoch at weight 1
            tags = {"blue_hair": 0.9 if strength >= 1 else 0.1}
            tags["smile"] = 0.9 if strength < 2 else 0.1  # an overcooked LoRA ignores the prompt
            tags["outdoors"] = 0.9
            out.append(tags)
        return out

    result = run_comparison(
        plan, expand(plan), FakeHost().render, tmp_path, tag_images=tagger, traits=["blue hair"], traits_source="given"
    )
    scores = result.scores
    assert scores.other_tags == [["smile", "outdoors"]]
    best = scores.best
    # strength 1 (epoch 1 at 1, epoch 2 at 0.5) keeps traits and smile; the tie goes to the earlier epoch
    assert (best.row_label, best.col_label) == ("epoch 1", "weight 1")
    ref = [e for e in scores.table if e.is_reference][0]
    assert ref.fidelity == 0.0 and ref.flexibility == 1.0
    assert result.score_chart.is_file()
    assert json.loads((result.folder / "result.json").read_text())["scores"]["best"]["row_label"] == "epoch 1"
