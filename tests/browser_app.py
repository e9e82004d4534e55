"""Browser tests' harness: the app under test (the standalone app, or a real WebUI or Forge with the extension linked
in), a headless Chromium driven by Playwright, and helpers that find gradio 3.41 and 4.40 components the way a user
sees them.

Used by test_browser_workflow.py. Nothing here downloads anything: Chromium is the system's (/usr/bin/chromium),
the base model is the tiny fixture beside the clone (or one built on the spot), the tagger is the probe graph of
tagger_graphs.py.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = ROOT.parent / "shared" / "fixtures" / "diffusers-tiny-sd1"
CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run"]  # fmt: skip
SHOTS_COPY = Path("/tmp/browser_shots")
# where gradio 3.41 writes a component's label: most fields, a Gallery/Image/Plot, a Dataframe
LABELS = "[data-testid=block-info], [data-testid=block-label], table > caption"
PROBE_TAGGER = "probe-tagger"

# on two shared CPU cores a click that trains, renders or loads a model can take a while
SLOW_MS = 180_000
CLICK_MS = 60_000

TAB_TITLES = {
    "lora_train_tagger": "Tagger",
    "lora_train_tag_editor": "Dataset Tag Editor",
    "lora_train_tools": "Train Tools",
    "lora_train_compare": "Epoch Compare",
    "lora_train_settings": "Settings",
}

# every gradio toast shown while the page is open, kept even after gradio removes it
_TOAST_RECORDER = """
(() => {
  window.__loraToasts = [];
  const seen = new WeakSet();
  const record = () => {
    document.querySelectorAll('.toast-body').forEach((el) => {
      if (seen.has(el)) return;
      seen.add(el);
      window.__loraToasts.push({cls: el.className, text: (el.innerText || '').trim()});
    });
  };
  new MutationObserver(record).observe(document, {childList: true, subtree: true});
})();
"""


def browser_skip_reason() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (pip install playwright; the browser is the system's)"
    if not CHROMIUM.is_file():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    try:
        subprocess.run([str(CHROMIUM), "--version"], check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{CHROMIUM} --version does not work: {exc}"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_probe_tagger(models_dir: Path) -> Path:
    """The tiny WD14-contract tagger (tags follow the image's mean colour) as ``<models_dir>/probe-tagger``."""
    from tagger_graphs import make_model_folder

    return make_model_folder(models_dir / PROBE_TAGGER)


def tiny_base_model(workdir: Path) -> Path:
    if (TINY_MODEL / "model_index.json").is_file():
        return TINY_MODEL
    from lib_lora_train.hosts.tiny_model import save_tiny_model

    return save_tiny_model(workdir / "tiny-sd1")


# --- the hosts ---------------------------------------------------------------------------------------------------


@dataclass
class Host:
    """One running app under test and the folders a test checks on disk."""

    name: str  # "standalone", "webui" or "forge"
    url: str
    outputs: Path  # projects folder: <outputs>/<project>/versions/<version>/...
    lora_dir: Path  # the LoRA folder; published epochs go to its train_tools sub-folder
    tagger_dir: Path  # where the Tagger tab finds its models
    log_path: Path
    base_model: Path | None = None  # standalone only: what the model picker loaded
    stop_fn: object = None
    extra: dict = field(default_factory=dict)

    @property
    def has_model_picker(self) -> bool:
        return self.name == "standalone"

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def last_traceback(self) -> str:
        """The app log's last Python traceback: its frames in our code and the exception line, or ''."""
        log = self.log()
        start = log.rfind("Traceback (most recent call last)")
        if start < 0:
            return ""
        lines = log[start:].splitlines()
        # the exception line: the first unindented line after the frames
        end = next((i for i, line in enumerate(lines[1:], 1) if line and not line[0].isspace()), len(lines) - 1)
        ours = []
        for i, line in enumerate(lines[1:end], 1):
            if line.lstrip().startswith("File ") and "lib_lora_train" in line:
                ours += lines[i : i + 2]
        return f"last traceback in {self.log_path} (our frames):\n" + "\n".join([*ours, lines[end]])

    def stop(self) -> None:
        if callable(self.stop_fn):
            self.stop_fn()


def start_standalone(workdir: Path, *, models_dir: Path | None = None, timeout: float = 180) -> Host:
    """``python -m lib_lora_train ui`` on the tiny model, in its own process group, logging to ``workdir``."""
    outputs, lora_dir = workdir / "outputs" / "train_tools", workdir / "models" / "Lora"
    models_dir = models_dir or workdir / "models" / "tagger"
    for folder in (outputs, lora_dir, models_dir):
        folder.mkdir(parents=True, exist_ok=True)
    if not (models_dir / PROBE_TAGGER).is_dir():
        make_probe_tagger(models_dir)
    base = tiny_base_model(workdir)
    port = free_port()
    log_path = workdir / "app.log"
    args = [sys.executable, "-m", "lib_lora_train", "ui", "--base", str(base), "--outputs", str(outputs),
            "--models-dir", str(models_dir), "--lora-dir", str(lora_dir), "--port", str(port), "--device", "cpu"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADIO_SERVER")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))  # fmt: skip
    log_file = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 - lives as long as the process
    process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                               start_new_session=True)  # fmt: skip

    def stop() -> None:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(30)
        log_file.close()

    host = Host("standalone", f"http://127.0.0.1:{port}/", outputs, lora_dir, models_dir, log_path, base, stop)
    deadline = time.time() + timeout
    ready = re.compile(r"LoRA Train Tools is running at (http://\S+)")
    while True:
        match = ready.search(host.log())
        if match:
            host.url = match.group(1).rstrip("/") + "/"
            return host
        if process.poll() is not None or time.time() > deadline:
            stop()
            raise RuntimeError(f"the standalone app did not start (exit {process.poll()}); log:\n{host.log()[-4000:]}")
        time.sleep(0.5)


def start_webui(workdir: Path, *, forge: bool = False) -> Host:
    """A real WebUI v1.10.x (tests/webui_server.py), or Forge (tests/forge_server.py), with the probe tagger in
    ``<models>/tagger``."""
    if forge:
        from forge_server import Forge as WebUI
    else:
        from webui_server import WebUI

    server = WebUI(workdir)
    make_probe_tagger(server.models / "tagger")  # before start: WebUI.start only creates the models' sub-folders
    try:
        server.start("tiny-sd1")
    except Exception:
        server.stop()
        raise
    # the WebUI's default outputs: <data>/outputs/train_tools (the "Projects folder" option is empty)
    name, outputs = "forge" if forge else "webui", server.data / "outputs" / "train_tools"
    return Host(name, f"http://127.0.0.1:{server.port}/", outputs, server.lora_dir, server.models / "tagger",
                server.log_path, None, server.stop, {"server": server})  # fmt: skip


# --- the browser -------------------------------------------------------------------------------------------------


@dataclass
class Browser:
    playwright: object
    browser: object

    @classmethod
    def launch(cls) -> Browser:
        from playwright.sync_api import sync_playwright

        manager = sync_playwright().start()
        try:
            browser = manager.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
        except Exception:
            manager.stop()
            raise
        return cls(manager, browser)

    def close(self) -> None:
        try:
            self.browser.close()
        finally:
            self.playwright.stop()


class Gradio:
    """A gradio 3.41 or 4.40 page as a user works it: tabs, labelled fields, buttons, and what the page then says.

    Where gradio 4 (Forge) differs, the helpers say so: its page never lets the network go idle, and a Markdown's
    elem_id is on its block only. gradio 3.41's DOM: a Textbox's elem_id is on its wrapper (the field is the ``textarea``/``input`` inside), a
    Button's on the ``<button>``; a Markdown's elem_id is on the block *and* on its ``.prose`` div; a Dropdown is a
    svelte list (type into its input, pick the ``ul.options li``); fields without elem_id are found by their label.
    """

    def __init__(self, page, host: Host, shots: Path):
        self.page = page
        self.host = host
        self.shots = shots
        self.count = 0
        shots.mkdir(parents=True, exist_ok=True)

    # --- the page

    def open(self) -> None:
        self.page.goto(self.host.url, wait_until="domcontentloaded", timeout=SLOW_MS)
        self.page.wait_for_selector("#tab_lora_train_tagger", state="attached", timeout=SLOW_MS)
        version = self.page.evaluate("() => (window.gradio_config || {}).version || ''")
        self.gradio_major = int(version.split(".")[0] or 3)
        if self.gradio_major < 4:
            # the page's load events (gradio's "load" handlers, the WebUI's settings refresh) have run once the
            # network is idle
            self.page.wait_for_load_state("networkidle", timeout=SLOW_MS)
        else:
            # gradio 4 (Forge) keeps a heartbeat request open for as long as the page lives, so the network is
            # never idle: wait for the load events to leave no progress overlay instead
            self.page.wait_for_load_state("load", timeout=SLOW_MS)
            self.wait_idle(quiet_ms=3000)

    def shot(self, step: str) -> Path:
        self.count += 1
        path = self.shots / f"{self.count:02d}-{self.host.name}-{re.sub(r'[^A-Za-z0-9_-]+', '_', step)}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def toasts(self) -> list[dict]:
        return self.page.evaluate("() => window.__loraToasts || []")

    def error_toasts(self) -> list[str]:
        """The text of every "Error" toast shown since the page opened."""
        shown = [t["text"] for t in self.toasts() if "error" in t["cls"].split()]
        live = self.page.locator(".toast-body.error").all_inner_texts()
        return list(dict.fromkeys(shown + live))

    def error_badges(self) -> list[str]:
        """Components showing gradio's "Error" badge (a handler raised), on any tab: "<elem id (label)>: Error"."""
        return self.page.evaluate(
            """() => Array.from(document.querySelectorAll('.block > div.wrap .error'))
                .map((e) => {
                    const block = e.closest('.block');
                    const label = block.querySelector('[data-testid=block-info], [data-testid=block-label], caption');
                    return `${block.id}${label ? ' (' + label.innerText.trim() + ')' : ''}: ${e.innerText.trim()}`;
                })"""
        )

    def tab(self, elem_id: str):
        """Open one of the top-level tabs; returns its panel."""
        panel = self.page.locator(f"#tab_{elem_id}")
        if not panel.is_visible():
            nav = self.page.locator(
                "#tabs > .tab-nav > button", has_text=re.compile(rf"^\s*{re.escape(TAB_TITLES[elem_id])}\s*$")
            )
            nav.first.click()
        panel.wait_for(state="visible", timeout=CLICK_MS)
        return panel

    def sub_tab(self, scope, title: str) -> None:
        """Open a tab of a ``gr.Tabs`` inside ``scope`` by its title."""
        scope.locator(".tab-nav > button", has_text=re.compile(rf"^\s*{re.escape(title)}\s*$")).first.click()

    def accordion(self, scope, title: str, open_: bool = True) -> None:
        header = scope.locator(".label-wrap", has_text=title).first
        is_open = "open" in (header.get_attribute("class") or "").split()
        if is_open != open_:
            header.click()

    # --- fields

    def field(self, scope, label: str | None = None, elem_id: str | None = None):
        """The text input of a Textbox / Number / Dropdown, by elem_id or by its exact label."""
        if elem_id:
            return self.page.locator(f"#{elem_id} textarea, #{elem_id} input:not([type=range])").first
        block = self.block(scope, label)
        return block.locator("textarea, input:not([type=range]):not([type=checkbox]):not([type=radio])").first

    def block(self, scope, label: str):
        """The component block whose label is exactly ``label``."""
        title = re.compile(rf"^\s*{re.escape(label)}\s*$")
        return (
            scope.locator(".block")
            .filter(has=self.page.locator(LABELS, has_text=title))
            .filter(has_not=self.page.locator(".block"))
            .first
        )

    def fill(self, scope, value, label: str | None = None, elem_id: str | None = None) -> None:
        box = self.field(scope, label, elem_id)
        box.fill(str(value))
        box.dispatch_event("change")  # a Number submits its value on change (or blur)
        box.blur()

    def value(self, scope, label: str | None = None, elem_id: str | None = None) -> str:
        return self.field(scope, label, elem_id).input_value()

    def choose(self, scope, value: str, label: str | None = None, elem_id: str | None = None) -> None:
        """Pick ``value`` in a Dropdown (typing it filters the list; a custom value is accepted with Enter)."""
        box = self.field(scope, label, elem_id)
        box.click()
        box.fill(value)
        option = self.page.locator("ul.options li", has_text=re.compile(rf"^\s*✓?\s*{re.escape(value)}\s*$"))
        try:
            option.first.wait_for(state="visible", timeout=2_000)  # the list filters as one types
            option.first.click()
        except Exception:  # not in the list: a custom value (allow_custom_value)
            box.press("Enter")
        box.blur()
        self.page.wait_for_timeout(300)  # the dropdown's change event is sent on blur

    def options(self, scope, label: str | None = None, elem_id: str | None = None) -> list[str]:
        box = self.field(scope, label, elem_id)
        box.click()
        box.fill("")
        items = self.page.locator("ul.options li")
        try:
            items.first.wait_for(state="visible", timeout=5_000)
        except Exception:
            names = []
        else:
            names = [t.replace("✓", "").strip() for t in items.all_inner_texts()]
        box.press("Escape")
        box.blur()
        return names

    def radio(self, scope, group: str, choice: str) -> None:
        self.block(scope, group).get_by_label(choice, exact=True).check()

    def checkbox(self, scope, label: str, on: bool = True) -> None:
        box = scope.get_by_label(label, exact=True)
        if box.is_checked() != on:
            box.click()

    def button(self, scope, name: str):
        return scope.get_by_role("button", name=name, exact=True)

    def click(self, scope, name: str) -> None:
        self.button(scope, name).first.click()

    # --- what the page says

    def record_texts(self, selector: str, key: str) -> None:
        """From now on keep every text the element at ``selector`` shows (also ones replaced within a moment)."""
        self.page.evaluate(
            """([selector, key]) => {
                window.__loraTexts = window.__loraTexts || {};
                const texts = (window.__loraTexts[key] = []);
                const el = document.querySelector(selector);
                const note = () => { const t = (el.innerText || '').trim(); if (texts[texts.length - 1] !== t) texts.push(t); };
                note();
                new MutationObserver(note).observe(el, {subtree: true, childList: true, characterData: true});
            }""",
            [selector, key],
        )

    def recorded_texts(self, key: str) -> list[str]:
        return self.page.evaluate("(key) => (window.__loraTexts || {})[key] || []", key)

    @staticmethod
    def markdown_selector(elem_id: str) -> str:
        """A Markdown's text: gradio 3.41 puts its elem_id on the ``.prose`` div too, gradio 4 only on the block."""
        return f"div.prose#{elem_id}, #{elem_id} div.prose"

    def markdown(self, elem_id: str):
        return self.page.locator(self.markdown_selector(elem_id)).first

    def wait_text(self, locator, pattern: str | re.Pattern, timeout: float = CLICK_MS) -> str:
        """Wait until ``locator``'s text (or a field's value) matches; returns it. Fails with what it showed, at
        once when its component shows gradio's Error badge (the handler raised: the app log's trace is added)."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.time() + timeout / 1000
        text, failed = "", False
        while True:
            try:
                tag, failed = locator.evaluate(
                    "e => [e.tagName, !!(e.closest('.block') && e.closest('.block').querySelector(':scope > .wrap .error'))]",
                    timeout=1_000,
                )
                text = (
                    locator.input_value(timeout=1_000)
                    if tag in ("TEXTAREA", "INPUT")
                    else locator.inner_text(timeout=1_000)
                )
            except Exception:
                text = text or ""
            if regex.search(text):
                return text
            if failed:
                raise AssertionError(
                    f"waiting for {regex.pattern!r}: the component shows gradio's Error badge (its handler raised); "
                    f"the page shows {text!r}\n{self.host.last_traceback()}"
                )
            if time.time() > deadline:
                raise AssertionError(
                    f"waited {timeout / 1000:.0f} s for {regex.pattern!r}; the page shows:\n{text}\n"
                    f"(Error badges: {self.error_badges()[:8]}; toasts: {self.error_toasts()[:8]})"
                )
            self.page.wait_for_timeout(250)

    def wait_idle(self, quiet_ms: int = 1200, timeout: float = SLOW_MS) -> None:
        """Wait until no component shows gradio's pending/progress overlay for ``quiet_ms`` in a row (an event
        and the ``.then`` events chained to it have all finished)."""
        self.page.wait_for_function(
            """(quiet) => {
                const busy = Array.from(document.querySelectorAll('.block > div.wrap:is(.default, .center)'))
                    .some((w) => !w.classList.contains('hide') && w.offsetParent !== null && !w.querySelector('.error'));
                const now = performance.now();
                if (busy || window.__loraBusyAt === undefined) window.__loraBusyAt = now;
                return !busy && now - window.__loraBusyAt >= quiet;
            }""",
            arg=quiet_ms,
            timeout=timeout,
            polling=100,
        )


def gradio_page(browser: Browser, host: Host, shots: Path) -> Iterator[Gradio]:
    context = browser.browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=False)
    context.set_default_timeout(CLICK_MS)
    context.add_init_script(_TOAST_RECORDER)
    page = context.new_page()
    ui = Gradio(page, host, shots)
    try:
        yield ui
    finally:
        context.close()


def copy_shots(shots: Path, host_name: str) -> Path:
    """Copy a host's screenshots to /tmp/browser_shots/<host>/ for a person to look at."""
    target = SHOTS_COPY / host_name
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(shots.glob("*.png")):
        shutil.copy2(path, target / path.name)
    return target


def skip_module_without_browser() -> None:
    reason = browser_skip_reason()
    if reason:
        print(f"\nbrowser tests skipped: {reason}", file=sys.stderr)
        pytest.skip(reason, allow_module_level=True)
