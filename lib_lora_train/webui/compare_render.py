"""Epoch Compare inside the WebUI: cells rendered by its own ``process_images`` on the loaded model, grids drawn with
its ``image_grid`` + ``draw_grid_annotations``, progress and Interrupt through ``shared.state``, all under the GPU
queue lock so that no txt2img interleaves.

The epochs must be reachable by name in ``<lora:NAME:W>``: the LoRA list is re-read first, and checkpoints it does not
list are published into the LoRA folder (as the Train Tools settings say; a hard link when publishing is off, since
the comparison cannot run without it). The WebUI specifics (the sibling modules that read the extension's settings)
are looked up in one place each, with a fallback to the WebUI's defaults.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image

from lib_lora_train.compare.plan import CellJob, ComparePlan, GridJob, PlanError
from lib_lora_train.compare.run import CompareResult, RenderedCell
from lib_lora_train.compare.service import CompareRequest, Scorer, compare_version

log = logging.getLogger(__name__)


# --- where things are (the extension's settings when present, else the WebUI's defaults) ----------------------


def project_store():
    """The project store the Train Tools tab uses."""
    try:
        from lib_lora_train.webui.runtime import store
    except ImportError:  # the Train Tools runtime is not in this build
        from modules import paths_internal

        from lib_lora_train.store import ProjectStore

        return ProjectStore(Path(paths_internal.data_path) / "outputs" / "train_tools")
    return store()


def lora_dir() -> Path:
    """The WebUI's LoRA folder (``--lora-dir``)."""
    from modules import paths, shared

    return Path(getattr(shared.cmd_opts, "lora_dir", None) or Path(paths.models_path) / "Lora")


def publish_settings() -> tuple[str, str]:
    """(mode, subfolder) for publishing epochs; a comparison needs them visible, so "off" becomes "hardlink"."""
    try:
        from lib_lora_train.webui import settings as ext

        mode, subfolder = ext.option(ext.PUBLISH_MODE), ext.option(ext.PUBLISH_SUBFOLDER)
    except (ImportError, AttributeError):
        mode, subfolder = "hardlink", "train_tools"
    return ("hardlink" if mode == "off" else mode), subfolder


def find_scorer() -> tuple[Scorer | None, str]:
    """A tagger already on disk for scoring, and a line saying which (or why none)."""
    from lib_lora_train.compare.tagger_bridge import local_tagger_folder, tagger_functions

    try:
        from lib_lora_train.webui.tagger_settings import get_tagger_service

        service = get_tagger_service()
        models_dir, preferred = service.config.models_dir, service.config.default_model
        load = service.load
    except ImportError:  # the Tagger tab is not in this build: read the WebUI's default tagger folder
        from modules import paths

        from lib_lora_train.tagger.runtime import LoadedTagger

        models_dir, preferred = str(Path(paths.models_path) / "tagger"), ""

        def load(name):
            return LoadedTagger(name, Path(models_dir) / name, use_gpu=False)

    found = local_tagger_folder(models_dir, preferred)
    if found is None:
        return None, f"no tagger model in {models_dir}: scores skipped (download one in the Tagger tab)"
    try:
        tagger = load(found[0])
    except Exception as exc:  # a broken model must not stop the comparison itself
        return None, f"tagger {found[0]} could not be loaded ({exc}): scores skipped"
    tag_images, vocabulary = tagger_functions(tagger)
    return Scorer(tag_images, vocabulary, found[0]), f"scored with tagger {found[0]}"


# --- the LoRA list -------------------------------------------------------------------------------------------


def networks_module():
    """The built-in Lora extension's ``networks`` module (the WebUI imports it under that name)."""
    module = sys.modules.get("networks")
    return module if module is not None and hasattr(module, "list_available_networks") else None


def available_lora_names() -> set[str] | None:
    """Names the LoRA list knows after a refresh; None when the built-in Lora extension is disabled."""
    networks = networks_module()
    if networks is None:
        return None
    networks.list_available_networks()
    # file stems only: aliases (ss_output_name) are shared by every epoch of a version and resolve to none of them
    return set(networks.available_networks)


