"""A gradio handler under a host's GPU lock that shows gradio's own progress bar (with ETA) on its outputs, fed by
the host's progress state, and turns an error into a message in the page as the WebUI's wrapper does. For hosts
without the WebUI's ``/internal/progress`` bar (the standalone app)."""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Sequence
from typing import Any

import gradio as gr

log = logging.getLogger(__name__)


def with_gradio_progress(runtime, fn: Callable, extra_outputs: Sequence[Any] | None = None) -> Callable:
    """``fn`` under ``runtime.gpu_lock()`` with ``runtime.state`` begun, moved on a ``gr.Progress`` and ended."""

    # gradio 3.41 injects a Progress only into a leading positional parameter with a Progress default
    def wrapper(progress=gr.Progress(), *args):  # noqa: B008 - gradio's documented idiom
        def show(state):
            if state.job_count:
                progress((state.job_no, state.job_count), desc=state.textinfo or None)

        with runtime.gpu_lock():
            runtime.state.begin(getattr(fn, "__name__", ""))
            runtime.state.listener = show
            try:
                return fn(*args)
            except Exception as exc:  # as the WebUI's wrapper: the message in the page, the trace in the log
                log.exception("%s failed", getattr(fn, "__name__", "handler"))
                if extra_outputs is None:
                    raise
                message = html.escape(f"{type(exc).__name__}: {exc}")
                return [*extra_outputs, f"<div class='error'>{message}</div>"]
            finally:
                runtime.state.listener = None
                runtime.state.end()

    wrapper.__name__ = getattr(fn, "__name__", "gpu_call")
    return wrapper
