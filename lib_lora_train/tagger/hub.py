"""Download a known model (WD14 or ML-Danbooru) from the Hugging Face hub into ``<models_dir>/<name>/`` with
progress.

Files land as plain files (``local_dir``), so the folder is also what a user would copy by hand and what
``models.discover_local`` finds on the next start, with or without a network.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from lib_lora_train.tagger.models import ModelSpec, is_model_folder

# progress(fraction 0..1, text)
DownloadProgress = Callable[[float, str], None]


class DownloadError(RuntimeError):
    """A model that could not be fetched; the message says how to get it by hand."""


def download_model(
    spec: ModelSpec, models_dir: str | os.PathLike, progress: DownloadProgress | None = None, *, poll_s: float = 0.5
) -> Path:
    """Fetch the model file and tag list of ``spec`` into ``models_dir/spec.name``; returns that folder.

    Already-complete folders are returned at once, without touching the network.
    """
    target = Path(models_dir) / spec.name
    if is_model_folder(target, spec):
        return target
    try:
        from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    except ImportError:  # pragma: no cover - huggingface_hub ships with the WebUI
        raise DownloadError(_manual_hint(spec, target, "huggingface_hub is not installed")) from None
    target.mkdir(parents=True, exist_ok=True)
    files = (spec.tags_file, spec.model_file)  # the small file first: a wrong repo id fails fast
    for index, filename in enumerate(files):
        label = f"downloading {spec.repo_id}/{filename} ({index + 1}/{len(files)})"
        total = 0
        try:
            meta = get_hf_file_metadata(hf_hub_url(spec.repo_id, filename, revision=spec.revision))
            total = int(meta.size or 0)
        except Exception:  # sizes are only for the progress bar; the download itself reports real errors
            total = 0
        watcher = _PartialFileWatcher(target, total, label, index, len(files), progress, poll_s)
        watcher.start()
        try:
            hf_hub_download(spec.repo_id, filename, revision=spec.revision, local_dir=target)
        except Exception as exc:
            raise DownloadError(_manual_hint(spec, target, f"{type(exc).__name__}: {exc}")) from exc
        finally:
            watcher.stop()
        if progress:
            progress((index + 1) / len(files), label + " done")
    return target


def _manual_hint(spec: ModelSpec, target: Path, reason: str) -> str:
    page = f"https://huggingface.co/{spec.repo_id}" + (f"/tree/{spec.revision}" if spec.revision else "")
    return (
        f"could not download {spec.repo_id} ({reason}). Without a network, download {spec.model_file} and "
        f"{spec.tags_file} from {page} and put them into {target}"
    )


class _PartialFileWatcher:
    """Reports the growing size of huggingface_hub's ``*.incomplete`` file while a download runs."""

    def __init__(
        self,
        folder: Path,
        total: int,
        label: str,
        index: int,
        count: int,
        progress: DownloadProgress | None,
        poll_s: float,
    ):
        self.folder, self.total, self.label = folder, total, label
        self.index, self.count, self.progress, self.poll_s = index, count, progress, poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tagger-download-progress", daemon=True)

    def start(self) -> None:
        if self.progress:
            self.progress(self.index / self.count, self.label)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            done = 0
            for part_file in self.folder.glob(".cache/huggingface/download/**/*.incomplete"):
                try:
                    done += part_file.stat().st_size
                except OSError:  # renamed into place between listing and stat
                    pass
            if self.total and self.progress:
                part = min(done / self.total, 1.0)
                text = f"{self.label}: {done / 2**20:.0f} / {self.total / 2**20:.0f} MiB"
                self.progress((self.index + part) / self.count, text)
