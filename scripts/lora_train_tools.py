"""LoRA Train Tools for the AUTOMATIC1111 WebUI: registers the four tabs, the settings section and the HTTP API.

The WebUI runs every file in scripts/, so this one only registers callbacks; everything else is in lib_lora_train.
The extension root is on sys.path only while scripts load, hence the imports at the top.
"""

from modules import script_callbacks, shared

from lib_lora_train.webui import runtime
from lib_lora_train.webui.api_auth import basic_auth_dependency
from lib_lora_train.webui.settings import register_settings
from lib_lora_train.webui.tabs import build_tabs, mount_other_apis
from lib_lora_train.webui.train_api import mount_train_api


def on_app_started(_demo, app):
    auth = basic_auth_dependency(getattr(shared.cmd_opts, "api_auth", None))
    mount_train_api(
        app, jobs=runtime.jobs(), store_factory=runtime.store, fingerprint_fn=runtime.host_fingerprint,
        auth_dependency=auth,
    )  # fmt: skip
    mount_other_apis(app, auth)


script_callbacks.on_ui_tabs(build_tabs)
script_callbacks.on_ui_settings(register_settings)
script_callbacks.on_app_started(on_app_started)
script_callbacks.on_script_unloaded(runtime.stop_on_unload)
