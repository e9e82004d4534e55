"""HTTP routes of the tagger: a drop-in for the WD14 tagger extension's API, plus our folder route.

The shapes, names, status codes and messages follow the maintained fork of that extension (picobyte/stable-
diffusion-webui-wd14-tagger, the one the WebUI's extension index installs), so that scripts written for it keep
working:

- ``POST /tagger/v1/interrogate`` answers ``{"caption": {"tag": {...}, "rating": {...}}}``, tags above
  ``threshold`` (any number; tags strictly above it) in the order of the model's tag list. The image is base64,
  a ``data:image/...`` URL or an ``http(s)://`` URL, decoded by the host's decoder (the WebUI's own inside the
  WebUI, with its URL options); a model is checked before the image. ``tag_order: "confidence"`` (our field) sorts
  the tags most confident first instead.
- Its queue protocol: ``queue`` + ``name_in_queue`` tags an image into a queue and answers the running count of
  images per model name (as the client sent it) and queue; an empty ``name_in_queue`` collects the queue (the image
  is not read) and answers ``{name: {tag: confidence, "rating:<name>": confidence}}``, or the counts when there is
  no such queue. ``<sha256>`` names an image by the hash of the text it was sent as (the fork crashes on it).
- ``GET /tagger/v1/interrogators`` answers ``{"models": [...]}``: every usable model under our name and under the
  names the fork and the original extension gave it, all accepted by ``/interrogate``.
- ``POST /tagger/v1/unload-interrogators`` answers a sentence.
- ``POST /tagger/v1/batch`` is our own: tag a folder into caption files.

When another extension serving these routes is installed (the WD14 tagger itself), the three compatible routes are
left to it and only ``/batch`` is ours. Only FastAPI and pydantic-1-style models (the WebUI pins pydantic 1) are
used, so the routes also run on a bare FastAPI app, as in the tests.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import string
import threading
from collections.abc import Callable, Iterable
from typing import Optional

from fastapi import Depends, FastAPI, HTTPException
from PIL import Image
from pydantic import BaseModel, Field

from lib_lora_train.tagger.captions import DEFAULT_PATTERN
from lib_lora_train.tagger.folder_job import FolderJobRequest
from lib_lora_train.tagger.hub import DownloadError
from lib_lora_train.tagger.image_input import INVALID_IMAGE, ImageInputError
from lib_lora_train.tagger.models import ModelEntry, ModelNotFoundError
from lib_lora_train.tagger.postprocess import TagOrder
from lib_lora_train.tagger.runtime import TaggerLoadError
from lib_lora_train.tagger.service import TaggerService
from lib_lora_train.tagger.tag_table import TagTableError
from lib_lora_train.ui.pydantic_compat import StrictModel

log = logging.getLogger(__name__)

PREFIX = "/tagger/v1"
COMPATIBLE_ROUTES = ("interrogate", "interrogators", "unload-interrogators")  # the WD14 tagger extension's paths
MODEL_NOT_FOUND = "Model not found"  # the fork's message, word for word: clients compare it
SHA256_NAME = "<sha256>"


class TaggerInterrogateRequest(BaseModel):
    image: str = Field("", title="Image", description="The image: base64, a data:image/... URL, or an http(s):// URL")
    model: str = Field(..., title="Model", description="A name from /tagger/v1/interrogators")
    threshold: float = Field(0.0, title="Threshold", description="Only tags with a confidence above this one")
    queue: str = Field("", title="Queue", description="Name of a queue; leave empty for a single response")
    name_in_queue: str = Field(
        "",
        title="Name",
        description="Name of this image in the queue, or <sha256>; empty to collect the queue's results",
    )
    tag_order: TagOrder = Field(
        "model",
        title="Tag order",
        description="model: the model's tag list order (as the WD14 tagger extension); confidence: highest first",
    )


class TaggerInterrogateResponse(BaseModel):
    caption: dict[str, dict[str, float]] = Field(
        ...,
        title="Caption",
        description='{"tag": {tag: confidence}, "rating": {rating: confidence}}; in queue mode the counts or '
        "the collected results",
    )


class TaggerInterrogatorsResponse(BaseModel):
    models: list[str] = Field(..., title="Models", description="Every name /tagger/v1/interrogate accepts")


class TaggerBatchRequest(StrictModel):
    input_dir: str = Field(..., description="Folder of images (searched recursively unless recursive is false)")
    model: str = Field("", description="Model name; empty for the default model of the settings")
    output_dir: str = Field("", description="Where captions go; empty for beside each image")
    pattern: str = Field(DEFAULT_PATTERN, description="Caption file name; [name] and [extension] are replaced")
    recursive: bool = True
    existing: str = Field("skip", description="skip, overwrite, append or prepend")
    backup: bool = Field(True, description="Keep the previous text of changed captions as .bak files")
    general_threshold: Optional[float] = Field(None, ge=0, le=1, description="Empty for the model's default")
    character_threshold: Optional[float] = Field(None, ge=0, le=1, description="Empty for the model's default")
    include_rating: bool = False
    exclude: list[str] = Field(default_factory=list, description="Tags to leave out; /regex/ entries allowed")
    additional: list[str] = Field(default_factory=list, description="Tags that always come first")
    character_first: bool = False
    replace_underscores: bool = True
    escape_brackets: bool = False
    sort_by: str = Field("confidence", description="confidence or name")
    max_tags: int = Field(0, ge=0, description="0 for no limit")
    batch_size: int = Field(0, ge=0, description="0 to choose for the model and device")
    fast_jpeg: bool = Field(True, description="Decode big JPEGs at a reduced scale, still twice the model's size")


class TaggerBatchResponse(BaseModel):
    total: int
    written: int
    unchanged: int
    skipped_existing: int
    tagged: int
    errors: list[str]
    stopped: bool
    seconds: float
    images_per_second: float
    frequencies: dict[str, int]


class QueueBook:
    """The queue protocol's state: results per queue and image name, running counts per model name and queue.

    The fork keeps the same two tables but fills them from an event loop started per request, so its counts
    sometimes come back empty; here every answer is the tables as they stand.
    """

    def __init__(self) -> None:
        self._results: dict[str, dict[str, dict[str, float]]] = {}
        self._counts: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()

    def new_queue_name(self) -> str:
        """Eight random capitals and digits, not naming a queue in use."""
        alphabet = string.ascii_uppercase + string.digits
        with self._lock:
            while True:
                name = "".join(secrets.choice(alphabet) for _ in range(8))
                if name not in self._results:
                    return name

    def reserve(self, model: str, queue: str, name: str, image: str) -> str | None:
        """Take a place for an image before it is tagged: the name it gets (``name#0``, ``name#1``... when taken),
        or None for a ``<sha256>`` image already in the queue. The image counts from here, even if it then fails."""
        with self._lock:
            names = self._results.setdefault(queue, {})
            if name == SHA256_NAME:
                name = hashlib.sha256(image.encode("utf-8")).hexdigest()
                if name in names:
                    return None
            elif name in names:
                number = 0
                while f"{name}#{number}" in names:
                    number += 1
                name = f"{name}#{number}"
            names[name] = {}
            counts = self._counts.setdefault(model, {})
            counts[queue] = counts.get(queue, 0.0) + 1.0
            return name

    def store(self, queue: str, name: str, ratings: dict[str, float], tags: dict[str, float]) -> None:
        with self._lock:
            self._results.setdefault(queue, {})[name] = {**tags, **{f"rating:{k}": v for k, v in ratings.items()}}

    def collect(self, model: str, queue: str) -> dict[str, dict[str, float]]:
        """The queue's results (and the queue is gone), or the counts when there is no such queue."""
        with self._lock:
            self._counts.setdefault(model, {}).pop(queue, None)
            if queue in self._results:
                return self._results.pop(queue)
            return self._counts_locked()

    def counts(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return self._counts_locked()

    def _counts_locked(self) -> dict[str, dict[str, float]]:
        return {model: dict(queues) for model, queues in self._counts.items()}


def other_api_note(owners: Iterable[str]) -> str:
    """What we say (console and tab) when another extension serves the WD14 tagger's routes; empty when none."""
    owners = list(owners)
    if not owners:
        return ""
    names = ", ".join(owners)
    paths = ", ".join(f"{PREFIX}/{p}" for p in COMPATIBLE_ROUTES)
    return (
        f"{names} also serves the WD14 tagger's HTTP routes ({paths}); they are left to it, so API clients get its "
        f"answers. This tab and our {PREFIX}/batch route work as usual. To serve those routes from LoRA Train Tools, "
        f"disable {names} in Extensions and restart."
    )


def mount_tagger_api(
    app: FastAPI,
    auth_dependency: Callable | None = None,
    *,
    service: TaggerService | None = None,
    lock=None,
    should_stop: Callable[[], bool] | None = None,
    image_decoder: Callable[[str], Image.Image] | None = None,
    other_apis: Iterable[str] | None = None,
) -> list[str]:
    """Add the tagger routes to ``app``; returns the paths added.

    ``service`` defaults to the shared one, ``lock`` to the host's GPU lock, ``image_decoder`` to the host's
    (``UIRuntime.decode_api_image``, looked up per request), ``other_apis`` to the other installed extensions that
    serve the WD14 tagger's routes (``UIRuntime.other_tagger_apis``); with any, or with those paths already taken on
    ``app``, only our own ``/batch`` route is added.
    """
    if service is None:
        from lib_lora_train.ui.tagger.settings import get_tagger_service

        service = get_tagger_service()
    from lib_lora_train.ui.runtime import current

    if lock is None:
        lock = current().gpu_lock()
    owners = list(current().other_tagger_apis() if other_apis is None else other_apis)
    taken = {getattr(route, "path", None) for route in app.routes}
    if not owners and any(f"{PREFIX}/{path}" in taken for path in COMPATIBLE_ROUTES):
        owners = ["another extension"]
    if owners:
        log.warning("LoRA Train Tools: %s", other_api_note(owners))
    book = QueueBook()
    dependencies = [Depends(auth_dependency)] if auth_dependency else None

    def usable_entry(name: str, *, ours: bool) -> ModelEntry:
        """``ours``: our own route (an empty name is the default model; the 404 lists the models)."""
        try:
            entry = service.entry(name, use_default=ours)
        except ModelNotFoundError as exc:
            if ours:
                raise HTTPException(404, f"{MODEL_NOT_FOUND}: {exc}") from None
            log.warning("LoRA Train Tools tagger API: %s", exc)  # the fork's bare message to the client
            raise HTTPException(404, MODEL_NOT_FOUND) from None
        if not service.is_usable(entry):
            raise HTTPException(
                404,
                f"{MODEL_NOT_FOUND}: {entry.name} is not in {service.config.models_dir} and downloads are off; "
                "put its files there or allow downloads in the settings",
            )
        return entry

    def decode(data: str) -> Image.Image:
        decoder = image_decoder or current().decode_api_image
        try:
            image = decoder(data)  # the WebUI's decoder raises its own HTTPException, passed on as it is
        except ImageInputError as exc:
            raise HTTPException(exc.status, exc.detail) from None
        try:
            image.load()  # a decoder may open lazily; a damaged file should fail here, not inside the model
        except Exception:
            raise HTTPException(500, INVALID_IMAGE) from None
        return image

    def tag(entry: ModelEntry, req: TaggerInterrogateRequest) -> tuple[dict[str, float], dict[str, float]]:
        image = decode(req.image)
        try:
            with lock:
                return service.interrogate_raw(entry.name, image, req.threshold, req.tag_order)
        except ModelNotFoundError as exc:  # its folder went away since the check
            raise HTTPException(404, f"{MODEL_NOT_FOUND}: {exc}") from None
        except (DownloadError, TaggerLoadError, TagTableError) as exc:
            raise HTTPException(500, str(exc)) from None

    def interrogate(req: TaggerInterrogateRequest) -> TaggerInterrogateResponse:
        entry = usable_entry(req.model, ours=False)
        queue, name = req.queue, req.name_in_queue
        if not queue and not name:
            ratings, tags = tag(entry, req)
            return TaggerInterrogateResponse(caption={"tag": tags, "rating": ratings})
        if not queue:
            queue = book.new_queue_name()
            log.warning("LoRA Train Tools tagger API: queue name %s made up for image %r", queue, name)
        if not name:
            return TaggerInterrogateResponse(caption=book.collect(req.model, queue))
        placed = book.reserve(req.model, queue, name, req.image)
        if placed is not None:
            ratings, tags = tag(entry, req)
            book.store(queue, placed, ratings, tags)
        return TaggerInterrogateResponse(caption=book.counts())

    def interrogators() -> TaggerInterrogatorsResponse:
        return TaggerInterrogatorsResponse(models=service.api_model_names())

    def unload() -> str:
        with lock:
            count = service.unload_all()
        return f"Successfully unload {count} model(s)"

    def batch(req: TaggerBatchRequest) -> TaggerBatchResponse:
        model = usable_entry(req.model, ours=True).name
        thresholds = {
            k: v
            for k, v in (("general_threshold", req.general_threshold), ("character_threshold", req.character_threshold))
            if v is not None
        }
        try:
            options = service.default_options(
                model,
                **thresholds,
                include_rating=req.include_rating,
                exclude=tuple(req.exclude),
                additional=tuple(req.additional),
                character_first=req.character_first,
                replace_underscores=req.replace_underscores,
                escape_brackets=req.escape_brackets,
                sort_by=req.sort_by,
                max_tags=req.max_tags,
            )
            job = FolderJobRequest(
                req.input_dir,
                options=options,
                recursive=req.recursive,
                output_dir=req.output_dir,
                pattern=req.pattern,
                existing=req.existing,
                backup=req.backup,
                batch_size=req.batch_size,
                fast_jpeg=req.fast_jpeg,
            )
            job.validate()
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        try:
            with lock:
                summary = service.run_folder(model, job, should_stop=should_stop)
        except (DownloadError, TaggerLoadError, TagTableError) as exc:
            raise HTTPException(500, str(exc)) from None
        return TaggerBatchResponse(
            total=summary.total,
            written=summary.written,
            unchanged=summary.unchanged,
            skipped_existing=summary.skipped_existing,
            tagged=summary.tagged,
            errors=summary.errors,
            stopped=summary.stopped,
            seconds=summary.seconds,
            images_per_second=summary.images_per_second,
            frequencies=dict(summary.frequencies.most_common()),
        )

    routes = [
        ("interrogate", interrogate, ["POST"], TaggerInterrogateResponse),
        ("interrogators", interrogators, ["GET"], TaggerInterrogatorsResponse),
        ("unload-interrogators", unload, ["POST"], str),
        ("batch", batch, ["POST"], TaggerBatchResponse),
    ]
    added = []
    for path, endpoint, methods, response_model in routes:
        if owners and path in COMPATIBLE_ROUTES:
            continue
        app.add_api_route(
            f"{PREFIX}/{path}", endpoint, methods=methods, response_model=response_model, dependencies=dependencies
        )
        added.append(f"{PREFIX}/{path}")
    return added
