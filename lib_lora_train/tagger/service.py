"""The tagger as the tab and the HTTP API use it: list, load (downloading if allowed), tag, unload.

Host-neutral: the WebUI layer passes a function returning the current ``TaggerConfig`` (read from its settings),
and plain callables for progress and stop.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from lib_lora_train.tagger.folder_job import FolderJobRequest, FolderSummary, Progress, ShouldStop, run_folder_job
from lib_lora_train.tagger.hub import DownloadProgress, download_model
from lib_lora_train.tagger.inference import predict_images
from lib_lora_train.tagger.models import DEFAULT_MODEL, ModelEntry, ModelNotFoundError, find_model, list_models
from lib_lora_train.tagger.postprocess import TagOptions, TagOrder, TagResult, raw_confidences, select_tags
from lib_lora_train.tagger.runtime import LoadedTagger, ModelManager


@dataclass(frozen=True)
class TaggerConfig:
    """Where models live and how they run; the WebUI fills it from its settings."""

    models_dir: str
    use_gpu: bool = True
    allow_download: bool = True
    default_model: str = DEFAULT_MODEL


class TaggerService:
    def __init__(
        self,
        config: TaggerConfig | Callable[[], TaggerConfig],
        *,
        downloader: Callable[..., os.PathLike] = download_model,
    ):
        self._config = config
        self._downloader = downloader
        self._managers: dict[bool, ModelManager] = {}

    @property
    def config(self) -> TaggerConfig:
        return self._config() if callable(self._config) else self._config

    def _manager(self) -> ModelManager:
        use_gpu = self.config.use_gpu
        if use_gpu not in self._managers:
            self._managers[use_gpu] = ModelManager(use_gpu=use_gpu)
        return self._managers[use_gpu]

    def entries(self) -> list[ModelEntry]:
        return list_models(self.config.models_dir)

    def model_names(self) -> list[str]:
        """Every model that can be chosen: known ones (downloaded on first use) and the user's own folders."""
        return [e.name for e in self.usable_entries()]

    def usable_entries(self) -> list[ModelEntry]:
        """The entries ``load`` can serve now: on disk, or known and downloads allowed."""
        return [e for e in list_models(self.config.models_dir) if self.is_usable(e)]

    def is_usable(self, entry: ModelEntry) -> bool:
        return entry.is_local or (self.config.allow_download and entry.spec is not None)

    def api_model_names(self) -> list[str]:
        """What the HTTP API lists: every usable model under our name, then the names other tagger extensions
        gave it (each of them is accepted too)."""
        return list(dict.fromkeys(name for entry in self.usable_entries() for name in entry.names))

    def entry(self, name: str, *, use_default: bool = True) -> ModelEntry:
        """The model ``name`` (any of its names); an empty name is the default model unless ``use_default`` is off."""
        return find_model(name or (self.config.default_model if use_default else ""), self.config.models_dir)

    def load(self, name: str, progress: DownloadProgress | None = None) -> LoadedTagger:
        """The model ``name`` in memory, downloading it first when it is known but not on disk yet."""
        config = self.config
        entry = self.entry(name)
        folder = entry.folder
        if folder is None:
            if not config.allow_download or entry.spec is None:
                files = f"{entry.spec.model_file} and {entry.spec.tags_file}" if entry.spec else "its files"
                raise ModelNotFoundError(
                    f"{entry.name} is not in {config.models_dir} and downloads are off; put {files} into "
                    f"{Path(config.models_dir) / entry.name}, or allow downloads in the settings"
                )
            folder = self._downloader(entry.spec, config.models_dir, progress)
        return self._manager().get(entry.name, folder, entry.spec)

    def default_options(self, name: str, **overrides) -> TagOptions:
        """Options with the model's recommended thresholds, then ``overrides``."""
        entry = self.entry(name)
        values = {"general_threshold": entry.general_threshold, "character_threshold": entry.character_threshold}
        values.update(overrides)
        return TagOptions(**values)

    def probabilities(self, name: str, image: Image.Image) -> tuple[LoadedTagger, np.ndarray]:
        tagger = self.load(name)
        return tagger, predict_images(tagger, [image])[0]

    def interrogate(self, name: str, image: Image.Image, options: TagOptions) -> TagResult:
        """One image -> its caption and confidences under ``options``."""
        tagger, probs = self.probabilities(name, image)
        return select_tags(probs, tagger.tags, options)

    def interrogate_raw(
        self, name: str, image: Image.Image, threshold: float, order: TagOrder = "model"
    ) -> tuple[dict[str, float], dict[str, float]]:
        """(ratings, tags above ``threshold``) with the model's own tag names, as the tagger API returns them;
        ``order``: see ``postprocess.raw_confidences``."""
        tagger, probs = self.probabilities(name, image)
        return raw_confidences(probs, tagger.tags, threshold, order)

    def run_folder(
        self,
        name: str,
        request: FolderJobRequest,
        *,
        progress: Progress | None = None,
        should_stop: ShouldStop | None = None,
    ) -> FolderSummary:
        request.validate()  # fail on a typo in the folder before a model download starts
        tagger = self.load(name)
        return run_folder_job(tagger, tagger.tags, request, progress=progress, should_stop=should_stop)

    def status(self, name: str) -> str:
        """One line on where the model runs (loading it), with the GPU problem if there is one."""
        try:
            tagger = self.load(name)
        except Exception as exc:
            return f"{name}: {exc}"
        where = "GPU (CUDA)" if tagger.on_gpu else "CPU"
        batch = f"fixed batch {tagger.fixed_batch}" if tagger.fixed_batch else "dynamic batch"
        text = f"{tagger.name}: {tagger.layout.describe()}, {len(tagger.tags)} tags, {batch}, on {where}"
        return text + (f"\n{tagger.warning}" if tagger.warning else "")

    def loaded_names(self) -> list[str]:
        return sorted({n for m in self._managers.values() for n in m.loaded_names()})

    def unload_all(self) -> int:
        """Free every loaded model; returns how many were loaded."""
        return sum(manager.unload_all() for manager in self._managers.values())
