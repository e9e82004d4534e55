"""Batched inference with decoding and preprocessing hidden behind the model.

Three stages run at once: a pool of decode threads opens images and writes their preprocessed pixels straight into
the slot of the batch they belong to; one inference thread runs the batches in order; the caller's thread handles
the results of batch *k* (thresholds, caption files) while batch *k+1* is in the model and later batches decode.
Pillow's decoders and resamplers and onnxruntime all release the GIL, so threads are enough.

A model whose images keep their own shape (ML-Danbooru with its aspect ratio kept) cannot stack them into one
tensor: its decode threads hand back one array per image and the inference thread runs them one by one.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from lib_lora_train.images import ImageLoadError, load_rgb
from lib_lora_train.tagger.models import WD14
from lib_lora_train.tagger.preprocess import InputLayout, preprocess


class BatchModel(Protocol):
    """What the pipeline needs from a model (``runtime.LoadedTagger`` implements it; its ``layout`` says how to
    prepare images, and a model without one takes WD14's at ``input_size``)."""

    input_size: int
    fixed_batch: int | None

    @property
    def on_gpu(self) -> bool: ...

    def run(self, batch: np.ndarray) -> np.ndarray: ...


def layout_of(model: BatchModel) -> InputLayout:
    """The model's input layout; WD14 at its ``input_size`` for models that name none (test doubles)."""
    return getattr(model, "layout", None) or InputLayout(WD14, model.input_size)


@dataclass
class Prediction:
    """The outcome for one input: probabilities, or the reason it was skipped."""

    index: int  # position in the input sequence
    path: Path | None
    probs: np.ndarray | None
    error: str = ""


def auto_batch_size(model: BatchModel) -> int:
    """A batch that keeps the device busy without wasting memory; a fixed graph dictates its own."""
    if model.fixed_batch:
        return model.fixed_batch
    if model.on_gpu:
        return 32 if model.input_size <= 448 else 16
    # on a CPU, larger batches barely raise throughput but delay progress updates and the stop button
    return 4


def auto_workers(model: BatchModel) -> int:
    """Decode threads: many when a GPU must be fed, few when decoding competes with the model for the CPU."""
    cores = os.cpu_count() or 1
    if model.on_gpu:
        return max(1, min(8, cores - 1))
    return max(1, min(2, cores // 2))


def predict_images(model: BatchModel, images: Sequence[Image.Image]) -> np.ndarray:
    """Probabilities for images already in memory (single-image tab, API), as one batch."""
    layout = layout_of(model)
    if not layout.stackable:
        if not images:
            return np.empty((0, 0), dtype=np.float32)
        return np.stack([model.run(layout.prepare(image)[None])[0] for image in images])
    batch = np.empty((len(images), *layout.sample_shape), dtype=np.float32)
    for slot, image in enumerate(images):
        layout.prepare(image, out=batch[slot])
    return model.run(batch)


def predict_paths(
    model: BatchModel,
    paths: Sequence[str | os.PathLike],
    *,
    batch_size: int = 0,
    workers: int = 0,
    prefetch_batches: int = 2,
    fast_jpeg: bool = False,
) -> Iterator[list[Prediction]]:
    """Yield one list of predictions per batch, in input order; unreadable images come back with ``error`` set.

    ``batch_size`` / ``workers`` of 0 pick values for the model and device. Closing the generator early (a stop
    request) cancels decoding that has not started and waits for the batch in the model to finish.
    ``fast_jpeg``: decode JPEGs at a reduced scale that keeps them at least twice the model's input size (see
    ``preprocess_file``); WD14 models only.
    """
    paths = [Path(p) for p in paths]
    layout = layout_of(model)
    size = model.input_size
    # the margin is about the longer side, which is what WD14's padded square keeps; ML-Danbooru scales the short
    # side (or stretches), so a reduced decode could starve it: those decode every pixel
    min_side = FAST_JPEG_MARGIN * size if fast_jpeg and layout.family == WD14 else None
    per_batch = batch_size if batch_size > 0 else auto_batch_size(model)
    chunks = [paths[i : i + per_batch] for i in range(0, len(paths), per_batch)]
    decode_pool = ThreadPoolExecutor(workers or auto_workers(model), thread_name_prefix="tagger-decode")
    infer_pool = ThreadPoolExecutor(1, thread_name_prefix="tagger-infer")

    def submit(number: int) -> Future:
        chunk = chunks[number]
        if layout.stackable:
            buffer = np.empty((len(chunk), *layout.sample_shape), dtype=np.float32)
            slots = list(buffer)
        else:  # one array per image, made by its decode thread
            buffer, slots = [None] * len(chunk), [None] * len(chunk)
        decodes = [
            decode_pool.submit(preprocess_file, path, size, slots[slot], min_side, layout)
            for slot, path in enumerate(chunk)
        ]
        return infer_pool.submit(_run_batch, model, number * per_batch, chunk, buffer, decodes)

    in_flight: deque[Future] = deque()
    submitted = 0
    try:
        while submitted < len(chunks) and len(in_flight) <= prefetch_batches:
            in_flight.append(submit(submitted))
            submitted += 1
        while in_flight:
            results = in_flight.popleft().result()
            if submitted < len(chunks):
                in_flight.append(submit(submitted))
                submitted += 1
            yield results
    finally:
        for future in in_flight:
            future.cancel()
        # cancel queued decodes first: a batch waiting on them in the inference thread then ends at once
        decode_pool.shutdown(wait=True, cancel_futures=True)
        infer_pool.shutdown(wait=True, cancel_futures=True)


# A JPEG decoded at reduced scale stays at least this many times the model's side before the area resize: the
# margin Pillow's own thumbnail() keeps (reducing_gap=2.0). libjpeg's scaled decoding averages in the DCT domain,
# so the model's input moves by about one level of 255 on average (bench/bench_tagger.py prints the figures).
FAST_JPEG_MARGIN = 2


def preprocess_file(
    path: Path,
    size: int,
    out: np.ndarray | None,
    min_side: int | None = None,
    layout: InputLayout | None = None,
) -> np.ndarray:
    """Decode ``path`` and return the model's input for it, written into ``out`` (one slot of a batch) when given.

    ``min_side``: see ``images.load_rgb``; None decodes every pixel. ``layout``: WD14 at ``size`` when None.
    """
    image = load_rgb(path, min_side=min_side)
    if layout is None:
        return preprocess(image, size, out=out)
    return layout.prepare(image, out=out)


def _run_batch(
    model: BatchModel, first_index: int, chunk: list[Path], buffer: np.ndarray | list, decodes: list[Future]
) -> list[Prediction]:
    errors: dict[int, str] = {}
    stacked = isinstance(buffer, np.ndarray)
    for slot, future in enumerate(decodes):
        try:
            prepared = future.result()
            if not stacked:
                buffer[slot] = prepared
        except ImageLoadError as exc:
            errors[slot] = str(exc)
        except Exception as exc:  # a decoder bug on one odd file must not end the whole folder
            errors[slot] = f"{chunk[slot]}: could not be prepared ({type(exc).__name__}: {exc}); skipped"
        if slot in errors and stacked:
            buffer[slot] = 255.0  # a defined value instead of uninitialised memory; its output is discarded
    probs = None
    if len(errors) < len(chunk):
        if stacked:
            probs = model.run(buffer)
        else:
            probs = [None if slot in errors else model.run(x[None])[0] for slot, x in enumerate(buffer)]
    return [
        Prediction(
            first_index + slot,
            path,
            None if slot in errors or probs is None else probs[slot],
            errors.get(slot, ""),
        )
        for slot, path in enumerate(chunk)
    ]
