"""The pydantic differences between our two hosts, handled here once.

A1111 WebUI v1.10.x runs fastapi 0.94 with pydantic 1; Forge runs fastapi 0.104+ with pydantic 2. The request models
are written once; what differs is how a model forbids unknown fields and how it turns into a dict.
"""

from __future__ import annotations

from typing import Any

import pydantic
from pydantic import BaseModel

PYDANTIC_MAJOR = int(pydantic.VERSION.split(".")[0])


def model_dict(model: BaseModel) -> dict[str, Any]:
    """``model_dump()`` in pydantic 2, ``dict()`` in pydantic 1 (which pydantic 2 still has, with a warning)."""
    return model.model_dump() if PYDANTIC_MAJOR >= 2 else model.dict()


if PYDANTIC_MAJOR >= 2:

    class StrictModel(BaseModel):
        """A request model that refuses unknown fields (a typo is an error, not silently ignored)."""

        model_config = pydantic.ConfigDict(extra="forbid")

else:

    class StrictModel(BaseModel):  # type: ignore[no-redef]
        """A request model that refuses unknown fields (a typo is an error, not silently ignored)."""

        class Config:
            extra = "forbid"
