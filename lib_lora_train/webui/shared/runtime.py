"""The tabs' runtime hooks that the AUTOMATIC1111 WebUI v1.10.x and WebUI Forge answer alike: Settings
(``shared.opts``), folders, GPU queue (``call_queue``), progress state (``shared.state`` and ``/internal/progress``),
the checkpoint list, the built-in Lora list, the ``process_images`` renderer, X/Y/Z axes and "Send to" buttons.
Imports of ``modules`` stay inside the methods, so this file also loads (and is tested) without a host."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from lib_lora_train.ui.options import OPTIONS
from lib_lora_train.ui.runtime import UIRuntime

log = logging.getLogger(__name__)

# Hands the job a task id and shows the WebUI's own progress bar (percent, ETA, textinfo) in ``{target}``.
# randomId/requestProgress are the WebUI's global JS helpers (progressbar.js); without them the click goes through.
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


class SharedModulesRuntime(UIRuntime):
    """The hooks both hosts answer through the ``modules`` API; the adapters add the model and training."""

    def __init__(self) -> None:  # no state of its own: everything lives in the WebUI
        pass

    @property
    def state(self):  # the WebUI's job state: the Interrupt button, textinfo and the progress bar read it
        from modules import shared

        return shared.state

    # --- settings and folders

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
        """``--lora-dir`` (added by the built-in Lora extension); models/Lora otherwise."""
        from modules import shared

        return Path(getattr(shared.cmd_opts, "lora_dir", None) or self.models_dir() / "Lora")

    # --- GPU queue and progress

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

    def queue_task(self, task_id: str) -> None:
        from modules import progress

        progress.add_task_to_queue(task_id)

    # --- the model

    def checkpoint_choices(self) -> list[str]:
        from modules import sd_models

        return list(sd_models.checkpoint_tiles())

    def loaded_checkpoint(self) -> str:
        from modules import shared

        info = getattr(shared.sd_model, "sd_checkpoint_info", None)
        return info.title if info is not None else ""

    def find_checkpoint(self, name: str) -> str | None:
        from modules import sd_models

        info = sd_models.get_closet_checkpoint_match(name)  # full title, file name or hash, as the WebUI matches
        return info.title if info is not None else None

    # --- LoRA list and rendering

    def refresh_lora_list(self) -> None:
        networks = _networks_module()
        if networks is not None:
            networks.list_available_networks()

    def available_lora_names(self) -> set[str] | None:
        networks = _networks_module()
        if networks is None:
            return None
        # file stems only: aliases (ss_output_name) are shared by every epoch of a version and resolve to none of them
        return set(networks.available_networks)

    def render_cell(self, plan, cell):
        from lib_lora_train.webui.shared.render import render_cell

        return render_cell(plan, cell)

    def render_sample(self, request):
        from modules import call_queue, shared

        from lib_lora_train.webui.shared.render import render_txt2img

        with call_queue.queue_lock:
            image = render_txt2img(request)
        return None if shared.state.interrupted else image

    def compose_grid(self, images, row_labels, col_labels):
        from lib_lora_train.webui.shared.render import compose_with_webui

        return compose_with_webui(images, row_labels, col_labels)

    def sampler_choices(self) -> tuple[list[str], list[str]]:
        try:
            from modules import sd_samplers, sd_schedulers

            return list(sd_samplers.visible_sampler_names()), [s.label for s in sd_schedulers.schedulers]
        except (ImportError, AttributeError):  # a WebUI before v1.9 has no schedulers
            return super().sampler_choices()

    def xyz_axes(self) -> list[str]:
        """The running X/Y/Z plot's axis labels (an extension may have appended some)."""
        try:
            from modules import scripts

            for script in scripts.scripts_txt2img.scripts:
                if script.title() == "X/Y/Z plot" and getattr(script, "current_axis_options", None):
                    return [option.label for option in script.current_axis_options]
        except Exception:  # scripts not loaded yet
            pass
        return super().xyz_axes()

    # --- the page

    def send_targets(self) -> list[str]:
        return ["txt2img", "img2img"]

    def send_buttons(self, tabnames):
        return _paste_module().create_buttons(list(tabnames))

    def bind_send_button(self, button, tabname, text_component, image_component=None) -> None:
        paste = _paste_module()
        paste.register_paste_params_button(
            paste.ParamBinding(paste_button=button, tabname=tabname, source_text_component=text_component,
                               source_image_component=image_component)
        )  # fmt: skip

    # --- the HTTP routes

    def decode_api_image(self, data: str):
        """The WebUI's own decoder, under its options api_enable_requests, api_forbid_local_requests and
        api_useragent; raises its HTTPException (status 500) as the WD14 tagger extension's routes do."""
        from modules.api.api import decode_base64_to_image

        return decode_base64_to_image(data)

    def other_tagger_apis(self) -> list[str]:
        from modules import extensions

        from lib_lora_train.tagger.other_taggers import other_tagger_extensions

        own = Path(__file__).resolve().parents[2]
        return other_tagger_extensions(((e.name, e.path) for e in extensions.active()), own)


def _networks_module():
    """The built-in Lora extension's ``networks`` module (the WebUI imports it under that name)."""
    module = sys.modules.get("networks")
    return module if module is not None and hasattr(module, "list_available_networks") else None


def _paste_module():
    try:
        from modules import infotext_utils as paste  # v1.8+
    except ImportError:
        from modules import generation_parameters_copypaste as paste  # before v1.8
    return paste
