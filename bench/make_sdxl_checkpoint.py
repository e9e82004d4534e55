"""Write a random-weight SDXL-base-shaped single-file checkpoint (sgm key layout, fp16) and its yaml.

    .venv/bin/python bench/make_sdxl_checkpoint.py /path/to/sdxl-random.safetensors [--device cuda] [--verify]
    .venv/bin/python bench/make_sdxl_checkpoint.py /tmp/tiny-sdxl.safetensors --tiny --hf-home /tmp/hf_home

The SDXL sibling of make_sd15_checkpoint.py, for speed and memory benchmarks only: random weights, but every tensor
has the name and shape it has in sd_xl_base_1.0.safetensors (UNet 320/640/1280 with transformer depths 1/2/10 and
the text_time size embedding, CLIP ViT-L text encoder under ``conditioner.embedders.0.transformer.``, OpenCLIP
ViT-bigG text tower under ``conditioner.embedders.1.model.``, the 8x VAE under ``first_stage_model.``), so A1111,
kohya's sd-scripts and our loader read it like the released file. Full size it is 3.5 G parameters, 6.9 GB on disk;
building it takes ~14 GB of (GPU) memory. ``--device cuda`` draws the random weights on the GPU (seconds instead of
a minute of CPU). The yaml beside it (same stem) is the standard sd_xl_base.yaml: our loader builds the text
encoders from it, with CLIP-L's config and tokenizer from a Hugging Face cache holding openai/clip-vit-large-patch14.

``--tiny`` keeps the block layout, module names and transformer depths but makes every width small (UNet channels
32/64/128, text encoders 32 and 64 wide with 4 layers): a CPU rehearsal of the same code paths. Its yaml names two
made-up text-encoder repos whose configs are written into ``--hf-home`` (kohya's sd-scripts cannot load it: its SDXL
architecture is fixed). ``--verify`` reloads the file with our loader (lib_lora_train.hosts) and compares tensors.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from make_sd15_checkpoint import _resnet_unet, vae_key_to_ldm  # noqa: E402

FULL = {
    "unet_channels": (320, 640, 1280),
    "head_dim": 64,
    "transformer_depth": (1, 2, 10),
    "vae_channels": (128, 256, 512, 512),
    "vae_resnets": 2,
    "te1": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12},
    "te2": {"width": 1280, "heads": 20, "layers": 32, "embed_dim": 1280},
    "te1_repo": None,  # the yaml names no version: openai/clip-vit-large-patch14, as in sd_xl_base.yaml
    "te2_arch": "ViT-bigG-14",
}
TINY = {
    "unet_channels": (32, 64, 128),
    "head_dim": 16,
    "transformer_depth": (1, 2, 10),
    "vae_channels": (32, 32, 64, 64),
    "vae_resnets": 1,
    "te1": {"hidden_size": 32, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 2},
    "te2": {"width": 64, "heads": 2, "layers": 4, "embed_dim": 64},
    "te1_repo": "bench/tiny-sdxl-clip-l",
    "te2_arch": "hf-hub:bench/tiny-sdxl-openclip-g",
}
TIME_EMBED_DIM = 256  # each of the six size/crop numbers becomes 256 sinusoidal features
SNAPSHOT = "0ff1ce0000000000000000000000000000000b01"


def sdxl_yaml(dims: dict) -> str:
    """sd_xl_base.yaml with the widths of ``dims`` (the real file for FULL)."""
    te1, te2 = dims["te1"], dims["te2"]
    c = dims["unet_channels"]
    mult = [ch // c[0] for ch in c]
    vae = dims["vae_channels"]
    version = f"\n              version: {dims['te1_repo']}" if dims["te1_repo"] else ""
    return f"""\
