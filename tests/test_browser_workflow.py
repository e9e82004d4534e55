"""The whole workflow in a real browser, by clicks and typing only, on the standalone app (always), inside a real
WebUI v1.10.x (with LORA_TRAIN_TOOLS_WEBUI set) and inside a real Forge, gradio 4 (with LORA_TRAIN_TOOLS_FORGE set): tag a folder with the probe tagger, edit the captions in the Dataset
Tag Editor (filter, activation tag, meta tags, undo/redo, keyboard shortcuts, save), train a tiny LoRA in Train Tools
(scan, preset, Start/Stop/Start, progress, loss chart, samples, checkpoints), compare its epochs (grid, scores,
X/Y/Z strings, pick and publish), and the errors a user meets. Every step asserts on what the page shows and on the
files on disk, and leaves a full-page screenshot (the folder is printed; a copy goes to /tmp/browser_shots/<host>/).

The tests share one app, one page and one dataset per host and run in workflow order; a later step skips when the
step it builds on did not get far enough.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from browser_app import (
    PROBE_TAGGER,
    SLOW_MS,
    Browser,
    Gradio,
    copy_shots,
    gradio_page,
    skip_module_without_browser,
    start_standalone,
    start_webui,
)
from PIL import Image
from tagger_graphs import TAGS, expected_probs

pytestmark = [pytest.mark.browser, pytest.mark.slow]
skip_module_without_browser()

PROJECT, VERSION, ACTIVATION = "alice", "v1", "alicechan"
META = ("highres", "absurdres")
GENERAL, CHARACTER = 0.35, 0.85  # what the Tagger tab sets for a model without recommended thresholds
COLOURS = {"red1": (220, 20, 20), "red2": (200, 30, 30), "red3": (230, 40, 40), "red4": (190, 10, 10),
           "blue1": (20, 20, 220)}  # fmt: skip
OWN_CAPTIONS = {"red1": "alice, highres", "blue1": "alice, absurdres, highres"}
REPEATS = 2
TINY = dict(resolution=64, rank=4, alpha=4, batch_size=1, save_every=1, sample_every=1, sample_steps=2,
            min_bucket_side=64, max_bucket_side=128, unet_lr=0.01, te_lr=0.001, seed=7)  # fmt: skip
NO_TRACE = re.compile(r"Traceback|File \"/")

TE = "lora_train_tag_editor"
TT = "lora_train_tools"


def probe_tags(rgb: tuple[int, int, int]) -> set[str]:
    """The caption tags the probe tagger gives a solid image (the Tagger tab's defaults: underscores to spaces)."""
    probs = expected_probs((rgb[2] / 255, rgb[1] / 255, rgb[0] / 255))
    chosen = set()
    for (name, category, _, _), p in zip(TAGS, probs, strict=True):
        if (category == 0 and p >= GENERAL) or (category == 4 and p >= CHARACTER):
            chosen.add(name if name == "^_^" else name.replace("_", " "))
    return chosen


def tags_of(path: Path) -> list[str]:
    return [t.strip() for t in path.read_text(encoding="utf-8").split(",") if t.strip()]


# --- fixtures ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    chromium = Browser.launch()
    yield chromium
    chromium.close()


HOSTS = ["standalone", pytest.param("webui", marks=pytest.mark.webui), pytest.param("forge", marks=pytest.mark.webui)]


@pytest.fixture(scope="module", params=HOSTS)
def host(request, tmp_path_factory):
    if request.param in ("webui", "forge"):
        if request.param == "forge":
            from forge_server import skip_reason
        else:
            from webui_server import skip_reason

        reason = skip_reason()
        if reason:
            print(f"\n{request.param} host skipped: {reason}")
            pytest.skip(reason)
        app = start_webui(tmp_path_factory.mktemp(f"browser-{request.param}"), forge=request.param == "forge")
    else:
        # a tagger folder not named "tagger": the app must use --models-dir as given
        workdir = tmp_path_factory.mktemp("browser-standalone")
        app = start_standalone(workdir, models_dir=workdir / "tagger-models")
    yield app
    app.stop()


@pytest.fixture(scope="module")
def ui(browser, host, tmp_path_factory):
    shots = tmp_path_factory.mktemp(f"shots-{host.name}")
    print(f"\n[{host.name}] screenshots: {shots}  (copied to /tmp/browser_shots/{host.name}/ at the end)")
    pages = gradio_page(browser, host, shots)
    page = next(pages)
    page.open()
    try:
        yield page
    finally:
        try:
            page.shot("last")
        finally:
            target = copy_shots(shots, host.name)
            print(f"\n[{host.name}] screenshots: {shots} -> {target}")
            pages.close()


@pytest.fixture(scope="module")
def flow(host, tmp_path_factory) -> dict:
    """What the steps hand on: the dataset folder, and how far the workflow got."""
    root = tmp_path_factory.mktemp(f"dataset-{host.name}")
    images = root / f"{REPEATS}_alice"
    images.mkdir()
    for name, colour in COLOURS.items():
        Image.new("RGB", (64, 64), colour).save(images / f"{name}.png")
    for name, text in OWN_CAPTIONS.items():
        (images / f"{name}.txt").write_text(text, encoding="utf-8")
    return {"root": root, "images": images}


def version_dir(host, version: str = VERSION) -> Path:
    return host.outputs / PROJECT / "versions" / version


@pytest.fixture(autouse=True)
def error_baseline(ui, request):
    """What already showed an error when the test began: each test answers only for the errors it caused. A test
    that fails leaves a screenshot of the page as it was then."""
    ui.baseline = (set(ui.error_toasts()), set(ui.error_badges()))
    failed = request.session.testsfailed
    yield
    if request.session.testsfailed > failed:  # the call's report is counted before the teardown runs
        ui.shot(f"FAILED-{request.node.name}")


def new_page_errors(ui: Gradio) -> list[str]:
    toasts, badges = ui.baseline
    return [f"Error toast: {t}" for t in ui.error_toasts() if t not in toasts] + [
        f"Error badge (a handler raised): {b}" for b in ui.error_badges() if b not in badges
    ]


def brief(items: list[str], most: int = 8) -> str:
    shown = "; ".join(items[:most])
    return shown + (f"; … and {len(items) - most} more" if len(items) > most else "")


def no_page_errors(ui: Gradio) -> None:
    errors = new_page_errors(ui)
    assert not errors, f"the page shows {len(errors)} error(s): {brief(errors)}"


# --- the page ----------------------------------------------------------------------------------------------------


def test_page_loads_without_errors(ui, host):
    ui.wait_idle()
    for elem_id in ("lora_train_tagger", "lora_train_tag_editor", "lora_train_tools", "lora_train_compare"):
        panel = ui.tab(elem_id)
        assert panel.is_visible()
        # only the open tab's content is shown (each panel holds its own tab's controls only)
        assert ui.page.locator(f"#tab_{elem_id}").locator("[id^=lora_train_], [id^=lora_compare_]").count() > 0
        ui.shot(f"open-{elem_id}")
    assert ui.page.locator("#lora_train_tagger_model").is_hidden(), "the Tagger's controls show on another tab"
    if host.has_model_picker:
        panel = ui.tab("lora_train_settings")
        ui.shot("open-settings")
        ui.click(panel, "Apply settings")
        ui.wait_text(ui.markdown("lora_train_standalone_settings_status"), r"Saved to")
        assert (host.outputs / "standalone_settings.json").is_file()
    else:  # our options in the WebUI's Settings tab, section "LoRA Train Tools"
        ui.page.locator("#tabs > .tab-nav > button", has_text=re.compile(r"^\s*Settings\s*$")).click()
        section = ui.page.locator("#settings .tab-nav button", has_text="LoRA Train Tools")
        section.first.click()
        ui.page.locator("#setting_lora_train_tools_publish_mode").wait_for(state="visible")
        ui.shot("open-webui-settings")
    ui.wait_idle()
    # everything since the page opened (the baseline of the other tests would hide load-time errors)
    toasts, badges = ui.error_toasts(), ui.error_badges()
    assert not toasts, f"gradio showed {len(toasts)} Error toast(s) after the page loaded: {brief(toasts)}"
    assert not badges, f"{len(badges)} component(s) show gradio's Error badge after load: {brief(badges)}"


def test_model_picker(ui, host):
    if not host.has_model_picker:
        pytest.skip("the WebUI's own checkpoint picker is not ours")
    info = ui.markdown("lora_train_standalone_model_info")
    assert re.search(rf"Loaded \*?\*?{re.escape(host.base_model.name)}", info.inner_text()), info.inner_text()
    ui.choose(ui.page, str(host.base_model.parent / "no-such-model"), elem_id="lora_train_standalone_model")
    ui.page.locator("#lora_train_standalone_load_model").click()
    text = ui.wait_text(info, r"Not switched")
    assert "no-such-model" in text and not NO_TRACE.search(text)
    ui.shot("picker-bad-path")
    ui.choose(ui.page, str(host.base_model), elem_id="lora_train_standalone_model")
    ui.page.locator("#lora_train_standalone_load_model").click()
    ui.wait_text(info, rf"Loaded .*{re.escape(host.base_model.name)}", timeout=SLOW_MS)
    no_page_errors(ui)


# --- Tagger ------------------------------------------------------------------------------------------------------


def test_tagger_tags_a_folder(ui, host, flow):
    tab = ui.tab("lora_train_tagger")
    if PROBE_TAGGER not in ui.options(tab, elem_id="lora_train_tagger_model"):
        ui.click(tab, "Refresh list")
        ui.wait_idle()
    assert PROBE_TAGGER in ui.options(tab, elem_id="lora_train_tagger_model"), f"no {PROBE_TAGGER} in {host.tagger_dir}"
    ui.choose(tab, PROBE_TAGGER, elem_id="lora_train_tagger_model")
    ui.wait_idle()
    assert float(ui.value(tab, label="General threshold")) == pytest.approx(GENERAL)
    assert float(ui.value(tab, label="Character threshold")) == pytest.approx(CHARACTER)

    ui.sub_tab(tab, "Batch from folder")
    ui.fill(tab, str(flow["root"]), label="Input folder")
    ui.radio(tab, "When a caption exists", "append")
    ui.checkbox(tab, "Back up changed captions (.bak)", True)
    ui.shot("tagger-form")
    ui.page.locator("#lora_train_tagger_start").click()
    summary = ui.wait_text(ui.field(tab, elem_id="lora_train_tagger_summary"), r"images: .*captions written", SLOW_MS)
    ui.wait_idle()
    ui.shot("tagger-done")
    n = len(COLOURS)
    assert summary.startswith(f"{n} images: {n} captions written, 0 unchanged, 0 skipped (caption exists), 0 errors")
    assert re.search(r"^\s*4\s+red background$", summary, re.M), summary

    for name, colour in COLOURS.items():
        caption = flow["images"] / f"{name}.txt"
        tags = tags_of(caption)
        own = OWN_CAPTIONS.get(name, "")
        own_tags = [t.strip() for t in own.split(",") if t.strip()]
        assert tags[: len(own_tags)] == own_tags, f"{name}: the existing caption must come first (append)"
        assert set(tags[len(own_tags) :]) == probe_tags(colour) - set(own_tags), f"{name}: {tags}"
        backup = caption.with_name(caption.name + ".bak")
        if own:
            assert backup.read_text(encoding="utf-8") == own, f"{name}: the .bak must hold the caption before"
        else:
            assert not backup.exists(), f"{name}: nothing to back up, yet {backup.name} exists"
    assert "red background" in tags_of(flow["images"] / "red2.txt")
    assert "blue background" in tags_of(flow["images"] / "blue1.txt")
    flow["tagged"] = {name: (flow["images"] / f"{name}.txt").read_text(encoding="utf-8") for name in COLOURS}
    no_page_errors(ui)


# --- Dataset Tag Editor ------------------------------------------------------------------------------------------


def test_tag_editor_edits_and_saves(ui, host, flow):
    if "tagged" not in flow:
        pytest.skip("needs the captions of test_tagger_tags_a_folder")
    tab = ui.tab(TE)
    status = ui.markdown(f"{TE}_status")
    page_label = tab.locator("div.prose", has_text="images shown")
    n = len(COLOURS)

    ui.fill(tab, str(flow["root"]), elem_id=f"{TE}_folder")
    ui.page.locator(f"#{TE}_load").click()
    ui.wait_text(page_label, rf"{n} of {n} images shown, 0 selected, 0 unsaved")
    ui.wait_idle()
    assert ui.page.locator(f"#{TE}_gallery img").count() == n
    table = ui.block(tab, "Tags (click to filter)").inner_text()
    assert re.search(r"red background\s+4", table), table
    ui.shot("tag-editor-loaded")

    # filter by a tag, add the activation tag to what the filter shows
    ui.fill(tab, "red background", elem_id=f"{TE}_include")
    ui.page.locator(f"#{TE}_filter").click()
    ui.wait_text(status, r"^4 image\(s\) match")
    ui.wait_text(page_label, rf"4 of {n} images shown")
    ui.sub_tab(tab, "Batch edit")
    ui.fill(tab, ACTIVATION, label="Add tags")
    ui.radio(tab, "Where", "front")
    ui.click(tab, "Add")
    ui.wait_text(status, rf"add {ACTIVATION} at the front: 4 caption\(s\) changed")
    ui.shot("tag-editor-activation-added")

    # the meta tags the suggestions find, removed from every image
    ui.radio(tab, "Batch edits and tools apply to", "all images")
    ui.sub_tab(tab, "Suggestions")
    ui.click(tab, "Find meta tags")
    ui.wait_text(tab.locator("div.prose", has_text="highres ("), r"highres \(2\), absurdres \(1\)")
    found = ui.block(tab, "Found (uncheck to keep)")
    for tag in META:
        assert found.get_by_label(tag, exact=True).is_checked(), f"{tag} is found but not checked"
    ui.shot("tag-editor-meta-found")
    ui.click(tab, "Remove checked")
    ui.wait_text(status, r"remove highres, absurdres: 2 caption\(s\) changed")
    ui.wait_text(page_label, r"5 unsaved")

    # undo / redo with the buttons, then with the keyboard shortcuts of javascript/tag_editor.js
    ui.sub_tab(tab, "Batch edit")
    ui.click(tab, "Undo")
    ui.wait_text(status, r"^undone: remove highres, absurdres")
    ui.wait_text(page_label, r"4 unsaved")
    ui.click(tab, "Redo")
    ui.wait_text(status, r"^redone: remove highres, absurdres")
    ui.wait_text(page_label, r"5 unsaved")
    ui.page.evaluate("() => document.activeElement && document.activeElement.blur()")  # no text box focused
    ui.page.keyboard.press("Alt+z")
    ui.wait_text(status, r"^undone: remove highres, absurdres")
    ui.wait_text(page_label, r"4 unsaved")
    ui.page.keyboard.press("Alt+y")
    ui.wait_text(status, r"^redone: remove highres, absurdres")
    ui.wait_text(page_label, r"5 unsaved")
    ui.shot("tag-editor-redone")
    for name, text in flow["tagged"].items():  # nothing written before Save
        assert (flow["images"] / f"{name}.txt").read_text(encoding="utf-8") == text

    ui.checkbox(tab, "Keep .bak of previous captions", True)
    ui.page.keyboard.press("Alt+s")
    ui.wait_text(status, rf"saved {n} caption\(s\), {n} backup\(s\)")
    ui.wait_text(page_label, r"0 unsaved")
    ui.shot("tag-editor-saved")

    for name, before in flow["tagged"].items():
        old = [t.strip() for t in before.split(",") if t.strip()]
        expected = ([ACTIVATION] if name.startswith("red") else []) + [t for t in old if t not in META]
        caption = flow["images"] / f"{name}.txt"
        assert tags_of(caption) == expected, name
        assert caption.with_name(caption.name + ".bak").read_text(encoding="utf-8") == before, name
    flow["edited"] = True
    no_page_errors(ui)


# --- Train Tools -------------------------------------------------------------------------------------------------


def _open_advanced(ui: Gradio, tab) -> None:
    """The Advanced accordion and every topic folded inside it."""
    from lib_lora_train.ui.train.actions import advanced_groups

    ui.accordion(tab, "Advanced", True)
    for title in advanced_groups():
        ui.accordion(tab, title, True)


def _form(ui: Gradio, tab, values: dict) -> None:
    _open_advanced(ui, tab)
    for name, value in values.items():
        ui.fill(tab, value, elem_id=f"{TT}_{name}")


def test_train_new_version_and_scan(ui, host, flow):
    if "edited" not in flow:
        pytest.skip("needs the dataset of test_tag_editor_edits_and_saves")
    tab = ui.tab(TT)
    ui.choose(tab, PROJECT, elem_id=f"{TT}_project")
    ui.fill(tab, VERSION, elem_id=f"{TT}_new_name")
    ui.click(tab, "New version")
    ui.wait_text(tab.locator("div.prose", has_text="Created"), rf"Created {PROJECT}/{VERSION}\.")
    ui.wait_idle()
    assert ui.value(tab, elem_id=f"{TT}_version") == VERSION
    assert (version_dir(host) / "version.json").is_file(), f"no version folder in {host.outputs}"

    ui.click(tab, "Use the Tag Editor's folder")
    ui.wait_text(ui.field(tab, elem_id=f"{TT}_dataset"), re.escape(str(flow["root"])))
    ui.click(tab, "Scan")
    repeats = ui.page.locator(f"#{TT}_repeats")
    ui.wait_text(repeats, rf"{REPEATS}_alice\s+{len(COLOURS)}\s+{REPEATS}")
    flow["version"] = True

    ui.wait_idle()
    ui.shot("train-scanned")
    per_epoch = len(COLOURS) * REPEATS
    calculator = ui.markdown(f"{TT}_steps")
    assert ui.error_badges() == [], f"the step calculator failed: {ui.error_badges()}"
    text = ui.wait_text(calculator, r"steps per epoch")
    assert re.search(rf"{per_epoch}\s+images × repeats per epoch → {per_epoch}\s+steps per epoch", text), text


def test_train_start_stop_start(ui, host, flow):
    if "version" not in flow:
        pytest.skip("needs the version of test_train_new_version_and_scan")
    tab = ui.tab(TT)
    status = ui.markdown(f"{TT}_status")
    ui.click(tab, "Apply preset")  # "character"
    ui.wait_idle()
    assert ui.value(tab, elem_id=f"{TT}_rank") == "16" and ui.value(tab, elem_id=f"{TT}_resolution") == "512"
    _form(ui, tab, {**TINY, "epochs": 20})  # long enough to be stopped half-way
    ui.choose(tab, "no", elem_id=f"{TT}_mixed_precision")
    ui.choose(tab, "memory", elem_id=f"{TT}_cache_latents")
    ui.fill(tab, f"{ACTIVATION}, solo", elem_id=f"{TT}_sample_prompts")
    ui.wait_idle()
    ui.shot("train-form")

    ui.page.locator(f"#{TT}_start").click()
    per_epoch = len(COLOURS) * REPEATS
    first = ui.wait_text(status, rf"running {PROJECT}/{VERSION} · step [1-9]\d*/{per_epoch * 20}", SLOW_MS)
    # after the first epoch: a sample, more loss points, a later step
    ui.wait_text(status, r"epoch 2/20", SLOW_MS)
    ui.page.locator(f"#{TT}_samples img").first.wait_for(state="visible", timeout=SLOW_MS)
    later = ui.wait_text(status, r"step \d+", SLOW_MS)
    step = lambda text: int(re.search(r"step (\d+)/", text).group(1))  # noqa: E731
    assert step(later) > step(first), (first, later)
    assert ui.page.locator(f"#{TT}_loss").locator("canvas.marks, svg.marks").count() > 0, "no loss chart drawn"
    assert "loss" in later and re.search(r"\d+%", later), later
    ui.shot("train-running")

    # stopped in epoch 3, so that the stopped run has left epochs 1 and 2 (and a partial file) behind
    ui.wait_text(status, r"epoch 3/20", SLOW_MS)
    ui.page.locator(f"#{TT}_stop").click()
    stopped = ui.wait_text(status, r"^stopped ", SLOW_MS)
    assert "stopped at step" in stopped, stopped
    stopped_run = {p.name for p in (version_dir(host) / "checkpoints").glob("*.safetensors")}
    assert f"{PROJECT}-{VERSION}-000002.safetensors" in stopped_run, stopped_run
    ui.wait_idle()
    ui.shot("train-stopped")

    ui.fill(tab, 2, elem_id=f"{TT}_epochs")
    ui.wait_idle()
    ui.page.locator(f"#{TT}_start").click()
    # the new run's total (2 epochs), so that the stopped run's status cannot be taken for it
    done = ui.wait_text(status, rf"^(done|error|stopped) {PROJECT}/{VERSION} · step \d+/{per_epoch * 2} ", SLOW_MS)
    assert done.startswith("done"), done
    ui.wait_idle()
    ui.shot("train-done")

    checkpoints = version_dir(host) / "checkpoints"
    epoch1, final = f"{PROJECT}-{VERSION}-000001", f"{PROJECT}-{VERSION}"
    table = ui.wait_text(ui.page.locator(f"#{TT}_checkpoints"), rf"<lora:{re.escape(final)}:0\.8>")
    for name in (epoch1, final):
        assert f"<lora:{name}:0.8>" in table, table
        assert (checkpoints / f"{name}.safetensors").is_file(), f"{name}.safetensors not in {checkpoints}"
    for listed in re.findall(r"(\S+\.safetensors)", table):
        assert (checkpoints / listed).is_file(), f"the table lists {listed}, which is not in {checkpoints}"
    published = host.lora_dir / "train_tools"
    assert (published / f"{final}.safetensors").is_file() and (published / f"{epoch1}.safetensors").is_file()
    assert len(list((version_dir(host) / "samples").glob("*.png"))) >= 2
    assert ui.page.locator(f"#{TT}_samples img").count() >= 2
    log = ui.value(tab, elem_id=f"{TT}_log")
    assert f"{epoch1}.safetensors" in log and not NO_TRACE.search(log), log
    flow["trained"] = True
    no_page_errors(ui)

    # last: the files of the stopped run are not offered as this run's (the stopped run's epoch 2 beside this run's
    # final epoch 2; its partial file with a <lora:…> tag for txt2img although it is not in the LoRA folder)
    rows = ui.page.locator(f"#{TT}_checkpoints tbody tr").all_inner_texts()
    listed = sorted({re.search(r"(\S+)\.safetensors", row).group(1) for row in rows if ".safetensors" in row})
    assert listed == sorted([epoch1, final]), (
        f"after a finished 2-epoch run the Checkpoints table lists {listed}; files left by the stopped run "
        f"(at the stop the version held {sorted(stopped_run)}) are mixed in with this run's"
    )


# --- Epoch Compare -----------------------------------------------------------------------------------------------


def test_compare_grid_scores_xyz_and_pick(ui, host, flow):
    if "trained" not in flow:
        pytest.skip("needs the checkpoints of test_train_start_stop_start")
    tab = ui.tab("lora_train_compare")
    ui.click(tab, "Refresh")
    ui.wait_idle()
    ui.choose(tab, PROJECT, elem_id="lora_compare_project")
    ui.wait_idle()
    assert ui.value(tab, elem_id="lora_compare_version") == VERSION
    info = tab.locator("div.prose", has_text="saved checkpoint")
    ui.wait_text(info, r"saved checkpoint\(s\):\s*epoch 1, .*epoch 2 \(final\)")
    ui.radio(tab, "Epochs", "subset")  # this run's epoch 1 and its final file, whatever else the version holds
    ui.fill(tab, "1, 0", label="subset, e.g. 1, 3, 5-7 (0 = final)")
    prompt_label = "Prompts, one per line (the LoRA is added; keep the activation tag in)"
    assert ui.value(tab, label=prompt_label).startswith(f"{ACTIVATION}, "), "the activation tag is not guessed"
    assert ui.value(tab, label="Activation text for the LoRA card") == ACTIVATION

    ui.fill(tab, "0.5, 1", label="LoRA weights (list, or a range like 0.5-1.0:0.1)")
    ui.fill(tab, "1", label="Seeds (several for a fair comparison; -1 = random)")
    for label, value in (("Steps", 2), ("Width", 64), ("Height", 64)):
        ui.fill(tab, value, label=label)
    ui.wait_idle()
    ui.shot("compare-form")
    ui.page.locator("#lora_compare_generate").click()
    status = tab.locator("div.prose", has_text=re.compile("Saved in|Cannot compare"))
    text = ui.wait_text(status, r"Saved in|Cannot compare", SLOW_MS)
    ui.wait_idle()
    ui.shot("compare-grid")
    assert text.startswith("Saved in"), text
    assert f"scored with tagger {PROBE_TAGGER}" in text and "Best trade-off" in text, text
    folder = Path(re.search(r"Saved in (\S+)", text).group(1).strip("`"))
    assert folder.parent == version_dir(host) / "compare" and list(folder.glob("grid-*.png")), folder
    assert (folder / "scores.png").is_file()
    assert ui.page.locator("#lora_compare_gallery img").count() == 1
    chart = ui.block(tab, "Scores (F = fidelity, X = flexibility)").locator("img")
    assert chart.count() == 1 and chart.evaluate("img => img.naturalWidth") > 0
    grid = ui.page.locator("#lora_compare_gallery img").first
    assert grid.evaluate("img => img.complete && img.naturalWidth > 0")

    x_label, y_label = "X: Prompt S/R (weights)", "Y: Prompt S/R (epochs)"
    from_generate = ui.value(tab, label=x_label), ui.value(tab, label=y_label)
    ui.click(tab, "Make X/Y/Z strings")
    ui.wait_text(tab.locator("div.prose", has_text="Prompt S/R strings ready"), r"Prompt S/R strings ready")
    ui.wait_idle()
    x_sr, y_sr = ui.value(tab, label=x_label), ui.value(tab, label=y_label)
    assert (x_sr, y_sr) == from_generate
    # X: the weight in the prompt's <lora:…> tag, then the other weights and 0 for the no-LoRA column
    assert x_sr.split(",") == [":0.5>", ":1>", ":0>"], x_sr
    # Y: the first epoch's name suffix, then the final file's (none)
    assert y_sr.split(",") == ["-000001", ""], y_sr
    ui.shot("compare-xyz")

    ui.choose(tab, "epoch 1", label="Chosen epoch")
    ui.fill(tab, 0.8, label="Chosen weight")
    ui.click(tab, "Record and publish as <project>-<version>")
    picked = ui.wait_text(tab.locator("div.prose", has_text=re.compile("Recorded|Cannot record")), r"Recorded|Cannot")
    ui.wait_idle()
    ui.shot("compare-picked")
    assert picked.startswith("Recorded epoch 1 at weight 0.8"), picked
    pick = json.loads((version_dir(host) / "pick.json").read_text(encoding="utf-8"))
    assert pick["epoch"] == 1 and pick["weight"] == pytest.approx(0.8), pick
    published = host.lora_dir / f"{PROJECT}-{VERSION}.safetensors"
    assert published.is_file(), f"{published} not published; the page says: {picked}"
    card = json.loads(published.with_suffix(".json").read_text(encoding="utf-8"))
    assert ACTIVATION in json.dumps(card), card
    flow["picked"] = True
    no_page_errors(ui)

    # last, as it is about looks: the gallery shows the whole grid (row labels and every column), not a crop
    fit, shown_w, shown_h, width, height = grid.evaluate(
        "img => [getComputedStyle(img).objectFit, img.clientWidth, img.clientHeight, img.naturalWidth, img.naturalHeight]"
    )
    cropped = fit == "cover" and abs(shown_w / shown_h - width / height) > 0.02 * (width / height)
    assert not cropped, (
        f"the Grids gallery crops the {width}x{height} grid into a {shown_w}x{shown_h} box (object-fit: {fit}); "
        "the row labels and the no-LoRA column are cut off"
    )


# --- errors a user meets -----------------------------------------------------------------------------------------


def test_errors_are_shown_in_the_page(ui, host, flow, tmp_path):
    """Each mistake gets a readable message that stays in the page (not a trace, not a blank, not a flash);
    every case is tried and all problems are reported together."""
    missing = str(tmp_path / "no-such-folder")
    problems: list[str] = []

    def check(what: str, text: str, pattern: str) -> None:
        if not re.search(pattern, text, re.S):
            problems.append(f"{what}: expected {pattern!r}, the page shows {text!r}")
        elif NO_TRACE.search(text):
            problems.append(f"{what}: a traceback instead of a message: {text!r}")

    tab = ui.tab("lora_train_tagger")
    ui.sub_tab(tab, "Batch from folder")
    ui.fill(tab, missing, label="Input folder")
    ui.page.locator("#lora_train_tagger_start").click()
    summary = ui.field(tab, elem_id="lora_train_tagger_summary")
    ui.wait_text(summary, r"^Not started: |no-such-folder")
    check("Tagger, Tag folder on a missing folder", summary.input_value(), r"^Not started: .*no-such-folder")
    ui.shot("error-tagger-folder")

    tab = ui.tab(TE)
    te_status = ui.markdown(f"{TE}_status")
    ui.record_texts(ui.markdown_selector(f"{TE}_status"), "te_status")
    ui.fill(tab, missing, elem_id=f"{TE}_folder")
    ui.page.locator(f"#{TE}_load").click()
    ui.page.wait_for_timeout(300)
    ui.wait_idle()  # the Load's follow-up event (the first page of thumbnails) has run too
    ui.shot("error-tag-editor-folder")
    check(f"Tag editor, Load a missing folder (texts shown: {ui.recorded_texts('te_status')})",
          te_status.inner_text(), r"no-such-folder")  # fmt: skip

    tab = ui.tab(TT)
    ui.fill(tab, missing, elem_id=f"{TT}_dataset")
    ui.click(tab, "Scan")
    ui.page.wait_for_timeout(300)
    ui.wait_idle()
    check("Train Tools, Scan a missing folder", ui.page.locator(f"#{TT}_repeats").inner_text(), r"no-such-folder")
    ui.shot("error-scan-folder")

    status = ui.markdown(f"{TT}_status")
    ui.record_texts(ui.markdown_selector(f"{TT}_status"), "tt_status")
    for name, bad, pattern in (("rank", 0, r"rank: 0 is out of range"), ("unet_lr", -0.0001, r"unet_lr: -0.0001")):
        good = ui.value(tab, elem_id=f"{TT}_{name}")
        _form(ui, tab, {name: bad})
        ui.page.locator(f"#{TT}_start").click()
        ui.page.wait_for_timeout(300)
        ui.wait_idle()
        check(f"Train Tools, Start with {name} = {bad}", status.inner_text(), rf"^Not started: {pattern}")
        ui.shot(f"error-setting-{name}")
        _form(ui, tab, {name: good})

    # Start with the missing dataset folder still typed in: the reason must stay in the status line
    ui.page.locator(f"#{TT}_start").click()
    ui.page.wait_for_timeout(3000)  # longer than the tab's 1 s progress poll
    ui.wait_idle()
    ui.shot("error-start-missing-folder")
    check(f"Train Tools, Start on a missing dataset folder (texts shown: {ui.recorded_texts('tt_status')[-4:]})",
          status.inner_text(), r"Not started: .*no-such-folder")  # fmt: skip
    assert not list(version_dir(host).glob("dataset/*no-such*")), "a missing folder was snapshotted"

    problems += new_page_errors(ui)
    assert not problems, "errors a user meets are not shown as they should be:\n- " + "\n- ".join(problems)


def test_start_while_training_says_why(ui, host, flow, browser):
    """A second Start (here from a second browser tab) while a job runs: the reason stays readable."""
    if "version" not in flow:
        pytest.skip("needs the version of test_train_new_version_and_scan")
    tab = ui.tab(TT)
    status = ui.markdown(f"{TT}_status")
    ui.choose(tab, PROJECT, elem_id=f"{TT}_project")
    ui.fill(tab, "v2", elem_id=f"{TT}_new_name")
    ui.click(tab, "New version")
    ui.wait_text(tab.locator("div.prose", has_text="Created"), rf"Created {PROJECT}/v2\.")
    ui.wait_idle()
    ui.fill(tab, str(flow["root"]), elem_id=f"{TT}_dataset")
    _form(ui, tab, {**TINY, "epochs": 50, "sample_every": 0})
    ui.page.locator(f"#{TT}_start").click()
    ui.wait_text(status, rf"running {PROJECT}/v2 · step [1-9]", SLOW_MS)

    second_pages = gradio_page(browser, host, ui.shots)
    second = next(second_pages)
    try:
        second.count = ui.count
        second.open()
        tab2 = second.tab(TT)
        second.click(tab2, "Refresh")
        second.wait_idle()
        second.choose(tab2, PROJECT, elem_id=f"{TT}_project")
        second.choose(tab2, VERSION, elem_id=f"{TT}_version")
        second.wait_idle()
        second.record_texts(ui.markdown_selector(f"{TT}_status"), "status")
        second.page.locator(f"#{TT}_start").click()
        second.page.wait_for_timeout(3000)  # longer than the tab's 1 s progress poll
        shown = second.recorded_texts("status")
        now = second.markdown(f"{TT}_status").inner_text()
        second.shot("error-start-twice")
        ui.count = second.count
    finally:
        second_pages.close()
        ui.page.locator(f"#{TT}_stop").click()
        ui.wait_text(status, r"^(stopped|done|error) ", SLOW_MS)
        ui.wait_idle()
        ui.shot("error-start-twice-stopped")
    busy = rf"Not started: {PROJECT}/v2 is training"
    assert any(re.search(busy, t) for t in shown), f"no 'Not started' message at all; the status showed: {shown}"
    assert re.search(busy, now), f"the reason was shown, then replaced within 3 s by: {now!r} (all texts: {shown})"


def test_fields_start_empty(ui, host):
    """A field shows its own default, not another field's (the WebUI keeps defaults in ui-config.json by tab and
    label, so two components with one label share a value)."""
    tab = ui.tab(TE)
    ui.sub_tab(tab, "Batch edit")
    ui.shot("tag-editor-batch-edit-defaults")
    named_regex = ui.page.locator("span", has_text=re.compile(r"^\s*Regex\s*$"))
    check_box = tab.locator("label:has(input[type=checkbox])").filter(has=named_regex).locator("input")
    # the pattern box: the first text box in the row of the "Regex replace" button, whatever its label
    row = ui.button(tab, "Regex replace").locator("xpath=ancestor::div[.//textarea][1]")
    pattern = row.locator("textarea").first
    assert check_box.count() == 1 and pattern.count() == 1
    assert not check_box.is_checked(), "the filter's Regex box starts checked"
    assert pattern.input_value() == "", (
        "the Batch edit Regex pattern starts filled in (a second component is labelled 'Regex': the filter's "
        "check box, whose value the WebUI's ui-config.json gives this text box too)"
    )


def test_train_form_widgets(ui, host):
    """Numbers are number fields and switches check boxes (not free text with "True" in it)."""
    tab = ui.tab(TT)
    _open_advanced(ui, tab)
    ui.shot("train-form-widgets")
    for name in ("rank", "epochs", "unet_lr", "resolution", "min_bucket_side"):
        box = ui.page.locator(f"#{TT}_{name} input")
        assert box.count() == 1 and box.get_attribute("type") == "number", f"{name} is not a number field"
    for name in ("enable_buckets", "shuffle_tags", "flip", "save_state"):
        box = ui.page.locator(f"#{TT}_{name} input[type=checkbox]")
        assert box.count() == 1, f"{name} is not a check box"


def teardown_module():
    if Path("/tmp/browser_shots").is_dir():
        print("\nscreenshots of the last run: /tmp/browser_shots/<host>/")
