"""Every ``TrainSettings`` field as a command-line option (``rank`` -> ``--rank``, ``te_lr`` -> ``--te-lr``), generated
from the dataclass so that no setting is unreachable, with its help text; and the settings an invocation means
(a saved config, then ``--settings``, then what was typed). Used by ``train`` and ``bootstrap``."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any, get_type_hints

from lib_lora_train import settings as S
from lib_lora_train.settings import SettingsError, TrainSettings

CHOICES = S.CHOICES

HELP = {
    "network": "adapter type: lora (linear layers), locon (+3x3 convs), loha, lokr",
    "rank": "network rank (dim)",
    "alpha": "network alpha; the update is scaled by alpha/rank",
    "conv_rank": "rank of the 3x3 convolutions (locon/loha/lokr)",
    "conv_alpha": "alpha of the 3x3 convolutions",
    "resolution": "training resolution in px (a multiple of 64)",
    "epochs": "number of epochs",
    "max_steps": "stop after this many optimiser steps (overrides --epochs when > 0)",
    "save_every": "save a checkpoint every N epochs (0 = only the final file)",
    "unet_lr": "UNet learning rate (0 = do not train the UNet)",
    "te_lr": "text-encoder learning rate (0 = do not train the text encoder)",
    "lr_warmup": "warmup: a fraction of all steps (< 1) or a number of steps",
    "lr_cycles": "restarts of cosine_with_restarts",
    "grad_accum": "gradient accumulation steps",
    "mixed_precision": "autocast precision (fp16 falls back to fp32 on the CPU)",
    "cache_latents": "encode the images once and keep the latents in memory or on disk",
    "min_snr_gamma": "min-SNR-gamma loss weighting (0 = off, 5 is usual)",
    "clip_skip": "clip skip to train with (0 = the model's own, 1 = last layer, 2 = penultimate)",
    "save_state": "also save optimiser state so the run can be resumed with --resume",
    "sample_every": "render the sample prompts every N epochs (0 = never)",
    "sample_prompts": "prompts for the samples ('prompt --n negative' for a negative prompt)",
    "seed": "seed: the same seed and settings give the same weights",
    "caption_extension": "extension of the caption files beside the images",
    "default_repeats": "repeats of folders without an N_ prefix",
    "enable_buckets": "train each image in the aspect-ratio bucket closest to its shape (no cropping to a square)",
    "min_bucket_side": "shortest bucket side in px",
    "max_bucket_side": "longest bucket side in px",
    "bucket_step": "bucket sides are multiples of this many px",
    "bucket_no_upscale": "never enlarge a small image to fill its bucket",
    "shuffle_tags": "shuffle the caption's tags each step (the first --keep-tokens stay first)",
    "keep_tokens": "tags at the start of the caption that are never shuffled or dropped (1 keeps the activation tag)",
    "caption_dropout": "probability of training a step with an empty caption",
    "tag_dropout": "probability of leaving out each tag (after the kept ones)",
    "flip": "mirror images at random (not for asymmetric characters)",
    "batch_size": "images per step",
    "optimizer": "optimiser (adamw8bit needs bitsandbytes, lion lion-pytorch, prodigy prodigyopt)",
    "weight_decay": "optimiser weight decay",
    "max_grad_norm": "clip gradients to this norm (0 = no clipping)",
    "lr_scheduler": "learning-rate schedule",
    "lr_power": "power of the polynomial schedule",
    "gradient_checkpointing": "recompute activations in the backward pass: less memory, slower",
    "noise_offset": "noise offset (0.05-0.1 helps very dark or bright images)",
    "save_precision": "dtype of the saved LoRA files",
    "sample_steps": "sampling steps of each sample image",
    "output_name": "file name stem of the LoRA files and ss_output_name (default <project>-<version>)",
    "comment": "free text stored in the files' metadata (ss_training_comment)",
    "dora_wd": "DoRA: weight-decomposed LoRA (lora/locon), written with dora_scale keys",
    "network_dropout": "dropout on each adapter's down projection output (0.1 is usual)",
    "rank_dropout": "probability of dropping each rank of an update, per sample",
    "module_dropout": "probability of skipping a module's update for a step",
    "down_lr_weight": "learning-rate weights of the down blocks: sine, cosine, linear, reverse_linear, zeros "
    "(+offset) or 12 numbers (9 for SDXL); 0 leaves a block untrained",
    "mid_lr_weight": "learning-rate weight of the mid block (SDXL: 3 numbers, one per middle block)",
    "up_lr_weight": "learning-rate weights of the up blocks (like --down-lr-weight)",
    "block_dims": "rank per block: down blocks, mid, up blocks (25 numbers for SD1/SD2, 23 for SDXL; 0 = no adapter)",
    "block_alphas": "alpha per block (as many as --block-dims)",
    "conv_block_dims": "rank of the 3x3 convolutions per block (locon/loha/lokr)",
    "conv_block_alphas": "alpha of the 3x3 convolutions per block",
    "network_weights": "a LoRA file to start from (ours, kohya's or LyCORIS's, of the same network type)",
    "dim_from_weights": "take rank and alpha from --network-weights",
    "reg_data_dir": "regularisation (class) images: N_class folders, captions optional",
    "prior_loss_weight": "loss weight of the regularisation images",
    "masked_loss": "train only where the mask is white: each image's alpha channel, or --mask-dir",
    "mask_dir": "folder of mask images with the same file names as the dataset's images",
    "multires_noise_iterations": "multires (pyramid) noise iterations (0 = off, 6-10 is usual)",
    "multires_noise_discount": "multires noise discount per level",
    "ip_noise_gamma": "input-perturbation noise strength (0 = off, 0.1 is usual)",
    "debiased_estimation_loss": "debiased estimation loss weighting",
    "zero_terminal_snr": "rescale the noise schedule to zero terminal SNR (for v-prediction models)",
    "v_parameterization": "the model predicts v (SDXL v-pred models whose file does not say so)",
    "loss_type": "loss: l2 (MSE), l1, huber or smooth_l1",
    "huber_schedule": "how huber_c changes with the timestep (huber / smooth_l1)",
    "huber_c": "the Huber loss's c",
    "min_timestep": "smallest timestep trained (0-999)",
    "max_timestep": "timesteps are drawn below this (1-1000)",
}


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per TrainSettings field, default None so that only what the user typed overrides --settings."""
    hints = get_type_hints(TrainSettings)
    group = parser.add_argument_group("training settings (see README; defaults in brackets)")
    for f in dataclasses.fields(TrainSettings):
        hint = hints[f.name].__name__ if isinstance(hints[f.name], type) else str(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        shown = (", ".join(map(str, default)) if isinstance(default, list) else default) if default != "" else ""
        shown = shown if shown not in ("", []) else "none"
        text = f"{HELP[f.name]} [{shown}]"
        kwargs: dict[str, Any] = {"dest": f.name, "default": None, "help": text}
        if hint == "bool" or hints[f.name] is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif hint.startswith("list"):
            kwargs["nargs"] = "+"
            kwargs["metavar"] = "TEXT"
        else:
            kwargs["type"] = {"int": int, "float": float}.get(hint, str)
            if f.name in CHOICES:
                kwargs["choices"] = CHOICES[f.name]
            else:
                kwargs["metavar"] = {"int": "N", "float": "X"}.get(hint, "TEXT")
        group.add_argument(_option(f.name), **kwargs)


def settings_from_args(args: argparse.Namespace, base: dict[str, Any] | None = None) -> TrainSettings:
    """``base`` (a resumed version's config), then the --settings file, then every option the user gave.

    Raises SettingsError on bad values.
    """
    data: dict[str, Any] = dict(base or {})
    if getattr(args, "settings", None) is not None:
        try:
            data.update(json.loads(Path(args.settings).read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:
            raise SettingsError("settings", f"{args.settings}: cannot read it as JSON ({exc})") from None
    for f in dataclasses.fields(TrainSettings):
        value = getattr(args, f.name, None)
        if value is not None:
            data[f.name] = value
    return TrainSettings.from_dict(data)
