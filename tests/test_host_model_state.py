"""Fingerprints notice every kind of change a training run could leave behind; snapshots repair the cheap ones;
the built-in LoRA's merged weights are taken out through its own backups."""

import types

import torch

from lib_lora_train.hosts.model_state import ModuleSnapshot, differences, fingerprint
from lib_lora_train.webui.lora_unmerge import unmerge_builtin_loras


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Sequential(torch.nn.Linear(4, 2)))


def test_fingerprint_is_stable_and_sees_each_kind_of_change():
    model = _model()
    base = fingerprint({"unet": model})
    assert differences(base, fingerprint({"unet": model})) == []

    with torch.no_grad():
        model[0].weight[0, 0] += 1e-3
    assert differences(base, fingerprint({"unet": model})) == ["unet: weights changed"]
    with torch.no_grad():
        model[0].weight[0, 0] -= 1e-3

    model[0].weight.requires_grad_(False)
    assert differences(base, fingerprint({"unet": model})) == ["unet: flags changed"]
    model[0].weight.requires_grad_(True)

    original = model[2][0]
    model[2][0] = torch.nn.Linear(4, 2)
    model[2][0].load_state_dict(original.state_dict())
    assert differences(base, fingerprint({"unet": model})) == ["unet: structure changed"]
    model[2][0] = original

    model.half()
    assert "unet: placement changed" in differences(base, fingerprint({"unet": model}))


def test_snapshot_restores_tree_flags_modes_patches_and_dtypes():
    model = _model()
    before = fingerprint({"m": model})
    snapshot = ModuleSnapshot.capture(model)
    # what a crashed run could leave: an adapter wrapper in the tree, frozen weights, train mode, a patch, a cast
    model[2][0] = torch.nn.Sequential(model[2][0])
    model.requires_grad_(False)
    model.train(not model.training)
    model[0].forward = lambda x: x
    model[0].weight.data = model[0].weight.data.double()  # a lossless cast, so the weights themselves survive
    repaired = snapshot.restore()
    assert repaired  # it says what it had to fix
    assert differences(before, fingerprint({"m": model})) == []


def test_snapshot_restore_on_an_untouched_model_reports_nothing():
    model = _model()
    assert ModuleSnapshot.capture(model).restore() == []


def test_unmerge_restores_weights_from_the_builtin_backup_and_clears_the_loaded_set():
    layer = torch.nn.Linear(3, 3)
    original = layer.weight.detach().clone()
    layer.network_weights_backup = original.clone()
    layer.network_bias_backup = None
    layer.network_current_names = (("my_lora", 1.0, 1.0, None),)
    untouched = torch.nn.Linear(3, 3)
    untouched.network_current_names = ()
    with torch.no_grad():
        layer.weight += 0.5  # the merged LoRA

    def restore(module):
        module.weight.copy_(module.network_weights_backup)

    networks = types.SimpleNamespace(network_restore_weights_from_backup=restore, loaded_networks=["my_lora"])
    model = torch.nn.Sequential(layer, untouched)
    assert unmerge_builtin_loras(model, networks) == 1
    assert torch.equal(layer.weight, original)
    assert layer.network_current_names == () and networks.loaded_networks == []
    # the backup stays, so the WebUI re-applies the user's LoRA on the next generation from clean weights
    assert layer.network_weights_backup is not None


def test_unmerge_without_the_builtin_extension_does_nothing():
    assert unmerge_builtin_loras(torch.nn.Linear(2, 2), None) == 0


def test_a_lora_merged_by_the_webui_is_fingerprinted_as_its_backup_unless_live():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.MultiheadAttention(4, 2))
    clean, clean_live = fingerprint({"m": model}), fingerprint({"m": model}, live=True)
    linear, mha = model[0], model[1]
    linear.network_weights_backup = linear.weight.detach().clone()
    linear.network_bias_backup = linear.bias.detach().clone()
    mha.network_weights_backup = (mha.in_proj_weight.detach().clone(), mha.out_proj.weight.detach().clone())
    mha.network_bias_backup = mha.out_proj.bias.detach().clone()
    for layer in (linear, mha):
        layer.network_current_names = (("lora", 1.0, 1.0, None),)
    with torch.no_grad():
        for tensor in (linear.weight, linear.bias, mha.in_proj_weight, mha.out_proj.weight, mha.out_proj.bias):
            tensor += 0.25
    assert differences(clean, fingerprint({"m": model})) == []
    assert differences(clean_live, fingerprint({"m": model}, live=True)) == ["m: weights changed"]
