"""``/train-tools/v1/bootstrap/…``: the bootstrap loop over HTTP, with the same auth as the other routes.

``POST start`` (the start images, activation tag, traits, targets, views…) answers at once and runs the loop in the
background; ``GET status?project=`` says the round and phase; ``GET candidates?project=`` lists the current round's
candidates with their scores and reasons; ``POST select`` keeps the chosen ones and goes on; ``POST next`` resumes
(after a restart, or after Stop); ``POST stop`` stops after the current step or image.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional  # noqa: UP035 - pydantic 1 reads these annotations at runtime

from fastapi import APIRouter, Depends, FastAPI, HTTPException
from pydantic import BaseModel, Field

from lib_lora_train.bootstrap.crops import CropError
from lib_lora_train.bootstrap.loop import LoopError
from lib_lora_train.bootstrap.prompts import DEFAULT_VIEWS
from lib_lora_train.settings import SettingsError, TrainSettings
from lib_lora_train.store import StoreError
from lib_lora_train.ui.pydantic_compat import model_dict
from lib_lora_train.ui.train.bootstrap_runner import StartRequest, bootstrap_runner

PREFIX = "/train-tools/v1/bootstrap"


class BootstrapStart(BaseModel):
    project: str
    images: str = Field(..., description="a folder of 2-8 start images, or one image with crop=true")
    activation_tag: str
    traits: list = Field(default_factory=list)
    targets: list = Field(default_factory=lambda: [16, 40])
    views: list = Field(default_factory=lambda: list(DEFAULT_VIEWS))
    seeds_per_view: int = 2
    crop: bool = False
    boxes: str = ""
    auto_select: bool = True
    seed: int = 42
    resolution: int = Field(0, description="0: the model's own (1024 for SDXL, else 512)")
    settings: dict = Field(default_factory=dict, description="training settings over the bootstrap preset")
    version: str = "v1"


class BootstrapSelect(BaseModel):
    project: str
    kept: list
    go_on: bool = True


class ProjectBody(BaseModel):
    project: str


def _fail(exc: Exception) -> HTTPException:
    if isinstance(exc, SettingsError):
        return HTTPException(422, detail={"field": exc.field, "message": str(exc)})
    if isinstance(exc, StoreError):
        return HTTPException(409 if "already exists" in str(exc) else 404, detail=str(exc))
    return HTTPException(409 if "running" in str(exc) else 422, detail=str(exc))


def build_router(auth_dependency: Callable | None) -> APIRouter:
    router = APIRouter(prefix=PREFIX, tags=["LoRA Train Tools: bootstrap"])
    deps = [Depends(auth_dependency)] if auth_dependency else []
    runner = bootstrap_runner()

    @router.post("/start", dependencies=deps)
    def start(body: BootstrapStart) -> dict[str, Any]:
        try:
            # a bad setting: 422 before anything is created (checked at the loop's resolution, as it will train)
            TrainSettings.from_dict(
                {**TrainSettings().to_dict(), "resolution": body.resolution or 512, **body.settings}
            )
            runner.start(StartRequest(**model_dict(body)))
        except (LoopError, CropError, SettingsError, StoreError, ValueError) as exc:
            raise _fail(exc) from None
        return runner.status(body.project)

    @router.get("/status", dependencies=deps)
    def status(project: str) -> dict[str, Any]:
        return runner.status(project)

    @router.get("/candidates", dependencies=deps)
    def candidates(project: str) -> dict[str, Any]:
        try:
            return runner.candidates(project)
        except (LoopError, StoreError) as exc:
            raise HTTPException(404, detail=str(exc)) from None

    @router.post("/select", dependencies=deps)
    def select(body: BootstrapSelect) -> dict[str, Any]:
        try:
            runner.select(body.project, [str(k) for k in body.kept], go_on=body.go_on)
        except (LoopError, StoreError) as exc:
            raise _fail(exc) from None
        return runner.status(body.project)

    @router.post("/next", dependencies=deps)
    def next_round(body: ProjectBody) -> dict[str, Any]:
        try:
            runner.resume(body.project)
        except (LoopError, StoreError) as exc:
            raise _fail(exc) from None
        return runner.status(body.project)

    @router.post("/stop", dependencies=deps)
    def stop(body: Optional[ProjectBody] = None) -> dict[str, Any]:  # noqa: UP007 - pydantic 1
        runner.stop()
        return runner.status(body.project if body else runner.project)

    return router


def mount_bootstrap_api(app: FastAPI, auth_dependency: Callable | None = None) -> None:
    app.include_router(build_router(auth_dependency))
