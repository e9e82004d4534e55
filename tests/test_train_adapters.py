"""Adapters in and out of a host's modules: parameter counts, trainability, exact restoration."""

import pytest
import torch

from lib_lora_train.hosts.diffusers_host import DiffusersHost
from lib_lora_train.hosts.tiny_model import build_tiny_pipeline
from lib_lora_train.lora_format.keys import te_target_modules, unet_target_modules
from lib_lora_train.settings import TrainSettings
from lib_lora_train.train.adapters import AdapterError, inject_adapters
from lib_lora_train.train.tree_guard import TreeSnapshot


@pytest.fixture(scope="module")
def host():
    return DiffusersHost(build_tiny_pipeline(seed=1))


def _expected_count(module, rank, conv_rank):
    if isinstance(module, torch.nn.Linear):
        return rank * (module.in_features + module.out_features)
    k = module.kernel_size[0] * module.kernel_size[1]
    r = conv_rank if k > 1 else rank
    return r * module.in_channels * k + module.out_channels * r


@pytest.mark.parametrize("network", ["lora", "locon"])
def test_parameter_counts_are_rank_times_shapes(host, network):
    parts = host.model_parts()
    settings = TrainSettings(network=network, rank=4, alpha=2, conv_rank=2, conv_alpha=1)
    unet_modules = dict(parts.unet.module.named_modules())
    te_modules = dict(parts.text_encoders[0].module.named_modules())
    unet_paths = unet_target_modules(parts.unet, network)
    te_paths = te_target_modules(parts.text_encoders[0])
    expected_unet = sum(_expected_count(unet_modules[p], 4, 2) for p in unet_paths)
    expected_te = sum(_expected_count(te_modules[p], 4, 2) for p in te_paths)
    handle = inject_adapters(parts, settings)
    try:
        assert sum(p.numel() for p in handle.parameters("unet")) == expected_unet
        assert sum(p.numel() for p in handle.parameters("te")) == expected_te
        has_3x3 = any(getattr(unet_modules[p], "kernel_size", (1, 1)) == (3, 3) for p in unet_paths)
        assert has_3x3 == (network == "locon")
        # only adapter weights train, and they are fp32
        trainable = [p for p in parts.unet.module.parameters() if p.requires_grad]
        assert {id(p) for p in trainable} == {id(p) for p in handle.parameters("unet")}
        assert all(p.dtype == torch.float32 for p in handle.parameters())
    finally:
        handle.remove()


def test_text_encoder_untouched_when_its_lr_is_zero(host):
    parts = host.model_parts()
    handle = inject_adapters(parts, TrainSettings(te_lr=0, rank=2), train_te=False)
    try:
        assert handle.parameters("te") == [] and handle.parameters("unet")
        assert not any("lora_" in n for n, _ in parts.text_encoders[0].module.named_parameters())
    finally:
        handle.remove()


@pytest.mark.parametrize("network", ["lora", "locon", "loha", "lokr"])
def test_remove_restores_the_exact_tree_and_outputs(host, network):
    parts = host.model_parts()
    unet = parts.unet.module
    # an unusual starting state that must come back exactly: some frozen params, eval mode somewhere
    for i, p in enumerate(unet.parameters()):
        p.requires_grad_(i % 3 != 0)
    unet.down_blocks[0].eval()
    before = TreeSnapshot.take(unet)
    tensors = {k: (v.clone(), v.data_ptr()) for k, v in unet.state_dict().items()}
    x, t, ctx = torch.randn(1, 4, 8, 8), torch.tensor([500]), torch.randn(1, 77, 32)
    with torch.no_grad():
        reference = unet(x, t, encoder_hidden_states=ctx).sample
    handle = inject_adapters(parts, TrainSettings(network=network, rank=2, alpha=1, conv_rank=2, conv_alpha=1))
    with torch.no_grad():
        for p in handle.parameters("unet"):
            p.add_(0.1)  # make every adapter change the output
        changed = unet(x, t, encoder_hidden_states=ctx).sample
    assert not torch.allclose(changed, reference)
    handle.remove()
    assert before.differences(unet) == []
    after = unet.state_dict()
    assert set(after) == set(tensors)
    for key, (value, ptr) in tensors.items():
        assert torch.equal(after[key], value) and after[key].data_ptr() == ptr, key
    assert "peft_config" not in vars(unet)
    with torch.no_grad():
        assert torch.equal(unet(x, t, encoder_hidden_states=ctx).sample, reference)
    unet.requires_grad_(True)
    unet.train(False)


def test_snapshot_notices_a_swapped_module(host):
    unet = host.pipe.unet
    snapshot = TreeSnapshot.take(unet)
    original = unet.conv_in
    unet.conv_in = torch.nn.Conv2d(4, 32, 3, padding=1)
    try:
        assert any("conv_in" in d for d in snapshot.differences(unet))
    finally:
        unet.conv_in = original
    assert snapshot.differences(unet) == []


def test_injecting_twice_is_refused_and_leaves_the_tree_clean(host):
    parts = host.model_parts()
    before = TreeSnapshot.take(parts.unet.module)
    handle = inject_adapters(parts, TrainSettings(rank=2), train_te=False)
    try:
        with pytest.raises(AdapterError):
            from lib_lora_train.train.adapters import inject_into_target

            parts.unet.module.peft_config = {}  # as if another tool had left adapters behind
            inject_into_target(
                parts.unet, ["conv_in"], group="unet", network="lora", rank=2, alpha=1, conv_rank=2, conv_alpha=1
            )
    finally:
        del parts.unet.module.peft_config
        handle.remove()
    assert before.differences(parts.unet.module) == []
