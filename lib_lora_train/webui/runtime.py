"""The live objects one WebUI process shares between the Train Tools tab and the API: one job runner, the project
store at the configured folder, and the functions that bind them to the running WebUI."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from lib_lora_train.publish import publish_checkpoints, unpublish
from lib_lora_train.store import ProjectStore
from lib_lora_train.webui import settings as ext_settings
from lib_lora_train.webui.jobs import JobRunner

log = logging.getLogger(__name__)
_runner: JobRunner | None = None
_runner_lock = threading.Lock()


def store() -> ProjectStore:
    """The project store at the folder the settings name (read each time: the user may change it)."""
    return ProjectStore(ext_settings.output_root())


def make_host(stop_event: threading.Event, listener, task_id: str | None):
    from lib_lora_train.webui.host_adapter import WebUIHost, live_webui

    return WebUIHost(live_webui(), stop_event=stop_event, listener=listener, task_id=task_id)


def publish(version, checkpoints: list[Path]) -> tuple[list[Path], list[str]]:
    """Publish a finished job's checkpoints as the settings say, and let the WebUI's LoRA list see them."""
    mode = ext_settings.option(ext_settings.PUBLISH_MODE)
    subfolder = ext_settings.option(ext_settings.PUBLISH_SUBFOLDER)
    result = publish_checkpoints(checkpoints, ext_settings.lora_dir(), subfolder=subfolder, mode=mode)
    refresh_lora_list()
    return result.published, result.notes


def unpublish_version(version) -> list[Path]:
    """Remove a version's published epochs from the LoRA folder (before it goes to the trash)."""
    names = [path.name for _, path in version.list_checkpoints()]
    removed = unpublish(names, ext_settings.lora_dir(), subfolder=ext_settings.option(ext_settings.PUBLISH_SUBFOLDER))
    if removed:
        refresh_lora_list()
    return removed


def refresh_lora_list() -> None:
    """Re-read the LoRA folder so that new epochs show in the Lora tab without pressing refresh."""
    from lib_lora_train.webui.lora_unmerge import builtin_networks_module

    networks = builtin_networks_module()
    if networks is not None and hasattr(networks, "list_available_networks"):
        try:
            networks.list_available_networks()
        except Exception as exc:  # a damaged file elsewhere in the LoRA folder must not fail the job
            log.warning("could not refresh the LoRA list: %s", exc)


def jobs() -> JobRunner:
    """The process-wide job runner (created on first use)."""
    global _runner
    with _runner_lock:
        if _runner is None:
            _runner = JobRunner(make_host=make_host, store_factory=store, after_done=publish)
        return _runner


def host_fingerprint(live: bool = False) -> dict:
    """Fingerprint the loaded model's UNet, text encoders and VAE, under the GPU lock so no generation interleaves."""
    from modules import call_queue, shared

    from lib_lora_train.webui.model_parts import parts_to_fingerprint
    from lib_lora_train.webui.model_state import fingerprint

    with call_queue.queue_lock:
        return fingerprint(parts_to_fingerprint(shared.sd_model), live=live)


def stop_on_unload() -> None:
    """``on_script_unloaded``: a UI reload must not leave a training thread holding the model."""
    if _runner is not None and _runner.is_running():
        _runner.stop()
        _runner.wait(60)
