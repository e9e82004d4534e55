"""Write a random-weight, full-size SD1.5-shaped single-file checkpoint (original ldm key layout, fp16) and its yaml.

    .venv/bin/python bench/make_sd15_checkpoint.py /path/to/sd15-random.safetensors [--verify]

For speed and memory benchmarks only: the weights are random, so the model makes noise, but every tensor has the
shape and name it has in the released SD1.5 file, so loaders (A1111, diffusers' from_single_file, kohya's
sd-scripts) treat it exactly like the real thing. Nothing is downloaded: the UNet, VAE and CLIP ViT-L/14 text
encoder are built from the SD1.5 configs written below, then their diffusers parameter names are renamed to the
ldm names. The yaml written beside it (same stem) lets diffusers load it offline; text-encoder config and
tokenizer still come from a Hugging Face cache holding ``openai/clip-vit-large-patch14`` (set HF_HOME and
HF_HUB_OFFLINE=1). ``--verify`` reloads the file with diffusers' own ldm converter and checks every tensor.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

# The UNet of SD1.x: 4 levels, 2 ResNet blocks per level, attention on the first three levels.
UNET_LEVELS = 4
RESNETS_PER_LEVEL = 2
VAE_LEVELS = 4

# The standard SD1.x v1-inference.yaml, full size (model_channels 320, CLIP-L context 768).
SD15_YAML = """\
model:
  base_learning_rate: 1.0e-04
  target: ldm.models.diffusion.ddpm.LatentDiffusion
  params:
    linear_start: 0.00085
    linear_end: 0.0120
    num_timesteps_cond: 1
    log_every_t: 200
    timesteps: 1000
    first_stage_key: "jpg"
    cond_stage_key: "txt"
    image_size: 64
    channels: 4
    cond_stage_trainable: false
    conditioning_key: crossattn
    monitor: val/loss_simple_ema
    scale_factor: 0.18215
    use_ema: False
    unet_config:
      target: ldm.modules.diffusionmodules.openaimodel.UNetModel
      params:
        image_size: 32
        in_channels: 4
        out_channels: 4
        model_channels: 320
        attention_resolutions: [ 4, 2, 1 ]
        num_res_blocks: 2
        channel_mult: [ 1, 2, 4, 4 ]
        num_heads: 8
        use_spatial_transformer: True
        transformer_depth: 1
        context_dim: 768
        use_checkpoint: True
        legacy: False
    first_stage_config:
      target: ldm.models.autoencoder.AutoencoderKL
      params:
        embed_dim: 4
        monitor: val/rec_loss
        ddconfig:
          double_z: true
          z_channels: 4
          resolution: 256
          in_channels: 3
          out_ch: 3
          ch: 128
          ch_mult: [ 1, 2, 4, 4 ]
          num_res_blocks: 2
          attn_resolutions: []
          dropout: 0.0
        lossconfig:
          target: torch.nn.Identity
    cond_stage_config:
      target: ldm.modules.encoders.modules.FrozenCLIPEmbedder
