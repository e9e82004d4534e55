"""The Dataset Tag Editor tab (gradio 3.41, as in the WebUI v1.10.x).

Register it with ``script_callbacks.on_ui_tabs``: ``[(build_tag_editor_tab(), "Dataset Tag Editor",
"lora_train_tag_editor")]`` — the elem_id gives the tab the DOM id ``tab_lora_train_tag_editor`` that
``javascript/tag_editor.js`` scopes its keyboard shortcuts to.

Images outside the WebUI folder: the gallery is given the paths of cached JPEG thumbnails; gradio 3.41's Gallery
copies each into its own temp folder and serves it from there (``make_temp_copy_if_needed``), which its
``/file=`` route allows wherever the dataset lives. The full-size view is a ``gr.Image`` given the image path,
which gradio sends inline as base64. So no file of the user's is exposed through ``/file=``; the optional API
route (``mount_tag_editor_api``) serves only images of the open dataset.
"""

from __future__ import annotations

import gradio as gr

from lib_lora_train.tag_editor.suggestions import DEFAULT_META_TAGS
from lib_lora_train.ui.tag_editor import handlers as h
from lib_lora_train.ui.tag_editor import tools as t
from lib_lora_train.ui.tag_editor.api import mount_tag_editor_api  # noqa: F401  (re-exported for scripts/)
from lib_lora_train.ui.tag_editor.handlers import current_dataset_folder  # noqa: F401  (for the Train Tools tab)

SCOPES = ["filtered images", "selected images", "all images"]
P = "lora_train_tag_editor"  # elem_id prefix


