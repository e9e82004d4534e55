"""The Tagger tab (gradio 3.41, as in the WebUI v1.10.x). Only wiring: the logic is ``tagger.tab_actions``.

Host pieces are imported lazily and are optional, so the tab also builds outside the WebUI (tests, other hosts):
the GPU queue lock and progress state (``modules.call_queue`` / ``modules.shared.state``), and the "Send to"
buttons (``modules.infotext_utils``, ``generation_parameters_copypaste`` before v1.8).
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
from lib_lora_train.webui.tagger_settings import get_tagger_service, read_tagger_settings

ID = "lora_train_tagger"
# Hands the job a task id and shows the WebUI's own progress bar above the summary (randomId/requestProgress
# are the WebUI's global JS helpers; without them the click goes through unchanged).
_START_JS = f"""
function() {{
    var args = Array.from(arguments);
    if (typeof randomId === 'function' && typeof requestProgress === 'function') {{
        args[0] = randomId();
        requestProgress(args[0], gradioApp().getElementById('{ID}_progress'), null, function() {{}});
    }}
    return args;
}}
"""
_COPY_JS = "(text) => { navigator.clipboard.writeText(text); return []; }"


def _host():
    """(shared, call_queue) inside the WebUI, (None, None) elsewhere."""
    try:
        from modules import call_queue, shared

        return shared, call_queue
    except ImportError:
        return None, None


def _paste_module():
    try:
        from modules import infotext_utils as paste  # v1.8+

        return paste
    except ImportError:
        pass
    try:
        from modules import generation_parameters_copypaste as paste  # before v1.8

        return paste
    except ImportError:
        return None


def build_tagger_tab() -> gr.Blocks:
    """The Tagger tab's Blocks, ready for ``script_callbacks.on_ui_tabs``."""
    service = get_tagger_service()
    settings = read_tagger_settings()
    shared, call_queue = _host()
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
        with gr.Row():
            with gr.Column():
                with gr.Tabs():
                    with gr.Tab("Single image"):
                        image = gr.Image(type="pil", source="upload", label="Image", elem_id=f"{ID}_image")
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
                    paste = _paste_module()
                    send = paste.create_buttons(["txt2img", "img2img"]) if paste and shared else {}
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
            state = shared.state if shared else None

            def progress(done, total, text):
                if state is not None:
                    state.job_count, state.job_no, state.textinfo = max(total, 1), done, text

            report = tag_folder(
                service,
                name,
                FolderForm(*values[: len(folder_inputs)]),
                TagForm(*values[len(folder_inputs) :]),
                progress=progress,
                should_stop=lambda: bool(state is not None and state.interrupted),
            )
            return report, ""

        def on_model(name):
            if not read_tagger_settings().use_model_thresholds:
                return gr.update(), gr.update()
            g, c = model_thresholds(service, name, (general.value, character.value))
            return gr.update(value=g), gr.update(value=c)

        interrogate_fn = call_queue.wrap_queued_call(on_interrogate) if call_queue else on_interrogate
        folder_fn = call_queue.wrap_gradio_gpu_call(on_folder, extra_outputs=[""]) if call_queue else on_folder
        interrogate.click(interrogate_fn, [model, image, *tag_inputs], [caption, ratings, tags, status])
        start.click(folder_fn, [id_task, model, *folder_inputs, *tag_inputs], [summary, info], _js=_START_JS)
        interrupt.click(lambda: shared.state.interrupt() if shared else None, [], [])
        unload.click(lambda: unload_models(service), [], [status])
        refresh.click(lambda: gr.update(choices=service.model_names()), [], [model])
        model.change(on_model, [model], [general, character])
        copy_button.click(None, [caption], [], _js=_COPY_JS)
        for tabname, button in send.items():
            paste.register_paste_params_button(
                paste.ParamBinding(
                    paste_button=button,
                    tabname=tabname,
                    source_text_component=caption,
                    source_image_component=image if tabname == "img2img" else None,
                )
            )
    return tab
