"""The tabs' runtime in the standalone app: options kept in a JSON file beside the projects, folders from the command
line, an in-process GPU lock and progress state shown with gradio's own progress bar (``ui.gpu_call``), the base model the picker
loaded (a diffusers pipeline), the LoRA folder read from disk, and renders by the pipeline with ``<lora:NAME:W>``
applied for the duration of the image.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lib_lora_train.compare.lora_tags import strip_lora_tags
from lib_lora_train.fileio import atomic_write_text
from lib_lora_train.hosts.diffusers_host import DiffusersHost
from lib_lora_train.standalone.models import ModelSlot
from lib_lora_train.ui import options
from lib_lora_train.ui.runtime import NoModelError, UIRuntime

log = logging.getLogger(__name__)

SAMPLERS = ("Euler a", "Euler", "DPM++ 2M", "DDIM")
SCHEDULES = ("Automatic", "Karras")
_LORA_TAG = r"<lora:([^:>]+):([-+0-9.eE]+)>"


class StandaloneTrainingHost(DiffusersHost):
    """The diffusers host for one job, holding the app's GPU lock for the whole run."""

    def __init__(self, pipe, lock, **kwargs):
        super().__init__(pipe, **kwargs)
        self._lock = lock

    def run_exclusive(self, fn):
        with self._lock:
            return fn()


