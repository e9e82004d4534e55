"""LoRA Train Tools for the AUTOMATIC1111 WebUI and for WebUI Forge: registers the four tabs, the settings section
and the HTTP API through the adapter of the host it runs in (Forge ships the ``modules_forge`` package).

The WebUI runs every file in scripts/, so this one only registers callbacks; everything else is in lib_lora_train.
The extension root is on sys.path only while scripts load, hence the imports at the top.
"""

import importlib.util

from modules import script_callbacks, shared

from lib_lora_train.webui.shared.register import register

if importlib.util.find_spec("modules_forge") is not None:
    from lib_lora_train.forge.runtime import ForgeRuntime as HostRuntime
else:
    from lib_lora_train.webui.runtime import WebUIRuntime as HostRuntime

register(script_callbacks, shared.cmd_opts, HostRuntime())
