"""Block-wise learning rates and ranks (kohya's down/mid/up_lr_weight, block_dims/alphas, conv_block_dims/alphas)."""

import math

import pytest
import torch
from safetensors import safe_open

from lib_lora_train.cli import main
from lib_lora_train.hosts.diffusers_host import DiffusersHost
from lib_lora_train.hosts.tiny_model import (
    build_tiny_pipeline,
    build_tiny_sdxl_pipeline,
    save_tiny_model,
    write_tiny_dataset,
)
from lib_lora_train.lora_format.keys import kohya_module_names
from lib_lora_train.settings import SettingsError, TrainSettings
from lib_lora_train.store.projects import ProjectStore
from lib_lora_train.train.adapters import inject_adapters
from lib_lora_train.train.blocks import block_index, preset_weights, unet_param_groups
from lib_lora_train.train.preflight import check_model
from lib_lora_train.train.runner import train_version


@pytest.fixture(scope="module")
def sd1():
    return DiffusersHost(build_tiny_pipeline(seed=0))


@pytest.fixture(scope="module")
def sdxl():
    return DiffusersHost(build_tiny_sdxl_pipeline(seed=0))


@pytest.mark.parametrize(
    ("name", "index"),
    [  # kohya's numbering (sd-scripts networks/lora.py get_block_index)
        ("lora_unet_down_blocks_0_attentions_0_proj_in", 1),
        ("lora_unet_down_blocks_0_resnets_1_conv1", 2),
        ("lora_unet_down_blocks_0_downsamplers_0_conv", 3),
        ("lora_unet_down_blocks_3_resnets_1_conv2", 11),
        ("lora_unet_mid_block_attentions_0_proj_in", 12),
        ("lora_unet_mid_block_resnets_1_conv1", 12),
        ("lora_unet_up_blocks_0_resnets_0_conv1", 13),
        ("lora_unet_up_blocks_0_upsamplers_0_conv", 15),
        ("lora_unet_up_blocks_3_attentions_2_proj_out", 24),
        ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q", 5),
        ("lora_unet_middle_block_1_proj_in", 11),
        ("lora_unet_middle_block_2_in_layers_2", 12),
        ("lora_unet_output_blocks_8_0_out_layers_3", 21),
        ("lora_unet_time_embed_0", 0),
    ],
)
def test_block_index_follows_kohya(name, index):
    assert block_index(name) == index


def test_every_unet_target_of_both_archs_is_in_a_block(sd1, sdxl):
    from lib_lora_train.lora_format.keys import unet_target_modules

    for host, count in ((sd1, 25), (sdxl, 23)):
        target = host.model_parts().unet
        names = kohya_module_names(target)
        indices = {block_index(names[p]) for p in unet_target_modules(target, "locon")}
        assert None not in indices and max(indices) < count and min(indices) >= 1


def test_presets_follow_kohyas_formulas():
    sine = preset_weights("sine", 12)
    assert sine[0] == 0 and sine[-1] == pytest.approx(1) and sine[6] == pytest.approx(math.sin(math.pi / 2 * 6 / 11))
    assert preset_weights("cosine", 9) == pytest.approx(list(reversed(preset_weights("sine", 9))))
    assert preset_weights("linear+0.5", 12) == pytest.approx([i / 11 + 0.5 for i in range(12)])
    assert preset_weights("reverse_linear", 9)[0] == pytest.approx(1.0)
    assert preset_weights("zeros+.25", 12) == [0.25] * 12


def _group_lr_of(groups):
    return {id(p): g["lr"] for g in groups for p in g["params"]}