class StandaloneRuntime(UIRuntime):
    name = "standalone"

    def __init__(self, *, outputs: Path, models_dir: Path, lora_dir: Path, cache_dir: Path, device: str = "auto"):
        super().__init__()
        self.outputs = Path(outputs)
        self._tagger_dir = Path(models_dir)
        self._lora_dir = Path(lora_dir)
        self._cache_dir = Path(cache_dir)
        self.model = ModelSlot(self._gpu_lock, device)
        self.settings_file = self.outputs / "standalone_settings.json"
        self.choices: list[Path] = []  # what the model picker offers (set by the app)
        self._options = self._read_options()

    # --- settings and folders

    def _read_options(self) -> dict[str, Any]:
        try:
            data = json.loads(self.settings_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("%s: unreadable (%s); using the defaults", self.settings_file, exc)
            return {}
        return {k: v for k, v in data.items() if k in options.OPTIONS}

    def option(self, key: str) -> Any:
        value = self._options.get(key)
        return options.OPTIONS[key].default if value is None else value

    def set_options(self, values: dict[str, Any]) -> None:
        """Validate every value first (ValueError naming the option), then save them all at once."""
        checked = {key: options.coerce(key, value) for key, value in values.items()}
        self._options.update(checked)
        self.settings_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.settings_file, json.dumps(self._options, indent=2, sort_keys=True))

    def data_dir(self) -> Path:
        return self.outputs.parent

    def projects_dir(self) -> Path:
        return self.outputs

    def models_dir(self) -> Path:
        return self._tagger_dir.parent

    def tagger_dir(self) -> Path:
        return self._tagger_dir

    def cache_dir(self) -> Path:
        return self._cache_dir

    def lora_dir(self) -> Path:
        return self._lora_dir

    # --- GPU queue and progress: gradio's own bar on the handler's outputs

    def wrap_gpu_call(self, fn: Callable, extra_outputs=None) -> Callable:
        from lib_lora_train.ui.gpu_call import with_gradio_progress

        return with_gradio_progress(self, fn, extra_outputs)

    def queue_wait_message(self) -> str:
        device = self.model.loaded.pipe.unet.device if self.model.loaded is not None else "no model"
        return (
            f"queued: waiting for the app's queue (tagging or a render in progress finishes first); trains on {device}"
        )

    # --- the model picker (the page is ui.page)

    def model_choices(self) -> list[str]:
        return [str(p) for p in self.choices]

    def current_model(self) -> str | None:
        return str(self.model.loaded.path) if self.model.loaded is not None else None

    def load_model(self, path: str) -> str:
        from lib_lora_train.standalone.models import is_model

        target = Path(str(path or "")).expanduser()
        if not is_model(target):
            raise NoModelError(f"`{target}` is not a diffusers folder (model_index.json) or a checkpoint file")
        try:
            self.model.load(target)
        except (OSError, RuntimeError, ValueError) as exc:
            raise NoModelError(f"could not load `{target}`: {exc}") from None
        return self.model_line()

    def model_line(self) -> str:
        loaded = self.model.loaded
        if loaded is None:
            return "No base model loaded."
        return f"Loaded **{loaded.label}** ({loaded.arch.upper()}, {loaded.pipe.unet.device}, {loaded.pipe.unet.dtype})"

    def settings_location(self) -> str:
        return str(self.settings_file)

    def served_folders(self) -> list[Path]:
        return [self.outputs, self.lora_dir(), self.cache_dir()]

    # --- the model

    def _loaded(self):
        if self.model.loaded is None:
            raise NoModelError("no base model is loaded; choose one in the model picker at the top")
        return self.model.loaded

    def model_arch(self) -> str | None:
        return self.model.loaded.arch if self.model.loaded is not None else None

    def make_training_host(self, stop_event: threading.Event, listener, task_id):
        loaded = self._loaded()
        return StandaloneTrainingHost(
            loaded.pipe, self._gpu_lock, model_name=loaded.path.stem if loaded.path.is_file() else loaded.path.name,
            model_hash=loaded.short_hash(), on_event=listener, stop_requested=stop_event.is_set,
        )  # fmt: skip

    def host_fingerprint(self, live: bool = False) -> dict:
        from lib_lora_train.hosts.model_state import fingerprint

        pipe = self._loaded().pipe
        parts = {name: getattr(pipe, name) for name in ("unet", "text_encoder", "text_encoder_2", "vae")}
        with self.gpu_lock():
            return fingerprint({k: v for k, v in parts.items() if v is not None}, live=live)

    # --- the LoRA list and rendering

    def lora_files(self) -> dict[str, Path]:
        """File stem -> file for every ``.safetensors`` under the LoRA folder (the first found wins, as in the WebUI)."""
        found: dict[str, Path] = {}
        if self._lora_dir.is_dir():
            for path in sorted(self._lora_dir.rglob("*.safetensors")):
                found.setdefault(path.stem, path)
        return found

    def available_lora_names(self) -> set[str] | None:
        return set(self.lora_files())

    def render_cell(self, plan, cell):
        from lib_lora_train.compare.run import RenderedCell

        image, infotext = self.render(cell.prompt, cell.negative_prompt, seed=cell.seed, steps=plan.steps,
                                      cfg_scale=plan.cfg_scale, width=plan.width, height=plan.height,
                                      sampler=plan.sampler, scheduler=plan.scheduler)  # fmt: skip
        return None if image is None else RenderedCell(image, infotext)

    def render_sample(self, request):
        image, _ = self.render(request.prompt, request.negative_prompt, seed=request.seed, steps=request.steps,
                               cfg_scale=request.cfg_scale, width=request.width, height=request.height)  # fmt: skip
        return image

    def render(self, prompt: str, negative: str = "", *, seed: int, steps: int, cfg_scale: float, width: int,
               height: int, sampler: str = "Euler a", scheduler: str = "Automatic"):  # fmt: skip
        """(image, infotext) with the prompt's ``<lora:…>`` tags applied; (None, "") when interrupted."""
        import re

        import torch

        from lib_lora_train.standalone.lora_apply import applied

        pipe = self._loaded().pipe
        files = self.lora_files()
        loras = []
        for name, weight in re.findall(_LORA_TAG, prompt):
            if name not in files:
                raise NoModelError(f"<lora:{name}:…>: no such LoRA in {self._lora_dir}")
            loras.append((files[name], float(weight)))
        state = self.state

        def on_step(pipeline, step, timestep, kwargs):
            if state.interrupted:
                pipeline._interrupt = True
            return kwargs

        with self.gpu_lock(), _scheduler(pipe, sampler, scheduler), applied(pipe, loras):
            generator = torch.Generator(device="cpu").manual_seed(int(seed))
            out = pipe(prompt=strip_lora_tags(prompt), negative_prompt=negative or None, num_inference_steps=steps,
                       guidance_scale=cfg_scale, width=width, height=height, generator=generator,
                       callback_on_step_end=on_step)  # fmt: skip
        if state.interrupted:
            return None, ""
        infotext = (f"{prompt}\nNegative prompt: {negative}\nSteps: {steps}, Sampler: {sampler}, Schedule type: "
                    f"{scheduler}, CFG scale: {cfg_scale}, Seed: {seed}, Size: {width}x{height}, "
                    f"Model: {self._loaded().label}")  # fmt: skip
        return out.images[0], infotext

    def sampler_choices(self) -> tuple[list[str], list[str]]:
        return list(SAMPLERS), list(SCHEDULES)


@contextlib.contextmanager
def _scheduler(pipe, sampler: str | None, schedule: str):
    """Swap the pipeline's scheduler for the sampler asked for (same noise schedule), and put the original back;
    ``sampler`` None keeps the pipeline's own."""
    if sampler is None:
        yield
        return
    from diffusers import (
        DDIMScheduler,
        DPMSolverMultistepScheduler,
        EulerAncestralDiscreteScheduler,
        EulerDiscreteScheduler,
    )

    classes = {"Euler a": EulerAncestralDiscreteScheduler, "Euler": EulerDiscreteScheduler,
               "DPM++ 2M": DPMSolverMultistepScheduler, "DDIM": DDIMScheduler}  # fmt: skip
    if sampler not in classes:
        raise NoModelError(f"sampler {sampler!r}: choose one of {', '.join(classes)}")
    original = pipe.scheduler
    extra = {"use_karras_sigmas": True} if schedule == "Karras" and sampler in ("Euler", "DPM++ 2M") else {}
    pipe.scheduler = classes[sampler].from_config(original.config, **extra)
    try:
        yield
    finally:
        pipe.scheduler = original
