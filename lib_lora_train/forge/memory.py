"""Load the model's parts through Forge's memory manager for a run, and leave the manager as it was afterwards.

Forge (``backend/memory_management.py``) keeps the patchers it has loaded in ``current_loaded_models``, most recent
first, and moves weights between devices only through ``load_models_gpu``. A run loads the UNet, text encoder and
VAE patchers the same way a generation does (on the device and dtype Forge chose); ``ManagerState.restore`` unloads
what the run loaded that was not loaded before and puts the list back in its old order.
"""

from __future__ import annotations

from dataclasses import dataclass

from lib_lora_train.forge.model_parts import UnsupportedModel

PARTIAL_LOAD_MESSAGE = (
    "Forge could load only part of the {what} onto {device} (it swaps the rest in from the CPU around every call, "
    "which breaks the backward pass). Nothing was changed. Free GPU memory (close other programs, a smaller "
    "checkpoint, or a lower 'GPU Weights' setting for other models) and try again."
)


@dataclass
class ManagerState:
    manager: object
    before: list

    def restore(self) -> list[str]:
        """Back to the recorded list; returns what could not be put back (patchers Forge itself unloaded)."""
        loaded = self.manager.current_loaded_models
        for entry in list(loaded):
            if not any(entry is old for old in self.before):
                loaded.remove(entry)
                entry.model_unload()
        kept = [old for old in self.before if any(old is entry for entry in loaded)]
        loaded[:] = kept
        return [f"{type(old.model.model).__name__} was unloaded by Forge during the run"
                for old in self.before if not any(old is entry for entry in kept)]  # fmt: skip


def load_for_run(manager, patchers: list, names: list[str]) -> ManagerState:
    """Load ``patchers`` with Forge's own ``load_models_gpu``; refuses a partial (swapping) load."""
    state = ManagerState(manager, list(manager.current_loaded_models))
    manager.load_models_gpu(patchers)
    for patcher, name in zip(patchers, names, strict=False):
        for entry in manager.current_loaded_models:
            if entry.model is patcher and getattr(entry, "model_accelerated", False):
                state.restore()
                raise UnsupportedModel(PARTIAL_LOAD_MESSAGE.format(what=name, device=patcher.load_device))
    return state