def test_lr_weights_give_param_groups_at_lr_times_the_blocks_weight(sd1):
    parts = sd1.model_parts()
    settings = TrainSettings(network="locon", rank=4, unet_lr=1e-3, down_lr_weight="sine", mid_lr_weight="0.5",
                             up_lr_weight="linear+0.1")  # fmt: skip
    handle = inject_adapters(parts, settings, train_te=False)
    try:
        groups = unet_param_groups(handle.params_by_path("unet"), handle.block_plan, settings.unet_lr)
        lr_of = _group_lr_of(groups)
        # the tiny UNet: down_blocks.0 (attention, resnet) is block 1, its downsampler 3, down_blocks.1 block 4;
        # up_blocks.0 is up 0 and 1 (resnets) and 2 (upsampler), up_blocks.1 up 3 and 4
        expected = {"down_blocks.0.attentions.0": math.sin(math.pi / 2 / 11),
                    "down_blocks.0.downsamplers.0": math.sin(math.pi / 2 * 3 / 11),
                    "down_blocks.1.resnets.0": math.sin(math.pi / 2 * 4 / 11), "mid_block": 0.5,
                    "up_blocks.0.resnets.1": 1 / 11 + 0.1, "up_blocks.0.upsamplers.0": 2 / 11 + 0.1,
                    "up_blocks.1.attentions.1": 4 / 11 + 0.1}  # fmt: skip
        for path, params in handle.params_by_path("unet").items():
            for unit, weight in expected.items():
                if path.startswith(unit + "."):
                    assert all(lr_of[id(p)] == pytest.approx(1e-3 * weight) for p in params), path
        assert len(groups) == len({round(g["lr"], 12) for g in groups})  # one group per distinct weight
        assert sum(len(g["params"]) for g in groups) == len(handle.parameters("unet"))
    finally:
        handle.remove()


def test_without_block_settings_there_is_one_unet_group(sd1):
    parts = sd1.model_parts()
    handle = inject_adapters(parts, TrainSettings(rank=4), train_te=False)
    try:
        assert handle.block_plan is None
        groups = unet_param_groups(handle.params_by_path("unet"), handle.block_plan, 1e-3)
        assert len(groups) == 1 and groups[0]["lr"] == 1e-3
    finally:
        handle.remove()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("data"), count=2, size=64)


