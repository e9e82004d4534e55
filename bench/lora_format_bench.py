"""Benchmark of the LoRA file format on a full-size SD1 UNet layout: naming, building kohya tensors, saving, reading.

Run: .venv/bin/python bench/lora_format_bench.py  — prints one summary line.
The UNet is built on the meta device (no weights), so this measures our code and the file I/O, not model loading.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def main() -> None:
    from diffusers import UNet2DConditionModel

    from lib_lora_train.host import AdapterTarget
    from lib_lora_train.lora_format import keys
    from lib_lora_train.lora_format.file import read_lora_file, save_lora_file

    with torch.device("meta"):
        unet = UNet2DConditionModel()  # the SD1.5 layout
    target = AdapterTarget("lora_unet", unet, "diffusers")
    start = time.perf_counter()
    names = keys.kohya_module_names(target)
    paths = keys.unet_target_modules(target, "locon")
    naming_s = time.perf_counter() - start

    rank, conv_rank = 16, 8
    convs = set(keys.conv3x3_modules(target, paths))
    generator = torch.Generator().manual_seed(0)
    tensors = {}
    for path in paths:
        layer = keys.base_module(unet.get_submodule(path))
        r = conv_rank if path in convs else rank
        out_dim, in_dim = layer.weight.shape[:2]
        kernel = tuple(layer.weight.shape[2:])
        tensors[f"{names[path]}.lora_down.weight"] = torch.randn(r, in_dim, *kernel, generator=generator)
        tensors[f"{names[path]}.lora_up.weight"] = torch.randn(
            out_dim, r, *((1, 1) if kernel else ()), generator=generator
        )
        tensors[f"{names[path]}.alpha"] = torch.tensor(r / 2)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.safetensors"
        start = time.perf_counter()
        save_lora_file(path, tensors, {"ss_network_dim": str(rank)}, precision="fp16")
        save_s = time.perf_counter() - start
        size_mb = path.stat().st_size / 2**20
        start = time.perf_counter()
        lora = read_lora_file(path)
        read_s = time.perf_counter() - start
    print(
        f"lora_format SD1 LoCon r{rank}/c{conv_rank}: {len(paths)} modules, naming {naming_s * 1000:.0f} ms, "
        f"save+hash {save_s:.2f} s, read {read_s:.2f} s, file {size_mb:.1f} MiB, reader says {lora.network} r{lora.rank}"
    )


if __name__ == "__main__":
    main()
