"""Our user options, defined once: the WebUI shows them in Settings -> LoRA Train Tools
(``webui.shared.settings``), the standalone app in its own Settings tab; both read them through the runtime's ``option``.

A choice option's list is given here, never as component arguments that a host re-applies on refresh: the WebUI
v1.10 Settings page re-sends ``component_args`` through ``gr.update`` on every load, and gradio 3.41 refuses an
update with ``allow_custom_value`` (the Error toast seen on every page load before).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lib_lora_train.publish import PUBLISH_MODES
from lib_lora_train.tagger.models import DEFAULT_CHARACTER_THRESHOLD, DEFAULT_MODEL, KNOWN_MODELS
from lib_lora_train.train.plan import PRESETS

SECTION = ("lora_train_tools", "LoRA Train Tools")


@dataclass(frozen=True)
class Option:
    key: str
    default: Any
    label: str
    kind: str = "text"  # text, bool, radio, dropdown, slider
    choices: Callable[[], list[str]] | None = None
    info: str = ""
    minimum: float = 0.0
    maximum: float = 1.0
    step: float = 0.01


def _models() -> list[str]:
    return [m.name for m in KNOWN_MODELS]


OUTPUT_DIR = "lora_train_tools_output_dir"
PUBLISH_MODE = "lora_train_tools_publish_mode"
PUBLISH_SUBFOLDER = "lora_train_tools_publish_subfolder"
DEFAULT_PRESET = "lora_train_tools_default_preset"
TAGGER_MODELS_DIR = "lora_train_tagger_models_dir"
TAGGER_DEFAULT_MODEL = "lora_train_tagger_default_model"
TAGGER_USE_GPU = "lora_train_tagger_use_gpu"
TAGGER_ALLOW_DOWNLOAD = "lora_train_tagger_allow_download"
TAGGER_MODEL_THRESHOLDS = "lora_train_tagger_model_thresholds"
TAGGER_GENERAL = "lora_train_tagger_general_threshold"
TAGGER_CHARACTER = "lora_train_tagger_character_threshold"

_ALL = (
    Option(OUTPUT_DIR, "", "Projects folder", info="empty: the host's own (the WebUI's <outputs>/train_tools, the app's --outputs)"),
    Option(PUBLISH_MODE, "hardlink", "Publish trained epochs to the LoRA folder", "radio", lambda: list(PUBLISH_MODES),
           info="hardlink takes no extra space; symlink follows the version; off keeps them in the project only"),
    Option(PUBLISH_SUBFOLDER, "train_tools", "Sub-folder of the LoRA folder for published epochs",
           info="empty = the LoRA folder itself"),
    Option(DEFAULT_PRESET, "character", "Default training preset", "dropdown", lambda: list(PRESETS)),
    Option(TAGGER_MODELS_DIR, "", "Tagger: models folder",
           info="empty: the host's own (the WebUI's <models>/tagger, the app's --models-dir); each sub-folder with model.onnx and selected_tags.csv is a model"),
    Option(TAGGER_DEFAULT_MODEL, DEFAULT_MODEL, "Tagger: default model", "dropdown", _models),
    Option(TAGGER_USE_GPU, True, "Tagger: run on the GPU when onnxruntime-gpu works", "bool"),
    Option(TAGGER_ALLOW_DOWNLOAD, True, "Tagger: download known models from Hugging Face when missing", "bool"),
    Option(TAGGER_MODEL_THRESHOLDS, True, "Tagger: use each model's recommended thresholds when selected", "bool"),
    Option(TAGGER_GENERAL, 0.35, "Tagger: general tag threshold", "slider"),
    Option(TAGGER_CHARACTER, DEFAULT_CHARACTER_THRESHOLD, "Tagger: character tag threshold", "slider"),
)  # fmt: skip

OPTIONS: dict[str, Option] = {option.key: option for option in _ALL}


def coerce(key: str, value: Any) -> Any:
    """A value typed into a host's settings form -> the option's type; ValueError naming the option when it is not."""
    option = OPTIONS[key]
    if option.kind == "bool":
        return bool(value)
    if option.kind == "slider":
        number = float(value)
        if not option.minimum <= number <= option.maximum:
            raise ValueError(f"{option.label}: {number} is outside {option.minimum}-{option.maximum}")
        return number
    text = "" if value is None else str(value).strip()
    if option.choices is not None and option.kind == "radio" and text not in option.choices():
        raise ValueError(f"{option.label}: {text!r} is not one of {', '.join(option.choices())}")
    return text
