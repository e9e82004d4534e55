"""Whole runs with the dataset options of #14 on the tiny diffusers model: regularisation images and masked loss
reach the loss, the epoch length and the file's metadata; the model is left as it was."""

import json

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open

from lib_lora_train.hosts.diffusers_host import DiffusersHost
from lib_lora_train.hosts.tiny_model import build_tiny_pipeline, write_tiny_dataset
from lib_lora_train.settings import TrainSettings
from lib_lora_train.store.projects import ProjectStore
from lib_lora_train.train.runner import train_version

BASE = dict(resolution=64, batch_size=2, epochs=1, unet_lr=1e-3, te_lr=0, mixed_precision="no", seed=3, rank=4,
            alpha=4, save_every=0)  # fmt: skip


@pytest.fixture(scope="module")
def pipe():
    return build_tiny_pipeline(seed=2)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("data"), count=2, size=64)  # 2 images x 2 repeats


def _metadata(path):
    with safe_open(str(path), "pt") as handle:
        return handle.metadata()


def _run(pipe, tmp_path, dataset, name, **settings):
    version = ProjectStore(tmp_path / "outputs").create_version("p", name)
    host = DiffusersHost(pipe)
    result = train_version(host, TrainSettings(**{**BASE, **settings}), version, dataset_dir=dataset)
    assert result.status == "done", result.message
    return result, host


def test_regularisation_images_double_the_epoch_and_are_recorded(pipe, tmp_path, dataset):
    reg = tmp_path / "reg" / "1_person"
    reg.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((64, 64, 3), 40 * i, dtype=np.uint8)).save(reg / f"{i}.png")
    plain, _ = _run(pipe, tmp_path, dataset, "plain")
    with_reg, host = _run(pipe, tmp_path, dataset, "reg", reg_data_dir=str(tmp_path / "reg"), prior_loss_weight=0.5)
    assert with_reg.steps == 2 * plain.steps  # 4 training samples + 4 regularisation samples per epoch
    meta = _metadata(with_reg.checkpoints[-1])
    assert meta["ss_num_reg_images"] == "3" and meta["ss_prior_loss_weight"] == "0.5"
    assert json.loads(meta["ss_reg_dataset_dirs"]) == {"1_person": {"n_repeats": 1, "img_count": 3}}
    assert meta["ss_num_train_images"] == _metadata(plain.checkpoints[-1])["ss_num_train_images"]
    assert any("3 regularisation images" in (e.message or "") for e in host.events)


def test_masked_loss_from_a_mask_folder_trains_and_is_recorded(pipe, tmp_path, dataset):
    masks = tmp_path / "masks"
    masks.mkdir()
    images = sorted(p for p in dataset.rglob("*.png"))
    for image in images:
        Image.new("L", (64, 64), 0).save(masks / image.name)  # all black: no pixel counts
    black, _ = _run(pipe, tmp_path, dataset, "black", masked_loss=True, mask_dir=str(masks))
    assert black.final_loss == 0.0
    for image in images:
        Image.new("L", (64, 64), 255).save(masks / image.name)
    white, _ = _run(pipe, tmp_path, dataset, "white", masked_loss=True, mask_dir=str(masks))
    plain, _ = _run(pipe, tmp_path, dataset, "plain")
    assert white.final_loss == pytest.approx(plain.final_loss, rel=1e-5)  # an all-white mask is no mask
    assert _metadata(white.checkpoints[-1])["ss_masked_loss"] == "True"


def test_loss_options_are_recorded_as_kohya_writes_them(pipe, tmp_path, dataset):
    result, _ = _run(pipe, tmp_path, dataset, "opts", loss_type="huber", huber_schedule="snr", huber_c=0.2,
                     min_timestep=100, max_timestep=900, ip_noise_gamma=0.1, multires_noise_iterations=6,
                     debiased_estimation_loss=True, zero_terminal_snr=True, v_parameterization=True)  # fmt: skip
    meta = _metadata(result.checkpoints[-1])
    assert (meta["ss_loss_type"], meta["ss_huber_schedule"], meta["ss_huber_c"]) == ("huber", "snr", "0.2")
    assert (meta["ss_min_timestep"], meta["ss_max_timestep"]) == ("100", "900")
    assert meta["ss_ip_noise_gamma"] == "0.1" and meta["ss_multires_noise_iterations"] == "6"
    assert meta["ss_debiased_estimation"] == "True" and meta["ss_zero_terminal_snr"] == "True"
    assert meta["ss_v_parameterization"] == "True" and meta["modelspec.prediction_type"] == "v"


def test_masked_loss_from_alpha_names_the_images_without_transparency(pipe, tmp_path, dataset):
    result, host = _run(pipe, tmp_path, dataset, "alpha", masked_loss=True)
    plain, _ = _run(pipe, tmp_path, dataset, "plain")
    assert result.final_loss == pytest.approx(plain.final_loss, rel=1e-5)  # opaque images train everywhere
    lines = [e.message for e in host.events if e.kind == "log" and "masked loss" in (e.message or "")]
    assert lines and "2 have no transparency and train everywhere" in lines[0]


def test_every_step_reports_the_memory_in_use(pipe, tmp_path, dataset):
    from lib_lora_train.train.memory import device_memory
    from lib_lora_train.ui.train.actions import status_markdown
    from lib_lora_train.ui.train.jobs import JobStatus

    use = device_memory(pipe.device)
    assert use.kind == "RAM" and 0 < use.allocated < use.total
    _, host = _run(pipe, tmp_path, dataset, "memory")
    steps = [e for e in host.events if e.kind == "step"]
    assert steps and all(e.memory.startswith("RAM ") and e.memory.endswith(" GiB") for e in steps)
    line = status_markdown(JobStatus(state="running", project="p", version="v", step=1, total=2, memory=steps[0].memory))
    assert steps[0].memory in line
