"""``python -m lib_lora_train ui``: the four tabs without a WebUI, on a diffusers model, in one gradio 3.41 page.

The tabs are the very builders the WebUI shows (``ui.tabs``), built after the standalone runtime is installed; the
page adds what the WebUI would otherwise provide: a base-model picker, a Settings tab for our options, our
javascript/ and style.css, the HTTP API (basic auth with ``--auth``, as the WebUI's ``--api-auth``), and a queue so
that progress bars and long handlers run side by side.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from lib_lora_train.standalone import models
from lib_lora_train.standalone.runtime import StandaloneRuntime
from lib_lora_train.ui import options, services
from lib_lora_train.ui import runtime as ui_runtime

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
P = "lora_train_standalone"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base", type=Path, help="base model: a diffusers folder or a single-file SD1/SD2/SDXL "
                        "checkpoint (a .yaml beside it is used) [the tiny test model]")  # fmt: skip
    parser.add_argument("--models", type=Path, action="append", default=[], metavar="DIR",
                        help="another folder whose models the picker lists (repeatable)")  # fmt: skip
    parser.add_argument(
        "--outputs", type=Path, default=Path("outputs/train_tools"), help="projects folder [%(default)s]"
    )
    parser.add_argument("--models-dir", type=Path, default=Path("models/tagger"),
                        help="tagger models: one sub-folder per model [%(default)s]")  # fmt: skip
    parser.add_argument("--lora-dir", type=Path, default=Path("models/Lora"),
                        help="LoRA folder: trained epochs are published here, <lora:…> reads it [%(default)s]")  # fmt: skip
    parser.add_argument("--listen", default="127.0.0.1", metavar="HOST", help="address to serve on [%(default)s]")
    parser.add_argument("--port", type=int, default=7861, help="port [%(default)s]")
    parser.add_argument("--auth", metavar="USER:PASS", help="ask for this login in the page and on the HTTP API")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 … [auto]")


def make_runtime(args: argparse.Namespace) -> StandaloneRuntime:
    outputs = args.outputs.expanduser().resolve()
    return StandaloneRuntime(
        outputs=outputs, models_dir=args.models_dir.expanduser().resolve(),
        lora_dir=args.lora_dir.expanduser().resolve(), cache_dir=outputs.parent / "cache", device=args.device,
    )  # fmt: skip


def _head() -> str:
    """Our scripts, loaded by the page as the WebUI loads every extension's javascript/*.js."""
    scripts = sorted((ROOT / "javascript").glob("*.js"))
    return "".join(f"<script>{path.read_text(encoding='utf-8')}</script>\n" for path in scripts)


def _inject_head(html: str) -> None:
    """gradio 3.41 has no ``head=``; the WebUI adds its scripts by rewriting the page template's response the same
    way. Done once per process (the app is the only gradio page in it)."""
    import gradio.routes

    original = gradio.routes.templates.TemplateResponse
    if getattr(original, "_lora_train_tools", False):
        return

    def template_response(*args, **kwargs):
        response = original(*args, **kwargs)
        response.body = response.body.replace(b"</head>", html.encode("utf-8") + b"</head>")
        response.init_headers()
        return response

    template_response._lora_train_tools = True
    gradio.routes.templates.TemplateResponse = template_response


def _settings_tab(gr, runtime: StandaloneRuntime) -> None:
    """Our options (the WebUI's Settings -> LoRA Train Tools), saved to the projects folder."""
    components = []
    for option in options.OPTIONS.values():
        value, kwargs = runtime.option(option.key), {"label": option.label, "elem_id": f"{P}_{option.key}"}
        if option.info:
            kwargs["info"] = option.info
        if option.kind == "bool":
            components.append(gr.Checkbox(value=bool(value), **kwargs))
        elif option.kind == "radio":
            components.append(gr.Radio(option.choices(), value=value, **kwargs))
        elif option.kind == "dropdown":
            components.append(gr.Dropdown(option.choices(), value=value, **kwargs))
        elif option.kind == "slider":
            components.append(gr.Slider(option.minimum, option.maximum, value, step=option.step, **kwargs))
        else:
            components.append(gr.Textbox(value=value, max_lines=1, **kwargs))
    apply = gr.Button("Apply settings", variant="primary", elem_id=f"{P}_apply_settings")
    message = gr.Markdown(elem_id=f"{P}_settings_status")

    def on_apply(*values):
        try:
            runtime.set_options(dict(zip(options.OPTIONS, values, strict=True)))
        except ValueError as exc:
            return f"**Not saved:** {exc}"
        return f"Saved to `{runtime.settings_file}`; they apply from the next action on."

    apply.click(on_apply, components, [message])