def build_tag_editor_tab() -> gr.Blocks:
    """Build the tab; every handler works on the single ``tag_editor_handlers.SESSION``."""
    with gr.Blocks(analytics_enabled=False) as tab:
        with gr.Row():
            folder = gr.Textbox(label="Dataset folder", placeholder="/path/to/dataset", scale=4, elem_id=f"{P}_folder")
            with gr.Column(min_width=160):
                recursive = gr.Checkbox(value=True, label="Include sub-folders")
                discard = gr.Checkbox(value=False, label="Discard unsaved edits")
            extension = gr.Textbox(value=".txt", label="Caption extension", max_lines=1, scale=1)
            load_button = gr.Button("Load", variant="primary", elem_id=f"{P}_load")
            with gr.Column(min_width=200):
                backup = gr.Checkbox(value=True, label="Keep .bak of previous captions")
                overwrite = gr.Checkbox(value=False, label="Overwrite captions changed on disk")
            save_button = gr.Button("Save changed captions", variant="primary", elem_id=f"{P}_save")
        status = gr.Markdown(elem_id=f"{P}_status")
        tags_json = gr.Textbox(value=h.initial_tags_json, visible=False, elem_id=f"{P}_tags_json")

        with gr.Row():
            with gr.Column(scale=1):
                include = gr.Textbox(label="Include tags (comma-separated)", elem_id=f"{P}_include")
                include_mode = gr.Radio(["AND", "OR"], value="AND", label="Include mode")
                exclude = gr.Textbox(label="Exclude tags", elem_id=f"{P}_exclude")
                exclude_mode = gr.Radio(["OR", "AND"], value="OR", label="Exclude images with (OR: any, AND: all)")
                search = gr.Textbox(label="Search captions", elem_id=f"{P}_search")
                with gr.Row():
                    regex = gr.Checkbox(label="Regex")
                    without_caption = gr.Checkbox(label="Only images without caption")
                with gr.Row():
                    filter_button = gr.Button("Filter", variant="primary", elem_id=f"{P}_filter")
                    clear_button = gr.Button("Clear filter")
                tag_table = gr.Dataframe(
                    headers=["tag", "images"],
                    datatype=["str", "number"],
                    interactive=False,
                    label="Tags (click to filter)",
                )
            with gr.Column(scale=2):
                gallery = gr.Gallery(label="Images", columns=6, height=620, allow_preview=False, elem_id=f"{P}_gallery")
                with gr.Row():
                    prev_page = gr.Button("◀ Page")
                    page = gr.Number(value=1, precision=0, label="Page")
                    next_page = gr.Button("Page ▶")
                page_label = gr.Markdown()
                with gr.Row():
                    toggle_mode = gr.Checkbox(label="Click selects / deselects", value=False)
                    select_all = gr.Button("Select all shown")
                    invert = gr.Button("Invert selection")
                    clear_selection = gr.Button("Clear selection")
                scope = gr.Radio(SCOPES, value=SCOPES[0], label="Batch edits and tools apply to")

        view_outputs = [gallery, page, page_label, tag_table, tags_json, status]
        with gr.Tabs():
            with gr.Tab("Image"), gr.Row():
                image = gr.Image(label="Full size", type="filepath", interactive=False, height=640)
                with gr.Column():
                    image_path = gr.Markdown()
                    caption = gr.Textbox(label="Caption", lines=6, elem_id=f"{P}_caption")
                    with gr.Row():
                        prev_image = gr.Button("◀ Previous", elem_id=f"{P}_prev")
                        apply_caption = gr.Button("Apply caption", variant="primary", elem_id=f"{P}_apply_caption")
                        next_image = gr.Button("Next ▶", elem_id=f"{P}_next")
                    quick_add = gr.Textbox(label="Add tag (Enter)", max_lines=1, elem_id=f"{P}_quick_add")
                    quick_remove = gr.Textbox(label="Remove tag (Enter)", max_lines=1, elem_id=f"{P}_quick_remove")
                    trash = gr.Button("Move image + caption to trash", variant="stop", elem_id=f"{P}_trash")
                    gr.Markdown(
                        "Keys (in this tab): **Alt+→ / Alt+←** next / previous image, **Alt+A** add a tag, "
                        "**Alt+R** remove a tag, **Alt+Z / Alt+Y** undo / redo, **Alt+S** save."
                    )
            with gr.Tab("Batch edit"):
                with gr.Row():
                    undo = gr.Button("Undo", elem_id=f"{P}_undo")
                    redo = gr.Button("Redo", elem_id=f"{P}_redo")
                with gr.Row():
                    add_text = gr.Textbox(label="Add tags", scale=3)
                    add_position = gr.Radio(["front", "end"], value="front", label="Where")
                    add_keep = gr.Number(value=0, precision=0, label="After the first N tags")
                    add_button = gr.Button("Add")
                with gr.Row():
                    remove_text = gr.Textbox(label="Remove tags", scale=3)
                    remove_button = gr.Button("Remove")
                with gr.Row():
                    replace_old = gr.Textbox(label="Replace tag")
                    replace_new = gr.Textbox(label="with (one or more tags)")
                    replace_button = gr.Button("Replace")
                with gr.Row():
                    merge_sources = gr.Textbox(label="Merge synonyms")
                    merge_target = gr.Textbox(label="into")
                    merge_button = gr.Button("Merge")
                with gr.Row():
                    # not "Regex": the WebUI keys saved defaults (ui-config.json) by tab and label, and the filter's
                    # "Regex" checkbox would give this box the text "False"
                    regex_pattern = gr.Textbox(label="Regex pattern")
                    regex_repl = gr.Textbox(label="Replacement (\\1 for groups)")
                    regex_whole = gr.Checkbox(label="On the whole caption")
                    regex_button = gr.Button("Regex replace")
                with gr.Row():
                    sort_by = gr.Radio(["name", "frequency"], value="frequency", label="Sort by")
                    sort_keep = gr.Number(value=1, precision=0, label="Keep first N fixed")
                    sort_button = gr.Button("Sort")
                    truncate_count = gr.Number(value=30, precision=0, label="Keep at most N tags")
                    truncate_button = gr.Button("Truncate")
                    dedupe_button = gr.Button("Remove duplicates")
            with gr.Tab("Suggestions"):
                with gr.Row():
                    meta_list = gr.Textbox(value="\n".join(DEFAULT_META_TAGS), lines=8, label="Meta tags (edit freely)")
                    with gr.Column():
                        meta_find = gr.Button("Find meta tags")
                        meta_found = gr.CheckboxGroup(label="Found (uncheck to keep)")
                        meta_note = gr.Markdown()
                        meta_remove = gr.Button("Remove checked", variant="primary")
                with gr.Row():
                    with gr.Column():
                        activation = gr.Textbox(label="Activation tag (kept first)")
                        min_share = gr.Slider(0.3, 1.0, value=0.6, step=0.05, label="In at least this share of images")
                        traits_find = gr.Button("Suggest trait tags")
                    with gr.Column():
                        traits = gr.CheckboxGroup(label="Check the character's fixed traits to prune")
                        traits_note = gr.Markdown()
                        traits_prune = gr.Button("Remove checked, put activation tag first", variant="primary")
                with gr.Row():
                    synonyms_find = gr.Button("Suggest synonyms")
                    synonym_group = gr.Dropdown(label="Group")
                    synonym_target = gr.Textbox(label="Merge into")
                    synonym_merge = gr.Button("Merge group", variant="primary")
                synonyms_note = gr.Markdown()
            with gr.Tab("Image fixes"):
                with gr.Row():
                    transparent_find = gr.Button("Find transparent images")
                    transparent_fix = gr.Button("Flatten them onto white", variant="primary")
                transparent_note = gr.Markdown()
                transparent_gallery = gr.Gallery(columns=8, height=200, allow_preview=False)
                with gr.Row():
                    aspect_limit = gr.Number(value=3.0, label="Flag aspect ratios beyond N:1")
                    wide_find = gr.Button("Find extreme aspect ratios")
                    wide_pick = gr.Dropdown(label="Image to crop")
                wide_note = gr.Markdown()
                wide_gallery = gr.Gallery(columns=8, height=200, allow_preview=False)
                with gr.Row():
                    crop_image = gr.Image(label="Image", type="filepath", interactive=False, height=320)
                    with gr.Column():
                        crop_size = gr.Markdown()
                        crop_left = gr.Number(precision=0, label="Left")
                        crop_top = gr.Number(precision=0, label="Top")
                        crop_right = gr.Number(precision=0, label="Right")
                        crop_bottom = gr.Number(precision=0, label="Bottom")
                        crop_button = gr.Button("Crop (original kept)", variant="primary")
                with gr.Row():
                    dup_method = gr.Radio(["phash", "dhash"], value="phash", label="Hash")
                    dup_distance = gr.Slider(0, 16, value=6, step=1, label="Max differing bits of 64")
                    dup_find = gr.Button("Find near-duplicates")
                dup_note = gr.Markdown()
                dup_gallery = gr.Gallery(columns=6, height=400, allow_preview=False, label="Click one to open it")

        editor_outputs = [image, image_path, caption]
        full = editor_outputs + view_outputs
        filter_inputs = [include, include_mode, exclude, exclude_mode, search, regex, without_caption]

        # counts and tags first, then the first page's thumbnails (made now, cached for next time)
        load_button.click(h.load, [folder, recursive, extension, discard], full).then(
            h.thumbnails_after_load, [page], view_outputs[:-1]
        )
        save_button.click(h.save, [backup, overwrite], view_outputs)
        filter_button.click(h.apply_filter, filter_inputs, view_outputs)
        for box in (include, exclude, search):
            box.submit(h.apply_filter, filter_inputs, view_outputs)
        clear_button.click(lambda: ("", "", ""), None, [include, exclude, search]).then(
            h.apply_filter, filter_inputs, view_outputs
        )
        tag_table.select(h.tag_clicked, [include], [include]).then(h.apply_filter, filter_inputs, view_outputs)
        page.submit(h.go_to_page, [page], view_outputs)
        prev_page.click(lambda p: h.step_page(p, -1), [page], view_outputs)
        next_page.click(lambda p: h.step_page(p, 1), [page], view_outputs)
        gallery.select(h.gallery_click, [toggle_mode], full)
        select_all.click(lambda: h.selection("all"), None, view_outputs)
        invert.click(lambda: h.selection("invert"), None, view_outputs)
        clear_selection.click(lambda: h.selection("clear"), None, view_outputs)

        prev_image.click(lambda: h.step_image(-1), None, full)
        next_image.click(lambda: h.step_image(1), None, full)
        apply_caption.click(h.edit_caption, [caption], full)
        quick_add.submit(h.quick_add, [quick_add], [quick_add, *full])
        quick_remove.submit(h.quick_remove, [quick_remove], [quick_remove, *full])
        trash.click(h.trash_current, None, full)

        undo.click(h.undo, None, full)
        redo.click(h.redo, None, full)
        add_button.click(h.add_tags, [scope, add_text, add_position, add_keep], full)
        remove_button.click(h.remove_tags, [scope, remove_text], full)
        replace_button.click(h.replace_tag, [scope, replace_old, replace_new], full)
        merge_button.click(h.merge_tags, [scope, merge_sources, merge_target], full)
        regex_button.click(h.regex_replace, [scope, regex_pattern, regex_repl, regex_whole], full)
        sort_button.click(h.sort_tags, [scope, sort_by, sort_keep], full)
        truncate_button.click(h.truncate, [scope, truncate_count], full)
        dedupe_button.click(h.remove_duplicates, [scope], full)

        meta_find.click(t.find_meta, [meta_list], [meta_found, meta_note])
        meta_remove.click(t.remove_checked, [scope, meta_found], full)
        traits_find.click(t.find_traits, [scope, activation, min_share], [traits, traits_note])
        traits_prune.click(t.remove_checked, [scope, traits, activation], full)
        synonyms_find.click(t.find_synonyms, None, [synonym_group, synonym_target, synonyms_note])
        synonym_group.change(t.synonym_target, [synonym_group], [synonym_target])
        synonym_merge.click(t.merge_group, [scope, synonym_group, synonym_target], full)

        transparent_find.click(t.find_transparent, [scope], [transparent_gallery, transparent_note])
        transparent_fix.click(t.flatten_found, None, [transparent_gallery, *full])
        wide_find.click(t.find_wide, [scope, aspect_limit], [wide_pick, wide_gallery, wide_note])
        wide_pick.change(
            t.pick_wide,
            [wide_pick, aspect_limit],
            [crop_left, crop_top, crop_right, crop_bottom, crop_image, crop_size],
        )
        crop_button.click(t.crop_current, [crop_left, crop_top, crop_right, crop_bottom], full)
        dup_find.click(t.find_duplicates, [scope, dup_method, dup_distance], [dup_gallery, dup_note])
        dup_gallery.select(t.duplicate_clicked, None, full)
    return tab
