"""Mixed precision for a model the engine does not own.

Why torch.autocast + GradScaler instead of ``accelerate.Accelerator``: ``Accelerator.prepare`` wraps and may move
the models it is given (DDP wrappers, device placement, dtype hooks), and the host's UNet and text encoder must end
the run exactly as they started, same objects on the same devices. Autocast touches nothing; the scaler only needs
the optimiser. The trainable adapter weights stay fp32 (master weights); the host's frozen weights keep their dtype.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Precision:
    autocast_dtype: torch.dtype | None  # None = plain fp32 compute
    use_scaler: bool  # fp16 needs loss scaling; bf16 has fp32's range and does not
    note: str = ""  # why the request was changed, if it was

    @property
    def name(self) -> str:
        return {torch.float16: "fp16", torch.bfloat16: "bf16", None: "no"}[self.autocast_dtype]


def resolve_precision(requested: str, device: torch.device, weight_dtype: torch.dtype) -> Precision:
    """Turn the setting into what will actually run on ``device`` with frozen weights of ``weight_dtype``."""
    if device.type != "cuda":
        if requested == "fp16" or weight_dtype == torch.float16:
            return Precision(
                None, False, "fp16 autocast is not useful on the CPU; training in fp32 (mixed_precision=no)"
            )
        if requested == "bf16" or weight_dtype == torch.bfloat16:
            return Precision(torch.bfloat16, False)
        return Precision(None, False)
    if weight_dtype in (torch.float16, torch.bfloat16) and requested == "no":
        # half-precision frozen weights need autocast, or fp32 adapter outputs would meet half weights
        return Precision(
            weight_dtype, weight_dtype == torch.float16, f"frozen weights are {weight_dtype}; using autocast"
        )
    if requested == "bf16" and not torch.cuda.is_bf16_supported():
        return Precision(torch.float16, True, "this GPU has no bf16; using fp16")
    if requested == "fp16":
        return Precision(torch.float16, True)
    if requested == "bf16":
        return Precision(torch.bfloat16, False)
    return Precision(None, False)


def autocast(precision: Precision, device: torch.device):
    """The autocast context for one forward pass (a no-op context for fp32)."""
    if precision.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=precision.autocast_dtype)


def make_scaler(precision: Precision, device: torch.device):
    """A GradScaler that is enabled only for fp16 on CUDA (disabled scalers pass everything through)."""
    enabled = precision.use_scaler and device.type == "cuda"
    try:
        return torch.amp.GradScaler(device.type, enabled=enabled)
    except (AttributeError, TypeError):  # older torch: only the CUDA scaler exists
        return torch.cuda.amp.GradScaler(enabled=enabled)


@contextlib.contextmanager
def fast_kernels(device: torch.device):
    """TF32 matmuls/convolutions and cuDNN autotuning on CUDA for the run, then the host's own flags again.

    TF32 keeps fp32's range with a 10-bit mantissa: plenty for LoRA training, and several times faster on Ampere+.
    """
    if device.type != "cuda":
        yield
        return
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = saved
