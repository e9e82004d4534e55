"""The Bootstrap panel of the Train Tools tab: the guides' loop from a few images (or one, cut into crops) to a
character LoRA, round by round, with the candidates of each round ranked and kept or rejected by the user (or
automatically). Layout and wiring only: the loop is ``bootstrap.loop``, its host side ``bootstrap_runner``."""

from __future__ import annotations

import time

import gradio as gr

from lib_lora_train.bootstrap.crops import CropError
from lib_lora_train.bootstrap.loop import LoopError
from lib_lora_train.bootstrap.prompts import DEFAULT_VIEWS, parse_views
from lib_lora_train.bootstrap.selection import auto_select, needed, parse_targets
from lib_lora_train.settings import SettingsError
from lib_lora_train.store import StoreError
from lib_lora_train.ui import gradio_compat
from lib_lora_train.ui.train.bootstrap_runner import StartRequest, bootstrap_runner

P = "lora_train_bootstrap"
POLL_S = 1.0
ERRORS = (LoopError, CropError, SettingsError, StoreError, ValueError, OSError)


def status_markdown(status: dict) -> str:
    if not status.get("version"):
        return "No bootstrap loop in this project yet: fill in the start images and press **Start the loop**."
    lines = [f"**{status['project']}/{status['version']}** · round {status['round']} of {len(status['targets']) + 1}"
             f" · {status['phase']}" + (" · running" if status["running"] else "")]  # fmt: skip
    job = status.get("training")
    if job:
        lines.append(f"training: step {job['step']}/{job['total']}, epoch {job['epoch']}/{job['total_epochs']}")
    if status["phase"] == "select" and not status["running"]:
        lines.append("Keep the candidates that show your character, then press **Keep and go on**.")
    if status["phase"] == "done":
        lines.append("Done: the last version is the character LoRA (pick its epoch in Epoch Compare).")
    if status.get("error"):
        lines.append(f"**Stopped by an error:** {status['error']}")
    lines += [f"- {m}" for m in status.get("messages", [])[-6:]]
    return "\n\n".join(lines[:3]) + ("\n\n" + "\n".join(lines[3:]) if lines[3:] else "")


def candidate_view(project: str):
    """(gallery items, keep choices, pre-checked names) for the current round."""
    try:
        data = bootstrap_runner().candidates(project)
    except ERRORS:
        return [], [], []
    folder = data["folder"]
    items = [(f"{folder}/{c['file']}", f"{c['score']:.2f} · " + ", ".join(c["reasons"])) for c in data["candidates"]]
    names = [c["file"] for c in data["candidates"]]
    checked = data["kept"]
    if not checked and data["candidates"]:
        from lib_lora_train.bootstrap.loop import current_version, dataset_size
        from lib_lora_train.bootstrap.rounds import read_state
        from lib_lora_train.bootstrap.scoring import CandidateScore
        from lib_lora_train.ui import services

        version = current_version(services.store(), project)
        state = read_state(version)
        target = state.targets[min(state.round, len(state.targets)) - 1]
        scores = [CandidateScore.from_dict(c) for c in data["candidates"]]
        checked = [s.file for s in auto_select(scores, needed(target, dataset_size(version)))]
    return items, names, checked


