"""The live objects that the tabs and the HTTP routes of one process share: the project store at the configured
folder, the one training job runner, and publishing finished epochs into the host's LoRA folder.

All of it reaches the host through ``ui.runtime.current()``, so the same objects serve the WebUI and the standalone
app.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from lib_lora_train.publish import publish_checkpoints, unpublish
from lib_lora_train.store import ProjectStore
from lib_lora_train.store.versions import CHECKPOINT_SUFFIX, PARTIAL_SUFFIX
from lib_lora_train.ui import options
from lib_lora_train.ui.runtime import current
from lib_lora_train.ui.train.jobs import JobRunner

log = logging.getLogger(__name__)
_runner: JobRunner | None = None
_runner_lock = threading.Lock()


def output_root() -> Path:
    """Where projects live: the setting, or the host's own folder (the WebUI's ``<data>/outputs/train_tools``)."""
    configured = str(current().option(options.OUTPUT_DIR) or "").strip()
    return Path(configured).expanduser() if configured else current().projects_dir()


def store() -> ProjectStore:
    """The project store at the folder the settings name (read each time: the user may change it)."""
    return ProjectStore(output_root())


def publish_settings(*, for_compare: bool = False) -> tuple[str, str]:
    """(mode, sub-folder) for publishing epochs; a comparison needs them visible, so "off" becomes "hardlink"."""
    mode = str(current().option(options.PUBLISH_MODE) or "hardlink")
    subfolder = str(current().option(options.PUBLISH_SUBFOLDER) or "")
    return ("hardlink" if for_compare and mode == "off" else mode), subfolder


def publish(version, checkpoints: list[Path]) -> tuple[list[Path], list[str]]:
    """Publish a finished job's checkpoints as the settings say, and let the host's LoRA list see them (a stopped
    run's partial file stays in the version: it is no epoch, and the LoRA list should not offer it as one)."""
    checkpoints = [c for c in checkpoints if not c.name.endswith(PARTIAL_SUFFIX + CHECKPOINT_SUFFIX)]
    mode, subfolder = publish_settings()
    result = publish_checkpoints(checkpoints, current().lora_dir(), subfolder=subfolder, mode=mode)
    _refresh_lora_list()
    return result.published, result.notes


def unpublish_version(version) -> list[Path]:
    """Remove a version's published epochs from the LoRA folder (before it goes to the trash)."""
    names = [path.name for _, path in version.list_checkpoints()]
    removed = unpublish(names, current().lora_dir(), subfolder=publish_settings()[1])
    if removed:
        _refresh_lora_list()
    return removed


def _refresh_lora_list() -> None:
    try:
        current().refresh_lora_list()
    except Exception as exc:  # a damaged file elsewhere in the LoRA folder must not fail the job
        log.warning("could not refresh the LoRA list: %s", exc)


def _make_host(stop_event: threading.Event, listener, task_id: str | None):
    return current().make_training_host(stop_event, listener, task_id)


def jobs() -> JobRunner:
    """The process-wide job runner (created on first use)."""
    global _runner
    with _runner_lock:
        if _runner is None:
            _runner = JobRunner(make_host=_make_host, store_factory=store, after_done=publish,
                                waiting=lambda: current().queue_wait_message(), before_clear=unpublish_version,
                                loaded_model=lambda: current().loaded_checkpoint(),
                                switch_model=lambda name: current().switch_checkpoint(name),
                                compare=compare_after_run)  # fmt: skip
        return _runner


def compare_request_for(job, paths):
    """The Epoch Compare inputs a finished job's grid is rendered with: its sample prompts (or, without any, the
    activation tag guessed from the captions), sample steps, resolution and seed; every epoch at the default weights."""
    from lib_lora_train.compare.service import CompareRequest, guess_activation_tag
    from lib_lora_train.train.saving import sample_requests

    s = job.settings
    samples = sample_requests(s)
    prompts = [r.prompt for r in samples]
    if not prompts:
        tag = guess_activation_tag(paths.dataset)
        prompts = [f"{tag}, solo" if tag else "solo"]
    return CompareRequest(
        project=job.project,
        version=job.version,
        prompts=prompts,
        negative_prompt=samples[0].negative_prompt if samples else "",
        seeds=str(s.seed),
        steps=s.sample_steps,
        width=s.resolution,
        height=s.resolution,
    )


def compare_after_run(job, paths):
    """Render the grid once training has let go of the GPU (``run_comparison`` takes the lock itself)."""
    from lib_lora_train.ui.compare.render import run_comparison

    _, result = run_comparison(compare_request_for(job, paths))
    return result.grids, result.notes


def check_can_train() -> None:
    """ValueError with the host's reason when it cannot train at all (before a version folder is made)."""
    reason = current().training_unavailable()
    if reason:
        raise ValueError(reason)


def resolve_base_model(name: str | None) -> str:
    """The checkpoint a job asks to train on, as the host names it ("" = the loaded one); ValueError if unknown."""
    name = (name or "").strip()
    if not name:
        return ""
    runtime = current()
    if not runtime.checkpoint_choices():
        raise ValueError("this host trains on the loaded model only; load the model first and leave base model empty")
    found = runtime.find_checkpoint(name)
    if found is None:
        raise ValueError(f"base model {name!r} is not one of the host's checkpoints; refresh the list or pick another")
    return found


def host_fingerprint(live: bool = False) -> dict:
    return current().host_fingerprint(live=live)


def stop_jobs(timeout: float = 60) -> None:
    """On a UI reload or shutdown: a training thread must not go on holding the model."""
    if _runner is not None and _runner.is_running():
        _runner.stop()
        _runner.wait(timeout)
