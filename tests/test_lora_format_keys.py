"""kohya key names and target modules for diffusers, ldm, sgm, HF CLIP and OpenCLIP module trees."""

from __future__ import annotations

import json

import pytest
from lora_format_trees import (
    DIFFUSERS_SD1,
    WEBUI_TINY,
    ldm_shapes,
    one_torch_thread,
    reference_modules,
    shapes_from_checkpoint,
    tiny_clip,
    tiny_unet,
    tree_from_shapes,
)
from torch import nn

from lib_lora_train.host import AdapterTarget
from lib_lora_train.lora_format import keys, ldm_names

pytestmark = pytest.mark.usefixtures(one_torch_thread.__name__)

needs_fixtures = pytest.mark.skipif(
    not (WEBUI_TINY / "tiny-sd1.safetensors").is_file(), reason="../shared/fixtures (tiny WebUI models) not present"
)


def _target_names(target: AdapterTarget, paths: list[str]) -> set[str]:
    """kohya names of target paths; an OpenCLIP attention counts as its four q/k/v/out names."""
    names = keys.kohya_module_names(target)
    result = set()
    for path in paths:
        if path in names:
            result.add(names[path])
        else:
            result |= {names[f"{path}.{part}"] for part in ("q_proj", "k_proj", "v_proj", "out_proj")}
    return result


# --- without fixtures -------------------------------------------------------------------------------------------


