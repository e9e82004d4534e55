"""A ViT-B/16-sized tagger graph with the WD14 contract, built with onnx.helper (no torch exporter needed).

NHWC float32 BGR 0-255 [batch, 448, 448, 3] -> patch embedding (16x16 conv, 768 wide) -> N pre-norm transformer
blocks (12 heads, MLP 3072, erf GELU) -> mean pool -> linear -> sigmoid [batch, tags]. Weights are random: the
graph only has to cost what wd-vit-tagger-v3 costs to run.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def build_vit_tagger(
    folder: Path, *, size: int = 448, patch: int = 16, width: int = 768, layers: int = 12, tags: int = 10000
) -> Path:
    """Write ``model.onnx`` and ``selected_tags.csv`` into ``folder`` (skipped when both already exist)."""
    folder.mkdir(parents=True, exist_ok=True)
    model_path, tags_path = folder / "model.onnx", folder / "selected_tags.csv"
    if model_path.exists() and tags_path.exists():
        return folder
    rng = np.random.default_rng(0)
    heads, hidden = width // 64, width * 4
    inits, nodes = [], []

    def weight(name, shape, scale=0.02):
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name))
        return name

    def const(name, value, dtype=np.float32):
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(op, inputs, output, **attrs):
        nodes.append(helper.make_node(op, inputs, [output], **attrs))
        return output

    def layer_norm(x, prefix):
        gamma = const(f"{prefix}_g", np.ones(width))
        beta = const(f"{prefix}_b", np.zeros(width))
        return node("LayerNormalization", [x, gamma, beta], f"{prefix}_out", axis=-1, epsilon=1e-6)

    def linear(x, prefix, fan_in, fan_out):
        y = node("MatMul", [x, weight(f"{prefix}_w", (fan_in, fan_out))], f"{prefix}_mm")
        return node("Add", [y, const(f"{prefix}_bias", np.zeros(fan_out))], f"{prefix}_out")

    x = node("Transpose", ["input"], "nchw", perm=[0, 3, 1, 2])
    x = node("Div", [node("Sub", [x, const("mid", 127.5)], "centred"), const("half", 127.5)], "normed")
    conv_inputs = [x, weight("patch_w", (width, 3, patch, patch)), const("patch_b", np.zeros(width))]
    x = node("Conv", conv_inputs, "patches", strides=[patch, patch])
    x = node("Reshape", [x, const("to_tokens_t", [0, width, -1], np.int64)], "tokens_t")
    x = node("Transpose", [x], "tokens", perm=[0, 2, 1])
    x = node("Add", [x, weight("pos", ((size // patch) ** 2, width))], "embedded")
    for i in range(layers):
        p = f"l{i}"
        h = layer_norm(x, f"{p}_ln1")
        qkv = linear(h, f"{p}_qkv", width, 3 * width)
        qkv = node("Reshape", [qkv, const(f"{p}_qkv_shape", [0, 0, 3, heads, 64], np.int64)], f"{p}_qkv5")
        qkv = node("Transpose", [qkv], f"{p}_qkvt", perm=[2, 0, 3, 1, 4])  # 3, N, heads, T, 64
        parts = [f"{p}_q3", f"{p}_k3", f"{p}_v3"]
        nodes.append(helper.make_node("Split", [qkv], parts, axis=0, num_outputs=3))
        q, k, v = (node("Squeeze", [t, const(f"{t}_ax", [0], np.int64)], t + "s") for t in parts)
        scores = node("MatMul", [q, node("Transpose", [k], f"{p}_kt", perm=[0, 1, 3, 2])], f"{p}_scores")
        scores = node("Mul", [scores, const(f"{p}_scale", 1 / 8)], f"{p}_scaled")
        attn = node("MatMul", [node("Softmax", [scores], f"{p}_soft", axis=-1), v], f"{p}_attn")
        attn = node("Transpose", [attn], f"{p}_attn_t", perm=[0, 2, 1, 3])
        attn = node("Reshape", [attn, const(f"{p}_merge", [0, 0, width], np.int64)], f"{p}_merged")
        x = node("Add", [x, linear(attn, f"{p}_proj", width, width)], f"{p}_res1")
        h = linear(layer_norm(x, f"{p}_ln2"), f"{p}_fc1", width, hidden)
        erf = node("Erf", [node("Mul", [h, const(f"{p}_rs2", 2**-0.5)], f"{p}_hs")], f"{p}_erf")
        gelu = node("Mul", [node("Mul", [h, const(f"{p}_half", 0.5)], f"{p}_hh"),
                            node("Add", [erf, const(f"{p}_one", 1.0)], f"{p}_erf1")], f"{p}_gelu")  # fmt: skip
        x = node("Add", [x, linear(gelu, f"{p}_fc2", hidden, width)], f"{p}_res2")
    x = node("ReduceMean", [layer_norm(x, "final_ln"), const("pool_axes", [1], np.int64)], "pooled", keepdims=0)
    node("Sigmoid", [linear(x, "head", width, tags)], "output")
    graph = helper.make_graph(
        nodes,
        "vit_tagger_bench",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", size, size, 3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", tags])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    onnx.save(model, str(model_path))
    with tags_path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["tag_id", "name", "category", "count"])
        categories = [9] * 4 + [4] * (tags // 5) + [0] * (tags - 4 - tags // 5)
        for i, category in enumerate(categories):
            writer.writerow([i, f"tag_{i}", category, 0])
    return folder
