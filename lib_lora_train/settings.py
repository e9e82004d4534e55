"""Training settings: one validated object, saved as ``config.json`` beside each version.

A plain dataclass rather than a pydantic model, so that the same code runs under the WebUI's pydantic 1 and under
pydantic 2 elsewhere. Unknown keys and bad values raise ``SettingsError`` naming the field and the fix; nothing is
dropped silently. Field names are the CLI options with underscores, and the names the HTTP API takes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, get_type_hints

NETWORKS = ("lora", "locon", "loha", "lokr")
OPTIMIZERS = ("adamw", "adamw8bit", "adafactor", "sgd", "lion", "prodigy")
SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")
PRECISIONS = ("fp16", "bf16", "no")
SAVE_PRECISIONS = ("fp16", "bf16", "fp32")
LATENT_CACHE = ("memory", "disk", "none")


class SettingsError(ValueError):
    """A setting that cannot be used; ``field`` names it."""

    def __init__(self, field_name: str, message: str):
        self.field = field_name
        super().__init__(f"{field_name}: {message}")


@dataclass
class TrainSettings:
    # network
    network: str = "lora"
    rank: int = 16
    alpha: float = 8.0
    conv_rank: int = 8  # LoCon / LoHa / LoKr 3x3 convolutions
    conv_alpha: float = 4.0
    # data
    resolution: int = 512
    caption_extension: str = ".txt"
    default_repeats: int = 1  # for folders without an N_ prefix
    enable_buckets: bool = True
    min_bucket_side: int = 256
    max_bucket_side: int = 1024
    bucket_step: int = 64
    bucket_no_upscale: bool = False
    shuffle_tags: bool = True
    keep_tokens: int = 1
    caption_dropout: float = 0.0
    tag_dropout: float = 0.0
    flip: bool = False
    # length
    batch_size: int = 1
    epochs: int = 10
    max_steps: int = 0  # > 0 overrides epochs
    grad_accum: int = 1
    # optimiser
    optimizer: str = "adamw"
    unet_lr: float = 1e-4
    te_lr: float = 5e-5  # 0 = do not train the text encoder(s)
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    lr_scheduler: str = "cosine"
    lr_warmup: float = 0.0  # < 1: a fraction of all steps; >= 1: a number of steps
    lr_cycles: int = 1
    lr_power: float = 1.0
    # numerics and memory
    mixed_precision: str = "fp16"
    gradient_checkpointing: bool = False
    cache_latents: str = "memory"
    noise_offset: float = 0.0
    min_snr_gamma: float = 0.0  # 0 = off; 5 is the usual value
    clip_skip: int = 0  # 0 = what the host generates with
    # saving, sampling, reproducibility
    seed: int = 42
    save_every: int = 1  # epochs
    save_precision: str = "fp16"
    save_state: bool = False  # also save optimiser state so that the run can be resumed
    sample_every: int = 0  # epochs; 0 = no samples
    sample_prompts: list[str] = field(default_factory=list)
    sample_steps: int = 20
    output_name: str = ""  # default: <project>-<version>
    comment: str = ""

    def __post_init__(self) -> None:
        self.validate()

    # --- validation -------------------------------------------------------------------------------------------

    def validate(self) -> None:
        _choice("network", self.network, NETWORKS)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("lr_scheduler", self.lr_scheduler, SCHEDULERS)
        _choice("mixed_precision", self.mixed_precision, PRECISIONS)
        _choice("save_precision", self.save_precision, SAVE_PRECISIONS)
        _choice("cache_latents", self.cache_latents, LATENT_CACHE)
        for name in ("rank", "conv_rank"):
            _range(name, getattr(self, name), 1, 1024, "a rank between 1 and 1024 (8-32 is typical)")
        for name in ("alpha", "conv_alpha"):
            _range(name, getattr(self, name), 1e-6, 4096, "a positive alpha (often rank/2 or rank)")
        _range("resolution", self.resolution, 64, 4096, "a resolution between 64 and 4096 px, a multiple of 64")
        if self.resolution % 64:
            raise SettingsError(
                "resolution", f"{self.resolution} is not a multiple of 64; use {self.resolution // 64 * 64 or 64}"
            )
        _range("bucket_step", self.bucket_step, 8, 512, "8 to 512 px (64 is usual)")
        if self.bucket_step % 8:
            raise SettingsError("bucket_step", "must be a multiple of 8 (the VAE downsamples by 8)")
        _range("min_bucket_side", self.min_bucket_side, 64, 8192, "64 px or more")
        _range("max_bucket_side", self.max_bucket_side, self.min_bucket_side, 8192, "at least min_bucket_side")
        if self.max_bucket_side < self.resolution:
            raise SettingsError("max_bucket_side", f"must be at least the resolution ({self.resolution})")
        _range("batch_size", self.batch_size, 1, 256, "1 or more")
        _range("epochs", self.epochs, 1, 100000, "1 or more")
        _range("max_steps", self.max_steps, 0, 10**8, "0 (use epochs) or a number of steps")
        _range("grad_accum", self.grad_accum, 1, 1024, "1 or more")
        _range("default_repeats", self.default_repeats, 1, 10000, "1 or more")
        _range("keep_tokens", self.keep_tokens, 0, 1000, "0 or more")
        for name in ("caption_dropout", "tag_dropout"):
            _range(name, getattr(self, name), 0.0, 1.0, "a probability between 0 and 1")
        for name in ("unet_lr", "te_lr"):
            _range(name, getattr(self, name), 0.0, 10.0, "0 (do not train) or a learning rate such as 1e-4")
        if self.unet_lr == 0 and self.te_lr == 0:
            raise SettingsError(
                "unet_lr", "both learning rates are 0, so nothing would train; set unet_lr to e.g. 1e-4"
            )
        _range("weight_decay", self.weight_decay, 0.0, 10.0, "0 or more")
        _range("max_grad_norm", self.max_grad_norm, 0.0, 1e6, "0 (no clipping) or more")
        _range("lr_warmup", self.lr_warmup, 0.0, 10**8, "a fraction below 1 or a number of steps")
        _range("lr_cycles", self.lr_cycles, 1, 1000, "1 or more")
        _range("lr_power", self.lr_power, 0.0, 100.0, "a positive power")
        _range("noise_offset", self.noise_offset, 0.0, 1.0, "0 to 1 (0.05-0.1 is usual)")
        _range("min_snr_gamma", self.min_snr_gamma, 0.0, 100.0, "0 (off) or a gamma such as 5")
        _range("clip_skip", self.clip_skip, 0, 12, "0 (the host's own setting) or 1-12")
        _range("seed", self.seed, 0, 2**63 - 1, "a non-negative integer")
        _range("save_every", self.save_every, 0, 100000, "0 (only the final file) or a number of epochs")
        _range("sample_every", self.sample_every, 0, 100000, "0 (no samples) or a number of epochs")
        _range("sample_steps", self.sample_steps, 1, 150, "1 to 150")
        if not self.caption_extension.startswith(".") or os.sep in self.caption_extension:
            raise SettingsError(
                "caption_extension", f"{self.caption_extension!r} should look like '.txt' or '.caption'"
            )
        if self.output_name and (
            os.sep in self.output_name or "/" in self.output_name or self.output_name.startswith(".")
        ):
            raise SettingsError("output_name", "must be a plain file name without folders")

    # --- (de)serialisation ------------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainSettings:
        """Build from JSON-like data, converting numbers and rejecting unknown names."""
        if not isinstance(data, dict):
            raise SettingsError("settings", f"expected an object of settings, got {type(data).__name__}")
        hints = get_type_hints(cls)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SettingsError(unknown[0], f"unknown setting; known settings are: {', '.join(sorted(known))}")
        values = {name: _coerce(name, value, hints[name]) for name, value in data.items()}
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainSettings:
        return TrainSettings.from_dict({**self.to_dict(), **changes})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainSettings:
        return cls.from_dict(json.loads(text))


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise SettingsError(name, f"{value!r} is not one of: {', '.join(choices)}")


def _range(name: str, value: Any, low: float, high: float, hint: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or not low <= value <= high:
        raise SettingsError(name, f"{value!r} is out of range; use {hint}")


def _coerce(name: str, value: Any, hint: Any) -> Any:
    text = str(hint)
    if text == "bool" or hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise SettingsError(name, f"{value!r} is not true or false")
    if text == "int" or hint is int:
        if isinstance(value, bool):
            raise SettingsError(name, f"{value!r} is not a whole number")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise SettingsError(name, f"{value!r} is not a whole number")
    if text == "float" or hint is float:
        if isinstance(value, bool):
            raise SettingsError(name, f"{value!r} is not a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise SettingsError(name, f"{value!r} is not a number") from None
    if text == "str" or hint is str:
        if not isinstance(value, str):
            raise SettingsError(name, f"{value!r} is not text")
        return value
    if text.startswith("list"):
        if isinstance(value, str):
            return [line for line in value.splitlines() if line.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SettingsError(name, "expected a list of text lines")
        return list(value)
    return value
