"""No two inputs of a tab share a label: the WebUI saves each input's default in ui-config.json under
``<tab>/<label>/value``, so two inputs with one label get each other's value (the tag editor's Batch edit regex box
started with the text "False", the value of the filter's "Regex" checkbox)."""

from __future__ import annotations

import collections

import gradio as gr
import pytest

from lib_lora_train.ui.runtime import UIRuntime, installed
from lib_lora_train.ui.tabs import TABS


@pytest.mark.parametrize("entry", TABS, ids=[t.elem_id for t in TABS])
def test_every_input_of_a_tab_has_its_own_label(entry, tmp_path, monkeypatch):
    import importlib

    monkeypatch.chdir(tmp_path)
    builder = getattr(importlib.import_module(entry.module), entry.builder)
    with installed(UIRuntime()), gr.Blocks() as demo:
        builder()
    labels = [b.label for b in demo.blocks.values()
              if isinstance(b, gr.components.IOComponent) and getattr(b, "interactive", None) is not False
              and b.label and not isinstance(b, (gr.Gallery, gr.Image, gr.Label, gr.LinePlot))]  # fmt: skip
    shared = [label for label, n in collections.Counter(labels).items() if n > 1]
    assert shared == [], f"{entry.title}: inputs share these labels: {shared}"