def test_diffusers_unet_names_follow_kohya_examples():
    target = AdapterTarget("lora_unet", tiny_unet(), "diffusers")
    names = keys.kohya_module_names(target)
    assert (
        names["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"]
        == "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    )
    assert names["up_blocks.1.attentions.2.proj_out"] == "lora_unet_up_blocks_1_attentions_2_proj_out"
    assert names["mid_block.resnets.1.conv2"] == "lora_unet_mid_block_resnets_1_conv2"


def test_ldm_map_from_structure_equals_diffusers_tree_of_same_layout():
    """The mapped ldm names are exactly the Linear/Conv2d names of a diffusers UNet with the same layout."""
    diffusers_names = {n for n, m in tiny_unet().named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    ldm_tree = tree_from_shapes(ldm_shapes())
    mapping = ldm_names.ldm_to_diffusers_names(ldm_tree)
    assert len(set(mapping.values())) == len(mapping)
    assert set(mapping.values()) == diffusers_names
    assert mapping["input_blocks.3.0.op"] == "down_blocks.0.downsamplers.0.conv"
    assert mapping["output_blocks.2.0.skip_connection"] == "up_blocks.0.resnets.2.conv_shortcut"
    assert mapping["output_blocks.2.1.conv"] == "up_blocks.0.upsamplers.0.conv"
    assert mapping["output_blocks.5.2.conv"] == "up_blocks.1.upsamplers.0.conv"
    assert mapping["middle_block.1.proj_in"] == "mid_block.attentions.0.proj_in"


@pytest.mark.parametrize("network", ["lora", "locon"])
def test_ldm_and_diffusers_trees_give_the_same_key_set(network):
    diffusers_target = AdapterTarget("lora_unet", tiny_unet(), "diffusers")
    ldm_target = AdapterTarget("lora_unet", tree_from_shapes(ldm_shapes()), "ldm")
    from_diffusers = _target_names(diffusers_target, keys.unet_target_modules(diffusers_target, network))
    from_ldm = _target_names(ldm_target, keys.unet_target_modules(ldm_target, network))
    assert from_diffusers == from_ldm
    # 11 transformers (2x2 down, 1 mid, 2x3 up) x 12 layers (attn1/attn2 q,k,v,out, ff x2, proj_in/out)
    assert len(from_ldm) == (132 if network == "lora" else 201 - 4)


def test_lora_targets_only_transformer_layers_and_locon_adds_resnets_and_samplers():
    target = AdapterTarget("lora_unet", tiny_unet(), "diffusers")
    lora = keys.unet_target_modules(target, "lora")
    locon = keys.unet_target_modules(target, "locon")
    assert all(".attentions." in path for path in lora)
    assert set(lora) < set(locon)
    extra = set(locon) - set(lora)
    assert "down_blocks.0.downsamplers.0.conv" in extra and "up_blocks.0.upsamplers.0.conv" in extra
    assert "down_blocks.1.resnets.0.conv_shortcut" in extra and "mid_block.resnets.0.time_emb_proj" in extra
    # kohya never adapts the stem, the output conv or the time embedding
    assert not {"conv_in", "conv_out", "time_embedding.linear_1"} & set(locon)
    convs = keys.conv3x3_modules(target, locon)
    assert "down_blocks.0.resnets.0.conv1" in convs and "down_blocks.1.resnets.0.conv_shortcut" not in convs
    with pytest.raises(ValueError, match="unknown network"):
        keys.unet_target_modules(target, "dora")


def test_hf_clip_names_inside_a_host_wrapper():
    wrapper = nn.Module()
    wrapper.transformer = tiny_clip()
    target = AdapterTarget("lora_te", wrapper, "hf_clip", is_text_encoder=True)
    paths = keys.te_target_modules(target)
    assert len(paths) == 2 * 6
    assert _target_names(target, paths) == {
        f"lora_te_text_model_encoder_layers_{i}_{part}"
        for i in range(2)
        for part in ("self_attn_q_proj", "self_attn_k_proj", "self_attn_v_proj", "self_attn_out_proj")
        + ("mlp_fc1", "mlp_fc2")
    }


def test_open_clip_attention_reports_four_names():
    shapes = {"transformer.resblocks.0.attn.in_proj": (24, 8), "transformer.resblocks.0.attn.out_proj": (8, 8)}
    shapes |= {"transformer.resblocks.0.mlp.c_fc": (32, 8), "transformer.resblocks.0.mlp.c_proj": (8, 32)}
    target = AdapterTarget("lora_te2", tree_from_shapes(shapes), "open_clip", is_text_encoder=True)
    names = keys.kohya_module_names(target)
    assert names["transformer.resblocks.0.attn.q_proj"] == "lora_te2_text_model_encoder_layers_0_self_attn_q_proj"
    assert names["transformer.resblocks.0.attn.out_proj"] == "lora_te2_text_model_encoder_layers_0_self_attn_out_proj"
    assert names["transformer.resblocks.0.mlp.c_fc"] == "lora_te2_text_model_encoder_layers_0_mlp_fc1"
    assert names["transformer.resblocks.0.mlp.c_proj"] == "lora_te2_text_model_encoder_layers_0_mlp_fc2"
    assert len(names) == 6


def test_names_are_the_same_after_peft_injection():
    from peft import LoraConfig, inject_adapter_in_model

    target = AdapterTarget("lora_unet", tiny_unet(), "diffusers")
    before = keys.kohya_module_names(target)
    paths = keys.unet_target_modules(target, "locon")
    inject_adapter_in_model(LoraConfig(r=2, target_modules=paths), target.module)
    assert keys.kohya_module_names(target) == before
    assert keys.unet_target_modules(target, "locon") == paths


# --- against the shared fixtures --------------------------------------------------------------------------------


@needs_fixtures
def test_ldm_map_of_tiny_sd1_matches_diffusers_converter():
    reference = json.loads((DIFFUSERS_SD1 / "ldm_to_diffusers_unet_names.json").read_text())
    prefix = "model.diffusion_model."
    reference = {key[len(prefix) :]: value for key, value in reference.items()}
    tree = tree_from_shapes(shapes_from_checkpoint(WEBUI_TINY / "tiny-sd1.safetensors", prefix))
    assert ldm_names.ldm_to_diffusers_names(tree) == reference


@needs_fixtures
@pytest.mark.parametrize("network, reference_file", [("lora", "tiny_kohya"), ("locon", "tiny_kohya_locon")])
def test_tiny_sd1_keys_match_reference_lora(network, reference_file):
    checkpoint = WEBUI_TINY / "tiny-sd1.safetensors"
    unet = AdapterTarget(
        "lora_unet", tree_from_shapes(shapes_from_checkpoint(checkpoint, "model.diffusion_model.")), "ldm"
    )
    te_tree = tree_from_shapes(shapes_from_checkpoint(checkpoint, "cond_stage_model."))
    te = AdapterTarget("lora_te", te_tree, "hf_clip", is_text_encoder=True)
    reference = reference_modules(WEBUI_TINY / "lora" / f"{reference_file}.safetensors")
    generated = _target_names(unet, keys.unet_target_modules(unet, network)) | _target_names(
        te, keys.te_target_modules(te)
    )
    if network == "lora":
        assert generated == reference
    else:
        # the reference covers every UNet layer the WebUI can match; kohya's LoCon leaves the stem, the output
        # conv and the time embedding alone, and every name we generate is one the WebUI matches
        assert reference - generated == {
            "lora_unet_conv_in",
            "lora_unet_conv_out",
            "lora_unet_time_embedding_linear_1",
            "lora_unet_time_embedding_linear_2",
        }
        assert set(keys.kohya_module_names(unet).values()) | _target_names(te, keys.te_target_modules(te)) == reference


@needs_fixtures
def test_diffusers_sd1_keys_match_reference_lora():
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(DIFFUSERS_SD1 / "unet")))
    target = AdapterTarget("lora_unet", unet, "diffusers")
    reference = reference_modules(WEBUI_TINY / "lora" / "tiny_kohya.safetensors")
    assert _target_names(target, keys.unet_target_modules(target, "lora")) == {
        name for name in reference if name.startswith("lora_unet_")
    }


