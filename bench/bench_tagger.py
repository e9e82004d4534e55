"""Tagger throughput: our batched, pipelined folder job against a one-image-at-a-time loop and raw onnxruntime.

    .venv/bin/python bench/bench_tagger.py [--images 24] [--layers 12] [--width 2048 --height 1536]

- batch path: ``run_folder_job`` on a folder of real-sized JPEG/PNG files (decode, preprocess, batched inference,
  tag selection, atomic caption writes), batch size and decode threads chosen automatically; once with the
  default fast JPEG decoding and once decoding every pixel ("exact");
- one-at-a-time loop: open, preprocess, run a batch of 1, select tags - image after image, the way the existing
  tagger extension works (every pixel decoded), on the same session;
- raw onnxruntime: ``session.run`` alone on tensors already in memory, at the best batch size: the limit.

Shared machines drift (the same run can be 25% slower a minute later), so each round measures all four one after
the other and the ratios are taken within a round; the summary gives the best rate of each and the median of the
per-round ratios. It also prints how far the fast JPEG inputs are from the exact ones (levels of 0-255).
The graph (ViT-B/16 at 448 px unless told otherwise) and the images are cached under bench/out/ (git-ignored).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from vit_graph import build_vit_tagger  # noqa: E402

from lib_lora_train.images import load_rgb  # noqa: E402
from lib_lora_train.tagger.folder_job import FolderJobRequest, run_folder_job  # noqa: E402
from lib_lora_train.tagger.inference import FAST_JPEG_MARGIN, auto_batch_size, auto_workers  # noqa: E402
from lib_lora_train.tagger.postprocess import TagOptions, select_tags  # noqa: E402
from lib_lora_train.tagger.preprocess import preprocess  # noqa: E402
from lib_lora_train.tagger.runtime import LoadedTagger  # noqa: E402

OUT = ROOT / "bench" / "out"


def make_images(folder: Path, count: int, width: int, height: int) -> list[Path]:
    """Photo-like pictures (gradients, shapes, grain): JPEGs, every fourth a transparent PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    paths = []
    for i in range(count):
        png = i % 4 == 3
        path = folder / f"img{i:04d}.{'png' if png else 'jpg'}"
        paths.append(path)
        if path.exists():
            continue
        w, h = (width, height) if i % 2 == 0 else (height, width)
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        base = np.stack([x / w * 255, y / h * 255, (x + y) / (w + h) * 255], axis=-1)
        base += rng.normal(0, 12, (h, w, 3)).astype(np.float32)
        image = Image.fromarray(base.clip(0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(12):
            x0, y0 = rng.integers(0, w), rng.integers(0, h)
            draw.ellipse(
                [x0, y0, x0 + rng.integers(50, w // 3), y0 + rng.integers(50, h // 3)],
                fill=tuple(rng.integers(0, 256, 3).tolist()),
            )
        if png:
            image.putalpha(Image.fromarray((np.indices((h, w))[0] % 256).astype(np.uint8)))
            image.save(path)
        else:
            image.save(path, quality=90)
    return paths


def one_at_a_time(model: LoadedTagger, paths: list[Path], options: TagOptions) -> tuple[float, float]:
    start, cpu = time.perf_counter(), time.process_time()
    for path in paths:
        tensor = preprocess(load_rgb(path), model.input_size)[None]
        probs = model.session.run([model.output_name], {model.input_name: tensor})[0]
        select_tags(probs[0], model.tags, options)
    return len(paths) / (time.perf_counter() - start), (time.process_time() - cpu) / len(paths)


def raw_best(model: LoadedTagger, count: int, sizes: list[int]) -> tuple[float, int, float]:
    rng = np.random.default_rng(2)
    best = (0.0, 1, 0.0)
    for size in sizes:
        batches = max(3, count // size)  # at least three runs per size: one run is too noisy on a shared machine
        tensor = rng.uniform(0, 255, (size, model.input_size, model.input_size, 3)).astype(np.float32)
        model.session.run([model.output_name], {model.input_name: tensor})  # warm-up for this shape
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(batches):
            model.session.run([model.output_name], {model.input_name: tensor})
        rate = batches * size / (time.perf_counter() - start)
        best = max(best, (rate, size, (time.process_time() - cpu) / (batches * size)))
    return best


def batch_path(model: LoadedTagger, folder: Path, options: TagOptions, fast_jpeg: bool) -> tuple[float, float, int]:
    captions = OUT / "captions"
    shutil.rmtree(captions, ignore_errors=True)
    request = FolderJobRequest(
        str(folder), options=options, output_dir=str(captions), existing="overwrite", fast_jpeg=fast_jpeg
    )
    start, cpu = time.perf_counter(), time.process_time()
    summary = run_folder_job(model, model.tags, request)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    if summary.errors or summary.written != summary.total:
        raise SystemExit(f"batch path failed: {summary.report()}")
    return summary.total / elapsed, cpu / summary.total, summary.total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--layers", type=int, default=12, help="transformer blocks (ViT-B has 12)")
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--height", type=int, default=1536)
    parser.add_argument("--gpu", action="store_true", help="use onnxruntime's CUDA provider when present")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the four measurements")
    args = parser.parse_args()

    folder = build_vit_tagger(OUT / f"vit-{args.layers}l-{args.size}", size=args.size, layers=args.layers)
    paths = make_images(OUT / f"images-{args.width}x{args.height}", args.images, args.width, args.height)
    for stale in sorted(paths[0].parent.iterdir())[len(paths) :]:
        stale.unlink()
    model = LoadedTagger(folder.name, folder, use_gpu=args.gpu)
    options = TagOptions()
    model.run(np.zeros((1, args.size, args.size, 3), np.float32))  # warm-up: first run allocates

    sizes = [1, 2, 4, 8, 16, 32, 64] if model.on_gpu else [1, 2, 4, 8]
    raw_batch = raw_best(model, args.images, sizes)[1]
    rounds = []
    for _ in range(args.rounds):
        raw = raw_best(model, args.images, [raw_batch])
        fast = batch_path(model, paths[0].parent, options, fast_jpeg=True)
        exact = batch_path(model, paths[0].parent, options, fast_jpeg=False)
        loop = one_at_a_time(model, paths, options)
        rounds.append({"raw": raw[0], "fast": fast[0], "exact": exact[0], "loop": loop[0]})
        print(
            f"  round: raw {raw[0]:.3f} img/s, batch fast {fast[0]:.3f} (CPU {fast[1]:.2f} s/img), "
            f"batch exact {exact[0]:.3f} (CPU {exact[1]:.2f}), one-at-a-time {loop[0]:.3f} (CPU {loop[1]:.2f}), "
            f"raw CPU {raw[2]:.2f} s/img",
            flush=True,
        )

    def best(key: str) -> float:
        return max(r[key] for r in rounds)

    def ratio(top: str, bottom: str) -> float:
        return statistics.median(r[top] / r[bottom] for r in rounds)

    mean_diff, max_diff = input_difference(paths, model.input_size)
    print(
        f"bench_tagger: ViT-B/16-sized graph ({args.layers} layers, {args.size}px, {len(model.tags)} tags) on "
        f"{model.providers[0]}, {len(paths)} images {args.width}x{args.height} (jpg+png), {args.rounds} rounds: "
        f"batch path {best('fast'):.2f} img/s with fast JPEG decoding, {best('exact'):.2f} decoding every pixel "
        f"(batch {auto_batch_size(model)}, {auto_workers(model)} decode threads); one-at-a-time "
        f"{best('loop'):.2f} img/s; raw onnxruntime {best('raw'):.2f} img/s (batch {raw_batch}) | median of the "
        f"per-round ratios: fast/raw {ratio('fast', 'raw'):.0%}, exact/raw {ratio('exact', 'raw'):.0%}, "
        f"fast/one-at-a-time {ratio('fast', 'loop'):.2f}x, exact/one-at-a-time {ratio('exact', 'loop'):.2f}x | "
        f"fast JPEG input vs exact: mean {mean_diff:.2f}, max {max_diff:.0f} levels of 255"
    )


def input_difference(paths: list[Path], size: int) -> tuple[float, float]:
    """Mean and largest absolute difference between the fast-JPEG and the exact model inputs of the JPEGs."""
    diffs = [
        np.abs(preprocess(load_rgb(p), size) - preprocess(load_rgb(p, min_side=FAST_JPEG_MARGIN * size), size))
        for p in paths
        if p.suffix == ".jpg"
    ]
    return float(np.mean([d.mean() for d in diffs])), float(max(d.max() for d in diffs))


if __name__ == "__main__":
    main()
