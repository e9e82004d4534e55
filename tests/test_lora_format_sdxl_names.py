"""kohya's sgm names for a diffusers SDXL UNet (naming "diffusers_sdxl"), checked against sgm-layout trees."""

from __future__ import annotations

import pytest
import torch
from lora_format_trees import (
    WEBUI_TINY,
    ldm_shapes,
    one_torch_thread,
    reference_modules,
    shapes_from_checkpoint,
    tree_from_shapes,
)

from lib_lora_train.host import AdapterTarget
from lib_lora_train.lora_format import keys, ldm_names

pytestmark = pytest.mark.usefixtures(one_torch_thread.__name__)

needs_fixtures = pytest.mark.skipif(
    not (WEBUI_TINY / "tiny-sdxl.safetensors").is_file(), reason="../shared/fixtures (tiny WebUI models) not present"
)


@pytest.fixture(scope="module")
def tiny_sdxl_unet():
    from lib_lora_train.hosts.tiny_model import build_tiny_sdxl_pipeline

    return build_tiny_sdxl_pipeline().unet


def _sgm_tree_like_tiny_pipeline():
    """The sgm stand-in for ``build_tiny_sdxl_pipeline``'s UNet: channels 32/64, one ResBlock per level, attention
    (depth 2) only in the lower level, SDXL's size/pooled embedding ``label_emb``."""
    shapes = ldm_shapes(model_channels=32, mult=(1, 2), num_res_blocks=1, attention_levels=(1,), depth=(1, 2))
    shapes |= {"label_emb.0.0": (4, 4), "label_emb.0.2": (4, 4)}
    return tree_from_shapes(shapes)


def _names(target: AdapterTarget, network: str | None = None) -> set[str]:
    names = keys.kohya_module_names(target)
    if network is None:
        return set(names.values())
    return {names[path] for path in keys.unet_target_modules(target, network)}


def test_diffusers_sdxl_names_equal_those_of_an_sgm_tree_of_the_same_layout(tiny_sdxl_unet):
    diffusers = AdapterTarget("lora_unet", tiny_sdxl_unet, "diffusers_sdxl")
    sgm = AdapterTarget("lora_unet", _sgm_tree_like_tiny_pipeline(), "sgm")
    names = keys.kohya_module_names(diffusers)
    assert len(set(names.values())) == len(names)
    assert set(names.values()) == _names(sgm)
    assert _names(diffusers, "lora") == _names(sgm, "lora")
    assert _names(diffusers, "locon") == _names(sgm, "locon")
    assert not any("down_blocks" in name or "mid_block" in name or "up_blocks" in name for name in names.values())
    assert (
        names["down_blocks.1.attentions.0.transformer_blocks.1.ff.net.0.proj"]
        == "lora_unet_input_blocks_3_1_transformer_blocks_1_ff_net_0_proj"
    )
    assert names["down_blocks.0.resnets.0.conv1"] == "lora_unet_input_blocks_1_0_in_layers_2"
    assert names["down_blocks.0.downsamplers.0.conv"] == "lora_unet_input_blocks_2_0_op"
    assert names["down_blocks.1.resnets.0.conv_shortcut"] == "lora_unet_input_blocks_3_0_skip_connection"
    assert names["mid_block.attentions.0.proj_in"] == "lora_unet_middle_block_1_proj_in"
    assert names["mid_block.resnets.1.time_emb_proj"] == "lora_unet_middle_block_2_emb_layers_1"
    assert names["up_blocks.0.resnets.1.conv2"] == "lora_unet_output_blocks_1_0_out_layers_3"
    assert names["up_blocks.0.upsamplers.0.conv"] == "lora_unet_output_blocks_1_2_conv"  # after the attention
    assert names["up_blocks.1.resnets.0.conv_shortcut"] == "lora_unet_output_blocks_2_0_skip_connection"
    assert names["add_embedding.linear_1"] == "lora_unet_label_emb_0_0"


def test_the_reverse_map_undoes_the_forward_map(tiny_sdxl_unet):
    """diffusers -> sgm followed by the structure-derived sgm -> diffusers map gives every path back."""
    to_sgm = ldm_names.diffusers_to_ldm_names(tiny_sdxl_unet)
    to_diffusers = ldm_names.ldm_to_diffusers_names(tree_from_shapes(dict.fromkeys(to_sgm.values(), (4, 4))))
    assert {to_diffusers[sgm]: path for path, sgm in to_sgm.items()} == {path: path for path in to_sgm}
    assert set(to_diffusers.values()) == set(to_sgm)


def test_upsampler_without_attention_sits_at_position_one():
    """A level without transformers puts its upsampler right after the ResBlock (``output_blocks.N.1.conv``)."""
    from diffusers import UNet2DConditionModel

    from lib_lora_train.hosts.tiny_model import TINY_SD1_UNET

    with torch.device("meta"):
        unet = UNet2DConditionModel(**TINY_SD1_UNET)
    names = ldm_names.diffusers_to_ldm_names(unet)
    assert names["up_blocks.0.upsamplers.0.conv"] == "output_blocks.1.1.conv"
    assert names["down_blocks.0.attentions.0.proj_in"] == "input_blocks.1.1.proj_in"
    assert names["conv_in"] == "input_blocks.0.0" and names["conv_out"] == "out.2"


def test_paths_outside_the_layout_keep_their_names(tiny_sdxl_unet):
    names = ldm_names.diffusers_to_ldm_names(tiny_sdxl_unet, ["down_blocks.9.resnets.0.conv1", "extra.proj"])
    assert names == {"down_blocks.9.resnets.0.conv1": "down_blocks.9.resnets.0.conv1", "extra.proj": "extra.proj"}


@needs_fixtures
def test_diffusers_unet_with_tiny_sdxl_layout_matches_the_reference_lora_and_checkpoint():
    """A diffusers UNet built like tiny-sdxl.yaml (channels 32x(1,2,4), 2 ResBlocks per level, attention at
    levels 1-2 with depth 2/10, linear proj, context 96, adm 1600) names its layers exactly as the sgm checkpoint
    does, and its LoRA targets are the reference kohya file's UNet modules."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):  # names only: no weights needed
        unet = UNet2DConditionModel(
            sample_size=8,
            block_out_channels=(32, 64, 128),
            layers_per_block=2,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=96,
            attention_head_dim=(2, 4, 8),  # num_head_channels 16
            transformer_layers_per_block=(1, 2, 10),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=1600,
            norm_num_groups=32,
        )
    target = AdapterTarget("lora_unet", unet, "diffusers_sdxl")
    checkpoint = WEBUI_TINY / "tiny-sdxl.safetensors"
    sgm = AdapterTarget(
        "lora_unet", tree_from_shapes(shapes_from_checkpoint(checkpoint, "model.diffusion_model.")), "sgm"
    )
    assert _names(target) == _names(sgm)
    reference = reference_modules(WEBUI_TINY / "lora" / "tiny_sdxl_kohya.safetensors")
    assert _names(target, "lora") == {name for name in reference if name.startswith("lora_unet_")}
    assert _names(target, "locon") == _names(sgm, "locon")
