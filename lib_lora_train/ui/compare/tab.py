"""The Epoch Compare tab: choose a version, its epochs and weights, render the grid with the host's sampler, read the scores,
hand the same comparison to the X/Y/Z plot, and pick the epoch and weight to keep.

The handlers only translate between widgets and the core (``lib_lora_train.compare``); rendering goes through
``compare_render.run_comparison`` exactly as the API does.
"""

from __future__ import annotations

import logging
from dataclasses import fields

from lib_lora_train.compare.plan import epoch_entries, expand
from lib_lora_train.compare.service import DEFAULT_WEIGHTS, CompareRequest, build_plan, guess_activation_tag
from lib_lora_train.compare.xyz import HandoffError, plan_handoffs, xyz_infotext
from lib_lora_train.ui.compare import render as compare_render
from lib_lora_train.ui.runtime import current

log = logging.getLogger(__name__)

# the inputs of CompareRequest the tab shows, in the order the handlers receive them
REQUEST_FIELDS = (
    "project", "version", "epochs", "every", "subset", "weights", "no_lora", "prompts", "negative_prompt", "seeds",
    "sampler", "scheduler", "steps", "cfg_scale", "width", "height", "score", "traits", "threshold",
)  # fmt: skip


def request_from_inputs(*values) -> CompareRequest:
    """Widget values (in ``REQUEST_FIELDS`` order) -> a CompareRequest; prompts are one per line."""
    data = dict(zip(REQUEST_FIELDS, values, strict=True))
    data["prompts"] = [line for line in str(data["prompts"] or "").splitlines() if line.strip()]
    data["every"] = int(data["every"] or 1)
    known = {f.name for f in fields(CompareRequest)}
    return CompareRequest(**{k: v for k, v in data.items() if k in known and v is not None})


def epoch_choice(label: str) -> int | None:
    """``epoch 3`` -> 3; ``final`` and ``epoch 4 (final)`` -> None (the labels of ``EpochEntry``)."""
    return None if label.endswith("final") or label.endswith("(final)") else int(label.split()[-1])


def version_summary(project: str, version: str) -> tuple[str, list[str], str]:
    """(markdown about the version's epochs and pick, epoch labels, guessed activation tag)."""
    from lib_lora_train.compare.pick import PickError, load_pick

    paths = compare_render.project_store().version(project, version)
    entries = epoch_entries(paths.list_checkpoints())
    labels = [e.label for e in entries]
    text = f"**{len(entries)} saved checkpoint(s):** " + (", ".join(labels) or "none yet — train the version first")
    try:
        pick = load_pick(paths.path)
    except PickError as exc:
        pick, text = None, text + f"\n\n{exc}"
    if pick is not None:
        text += f"\n\n**Picked:** {pick.epoch_label} at weight {pick.weight:g} ({pick.picked_at})"
    return text, labels, guess_activation_tag(paths.dataset)


def xyz_strings(request: CompareRequest) -> tuple[str, str, str, str]:
    """(weights S/R, epochs S/R, infotext for the paste button, message) for the first prompt of ``request``."""
    plan = build_plan(request, compare_render.project_store().version(request.project, request.version))
    grids = expand(plan)
    notes = compare_render.ensure_reachable(plan, grids)
    handoff = plan_handoffs(plan, grids)[0]
    message = "Prompt S/R strings ready; **Send to txt2img** fills the prompt, the settings and the X/Y/Z plot."
    if len(plan.prompts) > 1:
        message += " (X/Y/Z takes one prompt: the first is used.)"
    return handoff.x_text, handoff.y_text, xyz_infotext(plan, handoff), " ".join([message, *notes])


def _projects() -> dict[str, list[str]]:
    try:
        return {p.name: [v.name for v in p.versions] for p in compare_render.project_store().list_projects()}
    except Exception as exc:  # an unreadable projects folder must not break the whole UI
        log.warning("Epoch Compare: cannot list projects: %s", exc)
        return {}


