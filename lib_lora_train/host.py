"""The small interface between the training engine and whatever owns the model.

The engine never loads a model itself. A host hands it the parts of a model that is already in memory (the WebUI's
loaded checkpoint, or a diffusers pipeline in tests and on the command line), encodes images and text the way that
host generates with, calls its UNet, reports progress and says when the user pressed stop. Two hosts implement it:
``lib_lora_train.hosts.diffusers_host`` and ``lib_lora_train.webui.host_adapter``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

if TYPE_CHECKING:  # torch is imported lazily so that the UI can import this module cheaply
    import torch
    from PIL import Image

Arch = Literal["sd1", "sd2", "sdxl"]
Prediction = Literal["eps", "v"]
# How the module paths inside an adapter target are spelled; lora_keys turns each into kohya's key names.
Naming = Literal["diffusers", "ldm", "sgm", "hf_clip", "open_clip"]

T = TypeVar("T")


@dataclass
class AdapterTarget:
    """One module tree the engine may put adapters into, and how its keys are named in the LoRA file.

    ``prefix`` is kohya's key prefix: ``lora_unet``, ``lora_te`` (SD1/SD2) or ``lora_te1`` / ``lora_te2`` (SDXL).
    """

    prefix: str
    module: torch.nn.Module
    naming: Naming
    is_text_encoder: bool = False


@dataclass
class ModelParts:
    """What a host lends the engine for one run. Nothing here is copied: these are the host's own objects."""

    arch: Arch
    prediction: Prediction
    unet: AdapterTarget
    text_encoders: list[AdapterTarget]
    alphas_cumprod: torch.Tensor  # (num_train_timesteps,), float
    device: torch.device
    weight_dtype: torch.dtype  # dtype of the frozen weights (fp16 on most GPUs, fp32 on CPU)
    model_name: str = ""  # for ss_sd_model_name
    model_hash: str = ""  # for ss_sd_model_hash
    clip_skip: int = 1  # the clip skip the host generates with (1 = last layer)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])


@dataclass
class Conditioning:
    """Text conditioning for one batch. ``pooled`` and ``vector`` are used by SDXL only."""

    context: torch.Tensor  # (B, tokens, dim): cross-attention input
    vector: torch.Tensor | None = None  # SDXL: pooled text + size/crop embeddings, already concatenated


@dataclass(frozen=True)
class ImageGeometry:
    """Per-image sizes that SDXL conditions on (original size, crop top-left, target size), as (height, width)."""

    original_size: tuple[int, int]
    crop_top_left: tuple[int, int]
    target_size: tuple[int, int]


@dataclass
class SampleRequest:
    prompt: str
    negative_prompt: str = ""
    seed: int = 42
    steps: int = 20
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512


class TrainingHost:
    """Base class of the hosts. Subclasses implement the four model calls; the rest has sensible defaults."""

    def model_parts(self) -> ModelParts:
        raise NotImplementedError

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] on any device -> latents already multiplied by the host's latent scale factor."""
        raise NotImplementedError

    def encode_text(self, captions: Sequence[str], geometry: Sequence[ImageGeometry]) -> Conditioning:
        """Captions -> conditioning, with gradients flowing into any text-encoder adapters; honours clip skip."""
        raise NotImplementedError

    def predict(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """One UNet call: the model output (noise for eps models, velocity for v models)."""
        raise NotImplementedError

    # --- optional hooks -------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def training_session(self) -> Iterator[None]:
        """Prepare the host for training and restore it on every exit path (the WebUI host unmerges LoRAs here)."""
        yield

    def run_exclusive(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` while holding the host's GPU lock."""
        return fn()

    def report(self, event: Any) -> None:
        """Receive a ``events.ProgressEvent`` (or another event) from the engine."""

    def should_stop(self) -> bool:
        """True once the user asked to stop; polled between steps."""
        return False

    def render_samples(self, requests: Sequence[SampleRequest]) -> list[Image.Image]:
        """Generate preview images with the adapters active; hosts that cannot return an empty list."""
        return []

    def use_clip_skip(self, clip_skip: int) -> Callable[[], None]:
        """Encode text with this clip skip (1 = last layer) during training; returns a function that undoes it.

        Called only when the settings ask for a clip skip other than the host's own (``ModelParts.clip_skip``).
        """
        return lambda: None

    def set_gradient_checkpointing(self, enabled: bool) -> Callable[[], None]:
        """Turn gradient checkpointing on for the UNet (and text encoders); returns a function that undoes it."""
        return lambda: None
