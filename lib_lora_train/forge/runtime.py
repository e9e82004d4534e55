"""The tabs' runtime inside Stable Diffusion WebUI Forge (tested at dfdcbab): Forge keeps the A1111 ``modules`` API
for settings (``shared.opts``), folders, the GPU queue (``call_queue``), progress (``shared.state``,
``/internal/progress``) and the "Send to" buttons, so those hooks read like the A1111 runtime's; the model and
training go through ``forge.host_adapter`` and ``forge.model_parts``. Imports of ``modules`` stay inside methods."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from lib_lora_train.ui.options import OPTIONS
from lib_lora_train.ui.runtime import NoModelError, UIRuntime

# The WebUI's (and Forge's) progressbar.js helpers: a task id for the job and the host's own progress bar.
_PROGRESS_JS = """
function() {{
    var args = Array.from(arguments);
    if (typeof randomId === 'function' && typeof requestProgress === 'function') {{
        args[0] = randomId();
        requestProgress(args[0], gradioApp().getElementById('{target}'), null, function() {{}});
    }}
    return args;
}}
"""


class ForgeRuntime(UIRuntime):
    name = "forge"

    def __init__(self) -> None:  # no state of its own: everything lives in Forge
        pass

    @property
    def state(self):
        from modules import shared

        return shared.state

    def option(self, key: str) -> Any:
        from modules import shared

        if key in shared.opts.data_labels:
            value = getattr(shared.opts, key, None)
            if value is not None:
                return value
        return OPTIONS[key].default

    def data_dir(self) -> Path:
        from modules import paths_internal

        return Path(paths_internal.data_path)

    def models_dir(self) -> Path:
        from modules import paths

        return Path(paths.models_path)

    def cache_dir(self) -> Path:
        return Path(os.environ.get("SD_WEBUI_CACHE_DIR") or self.data_dir() / "cache")

    def lora_dir(self) -> Path:
        from modules import shared

        return Path(getattr(shared.cmd_opts, "lora_dir", None) or self.models_dir() / "Lora")

    def gpu_lock(self):
        from modules import call_queue

        return call_queue.queue_lock

    def wrap_gpu_call(self, fn, extra_outputs=None):
        from modules import call_queue

        return call_queue.wrap_gradio_gpu_call(fn, extra_outputs=list(extra_outputs or []))

    def wrap_queued_call(self, fn):
        from modules import call_queue

        return call_queue.wrap_queued_call(fn)

    def progress_js(self, target_elem_id: str) -> str:
        return _PROGRESS_JS.format(target=target_elem_id)

    def queue_wait_message(self) -> str:
        from backend import memory_management

        device = memory_management.get_torch_device()
        return f"queued: waiting for Forge's queue (a generation in progress finishes first); trains on {device}"

    def queue_task(self, task_id: str) -> None:
        from modules import progress

        progress.add_task_to_queue(task_id)

    # --- the model

    def model_arch(self) -> str | None:
        from modules import shared

        model = shared.sd_model
        if getattr(model, "forge_objects", None) is None:
            return None
        if getattr(model, "is_sdxl", False):
            return "sdxl"
        return "sd2" if getattr(model, "is_sd2", False) else "sd1"

    def checkpoint_choices(self) -> list[str]:
        from modules import sd_models

        return list(sd_models.checkpoint_tiles())

    def loaded_checkpoint(self) -> str:
        from modules import shared

        info = getattr(shared.sd_model, "sd_checkpoint_info", None)
        return info.title if info is not None else ""

    def find_checkpoint(self, name: str) -> str | None:
        from modules import sd_models

        info = sd_models.get_closet_checkpoint_match(name)
        return info.title if info is not None else None

    def switch_checkpoint(self, name: str) -> str:
        # Forge loads lazily from its own choice (modules_forge.main_entry); switching under a job is not wired yet
        raise NoModelError("in Forge, pick the checkpoint in Forge's own checkpoint list; leave base model empty")

    def make_training_host(self, stop_event, listener, task_id):
        from lib_lora_train.forge.host_adapter import ForgeHost, live_forge

        return ForgeHost(live_forge(), stop_event=stop_event, listener=listener, task_id=task_id)

    def host_fingerprint(self, live: bool = False) -> dict:
        """Under the GPU lock, so that no generation interleaves; a merged LoRA counts as the weights it replaced
        (Forge's ``lora_loader`` backups) unless ``live``."""
        from modules import call_queue, shared

        from lib_lora_train.forge import lora_patches
        from lib_lora_train.forge.model_parts import UnsupportedModel, layout, parts_to_fingerprint
        from lib_lora_train.hosts.model_state import fingerprint

        with call_queue.queue_lock:
            try:
                found = layout(shared.sd_model)
            except UnsupportedModel as exc:
                raise NoModelError(str(exc)) from exc
            originals = {}
            if not live:
                originals = {
                    **lora_patches.originals_by_id(found.kmodel),
                    **lora_patches.originals_by_id(found.text_root),
                }
            return fingerprint(parts_to_fingerprint(shared.sd_model), live=live, originals=originals)

    # --- LoRA list

    def refresh_lora_list(self) -> None:
        networks = _networks_module()
        if networks is not None:
            networks.list_available_networks()

    def available_lora_names(self) -> set[str] | None:
        networks = _networks_module()
        return None if networks is None else set(networks.available_networks)

    def sampler_choices(self) -> tuple[list[str], list[str]]:
        try:
            from modules import sd_samplers, sd_schedulers

            return list(sd_samplers.visible_sampler_names()), [s.label for s in sd_schedulers.schedulers]
        except (ImportError, AttributeError):
            return super().sampler_choices()

    # --- the page

    def send_targets(self) -> list[str]:
        return ["txt2img", "img2img"]

    def send_buttons(self, tabnames):
        from modules import infotext_utils

        return infotext_utils.create_buttons(list(tabnames))

    def bind_send_button(self, button, tabname, text_component, image_component=None) -> None:
        from modules import infotext_utils as paste

        paste.register_paste_params_button(
            paste.ParamBinding(paste_button=button, tabname=tabname, source_text_component=text_component,
                               source_image_component=image_component)
        )  # fmt: skip

    def decode_api_image(self, data: str):
        from modules.api.api import decode_base64_to_image

        return decode_base64_to_image(data)

    def other_tagger_apis(self) -> list[str]:
        from modules import extensions

        from lib_lora_train.tagger.other_taggers import other_tagger_extensions

        own = Path(__file__).resolve().parents[2]
        return other_tagger_extensions(((e.name, e.path) for e in extensions.active()), own)


def _networks_module():
    """Forge's built-in LoRA extension (``extensions-builtin/sd_forge_lora``) imports its module as ``networks``."""
    module = sys.modules.get("networks")
    return module if module is not None and hasattr(module, "list_available_networks") else None