model:
  target: sgm.models.diffusion.DiffusionEngine
  params:
    scale_factor: 0.13025
    disable_first_stage_autocast: True
    denoiser_config:
      target: sgm.modules.diffusionmodules.denoiser.DiscreteDenoiser
      params:
        num_idx: 1000
        weighting_config:
          target: sgm.modules.diffusionmodules.denoiser_weighting.EpsWeighting
        scaling_config:
          target: sgm.modules.diffusionmodules.denoiser_scaling.EpsScaling
        discretization_config:
          target: sgm.modules.diffusionmodules.discretizer.LegacyDDPMDiscretization
    network_config:
      target: sgm.modules.diffusionmodules.openaimodel.UNetModel
      params:
        adm_in_channels: {te2["embed_dim"] + 6 * TIME_EMBED_DIM}
        num_classes: sequential
        use_checkpoint: True
        in_channels: 4
        out_channels: 4
        model_channels: {c[0]}
        attention_resolutions: [4, 2]
        num_res_blocks: 2
        channel_mult: {mult}
        num_head_channels: {dims["head_dim"]}
        use_spatial_transformer: True
        use_linear_in_transformer: True
        transformer_depth: {list(dims["transformer_depth"])}
        context_dim: {te1["hidden_size"] + te2["width"]}
        spatial_transformer_attn_type: softmax-xformers
        legacy: False
    conditioner_config:
      target: sgm.modules.GeneralConditioner
      params:
        emb_models:
          - is_trainable: False
            input_key: txt
            target: sgm.modules.encoders.modules.FrozenCLIPEmbedder
            params:
              layer: hidden
              layer_idx: {te1["num_hidden_layers"] - 1}{version}
          - is_trainable: False
            input_key: txt
            target: sgm.modules.encoders.modules.FrozenOpenCLIPEmbedder2
            params:
              arch: "{dims["te2_arch"]}"
              version: laion2b_s39b_b160k
              freeze: True
              layer: penultimate
              always_return_pooled: True
              legacy: False
          - is_trainable: False
            input_key: original_size_as_tuple
            target: sgm.modules.encoders.modules.ConcatTimestepEmbedderND
            params:
              outdim: {TIME_EMBED_DIM}
          - is_trainable: False
            input_key: crop_coords_top_left
            target: sgm.modules.encoders.modules.ConcatTimestepEmbedderND
            params:
              outdim: {TIME_EMBED_DIM}
          - is_trainable: False
            input_key: target_size_as_tuple
            target: sgm.modules.encoders.modules.ConcatTimestepEmbedderND
            params:
              outdim: {TIME_EMBED_DIM}
    first_stage_config:
      target: sgm.models.autoencoder.AutoencoderKLInferenceWrapper
      params:
        embed_dim: 4
        monitor: val/rec_loss
        ddconfig:
          attn_type: vanilla
          double_z: true
          z_channels: 4
          resolution: 256
          in_channels: 3
          out_ch: 3
          ch: {vae[0]}
          ch_mult: {[ch // vae[0] for ch in vae]}
          num_res_blocks: {dims["vae_resnets"]}
          attn_resolutions: []
          dropout: 0.0
        lossconfig:
          target: torch.nn.Identity
"""


def te1_config(dims: dict):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=49408, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768, **dims["te1"]
    )


def build_models(dims: dict, seed: int, device: str):
    """UNet, VAE and CLIP-L (diffusers/transformers classes, their own init) built on ``device``."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    c = dims["unet_channels"]
    with torch.device(device):
        unet = UNet2DConditionModel(
            sample_size=128,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=c,
            layers_per_block=2,
            attention_head_dim=[ch // dims["head_dim"] for ch in c],
            transformer_layers_per_block=list(dims["transformer_depth"]),
            cross_attention_dim=dims["te1"]["hidden_size"] + dims["te2"]["width"],
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=TIME_EMBED_DIM,
            projection_class_embeddings_input_dim=dims["te2"]["embed_dim"] + 6 * TIME_EMBED_DIM,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            block_out_channels=dims["vae_channels"],
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=dims["vae_resnets"],
            latent_channels=4,
            sample_size=1024,
            scaling_factor=0.13025,
        )
        te1 = CLIPTextModel(te1_config(dims))
    return unet, vae, te1


def open_clip_text_tensors(te2: dict, seed: int, device: str) -> dict:
    """An OpenCLIP text tower's weights (open_clip's names and shapes, PyTorch's default init ranges)."""
    import torch

    gen = torch.Generator(device=device).manual_seed(seed + 1)
    w, layers, embed = te2["width"], te2["layers"], te2["embed_dim"]

    def uniform(*shape, fan_in):
        bound = 1 / math.sqrt(fan_in)
        return torch.empty(shape, device=device).uniform_(-bound, bound, generator=gen)

    def ones(n):
        return torch.ones(n, device=device)

    def zeros(n):
        return torch.zeros(n, device=device)

    out = {
        "token_embedding.weight": torch.randn(49408, w, device=device, generator=gen) * 0.02,
        "positional_embedding": torch.randn(77, w, device=device, generator=gen) * 0.01,
        "ln_final.weight": ones(w),
        "ln_final.bias": zeros(w),
        "text_projection": torch.randn(w, embed, device=device, generator=gen) * w**-0.5,
        "logit_scale": torch.tensor(math.log(1 / 0.07), device=device),
    }
    for i in range(layers):
        p = f"transformer.resblocks.{i}."
        out.update({
            p + "ln_1.weight": ones(w), p + "ln_1.bias": zeros(w),
            p + "attn.in_proj_weight": uniform(3 * w, w, fan_in=w), p + "attn.in_proj_bias": zeros(3 * w),
            p + "attn.out_proj.weight": uniform(w, w, fan_in=w), p + "attn.out_proj.bias": zeros(w),
            p + "ln_2.weight": ones(w), p + "ln_2.bias": zeros(w),
            p + "mlp.c_fc.weight": uniform(4 * w, w, fan_in=w), p + "mlp.c_fc.bias": uniform(4 * w, fan_in=w),
            p + "mlp.c_proj.weight": uniform(w, 4 * w, fan_in=4 * w), p + "mlp.c_proj.bias": uniform(w, fan_in=4 * w),
        })  # fmt: skip
    return out


def unet_key_to_sgm(key: str) -> str:
    """One diffusers SDXL UNet parameter name -> its name under ``model.diffusion_model.`` in an SDXL checkpoint.

    Like SD1's layout (3 slots per level: 2 ResNet(+attention) pairs and the down/upsampler) with 3 levels, no
    downsampler after the last one, attention on levels 1 and 2 (so both upsamplers sit in slot 2), and the
    text_time embedding as ``label_emb``.
    """
    fixed = {
        "time_embedding.linear_1.": "time_embed.0.",
        "time_embedding.linear_2.": "time_embed.2.",
        "add_embedding.linear_1.": "label_emb.0.0.",
        "add_embedding.linear_2.": "label_emb.0.2.",
        "conv_in.": "input_blocks.0.0.",
        "conv_norm_out.": "out.0.",
        "conv_out.": "out.2.",
    }
    for old, new in fixed.items():
        if key.startswith(old):
            return new + key[len(old) :]
    if m := re.match(r"down_blocks\.(\d)\.(resnets|attentions)\.(\d)\.(.*)", key):
        level, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = 3 * level + j + 1
        return f"input_blocks.{index}.0.{_resnet_unet(rest)}" if kind == "resnets" else f"input_blocks.{index}.1.{rest}"
    if m := re.match(r"down_blocks\.(\d)\.downsamplers\.0\.conv\.(.*)", key):
        return f"input_blocks.{3 * (int(m[1]) + 1)}.0.op.{m[2]}"
    if m := re.match(r"mid_block\.resnets\.(\d)\.(.*)", key):
        return f"middle_block.{2 * int(m[1])}.{_resnet_unet(m[2])}"
    if m := re.match(r"mid_block\.attentions\.0\.(.*)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.match(r"up_blocks\.(\d)\.(resnets|attentions)\.(\d)\.(.*)", key):
        level, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = 3 * level + j
        return (
            f"output_blocks.{index}.0.{_resnet_unet(rest)}" if kind == "resnets" else f"output_blocks.{index}.1.{rest}"
        )
    if m := re.match(r"up_blocks\.(\d)\.upsamplers\.0\.conv\.(.*)", key):
        return f"output_blocks.{3 * int(m[1]) + 2}.2.conv.{m[2]}"  # both upsampling levels have attention
    raise KeyError(f"no sgm name for SDXL UNet parameter {key}")


def sgm_state_dict(unet, vae, te1, te2_tensors: dict) -> dict:
    """All weights as one state dict with the SDXL checkpoint's names, floats in fp16, on the CPU."""
    import torch

    out = {}
    for key, value in unet.state_dict().items():
        out["model.diffusion_model." + unet_key_to_sgm(key)] = value
    for key, value in vae.state_dict().items():
        name = vae_key_to_ldm(key)
        if ".mid.attn_1." in name and name.endswith(".weight") and value.ndim == 2:
            value = value[:, :, None, None]  # ldm's VAE attention uses 1x1 convolutions
        out["first_stage_model." + name] = value
    for key, value in te1.state_dict().items():
        out["conditioner.embedders.0.transformer." + key] = value
    for key, value in te2_tensors.items():
        out["conditioner.embedders.1.model." + key] = value
    return {
        k: (v.detach().to(torch.float16) if v.is_floating_point() else v.detach()).contiguous().cpu()
        for k, v in out.items()
    }


def write_tiny_hf_repos(hf_home: Path, dims: dict) -> None:
    """The two made-up text-encoder repos the tiny yaml names, as an offline Hugging Face cache holds them."""

    def snapshot(repo: str) -> Path:
        root = hf_home / "hub" / ("models--" + repo.replace("/", "--"))
        (root / "refs").mkdir(parents=True, exist_ok=True)
        (root / "refs" / "main").write_text(SNAPSHOT, encoding="utf-8")
        folder = root / "snapshots" / SNAPSHOT
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    te1_config(dims).save_pretrained(snapshot(dims["te1_repo"]))
    te2 = dims["te2"]
    text_cfg = {"context_length": 77, "vocab_size": 49408, "width": te2["width"], "heads": te2["heads"],
                "layers": te2["layers"]}  # fmt: skip
    cfg = {"model_cfg": {"embed_dim": te2["embed_dim"], "text_cfg": text_cfg}, "note": "tiny benchmark stand-in"}
    repo = dims["te2_arch"][len("hf-hub:") :]
    (snapshot(repo) / "open_clip_config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")


def verify(path: Path, unet, vae, te1, te2_tensors: dict) -> None:
    """Reload with our single-file loader (diffusers builds the UNet/VAE, ours the text encoders) and compare."""
    import torch

    from lib_lora_train.hosts.diffusers_host import load_pipeline

    pipe = load_pipeline(path)
    for name, ours, loaded in (
        ("unet", unet, pipe.unet),
        ("vae", vae, pipe.vae),
        ("text_encoder", te1, pipe.text_encoder),
    ):
        want, got = ours.state_dict(), loaded.state_dict()
        missing = sorted(set(want) - set(got))
        if missing:
            raise SystemExit(f"verify: {name} lacks {len(missing)} tensors after reload, e.g. {missing[:3]}")
        for key, value in want.items():
            expect = value.detach().cpu().to(torch.float16).float().reshape(got[key].shape)
            if key.endswith("position_ids"):
                continue
            if not torch.equal(got[key].float(), expect):
                raise SystemExit(f"verify: {name}.{key} differs after reload")
        print(f"verify: {name} {len(want)} tensors equal")
    got = pipe.text_encoder_2.state_dict()
    q = got["text_model.encoder.layers.0.self_attn.q_proj.weight"].float()
    w = te2_tensors["transformer.resblocks.0.attn.in_proj_weight"].detach().cpu().half().float()
    if not torch.equal(q, w[: q.shape[0]]):
        raise SystemExit("verify: text_encoder_2 layer 0 q_proj differs from the OpenCLIP in_proj slice")
    layers = pipe.text_encoder_2.config.num_hidden_layers
    print(f"verify: text_encoder_2 {len(got)} tensors, {layers} layers, q/k/v split checked")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="the .safetensors file to write (a .yaml is written beside it)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="where the random weights are drawn (cuda: much faster)")
    parser.add_argument("--tiny", action="store_true", help="small widths, same layout (a CPU rehearsal)")
    parser.add_argument("--hf-home", type=Path, help="with --tiny: the HF cache to write the text-encoder configs to")
    parser.add_argument("--verify", action="store_true", help="reload with our loader and compare (needs HF_HOME)")
    args = parser.parse_args()
    if args.output.suffix != ".safetensors":
        parser.error(f"{args.output}: the output must end in .safetensors")
    if args.tiny and args.hf_home is None:
        parser.error("--tiny needs --hf-home (the yaml names text-encoder configs written there)")

    from safetensors.torch import save_file

    dims = TINY if args.tiny else FULL
    unet, vae, te1 = build_models(dims, args.seed, args.device)
    te2 = open_clip_text_tensors(dims["te2"], args.seed, args.device)
    tensors = sgm_state_dict(unet, vae, te1, te2)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.output), metadata={"format": "pt", "note": "random weights, SDXL shapes, benchmark"})
    args.output.with_suffix(".yaml").write_text(sdxl_yaml(dims), encoding="utf-8")
    if args.tiny:
        write_tiny_hf_repos(args.hf_home, dims)
    count = sum(v.numel() for v in tensors.values())
    print(f"make_sdxl_checkpoint file={args.output} tensors={len(tensors)} params={count / 1e6:.1f}M dtype=fp16 "
          f"tiny={args.tiny}")  # fmt: skip
    if args.verify:
        verify(args.output, unet, vae, te1, te2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