def _model_header(gr, runtime: StandaloneRuntime, choices: list[Path]) -> None:
    loaded = runtime.model.loaded
    with gr.Row(elem_id=f"{P}_header", equal_height=False):
        picker = gr.Dropdown([str(p) for p in choices], value=str(loaded.path) if loaded else None, scale=4,
                             label="Base model (a diffusers folder or a .safetensors checkpoint)",
                             allow_custom_value=True, elem_id=f"{P}_model")  # fmt: skip
        load = gr.Button("Load model", elem_id=f"{P}_load_model")
    info = gr.Markdown(_model_line(runtime), elem_id=f"{P}_model_info")

    def on_load(path):
        if services.jobs().is_running():
            return "**Not switched:** a training job uses the model; stop it or wait for it to end."
        target = Path(str(path or "")).expanduser()
        if not models.is_model(target):
            return f"**Not switched:** `{target}` is not a diffusers folder (model_index.json) or a checkpoint file."
        try:
            runtime.model.load(target)
        except (OSError, RuntimeError, ValueError) as exc:
            return f"**Could not load** `{target}`: {exc}"
        return _model_line(runtime)

    load.click(on_load, [picker], [info])


def _model_line(runtime: StandaloneRuntime) -> str:
    loaded = runtime.model.loaded
    if loaded is None:
        return "No base model loaded."
    device = loaded.pipe.unet.device
    return f"Loaded **{loaded.label}** ({loaded.arch.upper()}, {device}, {loaded.pipe.unet.dtype})"


def build_app(runtime: StandaloneRuntime, choices: list[Path]):
    import gradio as gr

    from lib_lora_train.ui.tabs import build_tabs

    ui_runtime.install(runtime)
    css = (ROOT / "style.css").read_text(encoding="utf-8")
    # built outside the page's Blocks, as the WebUI builds its extensions' tabs: a Blocks made inside another one
    # renders into it at once, and would show every tab's content on every tab
    tabs = build_tabs()
    with gr.Blocks(title="LoRA Train Tools", css=css, analytics_enabled=False) as demo:
        _model_header(gr, runtime, choices)
        with gr.Tabs(elem_id="tabs"):
            for blocks, title, elem_id in tabs:
                with gr.Tab(title, id=elem_id, elem_id=f"tab_{elem_id}"):
                    blocks.render()
            with gr.Tab("Settings", id="lora_train_settings", elem_id="tab_lora_train_settings"):
                _settings_tab(gr, runtime)
    return demo


def serve(runtime: StandaloneRuntime, base: Path, extra_dirs: list[Path], *, listen: str, port: int,
          auth: str | None, block: bool = True):  # fmt: skip
    """Load the base model, build the page, mount the API, start serving; returns (demo, url)."""
    from lib_lora_train.ui.api_auth import basic_auth_dependency, parse_credentials
    from lib_lora_train.ui.tabs import mount_apis

    credentials = list(parse_credentials(auth).items()) or None
    runtime.model.load(base)
    demo = build_app(runtime, models.candidates(base, extra_dirs))
    _inject_head(_head())
    demo.queue(concurrency_count=16)  # the Train Tools progress poll must not hold up every other click
    allowed = [str(p) for p in (runtime.outputs, runtime.lora_dir(), runtime.cache_dir())]
    app, url, _ = demo.launch(server_name=listen, server_port=port, auth=credentials, prevent_thread_lock=True,
                              allowed_paths=allowed, show_api=False, quiet=True)  # fmt: skip
    mount_apis(app, basic_auth_dependency(auth))
    return demo, url


def main(args: argparse.Namespace) -> int:
    """Check the command line, then serve until Ctrl+C; exit code 2 for bad options (nothing started)."""
    import sys

    if args.auth is not None and ":" not in args.auth:
        print("error: --auth takes USER:PASS (several as USER:PASS,USER2:PASS2)", file=sys.stderr)
        return 2
    runtime = make_runtime(args)
    if args.base is not None:
        base = args.base.expanduser().resolve()
        if not models.is_model(base):
            print(f"error: --base {args.base}: not a diffusers folder (with model_index.json) or a .safetensors/.ckpt "
                  "checkpoint", file=sys.stderr)  # fmt: skip
            return 2
    else:
        base = models.tiny_model(runtime.cache_dir())
        print(f"no --base given: using the tiny test model {base} (it makes noise, not pictures)", file=sys.stderr)
    try:
        demo, url = serve(runtime, base, [d.expanduser().resolve() for d in args.models], listen=args.listen,
                          port=args.port, auth=args.auth)  # fmt: skip
    except (OSError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"LoRA Train Tools is running at {url} (Ctrl+C to stop)", flush=True)
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        services.stop_jobs()
        demo.close()
    return 0
