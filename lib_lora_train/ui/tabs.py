"""The four tabs and the API mounts of the extension, each imported on its own so that one missing or broken piece
shows a short panel saying what it will do instead of taking the others (or the WebUI) down."""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TabEntry:
    module: str
    builder: str
    title: str
    elem_id: str
    purpose: str


TABS = (
    TabEntry("lib_lora_train.ui.tagger.tab", "build_tagger_tab", "Tagger", "lora_train_tagger",
             "Booru-tag images with the WD14 ONNX taggers: one image, or a whole folder into .txt captions."),
    TabEntry("lib_lora_train.ui.tag_editor.tab", "build_tag_editor_tab", "Dataset Tag Editor",
             "lora_train_tag_editor",
             "Filter, inspect and batch-edit the captions of a dataset; find the images that would hurt training."),
    TabEntry("lib_lora_train.ui.train.tab", "build_train_tab", "Train Tools", "lora_train_tools",
             "Projects and versions; train a LoRA on the loaded checkpoint and VAE, on the same GPU."),
    TabEntry("lib_lora_train.ui.compare.tab", "build_compare_tab", "Epoch Compare", "lora_train_compare",
             "Render epoch x weight grids of a trained version and hand them to the X/Y/Z plot as Prompt S/R."),
)  # fmt: skip

API_MOUNTS = (
    ("lib_lora_train.ui.train.api", "mount_default_train_api"),
    ("lib_lora_train.ui.train.bootstrap_api", "mount_bootstrap_api"),
    ("lib_lora_train.ui.tagger.api", "mount_tagger_api"),
    ("lib_lora_train.ui.tag_editor.api", "mount_tag_editor_api"),
    ("lib_lora_train.ui.compare.api", "mount_compare_api"),
)


def _placeholder(gr, entry: TabEntry, reason: str) -> None:
    gr.Markdown(f"### {entry.title}\n\n{entry.purpose}\n\n*This tab is not available in this install: {reason}*")


def build_tabs() -> list:
    """``on_ui_tabs`` callback: ``[(blocks, title, elem_id)]`` for the four tabs."""
    import gradio as gr

    tabs = []
    for entry in TABS:
        with gr.Blocks(analytics_enabled=False) as blocks:
            try:
                builder = getattr(importlib.import_module(entry.module), entry.builder)
            except (ImportError, AttributeError) as exc:
                log.warning("LoRA Train Tools: %s tab unavailable: %s", entry.title, exc)
                _placeholder(gr, entry, f"{type(exc).__name__}: {exc}")
            else:
                builder()  # a builder may return its own Blocks; made inside ours, it renders here either way
        tabs.append((blocks, entry.title, entry.elem_id))
    return tabs


def mount_apis(app, auth_dependency) -> list[str]:
    """Mount the HTTP routes of every tab that is present; returns the modules mounted."""
    mounted = []
    for module, function in API_MOUNTS:
        try:
            mount = getattr(importlib.import_module(module), function)
        except (ImportError, AttributeError):
            continue
        mount(app, auth_dependency)
        mounted.append(module)
    return mounted
