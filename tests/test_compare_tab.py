"""The Epoch Compare tab outside the WebUI: input mapping, version summary, and that gradio 3.41 builds it."""

import pytest
from PIL import Image

from lib_lora_train.store import ProjectStore
from lib_lora_train.ui.compare import render as compare_render
from lib_lora_train.ui.compare import tab as compare_tab


@pytest.fixture
def store(tmp_path, monkeypatch):
    store = ProjectStore(tmp_path / "train_tools")
    version = store.create_version("alice", "v1")
    version.checkpoints.mkdir(parents=True, exist_ok=True)
    for epoch in (1, 2, None):
        version.checkpoint_file(epoch).write_bytes(b"x")
    (version.dataset / "1_a").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(version.dataset / "1_a" / "0.png")
    (version.dataset / "1_a" / "0.txt").write_text("alice_x, smile")
    monkeypatch.setattr(compare_render, "project_store", lambda: store)
    return store


def test_inputs_map_onto_a_request():
    values = ["alice", "v1", "every", 2.0, "", "0.5, 1", True, "alice_x, smile\n\nalice_x, sitting", "bad", "1, 2",
              "Euler", "Karras", 10, 6.5, 64, 128, False, "", 0.4]  # fmt: skip
    request = compare_tab.request_from_inputs(*values)
    assert request.prompts == ["alice_x, smile", "alice_x, sitting"] and request.every == 2
    assert (request.sampler, request.scheduler, request.width, request.height, request.score) == (
        "Euler",
        "Karras",
        64,
        128,
        False,
    )
    with pytest.raises(ValueError):
        compare_tab.request_from_inputs(*values[:-1])  # a missing widget is a wiring bug, not a silent default


def test_epoch_choice_and_version_summary(store):
    assert compare_tab.epoch_choice("epoch 12") == 12 and compare_tab.epoch_choice("final") is None
    assert compare_tab.epoch_choice("epoch 4 (final)") is None
    text, labels, tag = compare_tab.version_summary("alice", "v1")
    assert labels == ["epoch 1", "epoch 2", "final"] and tag == "alice_x" and "3 saved" in text


def test_xyz_strings_for_the_first_prompt(store, monkeypatch):
    monkeypatch.setattr(compare_render, "ensure_reachable", lambda plan, grids: [])
    request = compare_tab.request_from_inputs("alice", "v1", "all", 1, "", "0.5, 1", False, "alice_x, smile", "", "3",
                                              "Euler", "Automatic", 4, 7, 64, 64, False, "", 0.35)  # fmt: skip
    x, y, infotext, message = compare_tab.xyz_strings(request)
    assert (x, y) == (":0.5>,:1>", "-000001,-000002,")  # the final file is the empty value
    assert infotext.startswith("alice_x, smile <lora:alice-v1-000001:0.5>\n") and "Send to txt2img" in message


@pytest.mark.slow  # importing gradio takes ~10-20 s on two busy cores
def test_gradio_builds_the_tab(store):
    gr = pytest.importorskip("gradio")
    tab = compare_tab.build_compare_tab()
    assert isinstance(tab, gr.Blocks)
    labels = {getattr(block, "label", None) for block in tab.blocks.values()}
    assert {"Project", "Version", "LoRA weights (list, or a range like 0.5-1.0:0.1)", "Chosen epoch"} <= labels
