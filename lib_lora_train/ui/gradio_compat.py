"""The gradio differences between our two hosts, each handled here once, so the tabs are written one way.

A1111 WebUI v1.10.x runs gradio 3.41; Forge (main, since its 2024 rewrite) runs gradio 4.40. What differs for us:
- an event's client-side function is ``_js=`` in gradio 3 and ``js=`` in gradio 4;
- an Image input's upload source is ``source="upload"`` in gradio 3 and ``sources=["upload"]`` in gradio 4;
- a LinePlot takes ``width`` and ``height`` in gradio 3, only ``height`` in gradio 4.40 (it fills its column);
- gradio 4 runs each event listener one call at a time unless told otherwise (Forge's ``demo.queue(64)`` sets gradio
  4's status update rate, not gradio 3's concurrency count), so a listener that streams a job's progress for as long
  as the job runs would hold back every other page's click of it.
"""

from __future__ import annotations

import gradio as gr

GRADIO_MAJOR = int(str(gr.__version__).split(".")[0])


def js(code: str | None) -> dict:
    """Keyword arguments for an event listener's client-side function."""
    if code is None:
        return {}
    return {"js": code} if GRADIO_MAJOR >= 4 else {"_js": code}


def upload_only() -> dict:
    """Keyword arguments for a ``gr.Image`` that takes uploads only (no webcam, no clipboard)."""
    return {"sources": ["upload"]} if GRADIO_MAJOR >= 4 else {"source": "upload"}


def plot_size(width: int, height: int) -> dict:
    """Keyword arguments for a ``gr.LinePlot``'s size."""
    return {"height": height} if GRADIO_MAJOR >= 4 else {"width": width, "height": height}


def no_concurrency_limit() -> dict:
    """Keyword arguments for a listener that streams a long job's progress: any number of pages may run it at once
    (each only watches; the job itself holds the GPU lock), as every listener may under gradio 3's WebUI queue."""
    return {"concurrency_limit": None} if GRADIO_MAJOR >= 4 else {}