def ensure_reachable(plan: ComparePlan, grids: Sequence[GridJob]) -> list[str]:
    """Publish the plan's checkpoints the LoRA list lacks, refresh it, and fail naming any still missing."""
    from lib_lora_train.publish import publish_checkpoints

    names = available_lora_names()
    if names is None:
        raise PlanError("epochs", "the built-in Lora extension is disabled; enable it in Extensions to compare epochs")
    missing = [e for e in plan.epochs if e.lora_name not in names and e.path is not None]
    notes = []
    if missing:
        mode, subfolder = publish_settings()
        result = publish_checkpoints([e.path for e in missing], lora_dir(), subfolder=subfolder, mode=mode)
        notes += [
            f"published {len(result.published)} checkpoint(s) into {lora_dir() / subfolder} ({mode})"
        ] + result.notes
        names = available_lora_names() or set()
    still = [e.lora_name for e in plan.epochs if e.lora_name not in names]
    if still:
        raise PlanError("epochs", f"the WebUI's LoRA list does not show {still}; check the LoRA folder {lora_dir()}")
    return notes


# --- rendering -----------------------------------------------------------------------------------------------


def render_cell(plan: ComparePlan, cell: CellJob) -> RenderedCell | None:
    """One cell through ``process_images``; None when interrupted or when the WebUI returned no image."""
    from modules import processing, shared

    p = processing.StableDiffusionProcessingTxt2Img(
        sd_model=shared.sd_model,
        prompt=cell.prompt,
        negative_prompt=cell.negative_prompt,
        seed=cell.seed,
        subseed=-1,
        subseed_strength=0,
        sampler_name=plan.sampler,
        scheduler=plan.scheduler,
        steps=plan.steps,
        cfg_scale=plan.cfg_scale,
        width=plan.width,
        height=plan.height,
        batch_size=1,
        n_iter=1,
        do_not_save_samples=True,
        do_not_save_grid=True,
    )
    try:
        processed = processing.process_images(p)
    finally:
        p.close()
    if shared.state.interrupted or not processed.images:
        return None  # an interrupted render is half-denoised noise: not a cell to keep
    return RenderedCell(
        processed.images[0], with_full_prompt(processed.infotexts[0] if processed.infotexts else "", cell.prompt)
    )


def with_full_prompt(infotext: str, prompt: str) -> str:
    """Put the ``<lora:…>`` tag back into the infotext's prompt.

    Without ``p.scripts`` (v1.10.1 ``process_images_inner``) the WebUI writes the prompt with the extra-network tags
    already stripped; the cell's PNG info must carry the full prompt so that "send to txt2img" reproduces it.
    """
    from modules import extra_networks

    stripped, _ = extra_networks.parse_prompt(prompt)
    return prompt + infotext[len(stripped) :] if infotext.startswith(stripped) else infotext


def compose_with_webui(
    images: Sequence[Sequence[Image.Image | None]], row_labels: Sequence[str], col_labels: Sequence[str]
) -> Image.Image:
    """The grid as the WebUI draws its own: ``image_grid`` and ``draw_grid_annotations`` (missing cells dark)."""
    from modules import images as webui_images

    from lib_lora_train.compare.grid import MISSING_CELL, cell_size_of

    w, h = cell_size_of(images, (512, 512))
    flat = [im if im is not None else Image.new("RGB", (w, h), MISSING_CELL) for row in images for im in row]
    grid = webui_images.image_grid(flat, rows=len(row_labels))
    hor = [[webui_images.GridAnnotation(text)] for text in col_labels]
    ver = [[webui_images.GridAnnotation(text)] for text in row_labels]
    return webui_images.draw_grid_annotations(grid, w, h, hor, ver)


def interrupt() -> None:
    """The tab's Interrupt button: the same flag as the WebUI's own (the current cell stops, the run ends)."""
    from modules import shared

    shared.state.interrupt()


def run_in_webui(
    request: CompareRequest, progress: Callable[[int, int, CellJob], None] | None = None
) -> tuple[ComparePlan, CompareResult]:
    """The whole comparison for the tab and the API, holding the WebUI's queue lock."""
    from modules import call_queue, shared

    if shared.sd_model is None:
        raise PlanError("model", "no checkpoint is loaded; choose one at the top of the WebUI first")
    version = project_store().version(request.project, request.version)
    scorer, scorer_note = find_scorer() if request.score else (None, "")
    with call_queue.queue_lock:
        shared.state.begin(job="epoch_compare")
        try:

            def report(done: int, total: int, cell: CellJob) -> None:
                shared.state.job_count = total
                shared.state.textinfo = (
                    f"Epoch Compare: image {min(done + 1, total)} of {total} ({cell.epoch.label}, {cell.column_label})"
                )
                if progress is not None:
                    progress(done, total, cell)

            plan, result = compare_version(
                request,
                version,
                render_cell,
                compose=compose_with_webui,
                should_stop=lambda: bool(shared.state.interrupted),
                progress=report,
                scorer=scorer,
                before_render=ensure_reachable,
            )
        finally:
            shared.state.end()
    if scorer_note:
        result.notes.append(scorer_note)
    return plan, result
