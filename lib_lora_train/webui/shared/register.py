"""What ``scripts/lora_train_tools.py`` registers with the host (A1111 or Forge): the host's runtime first (so that
every tab and route built afterwards reaches the host through it), then the four tabs, the settings section, the
HTTP routes, and the clean-up on a UI reload."""

from __future__ import annotations

from lib_lora_train.ui import runtime as ui_runtime
from lib_lora_train.ui import services


def register(script_callbacks, cmd_opts, runtime) -> None:
    """``runtime``: the host's adapter (``WebUIRuntime`` or ``ForgeRuntime``), installed before anything is built."""
    from lib_lora_train.ui.api_auth import basic_auth_dependency
    from lib_lora_train.ui.tabs import build_tabs, mount_apis
    from lib_lora_train.webui.shared.settings import register_settings

    ui_runtime.install(runtime)

    def on_app_started(_demo, app):
        mount_apis(app, basic_auth_dependency(getattr(cmd_opts, "api_auth", None)))

    script_callbacks.on_ui_tabs(build_tabs)
    script_callbacks.on_ui_settings(register_settings)
    script_callbacks.on_app_started(on_app_started)
    script_callbacks.on_script_unloaded(services.stop_jobs)
