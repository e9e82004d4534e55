"""Record a host's module tree before training and put it back afterwards, then prove it is as it was.

The WebUI keeps using its UNet and text encoders after a run, so "as it was" means: the same module objects at the
same paths, the same parameter objects, their ``requires_grad`` flags and the modules' train/eval modes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TreeSnapshot:
    modules: dict[str, int]  # path -> id(module)
    params: dict[str, tuple[int, bool, torch.dtype, torch.device]]  # name -> (id, requires_grad, dtype, device)
    training: dict[str, bool]
    attributes: dict[str, frozenset[str]]  # path -> names in the module's __dict__ (peft adds `peft_config`)

    @classmethod
    def take(cls, root: torch.nn.Module) -> TreeSnapshot:
        modules = dict(root.named_modules(remove_duplicate=False))
        return cls(
            modules={path: id(m) for path, m in modules.items()},
            params={
                name: (id(p), p.requires_grad, p.dtype, p.device)
                for name, p in root.named_parameters(remove_duplicate=False)
            },
            training={path: m.training for path, m in modules.items()},
            attributes={path: frozenset(vars(m)) for path, m in modules.items()},
        )

    def restore_flags(self, root: torch.nn.Module) -> None:
        """Put back requires_grad flags and train/eval modes (the module objects are put back by the adapters)."""
        for name, p in root.named_parameters(remove_duplicate=False):
            if name in self.params:
                p.requires_grad_(self.params[name][1])
        for path, m in root.named_modules(remove_duplicate=False):
            if path in self.training:
                m.training = self.training[path]

    def differences(self, root: torch.nn.Module) -> list[str]:
        """What differs between ``root`` now and the snapshot; empty when the tree is exactly as it was."""
        now = TreeSnapshot.take(root)
        problems = []
        for what in ("modules", "params", "training", "attributes"):
            before, after = getattr(self, what), getattr(now, what)
            for key in sorted(set(before) | set(after)):
                if before.get(key) != after.get(key):
                    problems.append(f"{what}: {key or '<root>'}: {before.get(key)!r} -> {after.get(key)!r}")
        return problems
