"""What ``scripts/lora_train_tools.py`` registers with the WebUI: the runtime first (so that every tab and route
built afterwards reaches the WebUI through it), then the four tabs, the settings section, the HTTP routes, and the
clean-up on a UI reload."""

from __future__ import annotations

from lib_lora_train.ui import runtime as ui_runtime
from lib_lora_train.ui import services
from lib_lora_train.webui.runtime import WebUIRuntime


def register(script_callbacks, cmd_opts) -> None:
    from lib_lora_train.ui.api_auth import basic_auth_dependency
    from lib_lora_train.ui.tabs import build_tabs, mount_apis
    from lib_lora_train.webui.settings import register_settings

    ui_runtime.install(WebUIRuntime())

    def on_app_started(_demo, app):
        mount_apis(app, basic_auth_dependency(getattr(cmd_opts, "api_auth", None)))

    script_callbacks.on_ui_tabs(build_tabs)
    script_callbacks.on_ui_settings(register_settings)
    script_callbacks.on_app_started(on_app_started)
    script_callbacks.on_script_unloaded(services.stop_jobs)
