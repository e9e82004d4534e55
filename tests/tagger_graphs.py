"""Tiny ONNX taggers for the tests. WD14 contract: NHWC float32 BGR 0-255 in, sigmoid probabilities out.

Each tag's logit is a linear function of the image's mean blue, green and red (0..1), so a test can predict exactly
which tags fire for a solid-colour image. Built with onnx.helper: deterministic, a few kB, milliseconds.
ML-Danbooru contract (``build_mld_graph``): NCHW float32 RGB 0-1 with any height and width in, logits out.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SIZE = 32


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


# (name, category, weights on mean (blue, green, red), bias)
TAGS: list[tuple[str, int, tuple[float, float, float], float]] = [
    ("general", 9, (0, 0, 0), _logit(0.7)),
    ("sensitive", 9, (0, 0, 0), _logit(0.2)),
    ("questionable", 9, (0, 0, 0), _logit(0.05)),
    ("explicit", 9, (0, 0, 0), _logit(0.01)),
    ("1girl", 0, (0, 0, 0), _logit(0.9)),
    ("solo", 0, (0, 0, 0), _logit(0.8)),
    ("red_background", 0, (-10, -10, 20), -5.0),
    ("blue_background", 0, (20, -10, -10), -5.0),
    ("white_background", 0, (10, 10, 10), -25.0),
    ("mid_tag", 0, (0, 0, 0), _logit(0.5)),
    ("low_tag", 0, (0, 0, 0), _logit(0.3)),
    ("^_^", 0, (0, 0, 0), _logit(0.6)),
    ("hatsune_miku", 4, (0, 0, 0), _logit(0.9)),
    ("kagamine_rin", 4, (0, 0, 0), _logit(0.6)),
    ("long_hair", 0, (0, 0, 0), _logit(0.7)),
    ("bow_(weapon)", 0, (0, 0, 0), _logit(0.4)),
]


def expected_probs(bgr_mean01: tuple[float, float, float]) -> np.ndarray:
    """The probabilities the graph gives for an image whose mean B, G, R (0..1) are ``bgr_mean01``."""
    weights = np.array([t[2] for t in TAGS], dtype=np.float64)
    bias = np.array([t[3] for t in TAGS], dtype=np.float64)
    return 1 / (1 + np.exp(-(weights @ np.asarray(bgr_mean01) + bias)))


def build_graph(path: Path, *, size: int = SIZE, fixed_batch: int | None = None) -> Path:
    """Write the tiny tagger to ``path``; ``fixed_batch`` pins the batch axis like older exported models."""
    batch = fixed_batch if fixed_batch else "batch"
    weights = np.array([t[2] for t in TAGS], dtype=np.float32).T  # (3, tags)
    bias = np.array([t[3] for t in TAGS], dtype=np.float32)
    nodes = [
        helper.make_node("ReduceMean", ["input_1:0"], ["mean"], axes=[1, 2], keepdims=0),
        helper.make_node("Mul", ["mean", "scale"], ["mean01"]),
        helper.make_node("MatMul", ["mean01", "weights"], ["logits_nob"]),
        helper.make_node("Add", ["logits_nob", "bias"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["predictions_sigmoid"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_wd14",
        [helper.make_tensor_value_info("input_1:0", TensorProto.FLOAT, [batch, size, size, 3])],
        [helper.make_tensor_value_info("predictions_sigmoid", TensorProto.FLOAT, [batch, len(TAGS)])],
        initializer=[
            numpy_helper.from_array(np.array(1 / 255, dtype=np.float32), "scale"),
            numpy_helper.from_array(weights, "weights"),
            numpy_helper.from_array(bias, "bias"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def write_tags_csv(path: Path) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["tag_id", "name", "category", "count"])
        for index, (name, category, _, _) in enumerate(TAGS):
            writer.writerow([1000 + index, name, category, 100 - index])
    return path


def make_model_folder(folder: Path, *, size: int = SIZE, fixed_batch: int | None = None) -> Path:
    """A complete local model folder (model.onnx + selected_tags.csv)."""
    folder.mkdir(parents=True, exist_ok=True)
    build_graph(folder / "model.onnx", size=size, fixed_batch=fixed_batch)
    write_tags_csv(folder / "selected_tags.csv")
    return folder


# An ML-Danbooru-style tagger: NCHW float32 RGB 0-1 in with a free height and width, logits out (no sigmoid), labels
# in classes.json. Logits are linear in the image's mean red, green and blue (0..1).
# (name, weights on mean (red, green, blue), bias)
MLD_TAGS: list[tuple[str, tuple[float, float, float], float]] = [
    ("1girl", (0, 0, 0), _logit(0.95)),
    ("red_theme", (20, -10, -10), -5.0),
    ("blue_theme", (-10, -10, 20), -5.0),
    ("white_theme", (10, 10, 10), -25.0),
    ("mid_tag", (0, 0, 0), _logit(0.5)),
    ("smile", (0, 0, 0), _logit(0.75)),
]


def mld_expected_probs(rgb_mean01: tuple[float, float, float]) -> np.ndarray:
    """The probabilities (after the sigmoid the tagger applies) for an image whose mean R, G, B are given."""
    weights = np.array([t[1] for t in MLD_TAGS], dtype=np.float64)
    bias = np.array([t[2] for t in MLD_TAGS], dtype=np.float64)
    return 1 / (1 + np.exp(-(weights @ np.asarray(rgb_mean01) + bias)))


def build_mld_graph(path: Path, *, side: int | None = None) -> Path:
    """Write the tiny ML-Danbooru-style tagger; ``side`` fixes a square input instead of a free height and width."""
    height, width = (side, side) if side else ("height", "width")
    weights = np.array([t[1] for t in MLD_TAGS], dtype=np.float32).T  # (3, tags)
    bias = np.array([t[2] for t in MLD_TAGS], dtype=np.float32)
    nodes = [
        helper.make_node("ReduceMean", ["input"], ["mean"], axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", ["mean", "weights"], ["logits_nob"]),
        helper.make_node("Add", ["logits_nob", "bias"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_mld",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, height, width])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", len(MLD_TAGS)])],
        initializer=[numpy_helper.from_array(weights, "weights"), numpy_helper.from_array(bias, "bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def make_mld_folder(folder: Path, model_file: str = "ml_tiny.onnx", *, side: int | None = None) -> Path:
    """A complete ML-Danbooru model folder (one .onnx + classes.json, a JSON list of names)."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    build_mld_graph(folder / model_file, side=side)
    (folder / "classes.json").write_text(json.dumps([t[0] for t in MLD_TAGS]), encoding="utf-8")
    return folder
