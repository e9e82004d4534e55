"""LoRA Train Tools for the AUTOMATIC1111 WebUI: registers the four tabs, the settings section and the HTTP API.

The WebUI runs every file in scripts/, so this one only registers callbacks; everything else is in lib_lora_train.
The extension root is on sys.path only while scripts load, hence the import at the top.
"""

from modules import script_callbacks, shared

from lib_lora_train.webui.register import register

register(script_callbacks, shared.cmd_opts)
