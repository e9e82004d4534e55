"""Network, rank and module dropout (kohya's semantics) on peft's LoRA layers, peft's own for LoHa/LoKr; runs with
dropout are reproducible and resume exactly."""

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from lib_lora_train.hosts.diffusers_host import DiffusersHost
from lib_lora_train.hosts.tiny_model import build_tiny_pipeline, write_tiny_dataset
from lib_lora_train.settings import SettingsError, TrainSettings
from lib_lora_train.store.projects import ProjectStore
from lib_lora_train.train.adapters import inject_adapters, inject_into_target
from lib_lora_train.train.dropouts import attach_dropouts
from lib_lora_train.train.runner import train_version

RANK = 6


def _one_layer(base: nn.Module, settings: TrainSettings):
    """``base`` in a root with a peft LoRA of rank RANK whose up projection is the identity and scale 1, so that the
    layer's update is exactly lora_down's output after the dropouts."""
    from lib_lora_train.host import AdapterTarget

    root = nn.Sequential(base)
    injected = inject_into_target(
        AdapterTarget("t", root, "diffusers"), ["0"], group="unet", network="lora", rank=RANK, alpha=RANK,
        conv_rank=RANK, conv_alpha=RANK,
    )  # fmt: skip
    layer = root[0]
    with torch.no_grad():
        up = layer.lora_B["default"].weight
        up.copy_(torch.eye(RANK).reshape(up.shape))
    hooks = attach_dropouts([layer], settings)
    return root, layer, injected, hooks


def _ratios(layer, x):
    """(update / lora_down output) elementwise, the update in the layer's mode: 1 where nothing was dropped."""
    down_module = layer.lora_A["default"]
    mode = down_module.training
    with torch.no_grad():
        update = layer(x) - layer.base_layer(x)
        down_module.eval()  # lora_down's own output, without the hooks' dropouts
        down = down_module(x)
        down_module.train(mode)
    return update / down


def test_rank_dropout_drops_whole_ranks_per_sample_and_rescales():
    torch.manual_seed(0)
    p = 0.5
    _, layer, _, _ = _one_layer(nn.Linear(RANK, RANK), TrainSettings(rank_dropout=p))
    layer.train()
    x = torch.randn(8, 5, RANK)  # (batch, tokens, features) as in a transformer block
    ratio = _ratios(layer, x)
    # each (sample, rank) is dropped (0) or kept and scaled by 1/(1-p), the same for every token of that sample
    assert torch.allclose(ratio, ratio[:, :1, :].expand_as(ratio), atol=1e-5)
    per_rank = ratio[:, 0, :]
    assert torch.all((per_rank.abs() < 1e-5) | ((per_rank - 1 / (1 - p)).abs() < 1e-4))
    dropped = (per_rank.abs() < 1e-5).float().mean().item()
    assert 0.2 < dropped < 0.8
    assert not torch.equal(per_rank[0] == 0, per_rank[1] == 0) or not torch.equal(per_rank[2] == 0, per_rank[3] == 0)
    layer.eval()
    assert torch.allclose(_ratios(layer, x), torch.ones(()), atol=1e-4)  # eval mode: nothing dropped


def test_rank_dropout_on_a_convolution_masks_channels_of_lora_down():
    torch.manual_seed(1)
    p = 0.5
    _, layer, _, _ = _one_layer(nn.Conv2d(3, RANK, 3, padding=1), TrainSettings(network="locon", rank_dropout=p))
    layer.train()
    ratio = _ratios(layer, torch.randn(4, 3, 5, 5))
    per_channel = ratio[:, :, :1, :1].expand_as(ratio)
    assert torch.allclose(ratio, per_channel, atol=1e-4)  # the whole feature map of a rank is kept or dropped
    values = ratio[:, :, 0, 0]
    assert torch.all((values.abs() < 1e-5) | ((values - 2.0).abs() < 1e-4)) and (values == 0).any()


def test_network_dropout_drops_single_outputs_of_lora_down():
    torch.manual_seed(2)
    p = 0.25
    _, layer, _, _ = _one_layer(nn.Linear(RANK, RANK), TrainSettings(network_dropout=p))
    layer.train()
    ratio = _ratios(layer, torch.randn(8, 5, RANK))
    assert torch.all((ratio.abs() < 1e-5) | ((ratio - 1 / (1 - p)).abs() < 1e-4))
    dropped = ratio.abs() < 1e-5
    assert 0.1 < dropped.float().mean().item() < 0.4
    assert not torch.equal(dropped[:, 0, :], dropped[:, 1, :])  # element-wise, not per sample


def test_module_dropout_skips_the_whole_update_of_some_forwards_and_none_in_eval():
    torch.manual_seed(3)
    _, layer, _, _ = _one_layer(nn.Linear(RANK, RANK), TrainSettings(module_dropout=0.5))
    x = torch.randn(2, RANK)
    layer.train()
    with torch.no_grad():
        skipped = [torch.equal(layer(x), layer.base_layer(x)) for _ in range(200)]
    assert 60 < sum(skipped) < 140
    assert layer._disable_adapters is False  # the flag is only set for the forward it skips
    layer.eval()
    with torch.no_grad():
        assert not any(torch.equal(layer(x), layer.base_layer(x)) for _ in range(20))


