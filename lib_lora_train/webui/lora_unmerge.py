"""Take the built-in Lora extension's merged weights out of the loaded model before training.

The WebUI (v1.10.x, ``extensions-builtin/Lora/networks.py``) merges LoRA weights into the model in place, keeping the
originals in ``network_weights_backup`` / ``network_bias_backup`` on each layer, and only restores them when the
wanted set of LoRAs changes. Training on top of that would bake the user's last LoRA into the new one. Here every
layer with a backup is restored through the extension's own ``network_restore_weights_from_backup``, the per-layer
``network_current_names`` are cleared and the loaded set emptied, so the next generation applies the user's LoRAs
again from the (intact) backups.
"""

from __future__ import annotations

import sys
from types import ModuleType

import torch


def builtin_networks_module() -> ModuleType | None:
    """The built-in Lora extension's ``networks`` module when it is loaded (the WebUI imports it by that name)."""
    module = sys.modules.get("networks")
    if module is not None and hasattr(module, "network_restore_weights_from_backup"):
        return module
    return None


def unmerge_builtin_loras(model: torch.nn.Module, networks: ModuleType | None = None) -> int:
    """Restore every layer of ``model`` that has a LoRA backup and forget the loaded set; returns the layers restored.

    ``networks`` defaults to the live extension module; without it (extension disabled) nothing can be merged.
    """
    networks = networks if networks is not None else builtin_networks_module()
    if networks is None:
        return 0
    restored = 0
    with torch.no_grad():
        for layer in model.modules():
            has_backup = (
                getattr(layer, "network_weights_backup", None) is not None
                or getattr(layer, "network_bias_backup", None) is not None
            )
            if has_backup and getattr(layer, "network_current_names", ()) != ():
                networks.network_restore_weights_from_backup(layer)
                restored += 1
            if hasattr(layer, "network_current_names"):
                layer.network_current_names = ()
    loaded = getattr(networks, "loaded_networks", None)
    if loaded is not None:
        loaded.clear()
    return restored
