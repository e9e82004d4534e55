"""The Train Tools tab: projects and versions, dataset and repeats, a live step calculator, presets, every engine
option (advanced ones folded), Start/Stop with progress, loss chart, samples, run log and the finished checkpoints.

Layout only; what the buttons do is in ``train_tab_actions`` (tested without gradio).
"""

from __future__ import annotations

import time

import gradio as gr

from lib_lora_train.settings import TrainSettings
from lib_lora_train.train.plan import PRESETS, preset_settings
from lib_lora_train.ui import gradio_compat, options, services
from lib_lora_train.ui.runtime import current
from lib_lora_train.ui.train import actions as act

P = "lora_train_tools"
LOADED = "(the loaded model)"  # the Base model dropdown's first entry: train on what the host has loaded
POLL_S = 1.0


def _component(name: str, value):
    kind = act.FIELD_TYPES[name]
    label = name.replace("_", " ")
    if name in act.CHOICES:
        return gr.Dropdown(choices=list(act.CHOICES[name]), value=value, label=label, elem_id=f"{P}_{name}")
    if kind == "bool":
        return gr.Checkbox(value=value, label=label, elem_id=f"{P}_{name}")
    if kind.startswith("list"):
        return gr.Textbox(value="\n".join(value), label=f"{label} (one per line)", lines=3, elem_id=f"{P}_{name}")
    if kind in ("int", "float"):
        return gr.Number(value=value, label=label, precision=0 if kind == "int" else None, elem_id=f"{P}_{name}")
    return gr.Textbox(value=value, label=label, max_lines=1, elem_id=f"{P}_{name}")


def _projects():
    return [p.name for p in services.store().list_projects()]


def _versions(project):
    if not project:
        return []
    return [v.name for p in services.store().list_projects() if p.name == project for v in p.versions]


def _arch() -> str:
    return current().model_arch() or "sd1"


def _tag_editor_folder() -> str:
    try:
        from lib_lora_train.ui.tag_editor.tab import current_dataset_folder
    except ImportError:
        return ""
    return current_dataset_folder() or ""


ADVANCED_PER_ROW = 3


