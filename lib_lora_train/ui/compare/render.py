"""Epoch Compare on whatever hosts the tabs: cells rendered by the host's own sampler on its loaded model, grids
composed as the host draws its own, progress and Interrupt through the host's state, all under the GPU lock so that
no generation interleaves.

The epochs must be reachable by name in ``<lora:NAME:W>``: the LoRA list is re-read first, and checkpoints it does not
list are published into the LoRA folder (as the Train Tools settings say; a hard link when publishing is off, since
the comparison cannot run without it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from lib_lora_train.compare.plan import CellJob, ComparePlan, GridJob, PlanError
from lib_lora_train.compare.run import CompareResult
from lib_lora_train.compare.service import CompareRequest, Scorer, compare_version
from lib_lora_train.ui import services
from lib_lora_train.ui.runtime import current

log = logging.getLogger(__name__)


def project_store():
    """The project store the Train Tools tab uses."""
    return services.store()


def lora_dir() -> Path:
    """The host's LoRA folder."""
    return current().lora_dir()


def find_scorer() -> tuple[Scorer | None, str]:
    """A tagger already on disk for scoring, and a line saying which (or why none)."""
    from lib_lora_train.compare.tagger_bridge import local_tagger_folder, tagger_functions
    from lib_lora_train.ui.tagger.settings import get_tagger_service

    service = get_tagger_service()
    models_dir, preferred = service.config.models_dir, service.config.default_model
    found = local_tagger_folder(models_dir, preferred)
    if found is None:
        return None, f"no tagger model in {models_dir}: scores skipped (download one in the Tagger tab)"
    try:
        tagger = service.load(found[0])
    except Exception as exc:  # a broken model must not stop the comparison itself
        return None, f"tagger {found[0]} could not be loaded ({exc}): scores skipped"
    tag_images, vocabulary = tagger_functions(tagger)
    return Scorer(tag_images, vocabulary, found[0]), f"scored with tagger {found[0]}"


# --- the LoRA list -------------------------------------------------------------------------------------------


def available_lora_names() -> set[str] | None:
    """Names the host's LoRA list knows after a refresh; None when the host cannot apply LoRAs."""
    runtime = current()
    runtime.refresh_lora_list()
    return runtime.available_lora_names()


def ensure_reachable(plan: ComparePlan, grids: Sequence[GridJob]) -> list[str]:
    """Publish the plan's checkpoints the LoRA list lacks, refresh it, and fail naming any still missing."""
    from lib_lora_train.publish import publish_checkpoints

    names = available_lora_names()
    if names is None:
        raise PlanError("epochs", "this host cannot apply LoRAs (in the WebUI: enable the built-in Lora extension)")
    missing = [e for e in plan.epochs if e.lora_name not in names and e.path is not None]
    notes = []
    if missing:
        mode, subfolder = services.publish_settings(for_compare=True)
        result = publish_checkpoints([e.path for e in missing], lora_dir(), subfolder=subfolder, mode=mode)
        notes += [
            f"published {len(result.published)} checkpoint(s) into {lora_dir() / subfolder} ({mode})"
        ] + result.notes
        names = available_lora_names() or set()
    still = [e.lora_name for e in plan.epochs if e.lora_name not in names]
    if still:
        raise PlanError("epochs", f"the LoRA list does not show {still}; check the LoRA folder {lora_dir()}")
    return notes


# --- rendering -----------------------------------------------------------------------------------------------


def interrupt() -> None:
    """The tab's Interrupt button: the same flag as the host's own (the current cell stops, the run ends)."""
    current().state.interrupt()


def run_comparison(
    request: CompareRequest, progress: Callable[[int, int, CellJob], None] | None = None
) -> tuple[ComparePlan, CompareResult]:
    """The whole comparison for the tab and the API, holding the host's GPU lock."""
    runtime = current()
    if runtime.model_arch() is None:
        raise PlanError("model", "no checkpoint is loaded; load one first")
    version = project_store().version(request.project, request.version)
    scorer, scorer_note = find_scorer() if request.score else (None, "")
    state = runtime.state
    with runtime.gpu_lock():
        state.begin(job="epoch_compare")
        try:

            def report(done: int, total: int, cell: CellJob) -> None:
                state.job_count = total
                state.job_no = done
                state.textinfo = (
                    f"Epoch Compare: image {min(done + 1, total)} of {total} ({cell.epoch.label}, {cell.column_label})"
                )
                if progress is not None:
                    progress(done, total, cell)

            plan, result = compare_version(
                request,
                version,
                runtime.render_cell,
                compose=runtime.compose_grid,
                should_stop=lambda: bool(state.interrupted),
                progress=report,
                scorer=scorer,
                before_render=ensure_reachable,
            )
        finally:
            state.end()
    if scorer_note:
        result.notes.append(scorer_note)
    return plan, result
