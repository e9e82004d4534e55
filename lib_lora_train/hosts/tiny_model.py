"""Tiny random-weight Stable Diffusion 1.x pipelines for tests, the demo and offline smoke runs.

They have the real SD1 module names (so LoRA keys are the real ones) but a few hundred thousand weights, so a
training step at 64 px takes a fraction of a second on a CPU. They make noise, not pictures. Everything is built
from configs on the spot, including a character-level CLIP tokenizer, so nothing is downloaded.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

# The SD1 noise schedule (scaled_linear 0.00085-0.012 over 1000 steps), as in every SD1 checkpoint.
# Two levels, one with attention and one without: the smallest UNet that still has every block kind.
TINY_SD1_UNET = {
    "sample_size": 8,
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 32,
    "attention_head_dim": 2,
    "norm_num_groups": 32,
}
SD1_SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
}


def _bytes_to_unicode() -> list[str]:
    """The 256 printable stand-ins CLIP's byte-level BPE uses for bytes (GPT-2's table)."""
    keep = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars, extra = [], 0
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def write_char_tokenizer(folder: Path) -> Path:
    """Write vocab.json + merges.txt for a CLIP tokenizer without merges: every character is its own token.

    Special tokens take the two highest ids because transformers 4.30's CLIPTextModel pools at ``argmax(input_ids)``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    chars = _bytes_to_unicode()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = 512
    vocab["<|endoftext|>"] = 513
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return folder


def build_tiny_pipeline(seed: int = 0, *, prediction: str = "epsilon"):
    """A StableDiffusionPipeline with random tiny weights (UNet channels 32/64, CLIP hidden 32 x 2 layers, 8x VAE)."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**TINY_SD1_UNET)
    vae = AutoencoderKL(
        block_out_channels=(32, 32, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=32,
        sample_size=64,
    )
    text_config = CLIPTextConfig(
        vocab_size=514,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        bos_token_id=512,
        eos_token_id=513,
        pad_token_id=513,
        projection_dim=32,
    )
    text_encoder = CLIPTextModel(text_config)
    with tempfile.TemporaryDirectory() as tmp:
        write_char_tokenizer(Path(tmp))
        tokenizer = CLIPTokenizer(
            str(Path(tmp) / "vocab.json"),
            str(Path(tmp) / "merges.txt"),
            unk_token="<|endoftext|>",
            bos_token="<|startoftext|>",
            eos_token="<|endoftext|>",
            pad_token="<|endoftext|>",
            model_max_length=77,
        )
    scheduler = DDIMScheduler(**SD1_SCHEDULE, prediction_type=prediction)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_tiny_sdxl_pipeline(seed: int = 0):
    """A StableDiffusionXLPipeline with random tiny weights: two CLIP encoders (hidden 32), pooled text + size/crop
    conditioning, transformer depth 2 in the lower level, like SDXL's layout in miniature."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64,
        attention_head_dim=(2, 4),
        transformer_layers_per_block=(1, 2),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=32 + 6 * 8,
        norm_num_groups=32,
    )
    text = dict(
        vocab_size=514, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        bos_token_id=512, eos_token_id=513, pad_token_id=513, projection_dim=32,
    )  # fmt: skip
    sd1 = build_tiny_pipeline(seed)
    schedule = {k: v for k, v in SD1_SCHEDULE.items() if k not in ("clip_sample", "set_alpha_to_one")}
    pipe = StableDiffusionXLPipeline(
        vae=sd1.vae,
        text_encoder=CLIPTextModel(CLIPTextConfig(**text)),
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**text)),
        tokenizer=sd1.tokenizer,
        tokenizer_2=sd1.tokenizer,
        unet=unet,
        scheduler=EulerDiscreteScheduler(**schedule),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_tiny_model(folder: str | Path, seed: int = 0, *, prediction: str = "epsilon") -> Path:
    """Build a tiny pipeline and save it as a diffusers folder (safetensors); returns the folder."""
    target = Path(folder)
    build_tiny_pipeline(seed, prediction=prediction).save_pretrained(str(target), safe_serialization=True)
    return target


if __name__ == "__main__":  # python -m lib_lora_train.hosts.tiny_model OUT_DIR
    import sys

    print(save_tiny_model(sys.argv[1] if len(sys.argv) > 1 else "outputs/tiny-sd1"))


def write_tiny_dataset(folder: str | Path, count: int = 4, size: int = 64, seed: int = 0) -> Path:
    """A dataset folder ``<folder>/2_demo`` of ``count`` generated images (coloured squares) with tag captions."""
    import io
    import random

    from PIL import Image, ImageDraw

    from lib_lora_train.fileio import atomic_write_bytes, atomic_write_text

    rng = random.Random(seed)
    target = Path(folder) / "2_demo"
    target.mkdir(parents=True, exist_ok=True)
    colours = ["red", "green", "blue", "yellow", "purple", "orange"]
    for i in range(count):
        colour = colours[i % len(colours)]
        image = Image.new("RGB", (size, size), "white")
        draw = ImageDraw.Draw(image)
        x, y = rng.randint(0, size // 2), rng.randint(0, size // 2)
        draw.rectangle([x, y, x + size // 3, y + size // 3], fill=colour)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        atomic_write_bytes(target / f"img{i:03d}.png", buffer.getvalue())
        atomic_write_text(target / f"img{i:03d}.txt", f"demo, {colour} square, white background")
    return Path(folder)
