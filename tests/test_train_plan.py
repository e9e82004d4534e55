"""The tab's step calculator, presets and per-folder repeats."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lib_lora_train.settings import TrainSettings
from lib_lora_train.train.plan import (
    FolderPlan,
    apply_repeats,
    plan_steps,
    preset_settings,
    split_repeat_folder,
    suggest_repeats,
)


def test_steps_are_images_times_repeats_times_epochs_over_batch():
    plan = plan_steps([FolderPlan("alice", 20, 10), FolderPlan("bg", 5, 2)], batch_size=2, epochs=10)
    assert plan.per_epoch_images == 210 and plan.steps_per_epoch == 105 and plan.total_steps == 1050
    assert "within" in plan.advice


def test_advice_outside_the_band_suggests_repeats():
    plan = plan_steps([FolderPlan("alice", 15, 1)], batch_size=1, epochs=10)
    assert "try 20 repeats for 15 images" in plan.advice


def test_max_steps_overrides_epochs():
    plan = plan_steps([FolderPlan("a", 10, 30)], batch_size=3, epochs=10, max_steps=250)
    assert plan.total_steps == 250 and plan.epochs == 3


@given(st.integers(1, 2000))
def test_suggested_repeats_land_near_the_aim(images):
    per_epoch = images * suggest_repeats(images)
    assert suggest_repeats(images) >= 1
    assert per_epoch <= 450 or suggest_repeats(images) == 1


@pytest.mark.parametrize("name", ["character", "style", "concept"])
def test_presets_are_valid_settings_and_sdxl_gets_1024(name):
    assert preset_settings(name, arch="sdxl").resolution == 1024
    assert isinstance(preset_settings(name), TrainSettings)
    assert preset_settings("character").keep_tokens == 1 and not preset_settings("character").flip


def test_unknown_preset_is_refused():
    with pytest.raises(ValueError, match="character, style, bootstrap, concept"):
        preset_settings("anime")


def test_repeats_rename_snapshot_folders(tmp_path):
    (tmp_path / "10_alice").mkdir()
    (tmp_path / "extra").mkdir()
    (tmp_path / "keep").mkdir()
    assert apply_repeats(tmp_path, {"alice": 3, "extra": 5}) == ["3_alice", "5_extra"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["3_alice", "5_extra", "keep"]
    assert split_repeat_folder("3_alice") == (3, "alice") and split_repeat_folder("x") == (None, "x")


def test_regularisation_images_double_the_steps_but_not_the_advice():
    plain = plan_steps([FolderPlan("alice", 20, 15)], batch_size=2, epochs=10)
    with_reg = plan_steps([FolderPlan("alice", 20, 15)], batch_size=2, epochs=10, reg_images=50)
    assert with_reg.reg_per_epoch == 300 and with_reg.steps_per_epoch == 2 * plain.steps_per_epoch
    assert with_reg.total_steps == 2 * plain.total_steps and with_reg.advice == plain.advice
