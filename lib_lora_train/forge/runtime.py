"""The tabs' runtime inside Stable Diffusion WebUI Forge (tested at dfdcbab): what ``webui.shared.runtime`` shares with
the A1111 WebUI (settings, folders, queue, progress, the renderer, the LoRA list, "Send to"), plus Forge's model
(``forge_objects``), its fingerprint and training through ``forge.host_adapter``. Imports of ``modules`` and
``backend`` stay inside methods."""

from __future__ import annotations

from lib_lora_train.ui.runtime import NoModelError
from lib_lora_train.webui.shared.runtime import SharedModulesRuntime


class ForgeRuntime(SharedModulesRuntime):
    name = "forge"

    def queue_wait_message(self) -> str:
        from backend import memory_management

        device = memory_management.get_torch_device()
        return f"queued: waiting for Forge's queue (a generation in progress finishes first); trains on {device}"

    def model_arch(self) -> str | None:
        from modules import shared

        model = shared.sd_model
        if getattr(model, "forge_objects", None) is None:
            return None
        if getattr(model, "is_sdxl", False):
            return "sdxl"
        return "sd2" if getattr(model, "is_sd2", False) else "sd1"

    def switch_checkpoint(self, name: str) -> str:
        """Forge's own checkpoint change (what its checkpoint list and its options API call: the choice is recorded
        in its settings), then its loader at once: Forge otherwise loads lazily, at the next generation."""
        from modules import sd_models
        from modules_forge import main_entry

        info = sd_models.get_closet_checkpoint_match(name)
        if info is None:
            raise ValueError(f"no checkpoint {name!r} in Forge's list; refresh the list or pick another")
        from lib_lora_train.forge.model_parts import settle_text_engines

        main_entry.checkpoint_change(info.title)
        model, _ = sd_models.forge_model_reload()
        # a model Forge holds has generated at least once (it loads at the first generation): the previous model,
        # loaded back after a run, is left in that same state
        settle_text_engines(model)
        return self.loaded_checkpoint()

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
