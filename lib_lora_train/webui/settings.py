"""The extension's section in the WebUI's Settings tab, and readers for the values the other pieces need.

Options (all under ``shared.opts``): where projects live, how epochs are published to the LoRA folder, the default
preset. The tagger's options join the same section when the tagger module is present.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lib_lora_train.publish import PUBLISH_MODES
from lib_lora_train.webui.train_plan import PRESETS

log = logging.getLogger(__name__)

SECTION = ("lora_train_tools", "LoRA Train Tools")
OUTPUT_DIR = "lora_train_tools_output_dir"
PUBLISH_MODE = "lora_train_tools_publish_mode"
PUBLISH_SUBFOLDER = "lora_train_tools_publish_subfolder"
DEFAULT_PRESET = "lora_train_tools_default_preset"
DEFAULTS = {OUTPUT_DIR: "", PUBLISH_MODE: "hardlink", PUBLISH_SUBFOLDER: "train_tools", DEFAULT_PRESET: "character"}


def register_settings() -> None:
    """``on_ui_settings`` callback: add this extension's options to the Settings tab."""
    import gradio as gr
    from modules import shared

    def add(key, label, component=None, component_args=None, info=None):
        option = shared.OptionInfo(DEFAULTS[key], label, component, component_args, section=SECTION)
        shared.opts.add_option(key, option.info(info) if info else option)

    add(OUTPUT_DIR, "Projects folder", info="empty = <WebUI outputs>/train_tools")
    add(PUBLISH_MODE, "Publish trained epochs to the LoRA folder", gr.Radio, {"choices": list(PUBLISH_MODES)},
        info="hardlink takes no extra space; symlink follows the version; off keeps them in the project only")  # fmt: skip
    add(PUBLISH_SUBFOLDER, "Sub-folder of the LoRA folder for published epochs", info="empty = the LoRA folder itself")
    add(DEFAULT_PRESET, "Default training preset", gr.Dropdown, {"choices": list(PRESETS)})
    try:
        from lib_lora_train.webui.tagger_settings import register_tagger_settings
    except ImportError:
        return
    register_tagger_settings(SECTION)


def option(key: str):
    """The current value of one of this extension's options (its default before the Settings tab saved one)."""
    from modules import shared

    return getattr(shared.opts, key, DEFAULTS[key]) if key in shared.opts.data_labels else DEFAULTS[key]


def output_root() -> Path:
    """Where projects live: the setting, or ``<data dir>/outputs/train_tools``."""
    from modules import paths_internal

    configured = str(option(OUTPUT_DIR) or "").strip()
    return Path(configured).expanduser() if configured else Path(paths_internal.data_path) / "outputs" / "train_tools"


def lora_dir() -> Path:
    """The WebUI's LoRA folder (``--lora-dir``, added by the built-in Lora extension; models/Lora otherwise)."""
    from modules import paths, shared

    return Path(getattr(shared.cmd_opts, "lora_dir", None) or Path(paths.models_path) / "Lora")
