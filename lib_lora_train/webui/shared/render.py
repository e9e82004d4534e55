"""Images rendered by the WebUI's own txt2img on the model as it is at that moment: training previews, and Epoch
Compare's cells and grids (``process_images``, ``image_grid`` + ``draw_grid_annotations``). Nothing is saved into
the WebUI's outputs."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from lib_lora_train.compare.plan import CellJob, ComparePlan
from lib_lora_train.compare.run import RenderedCell
from lib_lora_train.host import SampleRequest


def render_txt2img(request: SampleRequest):
    """One preview image for ``request`` through ``processing.process_images``."""
    from modules import processing, shared

    p = processing.StableDiffusionProcessingTxt2Img(
        sd_model=shared.sd_model,
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        seed=request.seed,
        steps=request.steps,
        cfg_scale=request.cfg_scale,
        width=request.width,
        height=request.height,
        sampler_name="Euler",
        batch_size=1,
        n_iter=1,
        do_not_save_samples=True,
        do_not_save_grid=True,
    )
    try:
        return processing.process_images(p).images[0]
    finally:
        p.close()


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
