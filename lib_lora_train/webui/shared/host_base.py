"""What a training host does the same way in the A1111 WebUI and in Forge: hold the GPU queue for the whole job
(``call_queue.queue_lock``, ``shared.state``, the task's progress entry), report into the host's progress state,
and stop on our Stop or the host's Interrupt. The adapters add the model."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.utils.checkpoint

from lib_lora_train.host import TrainingHost

log = logging.getLogger(__name__)


def _checkpointed(forward, *args, **kwargs):
    # non-reentrant: with frozen inputs (latents, a frozen text encoder) the reentrant variant, which the hosts' own
    # checkpointing uses, would compute no gradients for the adapters inside the block
    return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)


def patch_instances(modules: Iterable[torch.nn.Module], name: str, make: Callable[[torch.nn.Module], Callable]):
    """Give each module a per-instance ``name`` = ``make(module)``, leaving alone modules that already have one; the
    returned function removes exactly those patches."""
    patched = []
    for module in modules:
        if name not in module.__dict__:
            setattr(module, name, make(module))
            patched.append(module)

    def undo() -> None:
        for module in patched:
            module.__dict__.pop(name, None)
        patched.clear()

    return undo


def checkpoint_each(modules: Iterable[torch.nn.Module], forward_of: Callable[[torch.nn.Module], Callable]):
    """Run each module's ``forward_of(module)`` under gradient checkpointing through a per-instance ``forward``."""
    return patch_instances(modules, "forward", lambda module: functools.partial(_checkpointed, forward_of(module)))


class QueuedHost(TrainingHost):
    """``modules`` bundles the host modules used (``shared``, ``call_queue``, ``progress`` and the adapter's own)."""

    def __init__(self, modules, *, stop_event: threading.Event, listener: Callable[[Any], None] | None = None,
                 task_id: str | None = None):  # fmt: skip
        self.modules = modules
        self.stop_event = stop_event
        self.listener = listener
        self.task_id = task_id
        self._exclusive = threading.local()
        self._undo_checkpointing: Callable[[], None] | None = None

    def _clip_skip(self) -> int:
        return int(getattr(self.modules.shared.opts, "CLIP_stop_at_last_layers", 1) or 1)

    def run_exclusive(self, fn):
        if getattr(self._exclusive, "held", False):  # the engine may call this again inside the job's own call
            return fn()
        state, progress = self.modules.shared.state, self.modules.progress
        with self.modules.call_queue.queue_lock:
            self._exclusive.held = True
            state.begin(job="train_tools")
            if self.task_id:
                progress.start_task(self.task_id)
            try:
                return fn()
            finally:
                self._exclusive.held = False
                if self.task_id:
                    progress.finish_task(self.task_id)
                state.end()

    def report(self, event: Any) -> None:
        state = self.modules.shared.state
        total = getattr(event, "total_steps", 0) or 0
        if total:
            state.job_count = 1
            state.sampling_steps = total
            state.sampling_step = getattr(event, "step", 0) or 0
        loss = getattr(event, "loss_avg", None) or getattr(event, "loss", None)
        epoch, epochs = getattr(event, "epoch", 0), getattr(event, "total_epochs", 0)
        text = f"LoRA training: epoch {epoch}/{epochs}, step {state.sampling_step}/{total}"
        state.textinfo = text + (f", loss {loss:.4f}" if loss is not None else "")
        if self.listener is not None:
            self.listener(event)

    # --- what each adapter says for its model

    def _render_sample(self, request):
        """One preview image for ``request`` with the adapters live."""
        raise NotImplementedError

    def _checkpoint_blocks(self) -> Callable[[], None]:
        """Put the UNet's blocks under gradient checkpointing; returns the function that undoes it."""
        raise NotImplementedError

    # ---

    def render_samples(self, requests):
        try:
            return [self._render_sample(request) for request in requests]
        except Exception as exc:  # a failed preview costs the samples, not the run
            self._log(f"sample images could not be rendered: {type(exc).__name__}: {exc}")
            return []

    def set_gradient_checkpointing(self, enabled: bool) -> Callable[[], None]:
        self._drop_checkpointing()
        if not enabled:
            return lambda: None
        self._undo_checkpointing = self._checkpoint_blocks()
        return self._undo_checkpointing

    def _drop_checkpointing(self) -> None:
        if self._undo_checkpointing is not None:
            self._undo_checkpointing()
            self._undo_checkpointing = None

    def should_stop(self) -> bool:
        return self.stop_event.is_set() or bool(getattr(self.modules.shared.state, "interrupted", False))

    def _log(self, message: str) -> None:
        log.info(message)
        if self.listener is not None:
            self.listener(message)
