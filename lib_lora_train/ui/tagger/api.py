"""HTTP routes of the tagger, compatible with the WD14 tagger extension so that existing scripts keep working.

The request and response shapes follow the maintained fork of that extension (picobyte/stable-diffusion-webui-
wd14-tagger, the one the WebUI's extension index installs): ``POST /tagger/v1/interrogate`` answers
``{"caption": {"tag": {...}, "rating": {...}}}``, ``GET /tagger/v1/interrogators`` answers ``{"models": [...]}``,
``POST /tagger/v1/unload-interrogators`` answers a sentence. Its queue fields (``queue``, ``name_in_queue``) work
too. ``POST /tagger/v1/batch`` is our own: tag a folder into caption files.

Only FastAPI and pydantic-1-style models (the WebUI pins pydantic 1) are used here, so the routes also run on a
bare FastAPI app, as in the tests.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import secrets
import string
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Optional

from fastapi import Depends, FastAPI, HTTPException
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, Field

from lib_lora_train.tagger.captions import DEFAULT_PATTERN
from lib_lora_train.tagger.folder_job import FolderJobRequest
from lib_lora_train.tagger.models import ModelNotFoundError
from lib_lora_train.tagger.service import TaggerService

PREFIX = "/tagger/v1"


class TaggerInterrogateRequest(BaseModel):
    image: str = Field("", title="Image", description="The image, base64-encoded (a data:image/... URL works too)")
    model: str = Field(..., title="Model", description="A name from /tagger/v1/interrogators")
    threshold: float = Field(0.0, title="Threshold", ge=0, le=1, description="Tags above this confidence")
    queue: str = Field("", title="Queue", description="Name of a queue; leave empty for a single response")
    name_in_queue: str = Field(
        "", title="Name", description="Name of this image in the queue, or <sha256>; empty to collect the queue"
    )


class TaggerInterrogateResponse(BaseModel):
    caption: dict[str, dict[str, float]] = Field(
        ..., title="Caption", description='{"tag": {tag: confidence}, "rating": {rating: confidence}}'
    )


class TaggerInterrogatorsResponse(BaseModel):
    models: list[str] = Field(..., title="Models")


class TaggerBatchRequest(BaseModel):
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

    class Config:
        extra = "forbid"


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


def decode_image(data: str) -> Image.Image:
    """A base64 (or data: URL) string -> an upright PIL image; HTTP 400 naming the problem otherwise."""
    if not data:
        raise HTTPException(404, "Image not found: send the image base64-encoded in the field 'image'")
    if data.startswith("data:"):
        data = data.split(",", 1)[-1]
    try:
        image = Image.open(io.BytesIO(base64.b64decode(data, validate=False)))
        image.load()
        return ImageOps.exif_transpose(image)
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError) as exc:
        raise HTTPException(400, f"Invalid encoded image: {exc}") from None


class _Queues:
    """The extension's queue protocol: tag images under names now, collect them all with an empty name later."""

    def __init__(self):
        self.results: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
        self.counts: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.lock = threading.Lock()

    def add(self, model: str, queue: str, name: str, image_b64: str, ratings: dict, tags: dict) -> dict:
        with self.lock:
            if name == "<sha256>":
                name = hashlib.sha256(image_b64.encode()).hexdigest()
            elif name in self.results[queue]:
                number = 0
                while f"{name}#{number}" in self.results[queue]:
                    number += 1
                name = f"{name}#{number}"
            self.results[queue][name] = {**tags, **{f"rating:{k}": v for k, v in ratings.items()}}
            self.counts[model][queue] += 1.0
            return {m: dict(q) for m, q in self.counts.items()}

    def collect(self, model: str, queue: str) -> dict:
        with self.lock:
            self.counts[model].pop(queue, None)
            return self.results.pop(queue, {})


def mount_tagger_api(
    app: FastAPI,
    auth_dependency: Callable | None = None,
    *,
    service: TaggerService | None = None,
    lock=None,
    should_stop: Callable[[], bool] | None = None,
) -> None:
    """Add the tagger routes to ``app``. ``service`` defaults to the shared one; ``lock`` to the host's GPU lock."""
    if service is None:
        from lib_lora_train.ui.tagger.settings import get_tagger_service

        service = get_tagger_service()
    if lock is None:
        from lib_lora_train.ui.runtime import current

        lock = current().gpu_lock()
    queues = _Queues()
    dependencies = [Depends(auth_dependency)] if auth_dependency else None

    def check_model(name: str) -> str:
        try:
            return service.entry(name).name
        except ModelNotFoundError as exc:
            raise HTTPException(404, f"Model not found: {exc}") from None

    def interrogate(req: TaggerInterrogateRequest) -> TaggerInterrogateResponse:
        image = decode_image(req.image)
        model = check_model(req.model)
        with lock:
            ratings, tags = service.interrogate_raw(model, image, req.threshold)
        queue, name = req.queue, req.name_in_queue
        if not queue and not name:
            return TaggerInterrogateResponse(caption={"tag": tags, "rating": ratings})
        if not queue:  # the extension makes up a queue name the client can read back from the log
            queue = "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(8))
        if not name:
            return TaggerInterrogateResponse(caption=queues.collect(model, queue))
        return TaggerInterrogateResponse(caption=queues.add(model, queue, name, req.image, ratings, tags))

    def interrogators() -> TaggerInterrogatorsResponse:
        return TaggerInterrogatorsResponse(models=service.model_names())

    def unload() -> str:
        with lock:
            count = service.unload_all()
        return f"Successfully unload {count} model(s)"

    def batch(req: TaggerBatchRequest) -> TaggerBatchResponse:
        model = check_model(req.model)
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
        with lock:
            summary = service.run_folder(model, job, should_stop=should_stop)
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
    for path, endpoint, methods, response_model in routes:
        app.add_api_route(
            f"{PREFIX}/{path}", endpoint, methods=methods, response_model=response_model, dependencies=dependencies
        )