def build_bootstrap_panel(project_box) -> None:
    """Inside the Train Tools tab; ``project_box`` is the tab's project dropdown (the loop's project)."""
    runner = bootstrap_runner()
    with gr.Accordion("Bootstrap: from a few images to a character LoRA", open=False, elem_id=f"{P}_panel"):
        gr.Markdown("Cut one picture into 4 crops (or start from 2-8 images), train a weak LoRA on them, generate "
                    "the views they lack with it, keep the good ones, retrain — 4 → 16 → 40 images — and train the "
                    "character LoRA on the last set. Each round is a new version of the project above.")  # fmt: skip
        with gr.Row():
            images = gr.Textbox(label="Start images: a folder of 2-8 images, or one image", elem_id=f"{P}_images")
            crop = gr.Checkbox(True, label="Cut one image into 4 crops", elem_id=f"{P}_crop")
        boxes = gr.Textbox(label="Crop boxes (optional; one 'left, top, right, bottom' per line, default quadrants)",
                           lines=2, elem_id=f"{P}_boxes")  # fmt: skip
        with gr.Row():
            activation = gr.Textbox(label="Activation tag", elem_id=f"{P}_activation")
            traits = gr.Textbox(label="Trait tags (what the character always has)", elem_id=f"{P}_traits",
                                placeholder="fox ears, fox tail, blonde hair")  # fmt: skip
        with gr.Row():
            targets = gr.Textbox("16, 40", label="Grow to (images, one round each)", elem_id=f"{P}_targets")
            seeds = gr.Number(2, precision=0, label="Seeds per view", elem_id=f"{P}_seeds")
            auto = gr.Checkbox(False, label="Select automatically (no review between rounds)", elem_id=f"{P}_auto")
        views = gr.Textbox("\n".join(DEFAULT_VIEWS), label="Views to generate (one per line)", lines=4,
                           elem_id=f"{P}_views")  # fmt: skip
        with gr.Row():
            start = gr.Button("Start the loop", variant="primary", elem_id=f"{P}_start")
            resume = gr.Button("Continue", elem_id=f"{P}_continue")
            stop = gr.Button("Stop", elem_id=f"{P}_stop")
            refresh = gr.Button("Refresh", elem_id=f"{P}_refresh")
        status = gr.Markdown(elem_id=f"{P}_status")
        gallery = gr.Gallery(label="Candidates of this round, best first", columns=6, height="auto",
                             elem_id=f"{P}_gallery")  # fmt: skip
        keep = gr.CheckboxGroup(label="Keep", choices=[], elem_id=f"{P}_keep")
        go_on = gr.Button("Keep and go on", variant="primary", elem_id=f"{P}_go_on")

        def view(project):
            items, names, checked = candidate_view(project or "")
            return status_markdown(runner.status(project or "")), items, gr.update(choices=names, value=checked)

        def watch(project):
            while True:
                running = runner.is_running()
                yield view(project)
                if not running:
                    return
                time.sleep(POLL_S)

        def on_start(project, folder, do_crop, box_text, tag, trait_text, target_text, seed_count, is_auto, view_text):
            try:
                if not project:
                    raise LoopError("pick or type a project name at the top of the tab first")
                if not (tag or "").strip():
                    raise LoopError("give the activation tag (a rare word, e.g. alicechan)")
                request = StartRequest(project, str(folder or ""), tag.strip(),
                                       [t.strip() for t in (trait_text or "").split(",") if t.strip()],
                                       parse_targets(target_text or ""), parse_views(view_text or ""),
                                       int(seed_count or 1), bool(do_crop), box_text or "", bool(is_auto))  # fmt: skip
                runner.start(request)
            except ERRORS as exc:
                yield f"**Not started:** {exc}", gr.update(), gr.update()
                return
            yield from watch(project)

        def on_resume(project):
            try:
                runner.resume(project or "")
            except ERRORS as exc:
                yield f"**Cannot continue:** {exc}", gr.update(), gr.update()
                return
            yield from watch(project)

        def on_keep(project, kept):
            try:
                runner.select(project or "", list(kept or []))
            except ERRORS as exc:
                yield f"**Not kept:** {exc}", gr.update(), gr.update()
                return
            yield from watch(project)

        outputs = [status, gallery, keep]
        streams = gradio_compat.no_concurrency_limit()  # each watches the loop for as long as it runs
        start.click(on_start, [project_box, images, crop, boxes, activation, traits, targets, seeds, auto, views],
                    outputs, **streams)  # fmt: skip
        resume.click(on_resume, [project_box], outputs, **streams)
        go_on.click(on_keep, [project_box, keep], outputs, **streams)
        stop.click(lambda p: (runner.stop(), status_markdown(runner.status(p or "")))[1], [project_box], [status])
        refresh.click(view, [project_box], outputs)
