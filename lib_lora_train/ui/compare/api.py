"""HTTP API of Epoch Compare: ``POST /train-tools/v1/compare`` renders a comparison of a version and returns the grid
paths, the scores and the X/Y/Z plot hand-off (Prompt S/R strings and ready ``/sdapi/v1/txt2img`` bodies);
``POST /train-tools/v1/compare/pick`` records (and optionally publishes) the chosen epoch and weight.

Models are pydantic ``BaseModel``s with ``typing`` annotations so that they work under the WebUI's pydantic 1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional  # noqa: UP035 - pydantic 1 reads these annotations at runtime

from fastapi import APIRouter, Depends, FastAPI, HTTPException
from pydantic import BaseModel, Field

from lib_lora_train.compare.pick import PickError, pick_version
from lib_lora_train.compare.plan import PlanError
from lib_lora_train.compare.service import DEFAULT_WEIGHTS, CompareRequest
from lib_lora_train.compare.xyz import HandoffError, plan_handoffs, txt2img_payload
from lib_lora_train.store import StoreError
from lib_lora_train.ui.pydantic_compat import model_dict
from lib_lora_train.ui.runtime import current

PREFIX = "/train-tools/v1"


class CompareBody(BaseModel):
    project: str = Field(..., example="alice")
    version: str = Field(..., example="v1")
    prompts: list[str] = Field(..., description="one grid per prompt (and seed); the LoRA is added automatically",
                               example=["alice_x, solo, smile, outdoors"])  # fmt: skip
    negative_prompt: str = ""
    epochs: str = Field("all", description="all, every or subset")
    every: int = Field(1, description="with epochs=every: every n-th epoch (the last is always kept)")
    subset: str = Field("", description="with epochs=subset: e.g. '1, 3, 5-7' (0 = the final file)")
    weights: str = Field(DEFAULT_WEIGHTS, description="list or range, e.g. '0.5, 0.8, 1' or '0.5-1.0:0.1'")
    seeds: str = Field("-1", description="comma-separated; -1 = one random seed shared by every cell")
    sampler: str = "Euler a"
    scheduler: str = "Automatic"
    steps: int = 20
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    no_lora: bool = Field(True, description="add a no-LoRA reference column")
    activation_tag: str = Field("", description="empty = the first tag shared by the dataset's captions")
    score: bool = Field(True, description="score the cells with a tagger model on disk")
    traits: str = Field("", description="comma-separated trait tags; empty = found by the tagger in the dataset")
    threshold: float = 0.35


class CompareResponse(BaseModel):
    folder: str
    grids: list[str]
    cells: list[str]
    score_chart: Optional[str] = None
    scores: Optional[dict[str, Any]] = None
    xyz: list[dict[str, Any]] = Field(default_factory=list, description="per prompt: S/R strings, infotext, and "
                                      "txt2img_payload to POST to /sdapi/v1/txt2img for the same grid")  # fmt: skip
    interrupted: bool = False
    notes: list[str] = Field(default_factory=list)
    seeds: list[int] = Field(default_factory=list, description="the seeds used (-1 replaced)")


class PickBody(BaseModel):
    project: str
    version: str
    epoch: Optional[int] = Field(..., description="the chosen epoch; null for the final file")
    weight: float
    publish: bool = Field(False, description="also copy it to the LoRA folder as <project>-<version>.safetensors")
    activation_text: str = ""


class PickResponse(BaseModel):
    pick_file: str
    epoch: Optional[int] = None
    weight: float
    checkpoint: str
    published: Optional[str] = None
    sidecar: Optional[str] = None
    notes: list[str] = Field(default_factory=list)


def response_for(plan, result) -> CompareResponse:
    """The API's view of a finished comparison (adds the txt2img bodies for the X/Y/Z plot)."""
    data = result.to_dict()
    try:
        from lib_lora_train.compare.plan import expand

        handoffs = plan_handoffs(plan, expand(plan))
        for entry, handoff in zip(data["xyz"], handoffs, strict=False):
            entry["txt2img_payload"] = txt2img_payload(plan, handoff, axes=live_axes())
    except HandoffError:
        pass  # the note explaining it is already in result.notes
    return CompareResponse(**{k: data[k] for k in ("folder", "grids", "cells", "score_chart", "scores", "xyz", "interrupted", "notes")},
                           seeds=plan.seeds)  # fmt: skip


def live_axes():
    """The X/Y/Z axis labels of the running host (an extension may have appended some)."""
    return current().xyz_axes()


def build_router(
    *, run: Callable, store_factory: Callable, lora_dir: Callable, auth_dependency: Callable | None
) -> APIRouter:
    router = APIRouter(prefix=PREFIX, tags=["LoRA Train Tools"])
    deps = [Depends(auth_dependency)] if auth_dependency else []

    @router.post("/compare", response_model=CompareResponse, dependencies=deps)
    def compare(body: CompareBody):
        """Render an epoch x weight comparison of a version with the loaded model (blocks until done; the WebUI's
        Interrupt stops it and returns what was rendered). 404: no such version; 422: a bad setting (field named)."""
        request = CompareRequest(**model_dict(body))
        try:
            plan, result = run(request)
        except PlanError as exc:
            raise HTTPException(422, detail={"field": exc.field_name, "message": str(exc)}) from None
        except StoreError as exc:  # no such project/version, bad name
            raise HTTPException(404, detail=str(exc)) from None
        return response_for(plan, result)

    @router.post("/compare/pick", response_model=PickResponse, dependencies=deps)
    def pick(body: PickBody):
        """Record the chosen epoch and weight in the version (pick.json); with publish, copy it to the LoRA folder
        under the clean name with the weight in its card's user metadata."""
        try:
            version = store_factory().version(body.project, body.version)
            chosen, path, published = pick_version(
                version, body.epoch, body.weight, lora_dir=lora_dir() if body.publish else None,
                activation_text=body.activation_text,
            )  # fmt: skip
        except PickError as exc:
            raise HTTPException(422, detail=str(exc)) from None
        except StoreError as exc:
            raise HTTPException(404, detail=str(exc)) from None
        return PickResponse(
            pick_file=str(path),
            epoch=chosen.epoch,
            weight=chosen.weight,
            checkpoint=chosen.checkpoint,
            published=str(published.model) if published else None,
            sidecar=str(published.sidecar) if published else None,
            notes=published.notes if published else [],
        )

    return router


def mount_compare_api(app: FastAPI, auth_dependency: Callable | None = None, *, run: Callable | None = None,
                      store_factory: Callable | None = None, lora_dir: Callable | None = None) -> None:  # fmt: skip
    """Add the Epoch Compare routes to the host's app; the keywords replace the runtime's bindings in tests."""
    from lib_lora_train.ui.compare import render as compare_render

    app.include_router(
        build_router(
            run=run or compare_render.run_comparison,
            store_factory=store_factory or compare_render.project_store,
            lora_dir=lora_dir or compare_render.lora_dir,
            auth_dependency=auth_dependency,
        )
    )
