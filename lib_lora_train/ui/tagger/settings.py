"""The tagger's settings, read through the host's runtime each time they are needed (a change in Settings applies
without a restart), and the one ``TaggerService`` that the tab, the API and Epoch Compare's scoring share."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from lib_lora_train.tagger.models import DEFAULT_MODEL
from lib_lora_train.tagger.service import TaggerConfig, TaggerService
from lib_lora_train.ui import options as o
from lib_lora_train.ui.runtime import current


@dataclass(frozen=True)
class TaggerSettings:
    config: TaggerConfig
    use_model_thresholds: bool  # selecting a model moves the sliders to its recommended thresholds
    general_threshold: float
    character_threshold: float


def _opt(key: str):
    value = current().option(key)
    return o.OPTIONS[key].default if value is None else value


def default_models_dir() -> str:
    return str(current().tagger_dir())


def read_tagger_settings() -> TaggerSettings:
    """The current tagger settings."""
    config = TaggerConfig(
        models_dir=str(_opt(o.TAGGER_MODELS_DIR) or default_models_dir()),
        use_gpu=bool(_opt(o.TAGGER_USE_GPU)),
        allow_download=bool(_opt(o.TAGGER_ALLOW_DOWNLOAD)),
        default_model=str(_opt(o.TAGGER_DEFAULT_MODEL) or DEFAULT_MODEL),
    )
    return TaggerSettings(
        config=config,
        use_model_thresholds=bool(_opt(o.TAGGER_MODEL_THRESHOLDS)),
        general_threshold=float(_opt(o.TAGGER_GENERAL)),
        character_threshold=float(_opt(o.TAGGER_CHARACTER)),
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
