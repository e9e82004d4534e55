"""Single-file SD1/SD2/SDXL checkpoints (the WebUI's format) as a diffusers pipeline, from the file and its yaml.

diffusers 0.27's ``from_single_file`` builds the text encoders from the Hugging Face configs of the *original*
models (openai/clip-vit-large-patch14, stabilityai/stable-diffusion-2, laion's bigG) whatever the yaml says, so it
needs the network, and it builds full-size encoders for a checkpoint whose yaml names others. The WebUI reads the
yaml: the CLIP ``version`` repo of ``FrozenCLIPEmbedder`` and the OpenCLIP ``arch`` of ``FrozenOpenCLIPEmbedder``.
This module does the same: the text encoders and tokenizers are built here from the yaml (configs from the local
Hugging Face cache, the two OpenCLIP sizes SD2/SDXL ship with from a table), their weights are read from the
checkpoint, and diffusers builds only the UNet, VAE and scheduler, which it takes from the yaml already.

``inspect_checkpoint`` says what a ``.safetensors`` file is before any of that, so that a LoRA, a VAE or an
embedding passed as a base model is named as such instead of failing deep inside diffusers.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# the OpenCLIP text towers the real checkpoints use (open_clip's model configs): SD2 ViT-H-14, SDXL ViT-bigG-14
OPEN_CLIP_TEXT = {
    "ViT-H-14": {"width": 1024, "heads": 16, "layers": 24, "embed_dim": 1024, "context_length": 77, "vocab_size": 49408},
    "ViT-bigG-14": {"width": 1280, "heads": 20, "layers": 32, "embed_dim": 1280, "context_length": 77,
                    "vocab_size": 49408},
}  # fmt: skip
# the BPE vocabulary every SD text encoder shares (the WebUI needs it in the cache for any SD1 checkpoint too)
DEFAULT_CLIP = "openai/clip-vit-large-patch14"


class CheckpointError(ValueError):
    """The file is not a base model this loader can use; the message names the file, what it is and what to pass."""


@dataclass(frozen=True)
class CheckpointKind:
    arch: str  # sd1, sd2, sdxl
    keys: frozenset[str]


def inspect_checkpoint(path: Path) -> CheckpointKind:
    """What a single-file checkpoint holds; CheckpointError for anything that is not an SD1/SD2/SDXL model."""
    if path.suffix != ".safetensors":
        return CheckpointKind("sd1", frozenset())  # a pickle (.ckpt) is only read by diffusers itself
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = frozenset(handle.keys())
    except Exception as exc:  # safetensors raises its own error types for damaged or foreign files
        raise CheckpointError(f"{path}: not a readable .safetensors file ({exc}); re-download it, or pass "
                              "--base a diffusers folder") from None  # fmt: skip
    if any(k.startswith(("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")) for k in keys):
        raise CheckpointError(f"{path}: this is a LoRA (kohya/LyCORIS format), not a base model; pass --base the "
                              "checkpoint it was trained on (a .safetensors model or a diffusers folder)")  # fmt: skip
    if not any(k.startswith("model.diffusion_model.") for k in keys):
        if any(k.startswith(("encoder.", "decoder.", "first_stage_model.")) for k in keys):
            what = "a VAE"
        elif keys & {"emb_params", "clip_l", "clip_g"} or any(k.startswith("string_to_param") for k in keys):
            what = "a textual-inversion embedding"
        else:
            what = f"no Stable Diffusion UNet ({len(keys)} tensors, none under model.diffusion_model.)"
        raise CheckpointError(f"{path}: {what}, not a base model; pass --base an SD1/SD2/SDXL checkpoint or a "
                              "diffusers folder")  # fmt: skip
    if any(k.startswith("conditioner.embedders.1.") for k in keys):
        return CheckpointKind("sdxl", keys)
    if any(k.startswith("cond_stage_model.model.") for k in keys):
        return CheckpointKind("sd2", keys)
    return CheckpointKind("sd1", keys)


def read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CheckpointError(f"{path}: cannot read the model config ({exc})") from None


def text_components(checkpoint: Path, config: dict[str, Any], kind: CheckpointKind, *, offline: bool) -> dict:
    """``text_encoder``/``tokenizer`` (and ``_2`` for SDXL) built from the yaml and the checkpoint's weights."""
    params = config["model"]["params"]
    if kind.arch == "sdxl":
        embedders = params["conditioner_config"]["params"]["emb_models"]
        clip_repo = (embedders[0].get("params") or {}).get("version") or DEFAULT_CLIP
        te1 = _clip_encoder(checkpoint, kind, "conditioner.embedders.0.transformer.", clip_repo, offline)
        te2 = _open_clip_encoder(checkpoint, kind, "conditioner.embedders.1.model.", embedders[1].get("params") or {},
                                 offline, projection=True, drop_last=False)  # fmt: skip
        return {"text_encoder": te1, "tokenizer": _tokenizer(clip_repo, offline),
                "text_encoder_2": te2, "tokenizer_2": _tokenizer(clip_repo, offline, pad_token="!")}  # fmt: skip
    cond = params.get("cond_stage_config") or {}
    if kind.arch == "sd2":
        args = cond.get("params") or {}
        # the WebUI (and diffusers' SD2) run the penultimate layer: the last one is not part of the model
        te = _open_clip_encoder(checkpoint, kind, "cond_stage_model.model.", args, offline, projection=False,
                                drop_last=args.get("layer", "penultimate") == "penultimate")  # fmt: skip
        return {"text_encoder": te, "tokenizer": _tokenizer(DEFAULT_CLIP, offline, pad_token="!")}
    clip_repo = (cond.get("params") or {}).get("version") or DEFAULT_CLIP
    te = _clip_encoder(checkpoint, kind, "cond_stage_model.transformer.", clip_repo, offline)
    return {"text_encoder": te, "tokenizer": _tokenizer(clip_repo, offline)}


