"""The Train Tools tab's actions without gradio: settings form round trip, scan, step text, start, checkpoints."""

import json
import threading

import pytest
from webui_fakes import FakeHost, fake_train, make_dataset

from lib_lora_train.settings import SettingsError, TrainSettings
from lib_lora_train.store import ProjectStore
from lib_lora_train.ui.train import actions as act
from lib_lora_train.ui.train.jobs import JobRunner


def test_every_engine_option_is_in_the_form_and_round_trips():
    settings = TrainSettings(rank=8, sample_prompts=["a cat", "a dog"], flip=True)
    values = act.values_from_settings(settings)
    assert len(values) == len(act.FIELD_NAMES) and set(act.BASIC) <= set(act.FIELD_NAMES)
    # gradio's Number gives floats; the list field comes back as lines of text
    values = [float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in values]
    assert act.settings_from_values(values) == settings


def test_a_bad_form_value_names_the_field():
    values = act.values_from_settings(TrainSettings())
    values[act.FIELD_NAMES.index("rank")] = 0
    with pytest.raises(SettingsError, match="rank"):
        act.settings_from_values(values)


def test_scan_and_step_summary(tmp_path):
    rows = act.scan_folders(str(make_dataset(tmp_path / "d", n=3)))
    assert rows == [["5_alice", 3, 5]]
    text = act.step_summary(rows, batch_size=1, epochs=10)
    assert "**15** images × repeats per epoch" in text and "**150** steps" in text and "try 100 repeats" in text


def test_start_applies_the_tables_repeats_to_the_snapshot_only(tmp_path):
    dataset = make_dataset(tmp_path / "d")
    store = ProjectStore(tmp_path / "s")
    gate = threading.Event()
    runner = JobRunner(make_host=FakeHost, store_factory=lambda: store, train_fn=fake_train(gate))
    started, message = act.start_job(runner, store, "alice", "v1", str(dataset), [["5_alice", 2, 20]],
                                     TrainSettings())  # fmt: skip
    assert started and message.startswith("Training alice/v1")
    assert (store.version("alice", "v1").dataset / "20_alice").is_dir()
    assert (dataset / "5_alice").is_dir()  # the user's own folder is not renamed
    started, busy = act.start_job(runner, store, "alice", "v1", "", [], TrainSettings())
    assert not started and busy.startswith("Not started") and "training" in busy  # the tab keeps it on screen
    gate.set()
    runner.wait(10)
    assert "**done** alice/v1" in act.status_markdown(runner.status())


def test_status_shows_a_progress_bar_with_eta():
    from lib_lora_train.ui.train.jobs import JobStatus

    text = act.status_markdown(JobStatus(state="running", project="a", version="v", step=15, total=60, eta_s=125))
    assert "step 15/60" in text and "ETA 2:05" in text
    assert "`" + "█" * 8 + "░" * 22 + "` 25%" in text  # 15/60 of 30 cells, rounded
    assert "░" not in act.status_markdown(JobStatus(state="idle"))


def test_checkpoint_rows_show_metadata_and_the_lora_tag(tmp_path):
    store = ProjectStore(tmp_path / "s")
    paths = store.create_version("alice", "v1")
    header = json.dumps({"__metadata__": {"ss_steps": "40", "ss_network_dim": "8", "ss_network_alpha": "4"}}).encode()
    path = paths.checkpoint_file(4)
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    rows = act.checkpoint_rows(store, "alice", "v1")
    assert rows == [["alice-v1-000004.safetensors", 4, "40", "8/4", "", "<lora:alice-v1-000004:0.8>"]]
    assert act.read_metadata(tmp_path / "missing.safetensors") == {}


def test_the_form_has_the_widget_each_setting_needs(tmp_path, monkeypatch):
    # str(int) is "<class 'int'>": every setting used to be a text box, and "False" in a box reads as true
    import gradio as gr

    from lib_lora_train.ui.runtime import UIRuntime, installed
    from lib_lora_train.ui.train.tab import build_train_tab

    monkeypatch.chdir(tmp_path)
    assert (act.FIELD_TYPES["flip"], act.FIELD_TYPES["rank"], act.FIELD_TYPES["alpha"]) == ("bool", "int", "float")
    with installed(UIRuntime()), gr.Blocks() as demo:
        build_train_tab()
    by_id = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    assert isinstance(by_id["lora_train_tools_flip"], gr.Checkbox)
    assert isinstance(by_id["lora_train_tools_rank"], gr.Number) and by_id["lora_train_tools_rank"].precision == 0
    assert isinstance(by_id["lora_train_tools_unet_lr"], gr.Number)
    assert isinstance(by_id["lora_train_tools_network"], gr.Dropdown)
    assert isinstance(by_id["lora_train_tools_sample_prompts"], gr.Textbox)


def test_the_step_calculator_reads_the_tables_dataframe():
    import pandas as pd

    table = pd.DataFrame([["2_alice", 5, 2], ["1_bob", 3, 1]], columns=["folder", "images", "repeats"])
    assert "**13** images × repeats per epoch" in act.step_summary(table, 1, 2, 1, 0)
    assert act.repeats_by_folder(table) == {"alice": 2, "bob": 1}


def test_every_setting_is_in_the_form_exactly_once():
    shown = list(act.BASIC) + [name for names in act.advanced_groups().values() for name in names]
    assert sorted(shown) == sorted(act.FIELD_NAMES)
    assert "Other" not in act.advanced_groups()  # every field has its topic


def test_step_summary_reports_regularisation_samples_separately(tmp_path):
    from PIL import Image

    reg = tmp_path / "reg" / "1_person"
    reg.mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (8, 8)).save(reg / f"{i}.png")
    rows = [["alice", 20, 10]]
    text = act.step_summary(rows, 2, 10, 1, 0, str(tmp_path / "reg"))
    assert "**200** images × repeats per epoch + **200** regularisation samples (from 3 class images)" in text
    assert "**200** steps per epoch" in text
    assert "no class images found" in act.step_summary(rows, 2, 10, 1, 0, str(tmp_path / "none"))
