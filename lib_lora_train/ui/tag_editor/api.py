"""HTTP routes of the Dataset Tag Editor (FastAPI, as the WebUI's ``on_app_started`` hands it).

``GET /train-tools/v1/tag-editor/image?path=...`` serves a full-size image, but only one that belongs to the open
dataset: the route never becomes a way to read arbitrary files. ``GET /train-tools/v1/tag-editor/tags`` returns
the dataset's tags (most frequent first) for autocomplete, ``GET /train-tools/v1/tag-editor/status`` the open
folder and counts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import FileResponse

from lib_lora_train.ui.tag_editor.handlers import SESSION

PREFIX = "/train-tools/v1/tag-editor"


def mount_tag_editor_api(app: FastAPI, auth_dependency: Callable[..., Any] | None = None) -> None:
    """Add the routes to ``app``; ``auth_dependency`` (e.g. the WebUI's ``--api-auth`` check) guards each one."""
    dependencies = [Depends(auth_dependency)] if auth_dependency is not None else []

    def image(path: str) -> FileResponse:
        if not SESSION.owns_file(path):
            raise HTTPException(status_code=404, detail="not an image of the dataset open in the Tag Editor")
        return FileResponse(path)

    def tags() -> list[str]:
        return SESSION.dataset.all_tags() if SESSION.dataset is not None else []

    def status() -> dict[str, Any]:
        dataset = SESSION.dataset
        if dataset is None:
            return {"folder": None, "images": 0, "tags": 0, "unsaved": 0}
        return {
            "folder": str(dataset.root),
            "images": len(dataset),
            "tags": len(dataset.index),
            "unsaved": len(dataset.dirty_ids()),
        }

    app.add_api_route(f"{PREFIX}/image", image, methods=["GET"], dependencies=dependencies)
    app.add_api_route(f"{PREFIX}/tags", tags, methods=["GET"], dependencies=dependencies, response_model=list[str])
    app.add_api_route(f"{PREFIX}/status", status, methods=["GET"], dependencies=dependencies)