def test_hooks_are_gone_after_removal_and_the_tree_is_restored():
    host = DiffusersHost(build_tiny_pipeline(seed=0))
    parts = host.model_parts()
    settings = TrainSettings(network="locon", rank=4, network_dropout=0.1, rank_dropout=0.1, module_dropout=0.1)
    handle = inject_adapters(parts, settings)
    layers = handle.layers()
    downs = [layer.lora_A["default"] for layer in layers]
    assert handle.hooks and all(d._forward_hooks for d in downs) and all(x._forward_pre_hooks for x in layers)
    handle.remove()  # raises if the tree differs from before
    assert not any(d._forward_hooks for d in downs) and not any(x._forward_pre_hooks for x in layers)
    for module in [parts.unet.module, *(te.module for te in parts.text_encoders)]:
        assert not any(m._forward_hooks or m._forward_pre_hooks for m in module.modules())


def _lora_b_grads(settings, seed=0):
    """Per UNet LoRA layer: whether lora_up got a gradient from one training forward/backward."""
    host = DiffusersHost(build_tiny_pipeline(seed=0))
    parts = host.model_parts()
    handle = inject_adapters(parts, settings, train_te=False)
    try:
        unet = parts.unet.module
        unet.train()
        torch.manual_seed(seed)
        latents = torch.randn(2, 4, 8, 8)
        cond = host.encode_text(["a", "b"], None)
        host.predict(latents, torch.tensor([10, 500]), cond).square().mean().backward()
        grads = []
        for layer in handle.layers():
            grad = layer.lora_B["default"].weight.grad
            grads.append(grad is not None and bool(grad.abs().sum() > 0))
        return grads
    finally:
        handle.remove()


def test_module_dropout_leaves_most_modules_without_gradient():
    active = _lora_b_grads(TrainSettings(rank=4))
    dropped = _lora_b_grads(TrainSettings(rank=4, module_dropout=0.99))
    assert all(active)
    assert sum(dropped) < 0.1 * len(dropped)


def test_loha_and_lokr_use_peft_dropouts_and_refuse_network_dropout():
    host = DiffusersHost(build_tiny_pipeline(seed=0))
    parts = host.model_parts()
    for network in ("loha", "lokr"):
        handle = inject_adapters(parts, TrainSettings(network=network, rank=4, rank_dropout=0.3, module_dropout=0.2))
        try:
            layer = handle.layers()[0]
            assert layer.rank_dropout["default"] == 0.3 and layer.module_dropout["default"] == 0.2
            assert not handle.hooks
        finally:
            handle.remove()
        with pytest.raises(SettingsError, match="network_dropout: works with lora or locon"):
            TrainSettings(network=network, network_dropout=0.1)


@pytest.fixture(scope="module")
def pipe():
    return build_tiny_pipeline(seed=2)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("data"), count=2, size=64)


RUN = dict(resolution=64, batch_size=2, epochs=1, unet_lr=1e-2, te_lr=1e-3, mixed_precision="no", seed=5, rank=4,
           save_every=1, save_state=True, save_precision="fp32")  # fmt: skip
DROPS = dict(network_dropout=0.2, rank_dropout=0.3, module_dropout=0.3)


class _StopAfter(DiffusersHost):
    def __init__(self, pipe, steps):
        super().__init__(pipe)
        self.steps = steps

    def should_stop(self):
        return sum(1 for e in self.events if e.kind == "step") >= self.steps


def test_runs_with_dropout_are_reproducible_resume_exactly_and_differ_from_runs_without(pipe, dataset, tmp_path):
    store = ProjectStore(tmp_path / "out")
    settings = TrainSettings(**RUN, network="locon", **DROPS)
    files = {}
    for name, run_settings in (("a", settings), ("b", settings), ("plain", TrainSettings(**RUN, network="locon"))):
        version = store.create_version("p", name)
        result = train_version(DiffusersHost(pipe), run_settings, version, dataset_dir=dataset)
        assert result.status == "done", result.message
        files[name] = load_file(str(version.checkpoint_file(None)))
    resumed = store.create_version("p", "resumed")
    assert train_version(_StopAfter(pipe, 1), settings, resumed, dataset_dir=dataset).status == "stopped"
    assert train_version(DiffusersHost(pipe), settings, resumed, dataset_dir=dataset, resume=True).status == "done"
    files["resumed"] = load_file(str(resumed.checkpoint_file(None)))

    for other in ("b", "resumed"):
        assert files[other].keys() == files["a"].keys()
        assert all(torch.equal(files["a"][k], files[other][k]) for k in files["a"]), f"{other} differs"
    ups = [k for k in files["a"] if k.endswith("lora_up.weight")]
    assert any(not torch.equal(files["a"][k], files["plain"][k]) for k in ups)