def build_compare_tab():
    """The tab's ``gr.Blocks`` (register with ``on_ui_tabs``)."""
    import gradio as gr

    runtime = current()
    samplers, schedulers = runtime.sampler_choices()
    projects = _projects()
    with gr.Blocks(analytics_enabled=False) as tab:
        with gr.Row():
            project = gr.Dropdown(label="Project", choices=sorted(projects), elem_id="lora_compare_project")
            version = gr.Dropdown(label="Version", choices=[], elem_id="lora_compare_version")
            refresh = gr.Button("Refresh", elem_id="lora_compare_refresh")
        info = gr.Markdown()
        with gr.Row():
            epochs = gr.Radio(["all", "every", "subset"], value="all", label="Epochs")
            every = gr.Number(value=2, precision=0, label="every n-th epoch (the last is always kept)")
            subset = gr.Textbox(label="subset, e.g. 1, 3, 5-7 (0 = final)")
        with gr.Row():
            weights = gr.Textbox(DEFAULT_WEIGHTS, label="LoRA weights (list, or a range like 0.5-1.0:0.1)")
            no_lora = gr.Checkbox(True, label="no-LoRA reference column")
        prompts = gr.Textbox(lines=3, label="Prompts, one per line (the LoRA is added; keep the activation tag in)")
        negative = gr.Textbox(lines=2, label="Negative prompt")
        with gr.Row():
            seeds = gr.Textbox("-1", label="Seeds (several for a fair comparison; -1 = random)")
            sampler = gr.Dropdown(samplers, value=samplers[0] if samplers else "Euler a", label="Sampler")
            scheduler = gr.Dropdown(schedulers, value="Automatic", label="Schedule type")
        with gr.Row():
            steps = gr.Slider(1, 150, value=20, step=1, label="Steps")
            cfg = gr.Slider(1.0, 30.0, value=7.0, step=0.5, label="CFG scale")
            width = gr.Slider(64, 2048, value=512, step=8, label="Width")
            height = gr.Slider(64, 2048, value=512, step=8, label="Height")
        with gr.Accordion("Automatic scoring (tagger)", open=False):
            score = gr.Checkbox(True, label="Score fidelity and flexibility with a tagger model on disk")
            traits = gr.Textbox(label="Trait tags (empty = what the tagger sees in most dataset images)")
            threshold = gr.Slider(0.05, 0.95, value=0.35, step=0.01, label="Tag threshold")
        with gr.Row():
            generate = gr.Button("Generate", variant="primary", elem_id="lora_compare_generate")
            interrupt = gr.Button("Interrupt", elem_id="lora_compare_interrupt")
        status = gr.Markdown()
        with gr.Row():
            gallery = gr.Gallery(label="Grids", columns=1, height="auto", elem_id="lora_compare_gallery")
            chart = gr.Image(label="Scores (F = fidelity, X = flexibility)", type="filepath", interactive=False)
        with gr.Accordion("X/Y/Z plot", open=True):
            with gr.Row():
                x_sr = gr.Textbox(label="X: Prompt S/R (weights)", interactive=False, show_copy_button=True)
                y_sr = gr.Textbox(label="Y: Prompt S/R (epochs)", interactive=False, show_copy_button=True)
            infotext = gr.Textbox(visible=False)
            with gr.Row():
                make_xyz = gr.Button("Make X/Y/Z strings")
                send = gr.Button("Send to txt2img with X/Y/Z plot", elem_id="lora_compare_send_xyz",
                                 visible="txt2img" in runtime.send_targets())  # fmt: skip
        with gr.Accordion("Pick", open=True):
            with gr.Row():
                pick_epoch = gr.Dropdown(label="Chosen epoch", choices=[])
                pick_weight = gr.Number(value=0.8, label="Chosen weight")
                activation = gr.Textbox(label="Activation text for the LoRA card")
            with gr.Row():
                record = gr.Button("Record pick")
                publish = gr.Button("Record and publish as <project>-<version>")
            pick_status = gr.Markdown()

        inputs = [project, version, epochs, every, subset, weights, no_lora, prompts, negative, seeds,
                  sampler, scheduler, steps, cfg, width, height, score, traits, threshold]  # fmt: skip

        def on_refresh(selected):
            fresh = _projects()
            return gr.update(choices=sorted(fresh), value=selected if selected in fresh else None)

        def on_project(name):
            names = _projects().get(name or "", [])
            return gr.update(choices=names, value=names[-1] if names else None)

        def on_version(project_name, version_name, current_prompts):
            if not project_name or not version_name:
                return "", gr.update(choices=[]), gr.update(), gr.update()
            try:
                text, labels, tag = version_summary(project_name, version_name)
            except ValueError as exc:
                return str(exc), gr.update(choices=[]), gr.update(), gr.update()
            prompt = current_prompts if (current_prompts or "").strip() or not tag else f"{tag}, solo, smile, outdoors"
            return text, gr.update(choices=labels, value=labels[-1] if labels else None), prompt, tag

        def on_generate(*values, progress=gr.Progress()):
            try:
                request = request_from_inputs(*values)

                def report(done, total, cell):
                    progress(done / max(total, 1), desc=f"{done}/{total}: {cell.epoch.label}, {cell.column_label}")

                plan, result = compare_render.run_comparison(request, progress=report)
            except ValueError as exc:  # PlanError, StoreError: the message names the field and the fix
                return [], None, f"**Cannot compare:** {exc}", "", "", "", gr.update(), gr.update()
            lines = [f"Saved in `{result.folder}`" + (" — **interrupted**, partial grid" if result.interrupted else "")]
            best = result.scores.best if result.scores else None
            if best is not None:
                lines.append(
                    f"**Best trade-off:** {best.row_label}, {best.col_label} (fidelity {best.fidelity}, flexibility {best.flexibility})"
                )
            lines += [f"- {n}" for n in result.notes]
            x_text = result.handoffs[0]["x_values"] if result.handoffs else ""
            y_text = result.handoffs[0]["y_values"] if result.handoffs else ""
            paste = result.handoffs[0]["infotext"] if result.handoffs else ""
            labels = [e.label for e in plan.epochs]
            weight = plan.column_weights[best.col] if best is not None else None
            return (
                [str(p) for p in result.grids],
                str(result.score_chart) if result.score_chart else None,
                "\n\n".join(lines),
                x_text,
                y_text,
                paste,
                gr.update(choices=labels, value=best.row_label if best is not None else labels[-1]),
                gr.update(value=weight) if weight is not None else gr.update(),
            )

        def on_make_xyz(*values):
            try:
                return xyz_strings(request_from_inputs(*values))
            except (ValueError, HandoffError) as exc:
                return "", "", "", f"**Cannot make X/Y/Z strings:** {exc}"

        def on_pick(do_publish, project_name, version_name, label, weight, activation_text):
            from lib_lora_train.compare.pick import PickError, pick_version

            if not (project_name and version_name and label):
                return "Choose a project, a version and an epoch first."
            try:
                version_paths = compare_render.project_store().version(project_name, version_name)
                target = compare_render.lora_dir() if do_publish else None
                pick, path, published = pick_version(
                    version_paths, epoch_choice(label), float(weight), lora_dir=target, activation_text=activation_text
                )
            except (PickError, ValueError) as exc:
                return f"**Cannot record the pick:** {exc}"
            text = f"Recorded {pick.epoch_label} at weight {pick.weight:g} in `{path}`."
            if published is not None:
                compare_render.available_lora_names()  # refresh the LoRA list so the card appears
                text += f" Published `{published.model}` with its card metadata `{published.sidecar.name}`."
                text += "".join(f"\n\n**Note:** {n}" for n in published.notes)
            return text

        refresh.click(on_refresh, inputs=[project], outputs=[project])
        # versions trained since the page loaded appear as soon as the list is opened, without pressing Refresh
        project.focus(on_refresh, inputs=[project], outputs=[project])
        project.change(on_project, inputs=[project], outputs=[version])
        version.change(on_version, inputs=[project, version, prompts], outputs=[info, pick_epoch, prompts, activation])
        generate.click(on_generate, inputs=inputs,
                       outputs=[gallery, chart, status, x_sr, y_sr, infotext, pick_epoch, pick_weight])  # fmt: skip
        interrupt.click(fn=lambda: compare_render.interrupt(), inputs=None, outputs=None)
        make_xyz.click(on_make_xyz, inputs=inputs, outputs=[x_sr, y_sr, infotext, status])
        pick_inputs = [project, version, pick_epoch, pick_weight, activation]
        record.click(lambda *v: on_pick(False, *v), inputs=pick_inputs, outputs=[pick_status])
        publish.click(lambda *v: on_pick(True, *v), inputs=pick_inputs, outputs=[pick_status])
        if "txt2img" in runtime.send_targets():  # elsewhere the strings above still work by copy and paste
            runtime.bind_send_button(send, "txt2img", infotext)
    return tab
