"""Forge as a ``TrainingHost``: train on the checkpoint Forge has loaded, then leave it, its LoRA patches and its
memory manager as they were.

Nothing is loaded twice or copied. A run loads the UNet, text-encoder and VAE patchers through Forge's memory
manager (the device and dtypes Forge chose), takes any merged LoRA out (``lora_patches``), makes the
inference-mode weights usable by autograd over the same storage (``inference_weights``) and stands real
``nn.Linear`` modules in for Forge's own Linear layers (``linear_standins``) so that the engine's peft adapters and
kohya key names apply as on the A1111 WebUI. Captions go through Forge's own text-processing engines (its prompt
parsing, chunking and clip skip) without the ``inference_mode`` of ``get_learned_conditioning``; the UNet is called
raw with DDPM latents and integer timesteps, as ``KModel.apply_model`` calls it after its sigma conversion. Work runs
under the queue lock, progress goes to ``shared.state``, and every step is undone on every exit path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.utils.checkpoint

from lib_lora_train.forge import lora_patches
from lib_lora_train.forge import model_parts as parts_lib
from lib_lora_train.forge.inference_weights import thaw
from lib_lora_train.forge.linear_standins import SwapError, swap_linears
from lib_lora_train.forge.memory import load_for_run
from lib_lora_train.forge.transformer_blocks import use_out_of_place_adds
from lib_lora_train.host import Conditioning, ImageGeometry, ModelParts
from lib_lora_train.hosts.model_state import ModuleSnapshot
from lib_lora_train.train import preview_sampler
from lib_lora_train.webui.shared.host_base import QueuedHost, checkpoint_each

log = logging.getLogger(__name__)

_TEXT_ENGINES = ("text_processing_engine", "text_processing_engine_l", "text_processing_engine_g")


def checkpoint_blocks(unet: torch.nn.Module) -> Callable[[], None]:
    """Checkpoint each input/middle/output block of Forge's UNet."""
    blocks = [*unet.input_blocks, unet.middle_block, *unet.output_blocks]
    return checkpoint_each(blocks, lambda block: type(block).forward.__get__(block))


