"""Prompt S/R strings, CSV quoting and the X/Y/Z txt2img payload match the WebUI v1.10.1 X/Y/Z plot."""

import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lib_lora_train.compare.plan import ComparePlan, epoch_entries, expand
from lib_lora_train.compare.xyz import (
    TXT2IMG_AXES,
    HandoffError,
    build_handoff,
    csv_join,
    csv_split,
    plan_handoffs,
    script_args,
    txt2img_payload,
    xyz_infotext,
)

NAMES = ["proj-v1-000001", "proj-v1-000002", "proj-v1-000003"]


def _plan(final=False, **kw):
    checkpoints = [(i + 1, Path(f"/x/{n}.safetensors")) for i, n in enumerate(NAMES)]
    if final:
        checkpoints.append((None, Path("/x/proj-v1.safetensors")))
    args = dict(
        project="proj",
        version="v1",
        epochs=epoch_entries(checkpoints),
        weights=[0.5, 0.6, 1.0],
        prompts=["mychar, 1girl, smile"],
        seeds=[7],
        negative_prompt="lowres",
    )
    args.update(kw)
    return ComparePlan(**args)


def _assert_reproduces(handoff, grid):
    want = [[(c.prompt, c.negative_prompt) for c in row] for row in grid.cells]
    assert handoff.cell_prompts() == want


def test_epoch_and_weight_strings_are_the_familiar_short_form():
    grid = expand(_plan())[0]
    handoff = build_handoff(grid)
    assert handoff.y_text == "-000001,-000002,-000003"
    assert handoff.x_text == ":0.5>,:0.6>,:1>,:0>"  # last = no-LoRA column (weight 0)
    assert handoff.prompt == "mychar, 1girl, smile <lora:proj-v1-000001:0.5>"
    _assert_reproduces(handoff, grid)


def test_final_file_is_the_empty_suffix():
    grid = expand(_plan(final=True, include_no_lora=False))[0]
    handoff = build_handoff(grid)
    assert handoff.y_values == ["-000001", "-000002", "-000003", ""]
    assert csv_split(handoff.y_text) == handoff.y_values
    _assert_reproduces(handoff, grid)


def test_ambiguous_short_weight_falls_back_to_an_unambiguous_form():
    # another LoRA at 0.5 would be changed by ":0.5>" as well
    grid = expand(_plan(prompts=["mychar, <lora:style:0.5>, smile"]))[0]
    handoff = build_handoff(grid)
    assert handoff.x_values[0] == "proj-v1-000001:0.5>"
    _assert_reproduces(handoff, grid)


def test_unreproducible_grid_says_why():
    grid = expand(_plan())[0]
    grid.cells[1][1] = grid.cells[1][0]  # a cell no S/R can produce
    with pytest.raises(HandoffError, match="no Prompt S/R"):
        build_handoff(grid)


def test_values_with_commas_and_quotes_are_quoted():
    values = ["a, b", 'say "hi"', "plain", ""]
    text = csv_join(values)
    assert text == '"a, b","say ""hi""",plain,'
    assert csv_split(text) == values
    with pytest.raises(HandoffError, match="strips spaces"):
        csv_join([" padded"])


@given(
    st.lists(
        st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"), min_size=1)
        .map(str.strip)
        .filter(bool),
        min_size=1,
        max_size=6,
    )
)
def test_csv_round_trip_property(values):
    assert csv_split(csv_join(values)) == values


def test_names_without_an_epoch_suffix_use_the_tag_prefix_form():
    # names that do not follow <stem>-NNNNNN use the "<lora:NAME:" form
    checkpoints = [(1, Path("/x/alpha.safetensors")), (2, Path("/x/beta.safetensors"))]
    plan = _plan(epochs=epoch_entries(checkpoints), include_no_lora=False)
    grid = expand(plan)[0]
    handoff = build_handoff(grid)
    assert handoff.y_values == ["<lora:alpha:", "<lora:beta:"]
    _assert_reproduces(handoff, grid)


def test_script_args_follow_v1_10_1_order():
    plan = _plan(seeds=[7, 8])
    handoff = plan_handoffs(plan, expand(plan))[0]
    args = script_args(handoff)
    assert len(args) == 18
    sr = TXT2IMG_AXES.index("Prompt S/R")
    assert sr == 7 and TXT2IMG_AXES.index("Seed") == 1
    assert args[0:9] == [sr, handoff.x_text, [], sr, handoff.y_text, [], 1, "7,8", []]
    # draw_legend, include_lone_images, include_sub_grids, no_fixed_seeds, vary x/y/z, margin, csv_mode
    assert args[9:] == [True, True, False, False, False, False, False, 0, True]


def test_payload_carries_the_plan_settings():
    plan = _plan(sampler="DPM++ 2M", steps=4, cfg_scale=5.5, width=64, height=96)
    handoff = plan_handoffs(plan, expand(plan))[0]
    body = txt2img_payload(plan, handoff)
    assert body["script_name"] == "x/y/z plot"
    assert (body["sampler_name"], body["steps"], body["cfg_scale"], body["width"], body["height"]) == (
        "DPM++ 2M",
        4,
        5.5,
        64,
        96,
    )
    assert body["seed"] == 7 and body["prompt"] == handoff.prompt and body["negative_prompt"] == "lowres"
    assert body["script_args"][2 * 3] == 0  # one seed: no Z axis ("Nothing")


def test_one_handoff_per_prompt():
    plan = _plan(prompts=["mychar, smile", "mychar, from side"], seeds=[1, 2])
    handoffs = plan_handoffs(plan, expand(plan))
    assert [h.prompt.split(" <")[0] for h in handoffs] == ["mychar, smile", "mychar, from side"]
    assert all(h.seeds == [1, 2] for h in handoffs)


def test_infotext_quotes_values_like_the_webui():
    plan = _plan(seeds=[3, 4])
    handoff = plan_handoffs(plan, expand(plan))[0]
    text = xyz_infotext(plan, handoff)
    lines = text.split("\n")
    assert lines[0] == handoff.prompt and lines[1] == "Negative prompt: lowres"
    assert 'X Values: ":0.5>,:0.6>,:1>,:0>"' in lines[2]
    # read back the way the WebUI parses the last infotext line (v1.10.1 infotext_utils.re_param + json unquote)
    pairs = re.findall(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)', lines[2])
    params = {k: json.loads(v) if v.startswith('"') else v for k, v in pairs}
    assert params["X Values"] == handoff.x_text and params["Y Values"] == handoff.y_text
    assert (params["Script"], params["X Type"], params["Z Type"], params["Z Values"]) == (
        "X/Y/Z plot",
        "Prompt S/R",
        "Seed",
        "3,4",
    )
