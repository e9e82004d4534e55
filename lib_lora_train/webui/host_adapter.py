"""The WebUI as a ``TrainingHost``: train on the checkpoint and VAE the WebUI has loaded, then leave it as it was.

Nothing is loaded or copied: the engine gets ``shared.sd_model``'s own UNet and text encoder, encodes images with
the VAE in use (and the WebUI's latent scale), encodes captions through the WebUI's own text-encoder wrapper (so the
user's clip skip and prompt handling apply), and calls the UNet through ``sd_model.apply_model``. Work runs under the
WebUI's GPU queue lock, progress goes to ``shared.state`` (textinfo, the progress bar, the Interrupt button), and
``training_session`` restores module tree, flags, devices, dtypes and patches on every exit path.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.utils.checkpoint

from lib_lora_train.host import Conditioning, ImageGeometry, ModelParts
from lib_lora_train.hosts.model_state import ModuleSnapshot
from lib_lora_train.webui import model_parts as parts_lib
from lib_lora_train.webui.lora_unmerge import unmerge_builtin_loras
from lib_lora_train.webui.shared.host_base import QueuedHost, checkpoint_each

log = logging.getLogger(__name__)

LOW_VRAM_MESSAGE = (
    "Train Tools cannot train while the WebUI runs with {flag}: that mode moves parts of the model between CPU and "
    "GPU around every call, which breaks the backward pass. Nothing was changed. Restart the WebUI without {flag} to "
    "train (the trained LoRA works with {flag} afterwards)."
)


def refuse_low_vram(sd_model, cmd_opts) -> None:
    """Raise ``UnsupportedModel`` when --lowvram/--medvram is active for this model; called before anything changes."""
    is_sdxl = bool(getattr(sd_model, "is_sdxl", False))
    for flag, active in (
        ("--lowvram", getattr(cmd_opts, "lowvram", False)),
        ("--medvram", getattr(cmd_opts, "medvram", False)),
        ("--medvram-sdxl", getattr(cmd_opts, "medvram_sdxl", False) and is_sdxl),
    ):
        if active or (flag == "--lowvram" and getattr(sd_model, "lowvram", False)):
            raise parts_lib.UnsupportedModel(LOW_VRAM_MESSAGE.format(flag=flag))


def enable_block_checkpointing(unet: torch.nn.Module) -> Callable[[], None]:
    """Checkpoint every ldm/sgm block that has a ``_forward`` (transformer, ResNet and attention blocks)."""
    blocks = [m for m in unet.modules() if callable(getattr(type(m), "_forward", None))]
    return checkpoint_each(blocks, lambda block: block._forward)


class WebUIHost(QueuedHost):
    """Training host over the WebUI's loaded model. ``webui`` bundles the host modules (see ``WebUIModules``)."""

    @property
    def webui(self):
        return self.modules

    @property
    def sd_model(self):
        model = self.webui.shared.sd_model
        if model is None:
            raise parts_lib.UnsupportedModel("no checkpoint is loaded; pick one in the checkpoint list first")
        return model

    # --- the four model calls ----------------------------------------------------------------------------------

    def model_parts(self) -> ModelParts:
        return parts_lib.model_parts(self.sd_model, clip_skip=self._clip_skip())

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        model = self.sd_model
        first = next(model.first_stage_model.parameters())
        pixels = pixels.to(first.device, first.dtype)
        # A cached latent must not depend on when it was computed (e.g. on the seed of the last txt2img): ldm gives
        # the posterior, whose mean we take; sgm samples inside encode, so it runs on a fixed private seed.
        with torch.no_grad(), torch.random.fork_rng(devices=[first.device] if first.device.type == "cuda" else []):
            torch.manual_seed(0)
            encoded = model.encode_first_stage(pixels)
            if not isinstance(encoded, torch.Tensor):  # a tensor has .mode() too, the statistical one
                encoded = encoded.mode()
            latents = model.get_first_stage_encoding(encoded)  # the WebUI's latent scale (identity for sgm)
        return latents.float()

    def encode_text(self, captions: Sequence[str], geometry: Sequence[ImageGeometry]) -> Conditioning:
        model = self.sd_model
        if not getattr(model, "is_sdxl", False):
            return Conditioning(context=model.cond_stage_model(list(captions)))
        return self._encode_text_sdxl(model, list(captions), list(geometry))

    def _encode_text_sdxl(self, model, captions: list[str], geometry: list[ImageGeometry]) -> Conditioning:
        # The sgm conditioner runs frozen embedders under no_grad; this loop is the same dispatch (by output rank:
        # 2 -> "vector", 3 -> "crossattn") without it, so that text-encoder adapters receive gradients.
        first = next(model.model.diffusion_model.parameters())
        size = dict(device=first.device, dtype=first.dtype)
        if not geometry:
            geometry = [ImageGeometry((1024, 1024), (0, 0), (1024, 1024))] * len(captions)
        batch = {
            "txt": captions,
            "original_size_as_tuple": torch.tensor([g.original_size for g in geometry], **size),
            "crop_coords_top_left": torch.tensor([g.crop_top_left for g in geometry], **size),
            "target_size_as_tuple": torch.tensor([g.target_size for g in geometry], **size),
            "aesthetic_score": torch.full((len(captions), 1), 6.0, **size),
        }
        outputs: dict[str, list[torch.Tensor]] = {"vector": [], "crossattn": []}
        for embedder in model.conditioner.embedders:
            key = getattr(embedder, "input_key", None)
            out = embedder(batch[key]) if key else embedder(*[batch[k] for k in embedder.input_keys])
            for tensor in out if isinstance(out, (list, tuple)) else [out]:
                outputs["vector" if tensor.dim() == 2 else "crossattn"].append(tensor.to(first.dtype))
        return Conditioning(context=torch.cat(outputs["crossattn"], dim=2), vector=torch.cat(outputs["vector"], dim=1))

    def predict(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        model = self.sd_model
        if getattr(model, "is_sdxl", False):
            return model.apply_model(noisy_latents, timesteps, {"crossattn": cond.context, "vector": cond.vector})
        return model.apply_model(noisy_latents, timesteps, cond.context)

    # --- lifecycle ---------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def training_session(self) -> Iterator[None]:
        model = self.sd_model
        refuse_low_vram(model, self.webui.shared.cmd_opts)
        parts_lib.layout(model)  # refuses unsupported models before anything changes
        snapshot = ModuleSnapshot.capture(model)
        opts_data = self.webui.shared.opts.data
        had_clip, old_clip = "CLIP_stop_at_last_layers" in opts_data, opts_data.get("CLIP_stop_at_last_layers")
        try:
            restored = unmerge_builtin_loras(model)
            if restored:
                self._log(f"took the WebUI's applied LoRA out of {restored} layers before training")
            yield
        finally:
            self._drop_checkpointing()
            if had_clip:
                opts_data["CLIP_stop_at_last_layers"] = old_clip
            else:
                opts_data.pop("CLIP_stop_at_last_layers", None)
            for repair in snapshot.restore():
                log.warning("Train Tools restored the model after the engine: %s", repair)
            self.webui.devices.torch_gc()

    def use_clip_skip(self, clip_skip: int):
        # opts.data, not opts.<name>=: a temporary value must not be written to the user's config.json
        opts_data = self.webui.shared.opts.data
        had, old = "CLIP_stop_at_last_layers" in opts_data, opts_data.get("CLIP_stop_at_last_layers")
        opts_data["CLIP_stop_at_last_layers"] = int(clip_skip)

        def undo() -> None:
            if had:
                opts_data["CLIP_stop_at_last_layers"] = old
            else:
                opts_data.pop("CLIP_stop_at_last_layers", None)

        return undo

    def _render_sample(self, request):
        return self.webui.render_txt2img(request)  # the WebUI's own txt2img, with the adapters live in the model

    def _checkpoint_blocks(self) -> Callable[[], None]:
        return enable_block_checkpointing(self.sd_model.model.diffusion_model)


def live_webui():
    """The WebUI modules the host uses, imported only inside a running WebUI."""
    from types import SimpleNamespace

    from modules import call_queue, devices, progress, shared

    from lib_lora_train.webui.shared.render import render_txt2img

    return SimpleNamespace(
        shared=shared, devices=devices, call_queue=call_queue, progress=progress, render_txt2img=render_txt2img
    )
