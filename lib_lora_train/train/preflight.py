"""Checks that refuse a run that cannot work before anything changes: no version folder, no model loaded or
touched. ``check_environment`` needs only the settings (and the dataset folder); ``check_model`` needs the model's
parts but runs before a single module is changed. Each raises ``SettingsError`` naming the setting and the fix.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from lib_lora_train.settings import SettingsError
from lib_lora_train.train.optimizers import OPTIONAL


def check_environment(settings, dataset_dir: str | Path | None = None) -> None:
    """Packages, folders and files the settings name."""
    if settings.optimizer in OPTIONAL:
        module, package = OPTIONAL[settings.optimizer]
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a broken install, or a module set to None in sys.modules
            found = False
        if not found:
            raise SettingsError(
                "optimizer", f"{settings.optimizer} needs the package {package!r}: pip install {package}, or choose adamw"
            )
    if settings.reg_data_dir.strip():
        from lib_lora_train.dataset.reg_images import scan_reg_images

        try:
            scan_reg_images(settings.reg_data_dir, caption_extension=settings.caption_extension,
                            default_repeats=settings.default_repeats)  # fmt: skip
        except (FileNotFoundError, ValueError) as exc:
            raise SettingsError("reg_data_dir", str(exc).removeprefix("reg_data_dir ")) from None
    if settings.masked_loss and settings.mask_dir.strip() and dataset_dir is not None:
        from lib_lora_train.dataset.masks import MaskError, check_masks
        from lib_lora_train.images import iter_image_files

        try:
            check_masks(list(iter_image_files(Path(dataset_dir))), settings.mask_dir)
        except MaskError as exc:
            raise SettingsError("mask_dir", str(exc).removeprefix("mask_dir ")) from None
    if settings.network_weights.strip():
        from lib_lora_train.train.start_weights import check_start_file

        check_start_file(settings)  # there, a LoRA of the run's network type and shape


def check_model(settings, parts) -> None:
    """What depends on the model: a rank above the smaller side of a layer it would adapt."""
    import torch

    from lib_lora_train.lora_format.keys import unet_target_modules
    from lib_lora_train.train.blocks import check_block_settings, is_block_wise, unet_block_plan

    if is_block_wise(settings):
        check_block_settings(settings, parts.arch)
    if settings.network_weights.strip():
        from lib_lora_train.train.start_weights import check_start_fits

        check_start_fits(settings, parts)  # its modules are modules of this model that the run adapts
    if settings.network in ("lora", "locon", "loha") and settings.unet_lr > 0:
        network = "lora" if settings.network == "lora" else "locon"
        modules = dict(parts.unet.module.named_modules())
        paths = unet_target_modules(parts.unet, network)
        plan = unet_block_plan(parts, paths, settings)
        for path in paths:
            layer = getattr(modules[path], "base_layer", modules[path])
            if isinstance(layer, torch.nn.Linear):
                side, rank, name = min(layer.in_features, layer.out_features), settings.rank, "rank"
            elif isinstance(layer, torch.nn.Conv2d):
                spatial = tuple(layer.kernel_size) != (1, 1)
                side = min(layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1], layer.out_channels)
                rank, name = (settings.conv_rank, "conv_rank") if spatial else (settings.rank, "rank")
            else:
                continue
            if plan is not None:  # block-wise: the block's own rank, named by the list that set it
                if path not in plan.ranks:
                    continue
                rank = plan.ranks[path][0]
                listed = "conv_block_dims" if name == "conv_rank" else "block_dims"
                name = listed if getattr(settings, listed).strip() else name
            if rank > side:
                fix = f"give that block {side} or less" if name.endswith("block_dims") else f"use {name} {side} or less"
                raise SettingsError(
                    name, f"{rank} is larger than the layer {parts.unet.prefix}.{path} ({side} wide) of this "
                    f"{parts.arch.upper()} model; {fix}",
                )  # fmt: skip
