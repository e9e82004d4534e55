"""Writing what a run produces: kohya-format LoRA files with metadata, sample images, the loss log."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from lib_lora_train.fileio import atomic_write_bytes
from lib_lora_train.host import ModelParts, SampleRequest, TrainingHost
from lib_lora_train.train.adapters import AdapterHandle


def lora_tensors(handle: AdapterHandle, settings) -> dict:
    """The adapters as kohya tensors (lora_down/lora_up/alpha, or LyCORIS parts), via lora_format.peft_bridge."""
    from lib_lora_train.lora_format.keys import kohya_module_names
    from lib_lora_train.lora_format.peft_bridge import adapter_state_dict

    tensors = {}
    for injected in handle.targets:
        names = kohya_module_names(injected.target)
        tensors.update(
            adapter_state_dict(injected.target, names, settings.network, settings.alpha, settings.conv_alpha)
        )
    return tensors


def save_checkpoint(
    path: Path,
    handle: AdapterHandle,
    parts: ModelParts,
    settings,
    scan,
    *,
    output_name: str,
    epoch: int,
    num_epochs: int,
    steps: int,
    started_at: float,
    max_train_steps: int | None = None,
    num_batches_per_epoch: int | None = None,
    mixed_precision: str | None = None,
    world_size: int = 1,
    reg_scan=None,
) -> Path:
    """One LoRA file (atomic: temp + rename inside save_lora_file) with the ss_* / modelspec metadata.

    ``reg_scan``: the regularisation images, recorded apart from the training images as kohya records them."""
    from lib_lora_train.lora_format.file import save_lora_file
    from lib_lora_train.lora_format.metadata import build_metadata

    metadata = build_metadata(
        settings=settings,
        arch=parts.arch,
        output_name=output_name,
        epoch=epoch,
        num_epochs=num_epochs,
        steps=steps,
        tag_frequency=scan.tag_frequency,
        dataset_dirs=scan.dataset_dirs,
        num_train_images=scan.num_repeated,
        model_name=parts.model_name,
        model_hash=parts.model_hash,
        clip_skip=settings.clip_skip or parts.clip_skip,
        training_started_at=started_at,
        prediction="v" if settings.v_parameterization else parts.prediction,
        max_train_steps=max_train_steps,
        num_batches_per_epoch=num_batches_per_epoch,
        te_trained=any(t.group == "te" for t in handle.targets),
        mixed_precision=mixed_precision,
        world_size=world_size,
        num_reg_images=len(reg_scan.items) if reg_scan is not None else 0,
        reg_dataset_dirs=reg_scan.dataset_dirs if reg_scan is not None else None,
    )
    save_lora_file(path, lora_tensors(handle, settings), metadata, precision=settings.save_precision)
    return path


def sample_requests(settings) -> list[SampleRequest]:
    """One request per sample prompt (``prompt --n negative`` splits off a negative prompt), seeds seed, seed+1, ..."""
    requests = []
    for i, line in enumerate(settings.sample_prompts):
        prompt, _, negative = line.partition("--n")
        requests.append(
            SampleRequest(
                prompt=prompt.strip(),
                negative_prompt=negative.strip(),
                seed=settings.seed + i,
                steps=settings.sample_steps,
                width=settings.resolution,
                height=settings.resolution,
            )
        )
    return requests


def render_and_save_samples(
    host: TrainingHost, requests: Sequence[SampleRequest], folder: Path, epoch: int, *, model_name: str = "",
    output_name: str = "",
) -> list[Path]:  # fmt: skip
    """Render through the host (adapters active) and save ``<epoch:06d>-<i>.png`` atomically, with the generation
    parameters in the PNG's ``parameters`` text as the WebUI writes them (so PNG Info and "send to" read them)."""
    from PIL.PngImagePlugin import PngInfo

    requests = list(requests)
    paths = []
    for i, (request, image) in enumerate(zip(requests, host.render_samples(requests), strict=False)):
        info = PngInfo()
        info.add_text("parameters", sample_infotext(request, model_name=model_name, output_name=output_name,
                                                    epoch=epoch))  # fmt: skip
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", pnginfo=info)
        path = Path(folder) / f"{epoch:06d}-{i}.png"
        atomic_write_bytes(path, buffer.getvalue())
        paths.append(path)
    return paths


def sample_infotext(request: SampleRequest, *, model_name: str = "", output_name: str = "", epoch: int = 0) -> str:
    """The WebUI's infotext layout: prompt, ``Negative prompt:`` line, then ``key: value`` pairs."""
    pairs = [("Steps", request.steps), ("Sampler", "Euler"), ("CFG scale", request.cfg_scale), ("Seed", request.seed),
             ("Size", f"{request.width}x{request.height}"), ("Model", model_name),
             ("Train Tools sample", f"{output_name} epoch {epoch}" if output_name else f"epoch {epoch}")]  # fmt: skip
    text = request.prompt + (f"\nNegative prompt: {request.negative_prompt}" if request.negative_prompt else "")
    return text + "\n" + ", ".join(f"{k}: {v}" for k, v in pairs if v != "")
