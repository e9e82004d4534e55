"""Benchmark of the Dataset Tag Editor core on a generated dataset (not a test).

Generates N images (the same 1x1 PNG bytes: loading must not open images anyway) with 20-60 tags each, drawn from
a Zipf-like vocabulary of 3,000 tags, then times: load (captions only), a tag filter, a text-search filter, a batch
edit that changes every caption (activation tag at the front), saving all of them (default "batch" durability;
the deletion of the replaced versions, which runs in the background after the save returns, is timed apart), and
saving all of them again with a per-file fsync. Prints one summary line.

    .venv/bin/python bench/bench_tag_editor.py [--images 10000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from io import BytesIO
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image  # noqa: E402

from lib_lora_train.tag_editor.cleanup import wait_for_cleanup  # noqa: E402
from lib_lora_train.tag_editor.dataset import Dataset  # noqa: E402
from lib_lora_train.tag_editor.filters import TagFilter, apply_filter  # noqa: E402
from lib_lora_train.tag_editor.operations import AddTags  # noqa: E402
from lib_lora_train.tag_editor.saving import save_dataset  # noqa: E402

WORDS = "red blue green black white long short open striped frilled school pleated hair eyes shirt skirt".split()


def generate(root: Path, count: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    vocab = [f"{rng.choice(WORDS)} {rng.choice(WORDS)} {i}" for i in range(3000)]
    weights = [1.0 / (rank + 1) for rank in range(len(vocab))]
    buf = BytesIO()
    Image.new("RGB", (1, 1), (200, 100, 50)).save(buf, "PNG")
    png = buf.getvalue()
    for i in range(count):
        folder = root / f"{i // 1000:02d}_part"  # 10 sub-folders, like repeat folders
        folder.mkdir(exist_ok=True)
        tags = list(dict.fromkeys(rng.choices(vocab, weights, k=rng.randint(20, 60))))
        (folder / f"img{i:05d}.png").write_bytes(png)
        (folder / f"img{i:05d}.txt").write_text(", ".join(tags), encoding="utf-8")


class Timing:
    """Wall-clock and CPU milliseconds of one call: on a shared machine the gap is time spent waiting for a CPU
    or the disk, so both are printed."""

    def __init__(self, wall: float, cpu: float):
        self.wall, self.cpu = wall, cpu

    def __str__(self) -> str:
        digits = 1 if self.wall < 100 else 0
        return f"{self.wall:.{digits}f} ms (cpu {self.cpu:.{digits}f})"


def timed(fn):
    start, start_cpu = time.perf_counter(), time.process_time()
    result = fn()
    return Timing((time.perf_counter() - start) * 1000.0, (time.process_time() - start_cpu) * 1000.0), result


def _load() -> str:
    """The 1-minute load average, printed with the figures: on a shared machine they depend on it."""
    try:
        return f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    except OSError:
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--keep", type=Path, help="generate into this folder and keep it")
    parser.add_argument("--base", type=Path, help="make the temporary dataset under this folder (e.g. /dev/shm)")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_tag_editor_", dir=args.base))
    root.mkdir(parents=True, exist_ok=True)
    try:
        gen_ms, _ = timed(lambda: generate(root, args.images))
        if hasattr(os, "sync"):
            os.sync()  # do not let the generator's pending writes be flushed inside the timed save
        load_ms, ds = timed(lambda: Dataset.load(root, recursive=True))
        common = ds.all_tags()
        tag_filter = TagFilter(include=(common[3], common[10]), include_mode="or", exclude=(common[0],))
        filter_ms, hits = timed(lambda: apply_filter(ds, tag_filter))
        text_filter = TagFilter(text="striped hair")  # a search over all 10,000 captions
        text_first_ms, text_hits = timed(lambda: apply_filter(ds, text_filter))  # joins and caches caption text
        text_ms, _ = min((timed(lambda: apply_filter(ds, text_filter)) for _ in range(4)), key=lambda r: r[0].wall)
        edit_ms, changed = timed(lambda: ds.apply(AddTags(("mychar",), "front")))
        undo_ms, _ = timed(ds.undo)
        redo_ms, _ = timed(ds.redo)
        save_ms, report = timed(lambda: save_dataset(ds))
        # the versions the save replaced are deleted in the background after it returns; timed apart
        cleanup_ms, _ = timed(wait_for_cleanup)
        ds.undo()  # every caption differs from disk again
        save_pf_ms, report_pf = timed(lambda: save_dataset(ds, durability="per_file"))
        assert report.ok and report_pf.ok and len(report.written) == args.images == len(report_pf.written)
        print(
            f"tag_editor bench: images={len(ds)} tags={len(ds.index)} | load {load_ms} | "
            f"filter {filter_ms} ({len(hits)} hits) | text search {text_first_ms} first, "
            f"{text_ms} again ({len(text_hits)} hits) | "
            f"batch edit {edit_ms} ({changed} changed; undo {undo_ms}, redo {redo_ms}) | "
            f"save all {save_ms} (batch sync; then background deletion of the old versions {cleanup_ms}) | "
            f"save all per-file fsync {save_pf_ms} | "
            f"(generation {gen_ms.wall / 1000:.1f} s, in {root.parent}; load average {_load()})"
        )
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