def sdxl_unet(checkpoint: Path, config: dict[str, Any], kind: CheckpointKind):
    """The SDXL UNet with its size/crop conditioning as the yaml describes it.

    diffusers recognises SDXL's ``text_time`` embedding only by the cross-attention width of the real models (2048,
    1280); any other width (a distilled or tiny SDXL) gets an SD-upscaler-style class embedding that the pipeline
    cannot call. The yaml says what it is: ``num_classes: sequential`` with the ConcatTimestepEmbedderND size.
    """
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, create_unet_diffusers_config

    unet_config = create_unet_diffusers_config(config, image_size=1024)
    embedders = config["model"]["params"]["conditioner_config"]["params"]["emb_models"]
    sizes = [int((e.get("params") or {}).get("outdim", 256)) for e in embedders if "ConcatTimestep" in e["target"]]
    unet_config.update(class_embed_type=None, addition_embed_type="text_time",
                       addition_time_embed_dim=sizes[0] if sizes else 256)  # fmt: skip
    state = convert_ldm_unet_checkpoint(_weights(checkpoint, kind, "model.diffusion_model.", strip=False), unet_config)
    unet = UNet2DConditionModel(**unet_config)
    return _load(unet, state, checkpoint, "UNet")


def _weights(checkpoint: Path, kind: CheckpointKind, prefix: str, *, strip: bool = True) -> dict:
    """The tensors under ``prefix`` only (read one by one: the rest of a 7 GB file stays on disk)."""
    from safetensors import safe_open

    with safe_open(str(checkpoint), framework="pt") as handle:
        return {(key[len(prefix) :] if strip else key): handle.get_tensor(key)
                for key in kind.keys if key.startswith(prefix)}  # fmt: skip


def _missing_repo(repo: str, what: str, exc: Exception) -> CheckpointError:
    where = os.environ.get("HF_HOME", "~/.cache/huggingface")
    return CheckpointError(f"the {what} {repo!r} that the checkpoint's yaml names is not in the Hugging Face cache "
                           f"({where}) and downloads are off ({type(exc).__name__}); put it there, go online, or "
                           "pass --base a diffusers folder")  # fmt: skip


