"""Benchmark: scan a folder of 1000 captioned images (headers only), bucket them and build an epoch of batches.

Prints one line: images, scan time, images per second, buckets used, batching time.
Usage: python bench/bench_dataset_scan.py [number_of_images]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib_lora_train.dataset import BucketBatchSampler, assign_buckets, scan_dataset  # noqa: E402

SIZES = [(768, 512), (512, 768), (1024, 1024), (1200, 900), (640, 1280)]


def main(count: int = 1000) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        dataset = Path(tmp) / "dataset"
        folder = dataset / "10_subject"
        folder.mkdir(parents=True)
        # a few distinct files copied around: writing 1000 real encodes would dominate the run
        templates = []
        for index, size in enumerate(SIZES):
            path = Path(tmp) / f"template{index}.jpg"
            Image.new("RGB", size, (index * 40, 100, 150)).save(path, quality=90)
            templates.append(path.read_bytes())
        for index in range(count):
            (folder / f"{index:05d}.jpg").write_bytes(templates[index % len(templates)])
            (folder / f"{index:05d}.txt").write_text(f"subject, tag{index % 17}, tag{index % 5}", encoding="utf-8")

        start = time.perf_counter()
        scan = scan_dataset(dataset)
        scan_s = time.perf_counter() - start
        start = time.perf_counter()
        buckets = assign_buckets([item.size for item in scan.items], resolution=512)
        sampler = BucketBatchSampler(list(zip(scan.items, buckets, strict=True)), batch_size=4, seed=0)
        batches = sampler.epoch_batches(0)
        batch_s = time.perf_counter() - start
    print(
        f"dataset scan: {scan.num_images} images in {scan_s:.3f} s ({scan.num_images / scan_s:.0f} img/s), "
        f"{len(set(buckets))} buckets, {len(batches)} batches/epoch (x{scan.items[0].repeats} repeats) "
        f"built in {batch_s * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
