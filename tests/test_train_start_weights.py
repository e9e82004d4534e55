"""Continue from a LoRA file (network_weights / dim_from_weights): what a run starts from, and what is refused."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from lora_format_trees import DIFFUSERS_SD1, WEBUI_TINY
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from lib_lora_train.hosts.diffusers_host import DiffusersHost
from lib_lora_train.hosts.tiny_model import build_tiny_pipeline, write_tiny_dataset
from lib_lora_train.lora_format import keys, peft_bridge
from lib_lora_train.settings import SettingsError, TrainSettings
from lib_lora_train.store.projects import ProjectStore
from lib_lora_train.train import runner
from lib_lora_train.train.adapters import inject_adapters
from lib_lora_train.train.dora import DoraLayer
from lib_lora_train.train.start_weights import check_start_file, check_start_fits, open_start_weights

BASE = dict(resolution=64, batch_size=2, epochs=1, unet_lr=1e-3, te_lr=1e-4, mixed_precision="no", seed=3,
            network="lora", rank=2, alpha=1.0, save_precision="fp32", shuffle_tags=False)  # fmt: skip
needs_fixtures = pytest.mark.skipif(not (DIFFUSERS_SD1 / "model_index.json").is_file(),
                                    reason="../shared/fixtures not present")  # fmt: skip


@pytest.fixture(scope="module")
def pipe():
    return build_tiny_pipeline(seed=2)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("data"), count=2, size=64)


@pytest.fixture(scope="module")
def trained(pipe, dataset, tmp_path_factory):
    """Files of a first run per network type (fp32), to start the others from."""
    cache = {}

    def get(network="lora", **extra):
        key = (network, tuple(sorted(extra.items())))
        if key not in cache:
            store = ProjectStore(tmp_path_factory.mktemp("first") / "outputs")
            version = store.create_version("p", "first")
            settings = TrainSettings(**{**BASE, "network": network, "unet_lr": 1e-2, **extra})
            result = runner.train_version(DiffusersHost(pipe), settings, version, dataset_dir=dataset)
            assert result.status == "done", result.message
            cache[key] = result.checkpoints[-1]
        return cache[key]

    return get


def _run(pipe, dataset, tmp_path, name, **changes):
    version = ProjectStore(tmp_path / "outputs").create_version("p", name)
    host = DiffusersHost(pipe)
    result = runner.train_version(host, TrainSettings(**{**BASE, **changes}), version, dataset_dir=dataset)
    assert result.status == "done", result.message
    with open(version.loss_log, newline="") as handle:
        first_loss = float(next(csv.DictReader(handle))["loss"])
    logs = [e.message for e in host.events if e.kind == "log"]
    return result, first_loss, logs


def test_a_continued_run_starts_from_the_file_and_moves_on(pipe, dataset, tmp_path, trained, monkeypatch):
    start = trained()
    result, first, logs = _run(pipe, dataset, tmp_path, "continued", network_weights=str(start))
    modules = len({k.split(".")[0] for k in load_file(str(start))})
    assert f"network_weights: {modules} modules loaded from {start.name} " in "\n".join(logs)
    _, fresh_first, _ = _run(pipe, dataset, tmp_path, "fresh")
    assert first != fresh_first  # the file's weights change the first loss

    # the same run with the file's tensors copied in by hand after injection: the first step's loss is the same
    def inject_and_copy(parts, settings, **kwargs):
        handle = inject_adapters(parts, settings, **kwargs)
        tensors = load_file(str(start))
        for injected in handle.targets:
            peft_bridge.load_adapter_state_dict(injected.target, keys.kohya_module_names(injected.target), tensors)
        return handle

    monkeypatch.setattr(runner, "inject_adapters", inject_and_copy)
    _, by_hand_first, _ = _run(pipe, dataset, tmp_path, "by-hand")
    assert first == by_hand_first
    before, after = load_file(str(start)), load_file(str(result.checkpoints[-1]))
    assert set(after) == set(before)
    assert any(not torch.equal(after[k], before[k]) for k in before)  # trained on from there


def test_dim_from_weights_takes_rank_and_alpha_from_the_file(pipe, dataset, tmp_path, trained):
    start = trained()  # rank 2, alpha 1
    _, first, _ = _run(pipe, dataset, tmp_path, "same", network_weights=str(start))
    result, dims_first, logs = _run(pipe, dataset, tmp_path, "dims", network_weights=str(start), rank=4, alpha=8,
                                    dim_from_weights=True)  # fmt: skip
    assert dims_first == first  # the same weights, the same parametrisation
    assert "dim_from_weights: rank 2 alpha 1" in "\n".join(logs)
    tensors = load_file(str(result.checkpoints[-1]))
    assert {v.shape[0] for k, v in tensors.items() if k.endswith("lora_down.weight")} == {2}
    assert {float(v) for k, v in tensors.items() if k.endswith(".alpha")} == {1.0}
    with safe_open(str(result.checkpoints[-1]), "pt") as handle:
        assert handle.metadata()["ss_network_dim"] == "2" and handle.metadata()["ss_network_alpha"] == "1.0"


def test_a_rank_that_differs_from_the_file_is_refused_naming_the_file_and_the_fix(trained):
    start = trained()
    with pytest.raises(SettingsError, match=rf"{start}: module \S+ has rank 2 but rank is 4; set rank 2 or turn "
                       "dim_from_weights on") as caught:  # fmt: skip
        check_start_file(TrainSettings(**{**BASE, "rank": 4}, network_weights=str(start)))
    assert caught.value.field == "network_weights"


def test_dim_from_weights_keeps_each_modules_own_rank(pipe, trained, tmp_path):
    tensors = load_file(str(trained()))
    cut = sorted({k.split(".")[0] for k in tensors if k.startswith("lora_unet_")})[::2]
    for name in cut:  # as kohya's resize leaves it: some modules at a lower rank, their alpha kept
        tensors[f"{name}.lora_down.weight"] = tensors[f"{name}.lora_down.weight"][:1].contiguous()
        tensors[f"{name}.lora_up.weight"] = tensors[f"{name}.lora_up.weight"][:, :1].contiguous()
    path = tmp_path / "resized.safetensors"
    save_file(tensors, str(path), {"ss_network_dim": "2", "ss_network_alpha": "1.0"})
    parts = DiffusersHost(pipe).model_parts()
    settings = TrainSettings(**BASE, network_weights=str(path), dim_from_weights=True)
    start = open_start_weights(settings, parts)
    handle = inject_adapters(parts, start.settings, module_ranks=start.ranks)
    try:
        lines = start.load(handle)
        assert f"{len(cut)} modules with their own rank/alpha" in start.notes[0]
        assert any(f"{len({k.split('.')[0] for k in tensors})} modules loaded" in line for line in lines)
        names = keys.kohya_module_names(parts.unet)
        for path_, name in names.items():
            layer = parts.unet.module.get_submodule(path_)
            if peft_bridge.adapter_kind(layer):
                assert layer.r["default"] == (1 if name in cut else 2), name
        again = peft_bridge.adapter_state_dict(parts.unet, names, "lora")
        for key, value in again.items():
            torch.testing.assert_close(value, tensors[key], rtol=0, atol=0, msg=key)
    finally:
        handle.remove()


def test_a_dora_file_continues_as_a_dora(pipe, trained):
    start = trained(dora_wd=True)
    parts = DiffusersHost(pipe).model_parts()
    with pytest.raises(SettingsError, match="is a DoRA .*turn dora_wd on, or turn dim_from_weights on"):
        check_start_file(TrainSettings(**BASE, network_weights=str(start)))
    settings = TrainSettings(**BASE, network_weights=str(start), dim_from_weights=True)
    opened = open_start_weights(settings, parts)
    assert opened.settings.dora_wd
    handle = inject_adapters(parts, opened.settings, module_ranks=opened.ranks)
    try:
        opened.load(handle)
        assert handle.layers() and all(isinstance(layer, DoraLayer) for layer in handle.layers())
        tensors = load_file(str(start))
        again = {}
        for injected in handle.targets:
            again.update(peft_bridge.adapter_state_dict(injected.target, keys.kohya_module_names(injected.target)))
        assert set(again) == set(tensors)
        assert all(torch.equal(again[k], tensors[k]) for k in tensors)
    finally:
        handle.remove()


def test_a_folded_loha_continues_with_its_real_alpha_and_the_same_effect(pipe, trained):
    start = trained("loha", alpha=1.0, conv_rank=2, conv_alpha=1.0)
    parts = DiffusersHost(pipe).model_parts()
    settings = TrainSettings(**{**BASE, "network": "loha", "rank": 8}, network_weights=str(start),
                             dim_from_weights=True)  # fmt: skip
    opened = open_start_weights(settings, parts)
    assert (opened.settings.rank, opened.settings.alpha) == (2, 1.0)  # alpha from ss_network_alpha, not the file's 2
    handle = inject_adapters(parts, opened.settings, module_ranks=opened.ranks)
    try:
        opened.load(handle)
        layer = next(layer for layer in handle.layers())
        assert layer.scaling["default"] == 0.5  # trained as it was: alpha / rank
        tensors = load_file(str(start))
        again = {}
        for injected in handle.targets:
            again.update(peft_bridge.adapter_state_dict(injected.target, keys.kohya_module_names(injected.target)))
        assert set(again) == set(tensors)
        for key, value in tensors.items():
            torch.testing.assert_close(again[key], value, rtol=1e-6, atol=1e-7, msg=key)
    finally:
        handle.remove()


@pytest.mark.parametrize(
    ("file_network", "network", "message"),
    [
        ("lora", "loha", "is a LoRA file .*but network is loha; set network lora"),
        ("lora", "locon", r"is a LoRA file \(it has no 3x3 convolution modules\) but network is locon"),
        ("locon", "lora", r"is a LoCon file \(it adapts 3x3 convolutions\) but network is lora; set network locon"),
        ("loha", "lokr", "is a LoHa file .*set network loha"),
    ],
)
def test_a_file_of_another_network_type_is_refused(trained, file_network, network, message):
    start = trained(file_network) if file_network != "locon" else trained("locon", conv_rank=2)
    settings = TrainSettings(**{**BASE, "network": network}, network_weights=str(start))
    with pytest.raises(SettingsError, match=message):
        check_start_file(settings)


def test_a_file_for_another_model_is_refused_before_anything_changes(pipe, trained, tmp_path):
    tensors = load_file(str(trained()))
    renamed = {k.replace("lora_unet_down_blocks_", "lora_unet_input_blocks_").replace("lora_unet_up_", "lora_unet_o_")
               .replace("lora_unet_mid_", "lora_unet_middle_").replace("lora_te_", "lora_te1_"): v
               for k, v in tensors.items()}  # fmt: skip
    path = tmp_path / "sdxl_named.safetensors"
    save_file(renamed, str(path))
    parts = DiffusersHost(pipe).model_parts()
    with pytest.raises(SettingsError, match=r"none of its \d+ modules .* is a module this run trains in this SD1"):
        check_start_fits(TrainSettings(**BASE, network_weights=str(path)), parts)
    # a file of the text encoder only, while the text encoder is not trained
    te_only = tmp_path / "te_only.safetensors"
    save_file({k: v for k, v in tensors.items() if k.startswith("lora_te_")}, str(te_only))
    with pytest.raises(SettingsError, match=r"or train the part it adapts: unet_lr/te_lr"):
        check_start_fits(TrainSettings(**{**BASE, "te_lr": 0.0}, network_weights=str(te_only)), parts)
    # the right names, the wrong sizes (a model of another width)
    wide = dict(tensors)
    name = next(k for k in wide if k.startswith("lora_unet_") and k.endswith("lora_down.weight"))
    wide[name] = torch.zeros(2, wide[name].shape[1] + 8, *wide[name].shape[2:])
    wrong = tmp_path / "wrong.safetensors"
    save_file(wide, str(wrong))
    with pytest.raises(SettingsError, match="the file was trained for another model"):
        check_start_fits(TrainSettings(**BASE, network_weights=str(wrong)), parts)


def test_the_cli_refuses_a_bad_start_file_before_a_version_exists(tmp_path, trained, capsys):
    from test_cli_train import _argv

    from lib_lora_train.cli import main
    from lib_lora_train.hosts.tiny_model import save_tiny_model

    base = save_tiny_model(tmp_path / "base")
    start = trained()  # rank 2; the CLI run asks for rank 4
    assert main(_argv(tmp_path, base, "--network-weights", str(start))) == 2
    err = capsys.readouterr().err
    assert "network_weights" in err and "set rank 2 or turn dim_from_weights on" in err
    assert not (tmp_path / "outputs").exists()
    assert main(_argv(tmp_path, base, "--network-weights", str(start), "--dim-from-weights")) == 0
    out = capsys.readouterr()
    assert "network_weights: " in out.out + out.err and "modules loaded" in out.out + out.err


@needs_fixtures
@pytest.mark.parametrize(
    ("file", "network", "count"), [("tiny_kohya", "lora", 216), ("tiny_kohya_locon", "locon", 306)]
)
def test_kohyas_reference_loras_load_with_every_key_matched(file, network, count):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(DIFFUSERS_SD1), local_files_only=True, safety_checker=None)
    path = WEBUI_TINY / "lora" / f"{file}.safetensors"
    settings = TrainSettings(**{**BASE, "network": network, "rank": 4, "alpha": 4.0, "conv_rank": 4,
                                "conv_alpha": 4.0}, network_weights=str(path))  # fmt: skip
    parts = DiffusersHost(pipe).model_parts()
    opened = open_start_weights(settings, parts)
    handle = inject_adapters(parts, opened.settings, module_ranks=opened.ranks)
    try:
        lines = opened.load(handle)
        loaded = f"network_weights: {count} modules loaded from {path.name} ({count - 24} UNet, 24 text encoder)"
        assert loaded in lines and not any("left out" in line or "start fresh" in line for line in lines)
        tensors = load_file(str(path))
        again = {}
        for injected in handle.targets:
            again.update(peft_bridge.adapter_state_dict(injected.target, keys.kohya_module_names(injected.target)))
        assert set(again) == set(tensors)
        assert all(torch.equal(again[k], tensors[k].float()) for k in tensors)
    finally:
        handle.remove()


def test_a_missing_file_is_named(tmp_path):
    missing = Path(tmp_path / "gone.safetensors")
    with pytest.raises(SettingsError, match=rf"{missing}: no such LoRA file"):
        check_start_file(TrainSettings(**BASE, network_weights=str(missing)))
