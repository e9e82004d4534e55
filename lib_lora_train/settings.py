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
LOSS_TYPES = ("l2", "l1", "huber", "smooth_l1")
HUBER_SCHEDULES = ("snr", "exponential", "constant")
# kohya's presets for down_lr_weight / up_lr_weight (a preset name, optionally "+offset", or one number per block)
LR_WEIGHT_PRESETS = ("sine", "cosine", "linear", "reverse_linear", "zeros")
# every field with a fixed set of values (the CLI's --choices and the form's dropdowns)
CHOICES = {
    "network": NETWORKS,
    "optimizer": OPTIMIZERS,
    "lr_scheduler": SCHEDULERS,
    "mixed_precision": PRECISIONS,
    "save_precision": SAVE_PRECISIONS,
    "cache_latents": LATENT_CACHE,
    "loss_type": LOSS_TYPES,
    "huber_schedule": HUBER_SCHEDULES,
}


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
    dora_wd: bool = False  # DoRA: weight-decomposed LoRA (LyCORIS's network_args name), lora / locon only
    network_dropout: float = 0.0  # dropout of the down projection's output (kohya --network_dropout)
    rank_dropout: float = 0.0  # drops whole ranks per sample (kohya network_args)
    module_dropout: float = 0.0  # skips a module's update per step (kohya network_args)
    # block-wise (kohya network_args): a preset or one weight per down/up block; 0 leaves a block untrained
    down_lr_weight: str = ""
    mid_lr_weight: str = ""
    up_lr_weight: str = ""
    block_dims: str = ""  # one rank per block: down blocks, mid, up blocks (25 for SD1/SD2, 23 for SDXL)
    block_alphas: str = ""
    conv_block_dims: str = ""
    conv_block_alphas: str = ""
    # continue from a LoRA file (kohya --network_weights); dim_from_weights takes rank/alpha from it
    network_weights: str = ""
    dim_from_weights: bool = False
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
    # regularisation (prior-preservation) images: kohya's reg_data_dir with N_class folders
    reg_data_dir: str = ""
    prior_loss_weight: float = 1.0
    # masked loss: from each image's alpha channel, or from a mask folder (same file stems, white = train)
    masked_loss: bool = False
    mask_dir: str = ""
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
    multires_noise_iterations: int = 0  # pyramid noise; 6-10 is usual
    multires_noise_discount: float = 0.3
    ip_noise_gamma: float = 0.0  # input-perturbation noise; 0.1 is usual
    debiased_estimation_loss: bool = False
    zero_terminal_snr: bool = False  # rescale the schedule to zero terminal SNR (for v-prediction)
    v_parameterization: bool = False  # train a v-prediction model whose file does not say so (SDXL v-pred)
    loss_type: str = "l2"
    huber_schedule: str = "snr"
    huber_c: float = 0.1
    min_timestep: int = 0
    max_timestep: int = 1000
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
        for name, choices in CHOICES.items():
            _choice(name, getattr(self, name), choices)
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
        self._validate_extras()
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

    def _validate_extras(self) -> None:
        """The #14 options: dropouts, block-wise strings, noise and loss shapes, timestep range."""
        for name in ("network_dropout", "rank_dropout", "module_dropout"):
            _range(name, getattr(self, name), 0.0, 0.99, "a probability between 0 and 0.99 (0.1 is usual)")
        if self.dora_wd and self.network not in ("lora", "locon"):
            raise SettingsError("dora_wd", f"DoRA works with lora or locon, not {self.network}; change network")
        if self.network_dropout and self.network in ("loha", "lokr"):
            # LyCORIS has no neuron dropout for these either (it warns and ignores it)
            raise SettingsError(
                "network_dropout", f"works with lora or locon, not {self.network}; use rank_dropout or module_dropout"
            )
        for name in ("down_lr_weight", "up_lr_weight"):
            _lr_weight(name, getattr(self, name))
        if self.mid_lr_weight.strip():
            _numbers("mid_lr_weight", self.mid_lr_weight, (1, 3), 0.0, 100.0)
        for name in ("block_dims", "conv_block_dims"):
            if getattr(self, name).strip():
                _numbers(name, getattr(self, name), BLOCK_COUNTS, 0, 1024, whole=True)
        for name in ("block_alphas", "conv_block_alphas"):
            if getattr(self, name).strip():
                _numbers(name, getattr(self, name), BLOCK_COUNTS, 0.0, 4096.0)
        if self.block_alphas.strip() and not self.block_dims.strip():
            raise SettingsError("block_alphas", "needs block_dims (one rank per block) as well")
        if self.conv_block_alphas.strip() and not self.conv_block_dims.strip():
            raise SettingsError("conv_block_alphas", "needs conv_block_dims as well")
        if self.dim_from_weights and not self.network_weights.strip():
            raise SettingsError("dim_from_weights", "needs network_weights (the LoRA file to read rank and alpha from)")
        _range("prior_loss_weight", self.prior_loss_weight, 0.0, 100.0, "0 or more (1 is usual)")
        if self.mask_dir.strip() and not self.masked_loss:
            raise SettingsError("mask_dir", "is only read with masked_loss; turn masked_loss on or clear mask_dir")
        _range("multires_noise_iterations", self.multires_noise_iterations, 0, 20, "0 (off) or 6-10")
        _range("multires_noise_discount", self.multires_noise_discount, 0.0, 1.0, "0 to 1 (0.3 is usual)")
        _range("ip_noise_gamma", self.ip_noise_gamma, 0.0, 1.0, "0 (off) or about 0.1")
        _range("huber_c", self.huber_c, 1e-6, 1.0, "a value above 0 and at most 1 (0.1 is usual)")
        _range("min_timestep", self.min_timestep, 0, 999, "0 to 999")
        _range("max_timestep", self.max_timestep, 1, 1000, "1 to 1000")
        if self.min_timestep >= self.max_timestep:
            raise SettingsError(
                "max_timestep", f"must be above min_timestep ({self.min_timestep}); timesteps are drawn from [min, max)"
            )

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


