"""A TrainingHost around a diffusers pipeline: the standalone (command line) path and the test host.

It lends the engine the pipeline's own UNet and text encoder(s); the engine puts adapters in and takes them out
again. SD1/SD2 use ``StableDiffusionPipeline``; SDXL uses ``StableDiffusionXLPipeline`` (two text encoders, pooled
text and size/crop embeddings). diffusers and transformers are an optional extra: this module imports them lazily.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from lib_lora_train.host import Conditioning, ImageGeometry, ModelParts, SampleRequest, TrainingHost

log = logging.getLogger(__name__)


class DiffusersHost(TrainingHost):
    """Host for a loaded diffusers SD1/SD2/SDXL pipeline.

    ``on_event`` receives every ProgressEvent; ``stop_requested`` is polled between steps.
    """

    def __init__(
        self,
        pipe: Any,
        *,
        model_name: str = "",
        model_hash: str = "",
        clip_skip: int = 1,
        on_event: Callable[[Any], None] | None = None,
        stop_requested: Callable[[], bool] | None = None,
    ):
        self.pipe = pipe
        self.is_sdxl = getattr(pipe, "text_encoder_2", None) is not None
        self.model_name = model_name
        self.model_hash = model_hash
        self.clip_skip = clip_skip
        self.on_event = on_event
        self.stop_requested = stop_requested
        self.events: list[Any] = []
        self.device = pipe.unet.device
        self._clip_skip_override = 0

    # --- construction ---------------------------------------------------------------------------------------

    @classmethod
    def from_path(
        cls, path: str | Path, *, device: str | torch.device | None = None, dtype=None, **kwargs
    ) -> DiffusersHost:
        """Load a diffusers folder or a single-file SD1/SD2/SDXL checkpoint (.safetensors/.ckpt, a yaml beside it is used)."""
        pipe = load_pipeline(path, dtype=dtype)
        if device is not None:
            pipe.to(device)
        kwargs.setdefault("model_name", Path(path).stem if Path(path).is_file() else Path(path).name)
        if Path(path).is_file():
            kwargs.setdefault("model_hash", _file_short_hash(Path(path)))
        return cls(pipe, **kwargs)

    # --- TrainingHost ---------------------------------------------------------------------------------------

    def model_parts(self) -> ModelParts:
        from lib_lora_train.host import AdapterTarget

        pipe = self.pipe
        prediction = "v" if pipe.scheduler.config.get("prediction_type") == "v_prediction" else "eps"
        if self.is_sdxl:
            arch = "sdxl"
            tes = [
                AdapterTarget("lora_te1", pipe.text_encoder, "hf_clip", True),
                AdapterTarget("lora_te2", pipe.text_encoder_2, "hf_clip", True),
            ]
            # kohya keeps the sgm (original) UNet names for SDXL; the keys translate the diffusers paths back
            unet_naming = "diffusers_sdxl"
        else:
            arch = "sd2" if pipe.text_encoder.config.hidden_size == 1024 else "sd1"
            tes = [AdapterTarget("lora_te", pipe.text_encoder, "hf_clip", True)]
            unet_naming = "diffusers"
        return ModelParts(
            arch=arch,
            prediction=prediction,
            unet=AdapterTarget("lora_unet", pipe.unet, unet_naming),
            text_encoders=tes,
            alphas_cumprod=_alphas_cumprod(pipe.scheduler.config),
            device=pipe.unet.device,
            weight_dtype=pipe.unet.dtype,
            model_name=self.model_name,
            model_hash=self.model_hash,
            clip_skip=self.clip_skip,
        )

    def use_clip_skip(self, clip_skip: int) -> Callable[[], None]:
        before = self._clip_skip_override
        self._clip_skip_override = clip_skip

        def undo() -> None:
            self._clip_skip_override = before

        return undo

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        vae = self.pipe.vae
        # the distribution's mean, not a sample: a cached latent must not depend on when it was computed
        dist = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist
        return dist.mean * vae.config.scaling_factor

    def encode_text(self, captions: Sequence[str], geometry: Sequence[ImageGeometry]) -> Conditioning:
        skip = self._clip_skip_override or self.clip_skip
        if not self.is_sdxl:
            hidden = _clip_hidden(self.pipe.tokenizer, self.pipe.text_encoder, captions, skip, final_norm=True)[0]
            return Conditioning(context=hidden)
        # SDXL: both encoders' penultimate layer (clip skip counted from there), pooled output of the second
        h1, _ = _clip_hidden(self.pipe.tokenizer, self.pipe.text_encoder, captions, skip + 1, final_norm=False)
        h2, pooled = _clip_hidden(self.pipe.tokenizer_2, self.pipe.text_encoder_2, captions, skip + 1, final_norm=False)
        time_ids = torch.tensor(
            [[*g.original_size, *g.crop_top_left, *g.target_size] for g in geometry], device=pooled.device
        ).to(pooled.dtype)
        return Conditioning(context=torch.cat([h1, h2], dim=-1), vector=torch.cat([pooled, time_ids], dim=-1))

    def predict(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        unet = self.pipe.unet
        kwargs: dict[str, Any] = {}
        if self.is_sdxl and cond.vector is not None:
            kwargs["added_cond_kwargs"] = {"text_embeds": cond.vector[:, :-6], "time_ids": cond.vector[:, -6:]}
        return unet(noisy_latents, timesteps, encoder_hidden_states=cond.context, **kwargs).sample

    def report(self, event: Any) -> None:
        self.events.append(event)
        if self.on_event is not None:
            self.on_event(event)

    def should_stop(self) -> bool:
        return bool(self.stop_requested and self.stop_requested())

    @torch.no_grad()
    def render_samples(self, requests: Sequence[SampleRequest]) -> list:
        images = []
        for req in requests:
            generator = torch.Generator(device="cpu").manual_seed(req.seed)
            out = self.pipe(
                prompt=req.prompt,
                negative_prompt=req.negative_prompt or None,
                num_inference_steps=req.steps,
                guidance_scale=req.cfg_scale,
                width=req.width,
                height=req.height,
                generator=generator,
            )
            images.append(out.images[0])
        return images

    def set_gradient_checkpointing(self, enabled: bool) -> Callable[[], None]:
        unet = self.pipe.unet
        encoders = [m for m in (self.pipe.text_encoder, getattr(self.pipe, "text_encoder_2", None)) if m is not None]
        before_unet = bool(getattr(unet, "is_gradient_checkpointing", False))
        before_te = [bool(getattr(te, "is_gradient_checkpointing", False)) for te in encoders]
        if enabled:
            unet.enable_gradient_checkpointing()
            for te in encoders:
                te.gradient_checkpointing_enable()
                # transformers 4.30 checkpoints CLIP layers re-entrantly: without an input that requires grad the
                # adapters inside get no gradient at all, so make the embeddings' output require grad
                te.enable_input_require_grads()

        def undo() -> None:
            if enabled and not before_unet:
                unet.disable_gradient_checkpointing()
            for te, was in zip(encoders, before_te, strict=True):
                if enabled:
                    te.disable_input_require_grads()
                    te.__dict__.pop("_require_grads_hook", None)
                if enabled and not was:
                    te.gradient_checkpointing_disable()

        return undo


# --- helpers ---------------------------------------------------------------------------------------------------


def _clip_hidden(tokenizer, encoder, captions: Sequence[str], skip: int, *, final_norm: bool):
    """Hidden states ``skip`` layers from the end (1 = last) and the pooled/projected output if the model has one."""
    ids = tokenizer(
        list(captions),
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids.to(encoder.device)
    out = encoder(ids, output_hidden_states=True)
    hidden = out.hidden_states[-max(skip, 1)]
    if final_norm:
        # SD1/SD2 with clip skip: the chosen layer still goes through the final layer norm, like the WebUI
        hidden = encoder.text_model.final_layer_norm(hidden) if skip > 1 else out.last_hidden_state
    pooled = getattr(out, "text_embeds", None)
    if pooled is None:
        pooled = out[1] if len(out) > 1 else None
    return hidden, pooled


def _alphas_cumprod(config: Any) -> torch.Tensor:
    """The training noise schedule from a scheduler config (via DDPMScheduler, which computes it the standard way)."""
    from diffusers import DDPMScheduler

    keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas")
    sched = DDPMScheduler(**{k: config[k] for k in keys if k in config and config[k] is not None})
    return sched.alphas_cumprod.clone().float()


def _file_short_hash(path: Path) -> str:
    """sha256 of the file, first 10 hex digits (the WebUI's short hash)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:10]


def load_pipeline(path: str | Path, *, dtype=None):
    """A diffusers folder (``model_index.json``) or a single-file checkpoint -> a pipeline on the CPU, progress bar off."""
    try:
        from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "the standalone trainer needs diffusers and transformers: pip install diffusers transformers"
        ) from exc
    source = Path(path)
    kwargs: dict[str, Any] = {"safety_checker": None, "requires_safety_checker": False}
    if dtype is not None:
        kwargs["torch_dtype"] = dtype
    if source.is_dir():
        if not (source / "model_index.json").exists():
            raise FileNotFoundError(f"{source}: not a diffusers model folder (no model_index.json)")
        index = (source / "model_index.json").read_text(encoding="utf-8")
        cls = StableDiffusionXLPipeline if "StableDiffusionXL" in index else StableDiffusionPipeline
        if cls is StableDiffusionXLPipeline:
            kwargs = {k: v for k, v in kwargs.items() if k == "torch_dtype"}
        pipe = cls.from_pretrained(str(source), local_files_only=True, **kwargs)
    elif source.is_file():
        pipe = _load_single_file(source, kwargs)
    else:
        raise FileNotFoundError(
            f"{source}: no such model folder or checkpoint file; pass --base a diffusers folder or .safetensors"
        )
    if source.is_file():
        _detach_from_checkpoint_file(pipe)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _load_single_file(source: Path, kwargs: dict[str, Any]):
    """A WebUI-style checkpoint with its yaml: the text encoders from the yaml (``single_file``), the rest by
    diffusers. Offline (HF_HUB_OFFLINE) nothing is looked up on the hub."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    from lib_lora_train.hosts.single_file import (
        CheckpointError,
        inspect_checkpoint,
        read_yaml,
        sdxl_unet,
        text_components,
    )

    kind = inspect_checkpoint(source)
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    cls = StableDiffusionXLPipeline if kind.arch == "sdxl" else StableDiffusionPipeline
    if kind.arch == "sdxl":
        kwargs = {k: v for k, v in kwargs.items() if k == "torch_dtype"}
    yaml = source.with_suffix(".yaml")
    extra: dict[str, Any] = {}
    if yaml.is_file() and kind.keys:
        extra["original_config_file"] = str(yaml)
        config = read_yaml(yaml)
        extra.update(text_components(source, config, kind, offline=offline))
        if kind.arch == "sdxl":
            extra["unet"] = sdxl_unet(source, config, kind)
        if "torch_dtype" in kwargs:
            for name in ("text_encoder", "text_encoder_2", "unet"):
                if name in extra:
                    extra[name] = extra[name].to(kwargs["torch_dtype"])
    elif offline:
        raise CheckpointError(f"{source}: no {yaml.name} beside it, and downloads are off (HF_HUB_OFFLINE): put the "
                              "model's yaml next to the checkpoint (the WebUI uses the same file)")  # fmt: skip
    try:
        return cls.from_single_file(str(source), local_files_only=offline, **extra, **kwargs)
    except (ValueError, OSError) as exc:
        raise RuntimeError(
            f"{source}: diffusers could not build the pipeline from this checkpoint ({exc}); put its .yaml beside it "
            "(the text encoders' configs then come from the local Hugging Face cache), or convert the checkpoint to "
            "a diffusers folder and pass that"
        ) from exc


def _detach_from_checkpoint_file(pipe) -> None:
    """Own every buffer of a pipeline loaded from a single file, and make token position ids integers.

    diffusers' single-file loader hands out tensors that are views into one memory map of the whole checkpoint.
    Parameters are copied when cast, but a buffer such as CLIP's ``position_ids`` is not, and that tiny view keeps
    the whole file (2 GiB for SD1.5) resident for the run. Some merged checkpoints also store ``position_ids`` as
    floats, which the embedding lookup rejects.
    """
    for component in pipe.components.values():
        if not isinstance(component, torch.nn.Module):
            continue
        for module in component.modules():
            for name, buffer in list(module._buffers.items()):
                if buffer is None:
                    continue
                if name == "position_ids" and buffer.is_floating_point():
                    buffer = buffer.round().long()
                module._buffers[name] = buffer.clone()
