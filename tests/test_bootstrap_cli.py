"""``python -m lib_lora_train bootstrap`` on the tiny diffusers model: one picture cut into 4 crops, two rounds of
train / generate / score (a probe tagger) / auto-select / grow, then the final character version."""

from __future__ import annotations

import json
import time

import pytest
from PIL import Image
from tagger_graphs import make_model_folder

from lib_lora_train.cli import main
from lib_lora_train.hosts.tiny_model import save_tiny_model

pytestmark = pytest.mark.slow


def test_the_loop_runs_unattended_from_one_picture(tmp_path, capsys):
    picture = Image.new("RGB", (128, 128), (200, 40, 40))
    for x in range(64, 128):
        for y in range(0, 64):
            picture.putpixel((x, y), (40, 40, 200))
    picture.save(tmp_path / "alice.png")
    base = save_tiny_model(tmp_path / "tiny")
    tagger = make_model_folder(tmp_path / "probe-tagger")
    outputs = tmp_path / "outputs"
    argv = ["bootstrap", "--dataset", str(tmp_path / "alice.png"), "--crop", "4", "--base", str(base),
            "--project", "alice", "--outputs", str(outputs), "--targets", "6,8", "--activation", "alicechan",
            "--views", "from side, from behind", "--seeds-per-view", "2", "--tagger", str(tagger),
            "--render-steps", "2", "--resolution", "64", "--min-bucket-side", "64", "--max-bucket-side", "128",
            "--batch-size", "2", "--rank", "4", "--alpha", "4", "--epochs", "2", "--max-steps", "2",
            "--mixed-precision", "no", "--te-lr", "0", "--seed", "3", "--device", "cpu"]  # fmt: skip
    started = time.time()
    assert main(argv) == 0, capsys.readouterr().err
    print(f"bootstrap loop on the tiny model: {time.time() - started:.1f} s")
    versions = outputs / "alice" / "versions"
    assert sorted(p.name for p in versions.iterdir()) == ["v1", "v2", "v3"]
    counts = {v: len(list((versions / v / "dataset").rglob("*.png"))) for v in ("v1", "v2", "v3")}
    assert counts == {"v1": 4, "v2": 6, "v3": 8}
    round_1 = versions / "v1" / "bootstrap" / "round-1"
    assert len(list((round_1 / "candidates").glob("*.png"))) == 4
    assert len(json.loads((round_1 / "selection.json").read_text())["kept"]) == 2
    scores = json.loads((round_1 / "scores.json").read_text())
    assert all("reasons" in s and s["trait_recall"] == 1.0 for s in scores)  # the probe sees the crops' traits
    with Image.open(next((round_1 / "candidates").glob("*.png"))) as candidate:
        assert "<lora:alice-v1:0.8>" in candidate.text["parameters"]
    assert (versions / "v3" / "checkpoints" / "alice-v3.safetensors").is_file()
    assert json.loads((versions / "v3" / "version.json").read_text())["parent"] == "v2"
    first_caption = next((versions / "v1" / "dataset").rglob("*.txt")).read_text(encoding="utf-8")
    assert first_caption.startswith("alicechan, ")
    assert "done:" in capsys.readouterr().out
