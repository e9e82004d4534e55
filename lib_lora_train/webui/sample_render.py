"""Preview images during training, rendered by the WebUI's own txt2img with the model as it is at that moment."""

from __future__ import annotations

from lib_lora_train.host import SampleRequest


def render_txt2img(request: SampleRequest):
    """One image for ``request`` through ``processing.process_images``; nothing is saved to the WebUI's outputs."""
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