@needs_fixtures
def test_tiny_sd2v_keys_match_reference_lora():
    checkpoint = WEBUI_TINY / "tiny-sd2v.safetensors"
    unet = AdapterTarget(
        "lora_unet", tree_from_shapes(shapes_from_checkpoint(checkpoint, "model.diffusion_model.")), "ldm"
    )
    te_tree = tree_from_shapes(shapes_from_checkpoint(checkpoint, "cond_stage_model."))
    te = AdapterTarget("lora_te", te_tree, "open_clip", is_text_encoder=True)
    generated = _target_names(unet, keys.unet_target_modules(unet, "lora")) | _target_names(
        te, keys.te_target_modules(te)
    )
    assert generated == reference_modules(WEBUI_TINY / "lora" / "tiny_sd2v_kohya.safetensors")


@needs_fixtures
def test_tiny_sdxl_keys_match_reference_lora():
    checkpoint = WEBUI_TINY / "tiny-sdxl.safetensors"
    unet = AdapterTarget(
        "lora_unet", tree_from_shapes(shapes_from_checkpoint(checkpoint, "model.diffusion_model.")), "sgm"
    )
    te1_tree = tree_from_shapes(shapes_from_checkpoint(checkpoint, "conditioner.embedders.0."))
    te2_tree = tree_from_shapes(shapes_from_checkpoint(checkpoint, "conditioner.embedders.1."))
    te1 = AdapterTarget("lora_te1", te1_tree, "hf_clip", is_text_encoder=True)
    te2 = AdapterTarget("lora_te2", te2_tree, "open_clip", is_text_encoder=True)
    generated = (
        _target_names(unet, keys.unet_target_modules(unet, "lora"))
        | _target_names(te1, keys.te_target_modules(te1))
        | _target_names(te2, keys.te_target_modules(te2))
    )
    reference = reference_modules(WEBUI_TINY / "lora" / "tiny_sdxl_kohya.safetensors")
    assert generated == reference
    assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q" in generated
    locon = _target_names(unet, keys.unet_target_modules(unet, "locon"))
    assert "lora_unet_input_blocks_1_0_in_layers_2" in locon and "lora_unet_input_blocks_3_0_op" in locon
    assert "lora_unet_output_blocks_2_2_conv" in locon


def test_open_clip_attention_split_by_a_host_gets_the_same_names():
    """A host that replaces the fused attention by q/k/v/out linears finds them named and targeted."""
    fused = {"transformer.resblocks.0.attn.in_proj": (24, 8), "transformer.resblocks.0.attn.out_proj": (8, 8)}
    split = {f"transformer.resblocks.0.attn.{part}": (8, 8) for part in ("q_proj", "k_proj", "v_proj", "out_proj")}
    fused_target = AdapterTarget("lora_te", tree_from_shapes(fused), "open_clip", is_text_encoder=True)
    split_target = AdapterTarget("lora_te", tree_from_shapes(split), "open_clip", is_text_encoder=True)
    assert keys.kohya_module_names(split_target) == keys.kohya_module_names(fused_target)
    # unused_last_layers=0: a one-layer stand-in has no penultimate layer to keep
    assert sorted(keys.te_target_modules(split_target, unused_last_layers=0)) == sorted(split)
    assert keys.te_target_modules(fused_target, unused_last_layers=0) == ["transformer.resblocks.0.attn"]
