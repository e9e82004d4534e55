"""The tagger as the tab and the HTTP API use it: list, load (downloading if allowed), tag, unload.

Host-neutral: the WebUI layer passes a function returning the current ``TaggerConfig`` (read from its settings),
and plain callables for progress and stop.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from lib_lora_train.tagger.folder_job import FolderJobRequest, FolderSummary, Progress, ShouldStop, run_folder_job
from lib_lora_train.tagger.hub import DownloadProgress, download_model
from lib_lora_train.tagger.inference import predict_images
from lib_lora_train.tagger.models import DEFAULT_MODEL, ModelEntry, ModelNotFoundError, find_model, list_models
from lib_lora_train.tagger.postprocess import TagOptions, TagResult, raw_confidences, select_tags
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
        config = self.config
        return [e.name for e in list_models(config.models_dir) if e.is_local or config.allow_download]

    def entry(self, name: str) -> ModelEntry:
        return find_model(name or self.config.default_model, self.config.models_dir)

    def load(self, name: str, progress: DownloadProgress | None = None) -> LoadedTagger:
        """The model ``name`` in memory, downloading it first when it is known but not on disk yet."""
        config = self.config
        entry = self.entry(name)
        folder = entry.folder
        if folder is None:
            if not config.allow_download or entry.spec is None:
                raise ModelNotFoundError(
                    f"{entry.name} is not in {config.models_dir} and downloads are off; put its model.onnx and "
                    "selected_tags.csv there, or allow downloads in the settings"
                )
            folder = self._downloader(entry.spec, config.models_dir, progress)
        return self._manager().get(entry.name, folder)

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
        self, name: str, image: Image.Image, threshold: float
    ) -> tuple[dict[str, float], dict[str, float]]:
        """(ratings, tags above ``threshold``) with the model's own tag names, as the tagger API returns them."""
        tagger, probs = self.probabilities(name, image)
        return raw_confidences(probs, tagger.tags, threshold)

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
        text = f"{tagger.name}: {tagger.input_size}px, {len(tagger.tags)} tags, {batch}, on {where}"
        return text + (f"\n{tagger.warning}" if tagger.warning else "")

    def loaded_names(self) -> list[str]:
        return sorted({n for m in self._managers.values() for n in m.loaded_names()})

    def unload_all(self) -> int:
        """Free every loaded model; returns how many were loaded."""
        return sum(manager.unload_all() for manager in self._managers.values())