def test_the_file_has_the_blocks_ranks_and_no_keys_for_blocks_switched_off(sd1, dataset, tmp_path):
    dims = [4] * 25
    dims[12] = 0  # the mid block: no adapters on its linear layers
    dims[13:25] = [2] * 12  # every up block rank 2
    alphas = [1.0] * 25
    conv_dims = [3] * 25
    conv_dims[13] = 0  # up 0 (up_blocks.0.resnets.0): no 3x3 conv adapter
    down = ["1"] * 12
    down[3] = "0"  # block 3, the downsampler of down_blocks.0: lr weight 0, no adapter at all
    settings = TrainSettings(
        resolution=64, batch_size=2, max_steps=2, mixed_precision="no", network="locon", rank=8, alpha=4,
        conv_rank=8, conv_alpha=4, block_dims=",".join(map(str, dims)), block_alphas=",".join(map(str, alphas)),
        conv_block_dims=",".join(map(str, conv_dims)), down_lr_weight=",".join(down), save_precision="fp32",
    )  # fmt: skip
    version = ProjectStore(tmp_path / "out").create_version("p", "v")
    result = train_version(sd1, settings, version, dataset_dir=dataset)
    assert result.status == "done", result.message
    with safe_open(str(version.checkpoint_file(None)), "pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    downs = {k.rsplit(".", 2)[0]: v for k, v in tensors.items() if k.endswith("lora_down.weight")}
    assert not any("downsamplers" in k and "down_blocks_0" in k for k in downs)  # lr weight 0: no keys
    mid = [k for k, v in downs.items() if "mid_block" in k]
    assert mid and all(downs[k].dim() == 4 and downs[k].shape[-1] == 3 for k in mid)  # only its 3x3 convs remain
    for name, down in downs.items():
        if not name.startswith("lora_unet_"):
            assert down.shape[0] == 8  # text encoders keep the run's rank
            continue
        conv3 = down.dim() == 4 and down.shape[-1] == 3
        if "up_blocks_0_resnets_0_" in name:
            assert not conv3  # conv dim 0 in up 0
        want = 3 if conv3 else (2 if "up_blocks" in name else 4)
        assert down.shape[0] == want, name
        alpha = float(tensors[f"{name}.alpha"])
        assert alpha == pytest.approx(4.0 if conv3 else 1.0), name  # block_alphas for linears, conv_alpha for convs
    assert any("up_blocks_0_resnets_0_conv_shortcut" in k or "up_blocks_0_resnets_0_time_emb" in k for k in downs)


@pytest.mark.parametrize(
    ("arch", "changes", "field", "message"),
    [
        ("sdxl", {"block_dims": ",".join(["4"] * 25)}, "block_dims", "has 25 values but this SDXL model needs 23"),
        ("sd1", {"block_dims": ",".join(["4"] * 23)}, "block_dims", "has 23 values but this SD1 model needs 25"),
        ("sd1", {"down_lr_weight": ",".join(["1"] * 9)}, "down_lr_weight", "this SD1 model has 12 down blocks"),
        ("sdxl", {"up_lr_weight": ",".join(["1"] * 12)}, "up_lr_weight", "this SDXL model has 9 up blocks"),
        ("sdxl", {"mid_lr_weight": "1"}, "mid_lr_weight", "needs 3 numbers"),
        ("sd1", {"mid_lr_weight": "1,1,1"}, "mid_lr_weight", "needs 1 number"),
        ("sd1", {"network": "lora", "conv_block_dims": ",".join(["4"] * 25)}, "conv_block_dims", "use locon"),
        ("sd1", {"block_dims": ",".join(["64"] * 25)}, "block_dims", "give that block 32 or less"),
    ],
)
def test_a_wrong_count_for_the_model_is_refused_naming_the_setting(sd1, sdxl, arch, changes, field, message):
    host = sd1 if arch == "sd1" else sdxl
    with pytest.raises(SettingsError) as caught:
        check_model(TrainSettings(**{"network": "locon", **changes}), host.model_parts())
    assert caught.value.field == field and message in str(caught.value)


def test_the_cli_refuses_a_wrong_count_before_a_version_exists(tmp_path, capsys):
    base = save_tiny_model(tmp_path / "tiny")
    data = write_tiny_dataset(tmp_path / "data", count=2, size=64)
    argv = ["train", "--dataset", str(data), "--base", str(base), "--project", "demo", "--version", "v1",
            "--outputs", str(tmp_path / "outputs"), "--resolution", "64", "--mixed-precision", "no",
            "--max-steps", "1", "--block-dims", ",".join(["4"] * 23)]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "block_dims: has 23 values but this SD1 model needs 25" in err and err.count("error:") == 1
    assert not (tmp_path / "outputs" / "demo").exists()


def test_the_run_log_names_each_changed_block(sd1):
    handle = inject_adapters(sd1.model_parts(), TrainSettings(down_lr_weight="zeros+0.5", rank=4), train_te=False)
    try:
        notes = [line for line in handle.summary() if line.startswith("block-wise:")]
        assert notes and all("lr x0.5" in line for line in notes if line.startswith("block-wise: down"))
        assert not any(line.startswith("block-wise: up") for line in notes)  # up blocks keep the defaults
    finally:
        handle.remove()


class _StopAfter(DiffusersHost):
    def __init__(self, pipe, steps):
        super().__init__(pipe)
        self.steps = steps

    def should_stop(self):
        return sum(1 for e in self.events if e.kind == "step") >= self.steps


def test_block_wise_runs_resume_exactly_with_their_param_groups_and_schedule(sd1, dataset, tmp_path):
    from safetensors.torch import load_file

    settings = TrainSettings(
        resolution=64, batch_size=2, epochs=2, mixed_precision="no", network="locon", rank=4, alpha=2, unet_lr=1e-2,
        lr_scheduler="linear", save_state=True, save_precision="fp32", down_lr_weight="linear+0.2",
        mid_lr_weight="0", up_lr_weight="cosine", block_dims=",".join(["2"] * 12 + ["4"] * 13),
    )  # fmt: skip
    store = ProjectStore(tmp_path / "out")
    straight, resumed = store.create_version("p", "straight"), store.create_version("p", "resumed")
    assert train_version(DiffusersHost(sd1.pipe), settings, straight, dataset_dir=dataset).status == "done"
    assert train_version(_StopAfter(sd1.pipe, 3), settings, resumed, dataset_dir=dataset).status == "stopped"
    # the state saved at the stop has a group per lr weight, each at the linear schedule's factor for step 3 of 4
    state = torch.load(resumed.path / "state" / "optimizer.pt", weights_only=False)
    groups = state["optimizer"]["param_groups"]
    assert len(groups) > 3 and len({g["initial_lr"] for g in groups}) == len(groups)
    assert all(g["lr"] == pytest.approx(0.25 * g["initial_lr"]) for g in groups)
    assert train_version(DiffusersHost(sd1.pipe), settings, resumed, dataset_dir=dataset, resume=True).status == "done"
    a, b = load_file(str(straight.checkpoint_file(None))), load_file(str(resumed.checkpoint_file(None)))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not any("mid_block" in k for k in a)  # mid lr weight 0
