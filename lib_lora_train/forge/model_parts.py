"""The parts of Forge's loaded model that training needs, without loading or copying anything.

``shared.sd_model`` in Forge is a ``backend.diffusion_engine`` object (``sd15.StableDiffusion``,
``sdxl.StableDiffusionXL``) whose ``forge_objects`` hold patchers: ``unet.model`` is a ``KModel`` with the UNet
(LDM/SGM module names) at ``.diffusion_model`` and the noise schedule in ``.predictor``; ``clip.cond_stage_model``
holds ``clip_l`` (and ``clip_g`` for SDXL), each an ``IntegratedCLIP`` around a Hugging Face ``CLIPTextModel``;
``vae.first_stage_model`` is the VAE. Takes the engine object as an argument so tests can pass a stand-in.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from lib_lora_train.host import AdapterTarget, ModelParts


class UnsupportedModel(RuntimeError):
    """The loaded model (or the way Forge runs it) cannot be trained; the message says why and what to do."""


@dataclass
class ForgeLayout:
    arch: str
    kmodel: torch.nn.Module  # KModel: the UNet at .diffusion_model, its lora_loader, its predictor
    unet: torch.nn.Module
    text_root: torch.nn.Module  # JointTextEncoder (clip.cond_stage_model), with its own lora_loader
    vae: torch.nn.Module
    targets: list[AdapterTarget]


def detect_arch(sd_model) -> str:
    if getattr(sd_model, "forge_objects", None) is None:
        raise UnsupportedModel("no checkpoint is loaded in Forge yet; pick one in the checkpoint list first")
    if getattr(sd_model, "is_inpaint", False):
        raise UnsupportedModel("the loaded model is an inpainting model, which Train Tools cannot train")
    if getattr(sd_model, "is_sdxl", False):
        return "sdxl"
    if getattr(sd_model, "is_sd1", False):
        return "sd1"
    kind = type(sd_model).__name__
    raise UnsupportedModel(f"the loaded model is {kind}; in Forge, Train Tools trains SD1 and SDXL checkpoints")


def layout(sd_model) -> ForgeLayout:
    arch = detect_arch(sd_model)
    objects = sd_model.forge_objects
    kmodel = objects.unet.model
    text_root = objects.clip.cond_stage_model
    unet_target = AdapterTarget("lora_unet", kmodel.diffusion_model, "sgm" if arch == "sdxl" else "ldm")
    # Forge converts every text encoder to Hugging Face CLIP (also SDXL's OpenCLIP one), so both are "hf_clip"
    if arch == "sd1":
        tes = [AdapterTarget("lora_te", text_root.clip_l.transformer, "hf_clip", is_text_encoder=True)]
    else:
        tes = [
            AdapterTarget("lora_te1", text_root.clip_l.transformer, "hf_clip", is_text_encoder=True),
            AdapterTarget("lora_te2", text_root.clip_g.transformer, "hf_clip", is_text_encoder=True),
        ]
    return ForgeLayout(arch, kmodel, kmodel.diffusion_model, text_root, objects.vae.first_stage_model,
                       [unet_target, *tes])  # fmt: skip


def prediction_of(kmodel) -> str:
    kind = getattr(kmodel.predictor, "prediction_type", "epsilon")
    if kind not in ("epsilon", "eps", "v_prediction"):
        raise UnsupportedModel(f"the loaded model predicts {kind!r}; Train Tools trains eps and v models")
    return "v" if kind == "v_prediction" else "eps"


def checkpoint_name_and_hash(sd_model) -> tuple[str, str]:
    info = getattr(sd_model, "sd_checkpoint_info", None)
    filename = getattr(info, "filename", "") or ""
    name = os.path.basename(filename) if filename else getattr(info, "model_name", "") or ""
    return name, getattr(sd_model, "sd_model_hash", "") or getattr(info, "shorthash", "") or ""


def model_parts(sd_model, *, clip_skip: int, device: torch.device) -> ModelParts:
    found = layout(sd_model)
    first = next(found.unet.parameters())
    name, model_hash = checkpoint_name_and_hash(sd_model)
    return ModelParts(
        arch=found.arch,
        prediction=prediction_of(found.kmodel),
        unet=found.targets[0],
        text_encoders=found.targets[1:],
        alphas_cumprod=found.kmodel.predictor.alphas_cumprod.detach().float().cpu().clone(),
        device=device,
        weight_dtype=first.dtype,
        model_name=name,
        model_hash=model_hash,
        clip_skip=clip_skip,
    )


def parts_to_fingerprint(sd_model) -> dict[str, torch.nn.Module]:
    found = layout(sd_model)
    return {"unet": found.unet, "text_encoders": found.text_root, "vae": found.vae}


def settle_text_engines(sd_model) -> None:
    """Let Forge's text engines make their one-time change now: they cast the CLIP embeddings to fp32 at their first
    encode and keep them so. Forge's own call does it, as the first generation after a load would."""
    with torch.inference_mode():
        sd_model.get_learned_conditioning([""])
