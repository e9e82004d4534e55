"""The ``ss_*`` and ``modelspec.*`` metadata that kohya's sd-scripts writes into a LoRA, built from our settings.

Every value is a string (safetensors metadata is ``str -> str``); dicts are JSON, booleans ``"True"``/``"False"``,
as sd-scripts writes them. What loaders use:

- the WebUI's LoRA card shows the training tags from ``ss_tag_frequency`` (``{folder: {tag: count}}``), the
  dataset from ``ss_dataset_dirs`` (``{folder: {"n_repeats": n, "img_count": n}}``) and the alias from
  ``ss_output_name``; it decides the base model from ``ss_base_model_version`` (``sdxl_*`` -> SDXL) and
  ``ss_v2 == "True"`` (SD2), else SD1, and can hide LoRAs that do not match the loaded model;
- ``modelspec.architecture`` (``stable-diffusion-v1/lora``, ``stable-diffusion-v2-512/lora``,
  ``stable-diffusion-v2-768-v/lora``, ``stable-diffusion-xl-v1-base/lora``; sd-scripts uses the ``/lora`` adapter
  suffix for LyCORIS networks too) and ``modelspec.implementation`` (``diffusers`` for SD1/SD2 LoRAs, whose keys
  use diffusers names; Stability's generative-models for SDXL, whose keys use the sgm names).
"""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Mapping
from typing import Any

from lib_lora_train.settings import TrainSettings
from lib_lora_train.train.schedulers import warmup_steps

