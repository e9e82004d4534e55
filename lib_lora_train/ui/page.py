"""The page of a host that has no page of its own (the standalone app): a base-model picker, the four tabs (the
very builders the WebUI shows, ``ui.tabs``), a Settings tab for our options, our javascript/ and style.css, the HTTP
API (basic auth with ``--auth``, as the WebUI's ``--api-auth``), and a queue so that progress bars and long handlers
run side by side. Everything host-specific comes through the runtime interface."""

from __future__ import annotations

from pathlib import Path

from lib_lora_train.ui import options, services
from lib_lora_train.ui import runtime as ui_runtime
from lib_lora_train.ui.runtime import NoModelError, UIRuntime

ROOT = Path(__file__).resolve().parents[2]
P = "lora_train_standalone"


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


def _settings_tab(gr, runtime: UIRuntime) -> None:
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
        return f"Saved to `{runtime.settings_location()}`; they apply from the next action on."

    apply.click(on_apply, components, [message])


def _model_header(gr, runtime: UIRuntime) -> None:
    with gr.Row(elem_id=f"{P}_header", equal_height=False):
        picker = gr.Dropdown(runtime.model_choices(), value=runtime.current_model(), scale=4,
                             label="Base model (a diffusers folder or a .safetensors checkpoint)",
                             allow_custom_value=True, elem_id=f"{P}_model")  # fmt: skip
        load = gr.Button("Load model", elem_id=f"{P}_load_model")
    info = gr.Markdown(runtime.model_line(), elem_id=f"{P}_model_info")

    def on_load(path):
        if services.jobs().is_running():
            return "**Not switched:** a training job uses the model; stop it or wait for it to end."
        try:
            return runtime.load_model(path)
        except NoModelError as exc:
            return f"**Not switched:** {exc}"

    load.click(on_load, [picker], [info])


def build_app(runtime: UIRuntime):
    import gradio as gr

    from lib_lora_train.ui.tabs import build_tabs

    ui_runtime.install(runtime)
    css = (ROOT / "style.css").read_text(encoding="utf-8")
    # built outside the page's Blocks, as the WebUI builds its extensions' tabs: a Blocks made inside another one
    # renders into it at once, and would show every tab's content on every tab
    tabs = build_tabs()
    with gr.Blocks(title="LoRA Train Tools", css=css, analytics_enabled=False) as demo:
        if runtime.model_choices():
            _model_header(gr, runtime)
        with gr.Tabs(elem_id="tabs"):
            for blocks, title, elem_id in tabs:
                with gr.Tab(title, id=elem_id, elem_id=f"tab_{elem_id}"):
                    blocks.render()
            with gr.Tab("Settings", id="lora_train_settings", elem_id="tab_lora_train_settings"):
                _settings_tab(gr, runtime)
    return demo


def serve(runtime: UIRuntime, *, listen: str, port: int, auth: str | None):
    """Build the page for ``runtime``, mount the API, start serving; returns (demo, url)."""
    from lib_lora_train.ui.api_auth import basic_auth_dependency, parse_credentials
    from lib_lora_train.ui.tabs import mount_apis

    credentials = list(parse_credentials(auth).items()) or None
    demo = build_app(runtime)
    _inject_head(_head())
    demo.queue(concurrency_count=16)  # the Train Tools progress poll must not hold up every other click
    allowed = [str(p) for p in runtime.served_folders()]
    app, url, _ = demo.launch(server_name=listen, server_port=port, auth=credentials, prevent_thread_lock=True,
                              allowed_paths=allowed, show_api=False, quiet=True)  # fmt: skip
    mount_apis(app, basic_auth_dependency(auth))
    return demo, url