def build_train_tab() -> gr.Blocks:
    """Build the tab (called inside the Blocks that the WebUI shows as "Train Tools")."""
    store = services.store
    defaults = preset_settings(str(current().option(options.DEFAULT_PRESET) or "character"))
    with gr.Blocks(analytics_enabled=False) as tab:
        with gr.Row():
            project = gr.Dropdown(choices=_projects(), label="Project", allow_custom_value=True, elem_id=f"{P}_project")
            version = gr.Dropdown(choices=[], label="Version", allow_custom_value=True, elem_id=f"{P}_version")
            new_name = gr.Textbox(label="New version / clone name", max_lines=1, elem_id=f"{P}_new_name")
        with gr.Row():
            refresh = gr.Button("Refresh")
            create = gr.Button("New version")
            clone = gr.Button("Clone version")
            delete = gr.Button("Delete version (to trash)", variant="stop")
        store_msg = gr.Markdown()
        with gr.Row():
            folder = gr.Textbox(label="Dataset folder (images + captions; N_name sub-folders give repeats)", scale=4,
                                elem_id=f"{P}_dataset")  # fmt: skip
            from_editor = gr.Button("Use the Tag Editor's folder")
            scan = gr.Button("Scan")
        repeats = gr.Dataframe(headers=["folder", "images", "repeats"], datatype=["str", "number", "number"],
                               row_count=(1, "dynamic"), col_count=(3, "fixed"), label="Repeats per sub-folder",
                               interactive=True, elem_id=f"{P}_repeats")  # fmt: skip
        calculator = gr.Markdown(elem_id=f"{P}_steps")
        with gr.Row():
            preset = gr.Dropdown(choices=list(PRESETS), value=current().option(options.DEFAULT_PRESET),
                                 label="Preset")  # fmt: skip
            apply_preset = gr.Button("Apply preset")
        values = dict(zip(act.FIELD_NAMES, act.values_from_settings(defaults), strict=True))
        fields: dict[str, gr.components.Component] = {}
        with gr.Row():
            for name in act.BASIC:
                fields[name] = _component(name, values[name])
        with gr.Accordion("Advanced", open=False, elem_id=f"{P}_advanced"):
            for title, names in act.advanced_groups().items():
                with gr.Accordion(title, open=False):
                    # three fields to a row: one per row made the open form several screens long
                    for start in range(0, len(names), ADVANCED_PER_ROW):
                        with gr.Row():
                            for name in names[start : start + ADVANCED_PER_ROW]:
                                fields[name] = _component(name, values[name])
        inputs = [fields[n] for n in act.FIELD_NAMES]
        checkpoints_here = current().checkpoint_choices()
        with gr.Row(visible=bool(checkpoints_here)):
            base_model = gr.Dropdown(choices=[LOADED, *checkpoints_here], value=LOADED, label="Base model to train on",
                                     elem_id=f"{P}_base_model", scale=3)  # fmt: skip
            refresh_models = gr.Button("Refresh models")
            restore_model = gr.Checkbox(value=True, label="Load the previous model back afterwards",
                                        elem_id=f"{P}_restore_model")  # fmt: skip
        with gr.Row():
            compare_after = gr.Checkbox(value=False, label="Render an Epoch Compare grid when the run ends",
                                        elem_id=f"{P}_compare_after")  # fmt: skip
        with gr.Row():
            start = gr.Button("Start training", variant="primary", elem_id=f"{P}_start")
            stop = gr.Button("Stop", elem_id=f"{P}_stop")
            watch = gr.Button("Show progress")
        status = gr.Markdown(elem_id=f"{P}_status")
        task_id = gr.Textbox(visible=False, elem_id=f"{P}_task_id")
        with gr.Row():
            loss_plot = gr.LinePlot(x="step", y="loss", title="Loss", **gradio_compat.plot_size(500, 250),
                                    elem_id=f"{P}_loss")
            samples = gr.Gallery(label="Samples (and the Epoch Compare grid)", columns=4, height=250, elem_id=f"{P}_samples")
        run_log = gr.Textbox(label="Run log", lines=6, max_lines=12, interactive=False, elem_id=f"{P}_log")
        checkpoints = gr.Dataframe(headers=["file", "epoch", "steps", "rank/alpha", "network", "use in txt2img"],
                                   interactive=False, label="Checkpoints", elem_id=f"{P}_checkpoints")  # fmt: skip
        from lib_lora_train.ui.train.bootstrap_panel import build_bootstrap_panel

        build_bootstrap_panel(project)

        def refresh_lists(selected):
            return gr.update(choices=_projects()), gr.update(choices=_versions(selected))

        def store_action(kind, proj, ver, new):
            try:
                if kind == "create":
                    store().create_version(proj, new or ver)
                    ver, msg = new or ver, f"Created {proj}/{new or ver}."
                elif kind == "clone":
                    store().clone_version(proj, ver, new)
                    ver, msg = new, f"Cloned {proj}/{ver} (settings and dataset, no checkpoints)."
                else:
                    removed = services.unpublish_version(store().version(proj, ver))
                    where = store().delete_version(proj, ver)
                    ver, msg = None, f"Moved to the trash: {where} (and {len(removed)} published epochs removed)"
            except (ValueError, OSError) as exc:
                msg = f"{exc}"
            return gr.update(choices=_projects(), value=proj), gr.update(choices=_versions(proj), value=ver), msg

        def load_version(proj, ver):
            if not proj or not ver or not services.store().has_version(proj, ver):
                return [gr.update()] * len(inputs) + [act.checkpoint_rows(services.store(), proj, ver)]
            paths = services.store().version(proj, ver)
            loaded = paths.load_settings() if paths.config.is_file() else defaults
            return act.values_from_settings(loaded) + [act.checkpoint_rows(services.store(), proj, ver)]

        def do_scan(path, default_repeats):
            try:
                return act.scan_folders(path, int(default_repeats or 1))
            except (OSError, ValueError) as exc:
                return [[f"{exc}", 0, 1]]

        def do_preset(name, *values):
            try:
                base = act.settings_from_values(list(values))
            except ValueError:
                base = TrainSettings()
            return act.values_from_settings(preset_settings(name, base, arch=_arch()))

        def progress_view():
            state = services.jobs().status()
            import pandas as pd

            frame = pd.DataFrame(state.losses, columns=["step", "loss"])
            return act.status_markdown(state), frame, state.samples + state.grids, "\n".join(state.log[-200:])

        def do_start(task, proj, ver, path, rows, base, restore, compare, *values):  # *current would hide current()
            try:
                services.check_can_train()
                settings = act.settings_from_values(list(values))
                base = services.resolve_base_model("" if base in (None, LOADED) else base)
            except ValueError as exc:
                yield f"Not started: {exc}", gr.update(), gr.update(), gr.update(), gr.update()
                return
            rows = act.table_rows(rows)
            task = task or None
            if task:
                current().queue_task(task)  # the host's progress bar shows "queued" until the GPU is free
            started, message = act.start_job(services.jobs(), services.store(), proj, ver, path, rows, settings,
                                             task_id=task, base_model=base, restore_model=bool(restore),
                                             compare_after=bool(compare))  # fmt: skip
            yield (message, gr.update(), gr.update(), gr.update(), gr.update())
            if started:  # a refusal stays on screen; the status of another job must not replace it
                yield from watch_job(proj, ver)

        def watch_job(proj, ver):
            while True:
                running = services.jobs().is_running()
                yield (*progress_view(), act.checkpoint_rows(services.store(), proj, ver))
                if not running:
                    return
                time.sleep(POLL_S)

        refresh.click(refresh_lists, [project], [project, version])
        # projects made elsewhere (the API, another browser tab) appear when the list is opened
        project.focus(lambda: gr.update(choices=_projects()), [], [project])
        project.change(lambda p: gr.update(choices=_versions(p)), [project], [version])
        version.change(load_version, [project, version], [*inputs, checkpoints])
        for kind, button in (("create", create), ("clone", clone), ("delete", delete)):
            button.click(lambda p, v, n, k=kind: store_action(k, p, v, n), [project, version, new_name],
                         [project, version, store_msg])  # fmt: skip
        from_editor.click(_tag_editor_folder, [], [folder])
        scan.click(do_scan, [folder, fields["default_repeats"]], [repeats])
        calc_inputs = [repeats, fields["batch_size"], fields["epochs"], fields["grad_accum"], fields["max_steps"],
                       fields["reg_data_dir"]]  # fmt: skip
        for component in calc_inputs:
            component.change(act.step_summary, calc_inputs, [calculator])
        apply_preset.click(do_preset, [preset, *inputs], inputs)
        outputs = [status, loss_plot, samples, run_log, checkpoints]
        start.click(
            do_start,
            [task_id, project, version, folder, repeats, base_model, restore_model, compare_after, *inputs],
            outputs,
            **gradio_compat.js(current().progress_js(f"{P}_status")),
            **gradio_compat.no_concurrency_limit(),
        )
        stop.click(lambda: act.status_markdown(services.jobs().stop()), [], [status])
        refresh_models.click(lambda: gr.update(choices=[LOADED, *current().checkpoint_choices()]), [], [base_model])
        watch.click(watch_job, [project, version], outputs, **gradio_compat.no_concurrency_limit())
    return tab
