"""The tabs' runtime inside the AUTOMATIC1111 WebUI v1.10.x: what ``webui.shared.runtime`` shares with Forge, plus the
ldm/sgm model (architecture, fingerprint), training through ``webui.host_adapter`` and switching checkpoints with
the WebUI's own loader. Imports of ``modules`` stay inside the methods."""

from __future__ import annotations

from lib_lora_train.ui.runtime import NoModelError
from lib_lora_train.webui.shared.runtime import SharedModulesRuntime


class WebUIRuntime(SharedModulesRuntime):
    name = "webui"

    def queue_wait_message(self) -> str:
        from modules import devices

        return f"queued: waiting for the WebUI's queue (a generation in progress finishes first); trains on {devices.device}"

    def model_arch(self) -> str | None:
        from modules import shared

        model = shared.sd_model
        if model is None:
            return None
        if getattr(model, "is_sdxl", False):
            return "sdxl"
        return "sd2" if getattr(model, "is_sd2", False) else "sd1"

    def switch_checkpoint(self, name: str) -> str:
        """The WebUI's own loader swaps the weights in place (and records the choice in its settings, as picking it
        in the checkpoint dropdown does); not through the option's onchange, which would queue behind our lock."""
        from modules import sd_models

        info = sd_models.get_closet_checkpoint_match(name)
        if info is None:
            raise ValueError(f"no checkpoint {name!r} in the WebUI's list; refresh the list or pick another")
        sd_models.reload_model_weights(info=info)
        return self.loaded_checkpoint()

    def make_training_host(self, stop_event, listener, task_id):
        from lib_lora_train.webui.host_adapter import WebUIHost, live_webui

        return WebUIHost(live_webui(), stop_event=stop_event, listener=listener, task_id=task_id)

    def host_fingerprint(self, live: bool = False) -> dict:
        """Under the GPU lock, so that no generation interleaves."""
        from modules import call_queue, shared

        from lib_lora_train.hosts.model_state import fingerprint
        from lib_lora_train.webui.model_parts import parts_to_fingerprint

        if shared.sd_model is None:
            raise NoModelError("no checkpoint is loaded")
        with call_queue.queue_lock:
            return fingerprint(parts_to_fingerprint(shared.sd_model), live=live)
