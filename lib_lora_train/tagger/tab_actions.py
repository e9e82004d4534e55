"""What the Tagger tab's buttons do, without gradio: form values in, texts and confidences out.

The tab (``lib_lora_train.ui.tagger.tab``) only wires these to components and to the WebUI's progress state,
so the behaviour behind every button is testable without a WebUI.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from lib_lora_train.tagger.folder_job import FolderJobRequest, Progress, ShouldStop
from lib_lora_train.tagger.hub import DownloadError
from lib_lora_train.tagger.postprocess import TagOptions
from lib_lora_train.tagger.runtime import TaggerLoadError
from lib_lora_train.tagger.service import TaggerService


@dataclass(frozen=True)
class TagForm:
    """The tag options as the tab's components hold them (text boxes as text, numbers as floats)."""

    general_threshold: float
    character_threshold: float
    include_rating: bool = False
    exclude: str = ""
    additional: str = ""
    character_first: bool = False
    replace_underscores: bool = True
    escape_brackets: bool = False
    sort_by: str = "confidence"
    max_tags: float = 0

    def options(self) -> TagOptions:
        return TagOptions(
            general_threshold=float(self.general_threshold),
            character_threshold=float(self.character_threshold),
            include_rating=bool(self.include_rating),
            exclude=self.exclude or "",
            additional=self.additional or "",
            character_first=bool(self.character_first),
            replace_underscores=bool(self.replace_underscores),
            escape_brackets=bool(self.escape_brackets),
            sort_by=self.sort_by or "confidence",
            max_tags=int(self.max_tags or 0),
        )


@dataclass(frozen=True)
class SingleResult:
    caption: str
    ratings: dict[str, float]
    tags: dict[str, float]
    status: str


def interrogate_single(service: TaggerService, model: str, image: Image.Image | None, form: TagForm) -> SingleResult:
    """Tag one image for display; problems come back as a status line instead of an exception."""
    if image is None:
        return SingleResult("", {}, {}, "Drop an image into the box first.")
    try:
        result = service.interrogate(model, image, form.options())
    except Exception as exc:  # shown to the user: a bad option, a missing model, a broken download
        return SingleResult("", {}, {}, f"Error: {exc}")
    return SingleResult(result.caption, result.ratings, result.confidences, service.status(model))


def model_thresholds(service: TaggerService, model: str, fallback: tuple[float, float]) -> tuple[float, float]:
    """The recommended (general, character) thresholds of ``model``; ``fallback`` for unknown names."""
    try:
        entry = service.entry(model)
    except LookupError:
        return fallback
    return entry.general_threshold, entry.character_threshold


@dataclass(frozen=True)
class FolderForm:
    input_dir: str
    output_dir: str = ""
    pattern: str = "[name].txt"
    recursive: bool = True
    existing: str = "skip"
    backup: bool = True
    batch_size: float = 0
    fast_jpeg: bool = True

    def request(self, options: TagOptions) -> FolderJobRequest:
        return FolderJobRequest(
            input_dir=(self.input_dir or "").strip(),
            options=options,
            recursive=bool(self.recursive),
            output_dir=(self.output_dir or "").strip(),
            pattern=(self.pattern or "").strip(),
            existing=self.existing,
            backup=bool(self.backup),
            batch_size=int(self.batch_size or 0),
            fast_jpeg=bool(self.fast_jpeg),
        )


def tag_folder(
    service: TaggerService,
    model: str,
    folder: FolderForm,
    form: TagForm,
    *,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> str:
    """Run a folder job and return its report (or the reason it could not start) as text."""
    try:
        request = folder.request(form.options())
        request.validate()
        if progress:  # a first use may download the model: show that in the same progress bar
            service.load(model, progress=lambda fraction, text: progress(int(fraction * 1000), 1000, text))
        summary = service.run_folder(model, request, progress=progress, should_stop=should_stop)
    except (ValueError, LookupError, DownloadError, TaggerLoadError) as exc:
        # a bad folder, pattern, option or model: a message for the user, not a traceback
        return f"Not started: {exc}"
    return summary.report()


def unload_models(service: TaggerService) -> str:
    count = service.unload_all()
    return f"Unloaded {count} model(s); memory is freed."
