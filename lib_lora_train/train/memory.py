"""How much memory a run holds, for the progress line: the GPU's allocator counters on CUDA (host-side numbers, no
device sync), the process's resident memory on a CPU."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

GIB = 1024**3


@dataclass(frozen=True)
class MemoryUse:
    kind: str  # "GPU" or "RAM"
    allocated: int  # bytes in tensors (GPU) / resident in this process (RAM)
    reserved: int  # bytes the caching allocator holds (GPU) / same as allocated (RAM)
    total: int  # bytes on the device / in the machine

    def text(self) -> str:
        if self.kind == "GPU":
            return (f"GPU {self.allocated / GIB:.1f} / {self.reserved / GIB:.1f} of {self.total / GIB:.1f} GiB "
                    "(allocated / reserved)")  # fmt: skip
        return f"RAM {self.allocated / GIB:.1f} of {self.total / GIB:.1f} GiB"


def device_memory(device: torch.device) -> MemoryUse | None:
    """The memory in use on ``device``; None where the platform does not say (then the line just omits it)."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        total = torch.cuda.get_device_properties(index).total_memory
        return MemoryUse("GPU", torch.cuda.memory_allocated(index), torch.cuda.memory_reserved(index), total)
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            resident_pages = int(statm.read().split()[1])
        page = os.sysconf("SC_PAGE_SIZE")
        total = page * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError, AttributeError, IndexError):  # not Linux
        return None
    return MemoryUse("RAM", resident_pages * page, resident_pages * page, total)
