"""Grid planning: weights, epochs, seeds, LoRA tags in prompts and the cells a plan expands to."""

import random
from pathlib import Path

import pytest

from lib_lora_train.compare.lora_tags import format_weight, lora_names_in, with_lora
from lib_lora_train.compare.plan import (
    ComparePlan,
    EpochEntry,
    PlanError,
    epoch_entries,
    expand,
    parse_int_list,
    parse_seeds,
    parse_weights,
    render_order,
    select_epochs,
)

NAMES = ["proj-v1-000001", "proj-v1-000002", "proj-v1-000003"]


def _entries(final=False):
    checkpoints = [(i + 1, Path(f"/x/{n}.safetensors")) for i, n in enumerate(NAMES)]
    if final:
        checkpoints.insert(0, (None, Path("/x/proj-v1.safetensors")))
    return epoch_entries(checkpoints)


def _plan(**kw):
    args = dict(
        project="proj",
        version="v1",
        epochs=_entries(),
        weights=[0.5, 1.0],
        prompts=["mychar, 1girl, smile"],
        seeds=[7],
        activation_tag="mychar",
    )
    args.update(kw)
    return ComparePlan(**args)


def test_weights_lists_and_ranges():
    assert parse_weights("0.5, 0.6,1") == [0.5, 0.6, 1.0]
    assert parse_weights("0.5-1.0:0.1") == [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert parse_weights("1-0.5:0.25") == [1.0, 0.75, 0.5]
    assert parse_weights("0.5 0.7, 0.5") == [0.5, 0.7]


@pytest.mark.parametrize("text", ["", "a", "0.5-1:0", "9", "0-1:0.001"])
def test_bad_weights_name_the_field(text):
    with pytest.raises(PlanError, match="weights"):
        parse_weights(text)


def test_weight_text_is_short_and_stable():
    assert [format_weight(w) for w in (1.0, 0.5, 0.70000001, 0.125, -0.0, 0)] == ["1", "0.5", "0.7", "0.125", "0", "0"]


def test_epoch_selection_all_every_subset():
    entries = _entries(final=True)
    assert [e.epoch for e in entries] == [1, 2, 3, None]  # final file last whatever the input order
    assert [e.epoch for e in select_epochs(entries, "every", every=2)] == [2, 3, None]  # last epoch always kept
    assert [e.epoch for e in select_epochs(entries, "subset", subset=[3, 1])] == [1, 3]
    assert [e.epoch for e in select_epochs(entries, "subset", subset=[0])] == [None]
    with pytest.raises(PlanError, match="epoch.*7"):
        select_epochs(entries, "subset", subset=[7])
    with pytest.raises(PlanError, match="train it first"):
        select_epochs([], "all")


def test_int_lists_and_seeds():
    assert parse_int_list("1, 3 5-7, 3", "epochs") == [1, 3, 5, 6, 7]
    seeds = parse_seeds("-1, 5", random.Random(0))
    assert seeds[1] == 5 and 0 <= seeds[0] < 2**32
    with pytest.raises(PlanError, match="seeds"):
        parse_seeds("1, x")


def test_lora_tag_added_once_and_existing_tag_rewritten():
    names = NAMES + ["proj-v1"]
    assert with_lora("mychar, smile", "proj-v1-000002", 0.8, names) == "mychar, smile <lora:proj-v1-000002:0.8>"
    # the user's tag for this version (any epoch, any case) is rewritten in place, a second one removed
    prompt = "<lora:PROJ-V1:1:unet=0.5> mychar, <lora:other:0.7>, smile <lora:proj-v1-000001:0.3>"
    out = with_lora(prompt, "proj-v1-000003", 0.6, names)
    assert out == "<lora:proj-v1-000003:0.6:unet=0.5> mychar, <lora:other:0.7>, smile "
    assert lora_names_in(out) == ["proj-v1-000003", "other"]


def test_expand_builds_rows_of_epochs_and_columns_of_weights():
    grids = expand(_plan(seeds=[7, 8], prompts=["mychar, smile", "mychar, from side"]))
    assert len(grids) == 4  # 2 prompts x 2 seeds
    g = grids[0]
    assert g.row_labels == ["epoch 1", "epoch 2", "epoch 3"]
    assert g.col_labels == ["weight 0.5", "weight 1", "no LoRA"]
    assert g.cells[1][0].prompt == "mychar, smile <lora:proj-v1-000002:0.5>"
    assert g.cells[2][1].prompt == "mychar, smile <lora:proj-v1-000003:1>"
    # the reference column is the row's LoRA at weight 0 and is rendered once per prompt and seed
    assert g.cells[2][2].prompt == "mychar, smile <lora:proj-v1-000003:0>"
    assert len({c.render_key for row in g.cells for c in row if c.is_reference}) == 1
    assert all(c.seed == 7 for c in g.all_cells()) and grids[1].seed == 8


def test_render_order_groups_each_lora_and_weight_and_dedups_reference():
    grids = expand(_plan(seeds=[7, 8]))
    order = render_order(grids)
    assert len(order) == 2 * (3 * 2 + 1)
    keys = [(c.epoch.lora_name, c.weight) for c in order if not c.is_reference]
    # every (LoRA, weight) pair appears in one run, so the WebUI merges each once
    runs = [k for i, k in enumerate(keys) if i == 0 or keys[i - 1] != k]
    assert len(runs) == len(set(runs)) == 6


def test_no_lora_column_skipped_when_weight_zero_is_asked():
    assert _plan(weights=[0.0, 1.0]).column_weights == [0.0, 1.0]
    assert _plan(include_no_lora=False).column_weights == [0.5, 1.0]


@pytest.mark.parametrize(
    "change,field",
    [
        ({"prompts": ["  "]}, "prompts"),
        ({"steps": 0}, "steps"),
        ({"width": 100}, "width"),
        ({"epochs": [EpochEntry(1, "bad:name")]}, "epochs"),
        ({"weights": [0.1 * i for i in range(200)], "seeds": list(range(10))}, "weights"),
    ],
)
def test_validation_names_the_field(change, field):
    with pytest.raises(PlanError) as info:
        _plan(**change).validate()
    assert info.value.field_name == field


def test_prompts_missing_activation_tag_are_reported():
    plan = _plan(prompts=["mychar, smile", "1girl, smile"])
    assert plan.prompts_missing_activation_tag() == ["1girl, smile"]


def test_final_file_is_labelled_with_its_saved_epoch(tmp_path):
    import numpy as np
    from safetensors.numpy import save_file

    final = tmp_path / "proj-v1.safetensors"
    save_file({"x": np.zeros(1, dtype=np.float32)}, str(final), {"ss_epoch": "4"})
    (tmp_path / "broken.safetensors").write_bytes(b"\xff" * 20)
    entries = epoch_entries([(None, final), (1, tmp_path / "proj-v1-000001.safetensors")])
    assert [e.label for e in entries] == ["epoch 1", "epoch 4 (final)"]
    assert epoch_entries([(None, tmp_path / "broken.safetensors")])[0].label == "final"