"""


def build_models(seed: int, device: str = "cpu"):
    """SD1.5's UNet, VAE and CLIP-L text encoder (diffusers/transformers classes) with seeded random weights,
    drawn on ``device`` (cuda: seconds instead of a minute of CPU)."""
    import torch

    with torch.device(device):
        return _build_models(seed)


def _build_models(seed: int):
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=RESNETS_PER_LEVEL,
        attention_head_dim=8,
        cross_attention_dim=768,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * VAE_LEVELS,
        up_block_types=("UpDecoderBlock2D",) * VAE_LEVELS,
        layers_per_block=2,
        latent_channels=4,
        sample_size=512,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
        )
    )
    return unet, vae, text_encoder


def _resnet_unet(rest: str) -> str:
    """Rename the inside of a UNet ResNet block (diffusers -> ldm ResBlock)."""
    for old, new in (
        ("norm1.", "in_layers.0."),
        ("conv1.", "in_layers.2."),
        ("time_emb_proj.", "emb_layers.1."),
        ("norm2.", "out_layers.0."),
        ("conv2.", "out_layers.3."),
        ("conv_shortcut.", "skip_connection."),
    ):
        if rest.startswith(old):
            return new + rest[len(old) :]
    raise KeyError(rest)


def unet_key_to_ldm(key: str) -> str:
    """One diffusers UNet parameter name -> its name under ``model.diffusion_model.`` in an SD1 checkpoint.

    ldm numbers the down path as a flat list ``input_blocks`` (conv_in, then per level its ResNet+attention pairs
    and a downsampler) and the up path as ``output_blocks`` (three per level, the last carrying the upsampler).
    Attention (transformer) internals share their names in both layouts.
    """
    fixed = {
        "time_embedding.linear_1.": "time_embed.0.",
        "time_embedding.linear_2.": "time_embed.2.",
        "conv_in.": "input_blocks.0.0.",
        "conv_norm_out.": "out.0.",
        "conv_out.": "out.2.",
    }
    for old, new in fixed.items():
        if key.startswith(old):
            return new + key[len(old) :]
    per_level = RESNETS_PER_LEVEL + 1
    if m := re.match(r"down_blocks\.(\d)\.(resnets|attentions)\.(\d)\.(.*)", key):
        level, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = per_level * level + j + 1
        return f"input_blocks.{index}.0.{_resnet_unet(rest)}" if kind == "resnets" else f"input_blocks.{index}.1.{rest}"
    if m := re.match(r"down_blocks\.(\d)\.downsamplers\.0\.conv\.(.*)", key):
        return f"input_blocks.{per_level * (int(m[1]) + 1)}.0.op.{m[2]}"
    if m := re.match(r"mid_block\.resnets\.(\d)\.(.*)", key):
        return f"middle_block.{2 * int(m[1])}.{_resnet_unet(m[2])}"
    if m := re.match(r"mid_block\.attentions\.0\.(.*)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.match(r"up_blocks\.(\d)\.(resnets|attentions)\.(\d)\.(.*)", key):
        level, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = per_level * level + j
        return (
            f"output_blocks.{index}.0.{_resnet_unet(rest)}" if kind == "resnets" else f"output_blocks.{index}.1.{rest}"
        )
    if m := re.match(r"up_blocks\.(\d)\.upsamplers\.0\.conv\.(.*)", key):
        level = int(m[1])
        # the first up level has no attention, so its upsampler sits in slot 1 instead of 2
        slot = 1 if level == 0 else 2
        return f"output_blocks.{per_level * level + RESNETS_PER_LEVEL}.{slot}.conv.{m[2]}"
    raise KeyError(f"no ldm name for UNet parameter {key}")


def _resnet_vae(rest: str) -> str:
    return "nin_shortcut." + rest[len("conv_shortcut.") :] if rest.startswith("conv_shortcut.") else rest


def _vae_attention(rest: str) -> str:
    for old, new in (
        ("group_norm.", "norm."),
        ("to_q.", "q."),
        ("to_k.", "k."),
        ("to_v.", "v."),
        ("to_out.0.", "proj_out."),
    ):
        if rest.startswith(old):
            return new + rest[len(old) :]
    raise KeyError(rest)


def vae_key_to_ldm(key: str) -> str:
    """One diffusers AutoencoderKL parameter name -> its name under ``first_stage_model.`` (decoder levels reversed)."""
    if m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d)\.(.*)", key):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{_resnet_vae(m[3])}"
    if m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)", key):
        return f"{m[1]}.mid.attn_1.{_vae_attention(m[2])}"
    if m := re.match(r"(encoder|decoder)\.conv_norm_out\.(.*)", key):
        return f"{m[1]}.norm_out.{m[2]}"
    if m := re.match(r"encoder\.down_blocks\.(\d)\.resnets\.(\d)\.(.*)", key):
        return f"encoder.down.{m[1]}.block.{m[2]}.{_resnet_vae(m[3])}"
    if m := re.match(r"encoder\.down_blocks\.(\d)\.downsamplers\.0\.(.*)", key):
        return f"encoder.down.{m[1]}.downsample.{m[2]}"
    if m := re.match(r"decoder\.up_blocks\.(\d)\.resnets\.(\d)\.(.*)", key):
        return f"decoder.up.{VAE_LEVELS - 1 - int(m[1])}.block.{m[2]}.{_resnet_vae(m[3])}"
    if m := re.match(r"decoder\.up_blocks\.(\d)\.upsamplers\.0\.(.*)", key):
        return f"decoder.up.{VAE_LEVELS - 1 - int(m[1])}.upsample.{m[2]}"
    if re.match(r"(encoder|decoder)\.conv_(in|out)\.|(post_)?quant_conv\.", key):
        return key
    raise KeyError(f"no ldm name for VAE parameter {key}")


def ldm_state_dict(unet, vae, text_encoder) -> dict:
    """The three models' weights as one state dict (floats in fp16) with the SD1 checkpoint's key names."""
    import torch

    out = {}
    for key, value in unet.state_dict().items():
        out["model.diffusion_model." + unet_key_to_ldm(key)] = value
    for key, value in vae.state_dict().items():
        name = vae_key_to_ldm(key)
        # ldm's VAE attention uses 1x1 convolutions where diffusers uses linear layers
        if ".mid.attn_1." in name and name.endswith(".weight") and value.ndim == 2:
            value = value[:, :, None, None]
        out["first_stage_model." + name] = value
    for key, value in text_encoder.state_dict().items():
        out["cond_stage_model.transformer." + key] = value
    # integer buffers (CLIP's position_ids) stay int64 as in the released file; a float copy breaks some loaders
    return {
        k: (v.detach().to(torch.float16) if v.is_floating_point() else v.detach()).contiguous().cpu()
        for k, v in out.items()
    }


def verify(path: Path, unet, vae, text_encoder) -> None:
    """Reload the file with diffusers' ldm loader and compare every tensor with the models it was made from."""
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_single_file(
        str(path), original_config_file=str(path.with_suffix(".yaml")), local_files_only=True, safety_checker=None
    )
    for name, ours, loaded in (
        ("unet", unet, pipe.unet),
        ("vae", vae, pipe.vae),
        ("text_encoder", text_encoder, pipe.text_encoder),
    ):
        want, got = ours.state_dict(), loaded.state_dict()
        missing = sorted(set(want) - set(got))
        if missing:
            raise SystemExit(f"verify: {name} lacks {len(missing)} tensors after reload, e.g. {missing[:3]}")
        for key, value in want.items():
            expect = value.detach().cpu().to(torch.float16).float().reshape(got[key].shape)
            if not torch.equal(got[key].float(), expect):
                raise SystemExit(f"verify: {name}.{key} differs after reload")
        print(f"verify: {name} {len(want)} tensors equal")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="the .safetensors file to write (a .yaml is written beside it)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="where the random weights are drawn (cuda: much faster)")
    parser.add_argument("--verify", action="store_true", help="reload with diffusers and compare (needs the HF cache)")
    args = parser.parse_args()
    if args.output.suffix != ".safetensors":
        parser.error(f"{args.output}: the output must end in .safetensors")

    from safetensors.torch import save_file

    unet, vae, text_encoder = build_models(args.seed, args.device)
    tensors = ldm_state_dict(unet, vae, text_encoder)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.output), metadata={"format": "pt", "note": "random weights, SD1.5 shapes, benchmark"})
    args.output.with_suffix(".yaml").write_text(SD15_YAML, encoding="utf-8")
    count = sum(v.numel() for v in tensors.values())
    print(f"make_sd15_checkpoint file={args.output} tensors={len(tensors)} params={count / 1e6:.1f}M dtype=fp16")
    if args.verify:
        verify(args.output, unet, vae, text_encoder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
