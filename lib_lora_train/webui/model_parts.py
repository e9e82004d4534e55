"""Find the parts of the WebUI's loaded model that training needs, without loading or copying anything.

Works on the object the WebUI holds as ``shared.sd_model`` (v1.10.x): an ldm ``LatentDiffusion`` for SD1/SD2 and an
sgm ``DiffusionEngine`` for SDXL, with the WebUI's text-encoder wrappers from ``modules/sd_hijack*.py`` in place.
Takes the model object as an argument so that tests can pass a stand-in with the same attribute layout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from lib_lora_train.host import AdapterTarget, ModelParts


class UnsupportedModel(RuntimeError):
    """The loaded model (or the way the WebUI runs it) cannot be trained; the message says why and what to do."""


@dataclass
class ModelLayout:
    """Which objects of the loaded model play which role."""

    arch: str
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_root: torch.nn.Module  # cond_stage_model (SD1/SD2) or conditioner (SDXL): everything that encodes text
    targets: list[AdapterTarget]
    skipped: list[str]


def detect_arch(sd_model) -> str:
    """``sd1``, ``sd2`` or ``sdxl`` from the WebUI's flags; refuses the kinds this trainer does not handle."""
    if getattr(sd_model, "forge_objects", None) is not None:
        raise UnsupportedModel("this looks like WebUI Forge, whose model objects differ; train with the A1111 WebUI")
    for flag in ("is_sdxl_inpaint", "is_sd3"):
        if getattr(sd_model, flag, False):
            raise UnsupportedModel(
                f"the loaded model is {flag[3:]}, which Train Tools cannot train; load SD1, SD2 or SDXL"
            )
    if getattr(sd_model, "is_sdxl", False):
        return "sdxl"
    if getattr(sd_model, "is_sd2", False):
        return "sd2"
    if getattr(sd_model, "is_sd1", False) or hasattr(sd_model, "cond_stage_model"):
        return "sd1"
    raise UnsupportedModel("could not tell whether the loaded model is SD1, SD2 or SDXL")


def _unwrap(embedder):
    """The WebUI wraps each text encoder in a ``...WithCustomWords`` object whose ``.wrapped`` is the original."""
    return getattr(embedder, "wrapped", embedder)


def layout(sd_model) -> ModelLayout:
    """Locate UNet, VAE and text encoders. OpenCLIP text encoders (SD2, SDXL's second) get no adapters: their
    attention is one fused ``nn.MultiheadAttention`` that the adapter library cannot split into q/k/v."""
    arch = detect_arch(sd_model)
    unet = sd_model.model.diffusion_model
    targets = [AdapterTarget("lora_unet", unet, "sgm" if arch == "sdxl" else "ldm")]
    skipped = []
    if arch == "sd1":
        text_root = sd_model.cond_stage_model
        targets.append(AdapterTarget("lora_te", _unwrap(text_root).transformer, "hf_clip", is_text_encoder=True))
    elif arch == "sd2":
        text_root = sd_model.cond_stage_model
        skipped.append("the SD2 OpenCLIP text encoder is not trained (UNet only)")
    else:
        text_root = sd_model.conditioner
        text_embedders = [e for e in text_root.embedders if getattr(e, "input_key", None) == "txt"]
        if text_embedders:
            targets.append(
                AdapterTarget("lora_te1", _unwrap(text_embedders[0]).transformer, "hf_clip", is_text_encoder=True)
            )
        if len(text_embedders) > 1:
            skipped.append("SDXL's second (OpenCLIP) text encoder is not trained; the first one is")
    return ModelLayout(arch, unet, sd_model.first_stage_model, text_root, targets, skipped)


def checkpoint_name_and_hash(sd_model) -> tuple[str, str]:
    """File name and short hash of the loaded checkpoint, for the LoRA's ``ss_sd_model_name`` / ``_hash``."""
    info = getattr(sd_model, "sd_checkpoint_info", None)
    filename = getattr(info, "filename", "") or ""
    name = os.path.basename(filename) if filename else getattr(info, "model_name", "") or ""
    return name, getattr(sd_model, "sd_model_hash", "") or getattr(info, "shorthash", "") or ""


def model_parts(sd_model, *, clip_skip: int) -> ModelParts:
    """The ``ModelParts`` the engine trains on: the WebUI's own modules and noise schedule."""
    found = layout(sd_model)
    first = next(found.unet.parameters())
    alphas = getattr(sd_model, "alphas_cumprod_original", None)
    if alphas is None:
        alphas = sd_model.alphas_cumprod
    name, model_hash = checkpoint_name_and_hash(sd_model)
    return ModelParts(
        arch=found.arch,
        prediction="v" if getattr(sd_model, "parameterization", "eps") == "v" else "eps",
        unet=found.targets[0],
        text_encoders=found.targets[1:],
        alphas_cumprod=alphas.detach().float().cpu(),
        device=first.device,
        weight_dtype=first.dtype,
        model_name=name,
        model_hash=model_hash,
        clip_skip=clip_skip,
        extra={"skipped_text_encoders": found.skipped},
    )


def parts_to_fingerprint(sd_model) -> dict[str, torch.nn.Module]:
    """The parts whose state must be identical before and after training: UNet, text encoder(s), VAE."""
    found = layout(sd_model)
    return {"unet": found.unet, "text_encoders": found.text_root, "vae": found.vae}