SAI_MODEL_SPEC_VERSION = "1.0.0"
IMPL_DIFFUSERS = "diffusers"
IMPL_STABILITY_AI = "https://github.com/Stability-AI/generative-models"
BASE_MODEL_VERSIONS = {"sd1": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0"}
NETWORK_MODULES = {"lora": "networks.lora", "locon": "networks.lora", "loha": "lycoris.kohya", "lokr": "lycoris.kohya"}


def architecture(arch: str, prediction: str = "eps") -> str:
    """``modelspec.architecture`` of a LoRA for this base model (SD2 splits on eps / v prediction)."""
    if arch == "sdxl":
        return "stable-diffusion-xl-v1-base/lora"
    if arch == "sd2":
        return "stable-diffusion-v2-768-v/lora" if prediction == "v" else "stable-diffusion-v2-512/lora"
    if arch == "sd1":
        return "stable-diffusion-v1/lora"
    raise ValueError(f"unknown architecture {arch!r}; use sd1, sd2 or sdxl")


def network_args(settings: TrainSettings) -> dict[str, str]:
    """``ss_network_args`` as sd-scripts records its ``--network_args`` (values are the strings it was given)."""
    args: dict[str, str] = {}
    if settings.network != "lora":
        args = {"conv_dim": str(settings.conv_rank), "conv_alpha": _number(settings.conv_alpha)}
    if settings.network in ("loha", "lokr"):
        args = {"algo": settings.network, **args}
    if settings.dora_wd:
        args["dora_wd"] = "True"
    for name in ("rank_dropout", "module_dropout"):
        if getattr(settings, name):
            args[name] = _number(getattr(settings, name))
    for name in BLOCK_ARGS:
        text = getattr(settings, name).strip()
        if text:
            args[name] = text.replace(" ", "")
    return args


# block-wise settings recorded under their kohya network_args names
BLOCK_ARGS = ("down_lr_weight", "mid_lr_weight", "up_lr_weight", "block_dims", "block_alphas", "conv_block_dims",
              "conv_block_alphas")  # fmt: skip


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _text(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def build_metadata(
    *,
    settings: TrainSettings,
    arch: str,
    output_name: str,
    epoch: int,
    num_epochs: int,
    steps: int,
    tag_frequency: Mapping[str, Mapping[str, int]],
    dataset_dirs: Mapping[str, Mapping[str, int]],
    num_train_images: int,
    model_name: str = "",
    model_hash: str = "",
    clip_skip: int | None = None,
    training_started_at: float | None = None,
    prediction: str = "eps",
    max_train_steps: int | None = None,
    num_batches_per_epoch: int | None = None,
    session_id: int | None = None,
    training_finished_at: float | None = None,
    new_model_hash: str = "",
    bucket_info: Mapping[str, Any] | None = None,
    te_trained: bool | None = None,
    mixed_precision: str | None = None,
    num_reg_images: int = 0,
    reg_dataset_dirs: Mapping[str, Mapping[str, int]] | None = None,
    world_size: int = 1,
) -> dict[str, str]:
    """All metadata for one saved epoch: the ``ss_*`` keys sd-scripts writes plus the ``modelspec.*`` keys.

    ``tag_frequency`` / ``dataset_dirs`` are ``DatasetScan.tag_frequency`` / ``.dataset_dirs``; ``num_train_images``
    counts repeats (kohya's meaning). ``clip_skip`` is the value the model was trained with (1 = last layer);
    ``prediction`` is ``eps`` or ``v``. Times are unix timestamps (default: now). ``mixed_precision`` is what ran
    (the CPU trains in fp32 whatever was asked); the setting otherwise. ``num_reg_images`` counts the
    regularisation image files (without repeats, as kohya counts them), ``reg_dataset_dirs`` is their folders.
    ``world_size``: the processes of a data-parallel run, each training ``batch_size`` images of every batch.
    """
    if arch not in BASE_MODEL_VERSIONS:
        raise ValueError(f"unknown architecture {arch!r}; use sd1, sd2 or sdxl")
    if prediction not in ("eps", "v"):
        raise ValueError(f"unknown prediction {prediction!r}; use eps or v")
    now = time.time()
    started = now if training_started_at is None else training_started_at
    finished = now if training_finished_at is None else training_finished_at
    trains_te = settings.te_lr > 0 if te_trained is None else te_trained
    resolution = settings.resolution
    total_batch = settings.batch_size * world_size * settings.grad_accum
    values: dict[str, Any] = {
        "ss_training_started_at": started,
        "ss_training_finished_at": finished,
        "ss_output_name": output_name,
        "ss_learning_rate": settings.unet_lr,
        "ss_unet_lr": settings.unet_lr,
        "ss_text_encoder_lr": settings.te_lr if trains_te else 0.0,
        "ss_num_train_images": num_train_images,
        "ss_num_reg_images": num_reg_images,
        "ss_num_epochs": num_epochs,
        "ss_epoch": epoch,
        "ss_steps": steps,
        "ss_max_train_steps": max_train_steps if max_train_steps is not None else steps,
        "ss_gradient_checkpointing": bool(settings.gradient_checkpointing),
        "ss_gradient_accumulation_steps": settings.grad_accum,
        "ss_lr_scheduler": settings.lr_scheduler,
        # kohya writes the warmup in optimiser steps (an integer), whatever form the setting took
        "ss_lr_warmup_steps": warmup_steps(
            settings.lr_warmup, max_train_steps if max_train_steps is not None else steps
        ),
        "ss_network_module": NETWORK_MODULES[settings.network],
        "ss_network_dim": settings.rank,
        "ss_network_alpha": float(settings.alpha),
        "ss_network_args": network_args(settings),
        "ss_mixed_precision": mixed_precision or settings.mixed_precision,
        "ss_full_fp16": False,
        "ss_v2": arch == "sd2",
        "ss_base_model_version": BASE_MODEL_VERSIONS[arch],
        "ss_clip_skip": clip_skip if clip_skip is not None else "None",
        "ss_cache_latents": settings.cache_latents != "none",
        "ss_seed": settings.seed,
        "ss_noise_offset": settings.noise_offset,
        "ss_min_snr_gamma": settings.min_snr_gamma,
        "ss_network_dropout": settings.network_dropout if settings.network_dropout else "None",
        "ss_multires_noise_iterations": settings.multires_noise_iterations or "None",
        "ss_multires_noise_discount": settings.multires_noise_discount,
        "ss_ip_noise_gamma": settings.ip_noise_gamma if settings.ip_noise_gamma else "None",
        "ss_debiased_estimation": bool(settings.debiased_estimation_loss),
        "ss_zero_terminal_snr": bool(settings.zero_terminal_snr),
        "ss_loss_type": settings.loss_type,
        "ss_huber_schedule": settings.huber_schedule,
        "ss_huber_c": settings.huber_c,
        "ss_min_timestep": settings.min_timestep,
        "ss_max_timestep": settings.max_timestep,
        "ss_masked_loss": bool(settings.masked_loss),
        "ss_prior_loss_weight": settings.prior_loss_weight,
        "ss_max_grad_norm": settings.max_grad_norm,
        "ss_optimizer": settings.optimizer,
        "ss_caption_dropout_rate": settings.caption_dropout,
        "ss_caption_tag_dropout_rate": settings.tag_dropout,
        "ss_training_comment": settings.comment or "None",
        "ss_batch_size_per_device": settings.batch_size,
        "ss_total_batch_size": total_batch,
        "ss_resolution": f"({resolution}, {resolution})",
        "ss_flip_aug": bool(settings.flip),
        "ss_shuffle_caption": bool(settings.shuffle_tags),
        "ss_keep_tokens": settings.keep_tokens,
        "ss_enable_bucket": bool(settings.enable_buckets),
        "ss_bucket_no_upscale": bool(settings.bucket_no_upscale),
        "ss_min_bucket_reso": settings.min_bucket_side,
        "ss_max_bucket_reso": settings.max_bucket_side,
        "ss_tag_frequency": {folder: dict(tags) for folder, tags in tag_frequency.items()},
        "ss_dataset_dirs": {folder: dict(info) for folder, info in dataset_dirs.items()},
        "ss_reg_dataset_dirs": {folder: dict(info) for folder, info in (reg_dataset_dirs or {}).items()},
        "ss_sd_model_name": model_name,
    }
    if arch != "sdxl":
        values["ss_v_parameterization"] = prediction == "v"
    optional = {
        "ss_sd_model_hash": model_hash,
        "ss_new_sd_model_hash": new_model_hash,
        "ss_session_id": session_id,
        "ss_num_batches_per_epoch": num_batches_per_epoch,
        "ss_bucket_info": dict(bucket_info) if bucket_info is not None else None,
    }
    values |= {key: value for key, value in optional.items() if value not in (None, "")}
    metadata = {key: _text(value) for key, value in values.items()}
    metadata |= modelspec(
        arch=arch,
        prediction=prediction,
        title=output_name,
        resolution=resolution,
        timestamp=finished,
        clip_skip=clip_skip,
        description=settings.comment,
    )
    return metadata


def modelspec(
    *,
    arch: str,
    prediction: str,
    title: str,
    resolution: int,
    timestamp: float,
    clip_skip: int | None = None,
    description: str = "",
) -> dict[str, str]:
    """The ``modelspec.*`` keys (Stability AI's ModelSpec, as sd-scripts fills them for a LoRA)."""
    spec = {
        "modelspec.sai_model_spec": SAI_MODEL_SPEC_VERSION,
        "modelspec.architecture": architecture(arch, prediction),
        "modelspec.implementation": IMPL_STABILITY_AI if arch == "sdxl" else IMPL_DIFFUSERS,
        "modelspec.title": title,
        "modelspec.resolution": f"{resolution}x{resolution}",
        "modelspec.date": datetime.datetime.fromtimestamp(int(timestamp)).isoformat(),
        "modelspec.prediction_type": "v" if prediction == "v" else "epsilon",
    }
    if clip_skip is not None:
        spec["modelspec.encoder_layer"] = str(clip_skip)
    if description:
        spec["modelspec.description"] = description
    return spec
