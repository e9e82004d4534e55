"""The tagger's WebUI settings and the one ``TaggerService`` the tab and the API share.

Settings are read each time they are needed (``read_tagger_settings``), so a change in Settings applies without a
restart. Outside the WebUI (tests, other hosts) the defaults below apply.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from lib_lora_train.tagger.models import DEFAULT_CHARACTER_THRESHOLD, DEFAULT_MODEL, KNOWN_MODELS
from lib_lora_train.tagger.service import TaggerConfig, TaggerService

DEFAULTS = {
    "lora_train_tagger_models_dir": "",
    "lora_train_tagger_default_model": DEFAULT_MODEL,
    "lora_train_tagger_use_gpu": True,
    "lora_train_tagger_allow_download": True,
    "lora_train_tagger_model_thresholds": True,
    "lora_train_tagger_general_threshold": 0.35,
    "lora_train_tagger_character_threshold": DEFAULT_CHARACTER_THRESHOLD,
}


@dataclass(frozen=True)
class TaggerSettings:
    config: TaggerConfig
    use_model_thresholds: bool  # selecting a model moves the sliders to its recommended thresholds
    general_threshold: float
    character_threshold: float


def register_tagger_settings(section) -> None:
    """Add the tagger's options to the WebUI's Settings under ``section`` (a ``(key, title)`` tuple)."""
    import gradio as gr
    from modules import shared

    def option(key, label, component=None, args=None):
        shared.opts.add_option(key, shared.OptionInfo(DEFAULTS[key], label, component, args, section=section))

    option(
        "lora_train_tagger_models_dir",
        "Tagger: models folder (empty: <WebUI>/models/tagger; each sub-folder with model.onnx and "
        "selected_tags.csv is a model)",
    )
    option(
        "lora_train_tagger_default_model",
        "Tagger: default model",
        gr.Dropdown,
        {"choices": [m.name for m in KNOWN_MODELS], "allow_custom_value": True},
    )
    option("lora_train_tagger_use_gpu", "Tagger: run on the GPU when onnxruntime-gpu works")
    option("lora_train_tagger_allow_download", "Tagger: download known models from Hugging Face when missing")
    option("lora_train_tagger_model_thresholds", "Tagger: use each model's recommended thresholds when selected")
    option(
        "lora_train_tagger_general_threshold",
        "Tagger: general tag threshold",
        gr.Slider,
        {"minimum": 0.0, "maximum": 1.0, "step": 0.01},
    )
    option(
        "lora_train_tagger_character_threshold",
        "Tagger: character tag threshold",
        gr.Slider,
        {"minimum": 0.0, "maximum": 1.0, "step": 0.01},
    )


def _opt(key: str):
    try:
        from modules import shared

        value = getattr(shared.opts, key, None)
    except (ImportError, AttributeError):  # not inside the WebUI
        value = None
    return DEFAULTS[key] if value is None else value


def default_models_dir() -> str:
    try:
        from modules import paths

        return os.path.join(paths.models_path, "tagger")
    except ImportError:
        return os.path.join(os.getcwd(), "models", "tagger")


def read_tagger_settings() -> TaggerSettings:
    """The current tagger settings (defaults outside the WebUI)."""
    config = TaggerConfig(
        models_dir=str(_opt("lora_train_tagger_models_dir") or default_models_dir()),
        use_gpu=bool(_opt("lora_train_tagger_use_gpu")),
        allow_download=bool(_opt("lora_train_tagger_allow_download")),
        default_model=str(_opt("lora_train_tagger_default_model") or DEFAULT_MODEL),
    )
    return TaggerSettings(
        config=config,
        use_model_thresholds=bool(_opt("lora_train_tagger_model_thresholds")),
        general_threshold=float(_opt("lora_train_tagger_general_threshold")),
        character_threshold=float(_opt("lora_train_tagger_character_threshold")),
    )


_service: TaggerService | None = None
_service_lock = threading.Lock()


def get_tagger_service() -> TaggerService:
    """The process-wide tagger service, following the current settings."""
    global _service
    with _service_lock:
        if _service is None:
            _service = TaggerService(lambda: read_tagger_settings().config)
        return _service