# blocks of kohya's block-wise settings: SD1/SD2 have 12 down blocks, a mid block and 12 up blocks; SDXL the time
# embedding, 9 input blocks, 3 middle blocks, 9 output blocks and the output layers (mid_lr_weight: 1 or 3 values)
BLOCK_COUNTS = (25, 23)


def _numbers(name: str, text: str, counts: tuple[int, ...], low: float, high: float, *, whole: bool = False):
    """Comma-separated numbers, as many as one of ``counts``, each in [low, high]."""
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise SettingsError(name, f"{text!r} is not a comma-separated list of numbers") from None
    if len(values) not in counts:
        want = " or ".join(str(c) for c in counts)
        raise SettingsError(name, f"has {len(values)} values; give {want} (one per block, comma-separated)")
    for value in values:
        if not low <= value <= high or (whole and not value.is_integer()):
            kind = "whole numbers" if whole else "numbers"
            raise SettingsError(name, f"{value:g} is out of range; use {kind} from {low:g} to {high:g}")
    return values


def _lr_weight(name: str, text: str) -> None:
    """kohya's down/up_lr_weight: empty, a preset (``sine``, ``cosine+.25``), or 12 (SD1/SD2) / 9 (SDXL) numbers."""
    text = text.strip()
    if not text:
        return
    preset, _, offset = text.partition("+")
    if preset in LR_WEIGHT_PRESETS:
        if offset:
            try:
                float(offset)
            except ValueError:
                raise SettingsError(name, f"{offset!r} after '+' is not a number (e.g. cosine+.25)") from None
        return
    if not preset[:1].isdigit() and not preset.startswith("."):
        raise SettingsError(name, f"{text!r} is not one of {', '.join(LR_WEIGHT_PRESETS)} nor a list of numbers")
    _numbers(name, text, (12, 9), 0.0, 100.0)


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
