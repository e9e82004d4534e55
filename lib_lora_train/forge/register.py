"""What ``scripts/lora_train_tools.py`` registers when it runs inside Forge: the Forge runtime first, then the same
tabs, settings section, HTTP routes and clean-up as on the A1111 WebUI."""

from __future__ import annotations

from lib_lora_train.ui import runtime as ui_runtime
from lib_lora_train.ui import services


def register(script_callbacks, cmd_opts) -> None:
    from lib_lora_train.forge.runtime import ForgeRuntime
    from lib_lora_train.forge.settings import register_settings
    from lib_lora_train.ui.api_auth import basic_auth_dependency
    from lib_lora_train.ui.tabs import build_tabs, mount_apis

    ui_runtime.install(ForgeRuntime())

    def on_app_started(_demo, app):
        mount_apis(app, basic_auth_dependency(getattr(cmd_opts, "api_auth", None)))

    script_callbacks.on_ui_tabs(build_tabs)
    script_callbacks.on_ui_settings(register_settings)
    script_callbacks.on_app_started(on_app_started)
    script_callbacks.on_script_unloaded(services.stop_jobs)
