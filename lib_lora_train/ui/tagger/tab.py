"""The Tagger tab (gradio 3.41 in the WebUI v1.10.x, 4.40 in Forge; see ui.gradio_compat). Only wiring: the logic is ``tagger.tab_actions``.

The host comes in through the runtime: the GPU queue and progress/interrupt state around a folder job, the host's
progress bar on the start button, the "Send to txt2img/img2img" buttons where the host has those tabs, and whether
another installed extension serves the tagger's HTTP routes (then a note says whose answers API clients get).
"""

from __future__ import annotations

import gradio as gr

from lib_lora_train.tagger.captions import DEFAULT_PATTERN, EXISTING_MODES
from lib_lora_train.tagger.postprocess import SORT_CHOICES
from lib_lora_train.tagger.tab_actions import (
    FolderForm,
    TagForm,
    interrogate_single,
    model_thresholds,
    tag_folder,
    unload_models,
)
from lib_lora_train.ui import gradio_compat
from lib_lora_train.ui.runtime import current
from lib_lora_train.ui.tagger.api import other_api_note
from lib_lora_train.ui.tagger.settings import get_tagger_service, read_tagger_settings

ID = "lora_train_tagger"
_COPY_JS = "(text) => { navigator.clipboard.writeText(text); return []; }"


def build_tagger_tab() -> gr.Blocks:
    """The Tagger tab's Blocks, ready for ``script_callbacks.on_ui_tabs``."""
    service = get_tagger_service()
    settings = read_tagger_settings()
    runtime = current()
    names = service.model_names()
    default = settings.config.default_model
    general0, character0 = settings.general_threshold, settings.character_threshold
    if settings.use_model_thresholds:
        general0, character0 = model_thresholds(service, default, (general0, character0))

    with gr.Blocks(analytics_enabled=False) as tab:
        with gr.Row():
            model = gr.Dropdown(
                choices=names, value=default, label="Model", allow_custom_value=True, elem_id=f"{ID}_model"
            )
            refresh = gr.Button("Refresh list", elem_id=f"{ID}_refresh")
            unload = gr.Button("Unload models", elem_id=f"{ID}_unload")
        status = gr.Textbox(label="Status", interactive=False, lines=1, elem_id=f"{ID}_status")
        api_note = other_api_note(runtime.other_tagger_apis())
        if api_note:
            gr.Markdown(f"**Tagger HTTP API:** {api_note}", elem_id=f"{ID}_api_note")
        with gr.Row():
            with gr.Column():
                with gr.Tabs():
                    with gr.Tab("Single image"):
                        image = gr.Image(type="pil", **gradio_compat.upload_only(), label="Image", elem_id=f"{ID}_image")
                        interrogate = gr.Button("Interrogate", variant="primary", elem_id=f"{ID}_interrogate")
                    with gr.Tab("Batch from folder"):
                        input_dir = gr.Textbox(label="Input folder", placeholder="/path/to/images")
                        recursive = gr.Checkbox(True, label="Include sub-folders")
                        output_dir = gr.Textbox(label="Output folder (empty: beside each image)")
                        pattern = gr.Textbox(DEFAULT_PATTERN, label="Caption file name ([name], [extension])")
                        existing = gr.Radio(list(EXISTING_MODES), value="skip", label="When a caption exists")
                        backup = gr.Checkbox(True, label="Back up changed captions (.bak)")
                        batch_size = gr.Slider(0, 128, 0, step=1, label="Batch size (0: automatic)")
                        fast_jpeg = gr.Checkbox(
                            True,
                            label="Fast JPEG decoding (big photos decoded at 1/2-1/8 scale, still 2x the model's size)",
                        )
                        id_task = gr.Textbox(visible=False)
                        with gr.Row():
                            start = gr.Button("Tag folder", variant="primary", elem_id=f"{ID}_start")
                            interrupt = gr.Button("Interrupt", elem_id=f"{ID}_interrupt")
                with gr.Accordion("Tag options", open=True):
                    with gr.Row():
                        general = gr.Slider(0, 1, general0, step=0.01, label="General threshold")
                        character = gr.Slider(0, 1, character0, step=0.01, label="Character threshold")
                    with gr.Row():
                        include_rating = gr.Checkbox(False, label="Include rating tag")
                        character_first = gr.Checkbox(False, label="Character tags first")
                        underscores = gr.Checkbox(True, label="Underscores to spaces (keeps ^_^)")
                        escape = gr.Checkbox(False, label="Escape brackets")
                    with gr.Row():
                        sort_by = gr.Radio(list(SORT_CHOICES), value="confidence", label="Sort by")
                        max_tags = gr.Number(0, precision=0, label="Maximum tags (0: no limit)")
                    additional = gr.Textbox(label="Always-first tags (comma separated)", placeholder="my_character")
                    exclude = gr.Textbox(
                        label="Exclude tags (comma separated; /regex/ for patterns)", placeholder="/.*_background/"
                    )
            with gr.Column():
                caption = gr.Textbox(label="Caption", lines=4, elem_id=f"{ID}_caption")
                with gr.Row():
                    copy_button = gr.Button("Copy", elem_id=f"{ID}_copy")
                    send = runtime.send_buttons(["txt2img", "img2img"])
                ratings = gr.Label(label="Rating", elem_id=f"{ID}_ratings")
                tags = gr.Label(label="Tags", elem_id=f"{ID}_tags")
                gr.HTML(elem_id=f"{ID}_progress")  # where the WebUI's progress bar appears
                summary = gr.Textbox(label="Folder summary", lines=14, interactive=False, elem_id=f"{ID}_summary")
                info = gr.HTML()

        tag_inputs = [general, character, include_rating, exclude, additional, character_first]
        tag_inputs += [underscores, escape, sort_by, max_tags]
        folder_inputs = [input_dir, output_dir, pattern, recursive, existing, backup, batch_size, fast_jpeg]

        def on_interrogate(name, picture, *values):
            result = interrogate_single(service, name, picture, TagForm(*values))
            return result.caption, result.ratings, result.tags, result.status

        def on_folder(task, name, *values):
            state = runtime.state

            def progress(done, total, text):
                state.job_count, state.job_no, state.textinfo = max(total, 1), done, text

            report = tag_folder(
                service,
                name,
                FolderForm(*values[: len(folder_inputs)]),
                TagForm(*values[len(folder_inputs) :]),
                progress=progress,
                should_stop=lambda: bool(state.interrupted),
            )
            return report, ""

        def on_model(name):
            if not read_tagger_settings().use_model_thresholds:
                return gr.update(), gr.update()
            g, c = model_thresholds(service, name, (general.value, character.value))
            return gr.update(value=g), gr.update(value=c)

        interrogate_fn = runtime.wrap_queued_call(on_interrogate)
        folder_fn = runtime.wrap_gpu_call(on_folder, extra_outputs=[""])
        interrogate.click(interrogate_fn, [model, image, *tag_inputs], [caption, ratings, tags, status])
        start.click(
            folder_fn,
            [id_task, model, *folder_inputs, *tag_inputs],
            [summary, info],
            **gradio_compat.js(runtime.progress_js(f"{ID}_progress")),
        )
        interrupt.click(lambda: runtime.state.interrupt(), [], [])
        unload.click(lambda: unload_models(service), [], [status])
        refresh.click(lambda: gr.update(choices=service.model_names()), [], [model])
        model.change(on_model, [model], [general, character])
        copy_button.click(None, [caption], [], **gradio_compat.js(_COPY_JS))
        for tabname, button in send.items():
            runtime.bind_send_button(button, tabname, caption, image if tabname == "img2img" else None)
    return tab