class ForgeHost(QueuedHost):
    """Training host over Forge's loaded model; ``forge`` bundles the host modules (see ``live_forge``)."""

    @property
    def forge(self):
        return self.modules

    @property
    def sd_model(self):
        pinned = getattr(self, "_session_model", None)
        if pinned is not None:  # within a run: the model it started on, whatever the settings say meanwhile
            return pinned
        # Forge loads the chosen checkpoint lazily, at the next generation (until the first one it holds a
        # FakeInitialModel, and after a checkpoint change the previous model): its own loader brings the chosen one
        # now, and returns the loaded model at once when it is already the chosen one
        model, _ = self.forge.sd_models.forge_model_reload()
        return model

    def _engines(self, model) -> list:
        return [getattr(model, name) for name in _TEXT_ENGINES if hasattr(model, name)]

    # --- the four model calls ----------------------------------------------------------------------------------

    def model_parts(self) -> ModelParts:
        model = self.sd_model
        return parts_lib.model_parts(model, clip_skip=self._clip_skip(), device=model.forge_objects.unet.load_device)

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        vae = self.sd_model.forge_objects.vae
        self.forge.memory_management.load_models_gpu([vae.patcher])
        first_stage = vae.first_stage_model
        with torch.no_grad():
            # the posterior's mean: a cached latent must not depend on the random state when it was made
            latents = first_stage.encode(pixels.to(vae.device, vae.vae_dtype), regulation=lambda post: post.mode())
            latents = first_stage.process_in(latents)
        return latents.float().clone()

    def encode_text(self, captions: Sequence[str], geometry: Sequence[ImageGeometry]) -> Conditioning:
        model = self.sd_model
        captions = list(captions)
        if not getattr(model, "is_sdxl", False):
            return Conditioning(context=model.text_processing_engine(captions))
        cond_l = model.text_processing_engine_l(captions)
        cond_g, pooled = model.text_processing_engine_g(captions)
        if not geometry:
            geometry = [ImageGeometry((1024, 1024), (0, 0), (1024, 1024))] * len(captions)
        # Forge's order (sdxl.get_learned_conditioning): height, width, crop top, crop left, target height, width
        sizes = [v for g in geometry for v in (*g.original_size, *g.crop_top_left, *g.target_size)]
        flat = model.embedder(torch.tensor(sizes, dtype=torch.float32)).reshape(len(captions), -1).to(pooled)
        return Conditioning(context=torch.cat([cond_l, cond_g], dim=2), vector=torch.cat([pooled, flat], dim=1))

    def predict(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        kmodel = self.sd_model.forge_objects.unet.model
        dtype = kmodel.computation_dtype
        extra = {"y": cond.vector.to(dtype)} if cond.vector is not None else {}
        # a fresh transformer_options each call: the UNet writes into it, and its default is a shared dict
        return kmodel.diffusion_model(noisy_latents.to(dtype), timesteps, context=cond.context.to(dtype),
                                      transformer_options={}, **extra)  # fmt: skip

    # --- lifecycle ---------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def training_session(self) -> Iterator[None]:
        model = self.sd_model
        self._session_model = model
        found = parts_lib.layout(model)  # refuses unsupported models before anything changes
        parts_lib.prediction_of(found.kmodel)
        objects = model.forge_objects
        engines = self._engines(model)
        clip_skips = [engine.clip_skip for engine in engines]
        undo: list[Callable[[], Any]] = []
        manager = load_for_run(self.forge.memory_management, [objects.unet, objects.clip.patcher, objects.vae.patcher],
                               ["UNet", "text encoder", "VAE"])  # fmt: skip
        undo.append(lambda: [log.warning("Train Tools: %s", m) for m in manager.restore()])
        snapshots: list[ModuleSnapshot] = []
        try:
            # on a model that has not generated yet, so that the run does not make that change to the tree
            parts_lib.settle_text_engines(model)
            snapshots += [ModuleSnapshot.capture(found.unet), ModuleSnapshot.capture(found.text_root)]
            for root in (found.kmodel, found.text_root):
                out = lora_patches.take_out(root)
                undo.append(out.put_back)
                if out.layers:
                    self._log(f"took Forge's applied LoRA out of {out.layers} layers before training")
            for root in (found.unet, found.text_root):
                thawed = thaw(root)
                undo.append(thawed.restore)
            for target in found.targets:
                try:
                    swap = swap_linears(target.module)
                except SwapError as exc:
                    raise parts_lib.UnsupportedModel(str(exc)) from exc
                undo.append(swap.restore)
            undo.append(use_out_of_place_adds(found.unet))
            model.set_clip_skip(self._clip_skip())
            yield
        finally:
            self._drop_checkpointing()
            for engine, value in zip(engines, clip_skips, strict=False):
                engine.clip_skip = value
            for step in reversed(undo):
                step()
            for snapshot in snapshots:
                for repair in snapshot.restore():
                    log.warning("Train Tools restored the model after the engine: %s", repair)
            self.forge.memory_management.soft_empty_cache()
            self._session_model = None

    def use_clip_skip(self, clip_skip: int):
        engines = self._engines(self.sd_model)
        old = [engine.clip_skip for engine in engines]
        for engine in engines:
            engine.clip_skip = int(clip_skip)

        def undo() -> None:
            for engine, value in zip(engines, old, strict=False):
                engine.clip_skip = value

        return undo

    def _render_sample(self, request):
        # Not Forge's processing: it would apply the prompt's LoRAs through its patchers to a tree that holds our
        # adapters and stand-ins. The same Euler sampler, on the UNet and text engines as they train, and the VAE
        # called directly (as encode_images does), so that Forge's memory manager moves nothing mid-run. Extra-network
        # tags are Forge's processing's to apply; here they would be read as words, so they are dropped.
        parse = self.forge.extra_networks.parse_prompt
        request = dataclasses.replace(request, prompt=parse(request.prompt)[0],
                                      negative_prompt=parse(request.negative_prompt)[0])  # fmt: skip
        model = self.sd_model
        kmodel = model.forge_objects.unet.model
        latents = preview_sampler.sample_latents(
            request, encode_text=self.encode_text, predict=self.predict,
            alphas_cumprod=kmodel.predictor.alphas_cumprod.detach().float().cpu(),
            prediction=parts_lib.prediction_of(kmodel), latent_channels=4,
            device=model.forge_objects.unet.load_device,
        )  # fmt: skip
        vae = model.forge_objects.vae
        first_stage = vae.first_stage_model
        with torch.no_grad():
            pixels = first_stage.decode(first_stage.process_out(latents.to(vae.device, vae.vae_dtype)))
        return preview_sampler.to_image(pixels)

    def _checkpoint_blocks(self) -> Callable[[], None]:
        return checkpoint_blocks(self.sd_model.forge_objects.unet.model.diffusion_model)


def live_forge():
    """The Forge modules the host uses, imported only inside a running Forge."""
    from types import SimpleNamespace

    from backend import memory_management
    from modules import call_queue, extra_networks, progress, sd_models, shared

    return SimpleNamespace(shared=shared, call_queue=call_queue, progress=progress, sd_models=sd_models,
                           memory_management=memory_management, extra_networks=extra_networks)  # fmt: skip