def _tokenizer(repo: str, offline: bool, pad_token: str | None = None):
    from transformers import CLIPTokenizer

    kwargs = {"pad_token": pad_token} if pad_token else {}
    try:
        return CLIPTokenizer.from_pretrained(repo, local_files_only=offline, **kwargs)
    except (OSError, ValueError) as exc:
        if repo != DEFAULT_CLIP:  # an encoder repo without tokenizer files: every SD model shares CLIP's BPE
            return _tokenizer(DEFAULT_CLIP, offline, pad_token)
        raise _missing_repo(repo, "tokenizer", exc) from None


def _load(model, state: dict, checkpoint: Path, what: str):
    state = {k: v for k, v in state.items() if not k.endswith("position_ids")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise CheckpointError(f"{checkpoint}: its {what} does not match the yaml's ({len(missing)} missing, e.g. "
                              f"{(missing or unexpected)[:2]}); is the .yaml beside it the right one?")  # fmt: skip
    return model.eval()


def _clip_encoder(checkpoint: Path, kind: CheckpointKind, prefix: str, repo: str, offline: bool):
    from transformers import CLIPTextConfig, CLIPTextModel

    try:
        config = CLIPTextConfig.from_pretrained(repo, local_files_only=offline)
    except (OSError, ValueError) as exc:
        raise _missing_repo(repo, "CLIP text encoder config", exc) from None
    return _load(CLIPTextModel(config), _weights(checkpoint, kind, prefix), checkpoint, "CLIP text encoder")


def _open_clip_config(args: dict, offline: bool) -> dict:
    arch = str(args.get("arch") or "ViT-H-14")
    if arch in OPEN_CLIP_TEXT:
        return OPEN_CLIP_TEXT[arch]
    if arch.startswith("hf-hub:"):
        from huggingface_hub import hf_hub_download

        repo = arch[len("hf-hub:") :]
        try:
            path = hf_hub_download(repo, "open_clip_config.json", local_files_only=offline)
        except Exception as exc:  # huggingface_hub raises several kinds for "not cached" and "offline"
            raise _missing_repo(repo, "OpenCLIP config", exc) from None
        cfg = json.loads(Path(path).read_text(encoding="utf-8"))["model_cfg"]
        return {**cfg["text_cfg"], "embed_dim": cfg["embed_dim"]}
    raise CheckpointError(f"OpenCLIP arch {arch!r} in the yaml is not one this loader knows ({', '.join(OPEN_CLIP_TEXT)}"
                          " or hf-hub:REPO)")  # fmt: skip


def _open_clip_encoder(checkpoint: Path, kind: CheckpointKind, prefix: str, args: dict, offline: bool, *,
                       projection: bool, drop_last: bool):  # fmt: skip
    """An HF CLIP text model from an OpenCLIP text tower (diffusers' own conversion of the weights)."""
    from diffusers.loaders.single_file_utils import create_text_encoder_from_open_clip_checkpoint
    from transformers import CLIPTextConfig

    text = _open_clip_config(args, offline)
    layers = int(text["layers"]) - (1 if drop_last else 0)
    config = CLIPTextConfig(
        vocab_size=int(text.get("vocab_size", 49408)), hidden_size=int(text["width"]),
        intermediate_size=int(text["width"] * text.get("mlp_ratio", 4)), num_hidden_layers=layers,
        num_attention_heads=int(text["heads"]), max_position_embeddings=int(text.get("context_length", 77)),
        hidden_act="gelu", projection_dim=int(text["embed_dim"]), layer_norm_eps=1e-5,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=1,
    )  # fmt: skip
    skip = f"{prefix}transformer.resblocks.{int(text['layers']) - 1}." if drop_last else None
    state = {k: v for k, v in _weights(checkpoint, kind, prefix, strip=False).items()
             if not (skip and k.startswith(skip))}  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:  # diffusers reads the config by name; ours has none on the hub
        config.save_pretrained(folder)
        model = create_text_encoder_from_open_clip_checkpoint(folder, state, prefix=prefix, has_projection=projection,
                                                              local_files_only=True)  # fmt: skip
    for name, tensor in list(model.state_dict().items()):
        if tensor.is_meta:
            raise CheckpointError(f"{checkpoint}: its OpenCLIP text encoder lacks {name}; is the .yaml the right one?")
    return model.eval()
