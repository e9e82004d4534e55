"""DoRA (dora_wd): our layer, the dora_scale key as the WebUI / ComfyUI read it, the round trip, a training run."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from lora_format_trees import one_torch_thread
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from lib_lora_train.hosts.diffusers_host import DiffusersHost
from lib_lora_train.hosts.tiny_model import build_tiny_pipeline, write_tiny_dataset
from lib_lora_train.lora_format import keys, peft_bridge
from lib_lora_train.lora_format.file import save_lora_file
from lib_lora_train.settings import TrainSettings
from lib_lora_train.train.adapters import inject_adapters
from lib_lora_train.train.dora import DoraLayer

pytestmark = pytest.mark.usefixtures(one_torch_thread.__name__)


def _webui_weight(parts: dict[str, torch.Tensor], weight: torch.Tensor) -> torch.Tensor:
    """The WebUI v1.10 loader's weight for one module (network_lora.calc_updown + network.apply_weight_decompose,
    restated): updown = up @ down * alpha / rank, merged = W + updown, W' = dora_scale * merged / norm, the norm per
    input channel (transpose(0, 1), reshape(in, -1), norm(dim=1)) shaped (1, in, 1, ...)."""
    down, up = parts["lora_down.weight"], parts["lora_up.weight"]
    updown = (up.flatten(1) @ down.flatten(1)).reshape(weight.shape) * (float(parts["alpha"]) / down.shape[0])
    merged = updown + weight
    norm = merged.transpose(0, 1).reshape(merged.shape[1], -1).norm(dim=1, keepdim=True)
    norm = norm.reshape(merged.shape[1], *[1] * (weight.dim() - 1)).transpose(0, 1)
    return merged * (parts["dora_scale"] / norm)


def _comfy_weight(parts: dict[str, torch.Tensor], weight: torch.Tensor) -> torch.Tensor:
    """ComfyUI's weight_decompose, restated: the axis from dora_scale's shape, eps added to the norm."""
    down, up = parts["lora_down.weight"], parts["lora_up.weight"]
    calc = weight + (up.flatten(1) @ down.flatten(1)).reshape(weight.shape) * (float(parts["alpha"]) / down.shape[0])
    scale = parts["dora_scale"]
    assert scale.shape[0] != calc.shape[0]  # ComfyUI's test for the input axis
    norm = calc.transpose(0, 1).reshape(calc.shape[1], -1).norm(dim=1, keepdim=True)
    norm = norm.reshape(calc.shape[1], *[1] * (calc.dim() - 1)).transpose(0, 1) + torch.finfo(weight.dtype).eps
    return calc * (scale / norm)


def _randomise(layers, seed=0, size=0.2):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in layers:
            for name, p in layer.named_parameters():
                if not name.startswith("base_layer."):
                    p.add_(torch.randn(p.shape, generator=generator) * size)


LAYERS = {
    "linear": lambda: nn.Linear(12, 7),
    "conv3x3": lambda: nn.Conv2d(6, 5, 3, padding=1),
    "conv1x1": lambda: nn.Conv2d(6, 8, 1),
    "conv-stride": lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1),
}


def _input(base, generator):
    if isinstance(base, nn.Linear):
        return torch.randn(2, 3, base.in_features, generator=generator)
    return torch.randn(2, base.in_channels, 9, 9, generator=generator)


@pytest.mark.parametrize("kind", list(LAYERS))
def test_a_new_dora_layer_computes_exactly_what_the_original_does(kind):
    torch.manual_seed(0)
    base = LAYERS[kind]()
    layer = DoraLayer(base, rank=3, alpha=1.5)
    scale = layer.dora_scale["default"]
    expected_shape = (1, base.weight.shape[1]) + (1, 1) * (base.weight.dim() == 4)
    assert scale.shape == expected_shape  # (1, in) / (1, in, 1, 1), as loaders expect
    torch.testing.assert_close(scale.flatten(), base.weight.transpose(0, 1).flatten(1).norm(dim=1), rtol=0, atol=0)
    x = _input(base, torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(layer(x), base(x))
    assert torch.count_nonzero(layer.lora_B["default"].weight) == 0


@pytest.mark.parametrize("kind", list(LAYERS))
def test_the_forward_is_the_decomposed_weight_and_gradients_reach_every_part(kind):
    torch.manual_seed(0)
    base = LAYERS[kind]()
    layer = DoraLayer(base, rank=3, alpha=1.5)
    _randomise([layer])
    x = _input(base, torch.Generator().manual_seed(1))
    weight = layer.effective_weight()
    if isinstance(base, nn.Linear):
        expected = F.linear(x, weight, base.bias)
    else:
        expected = F.conv2d(x, weight, base.bias, base.stride, base.padding)
    out = layer(x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out, base(x), atol=1e-3)
    out.square().sum().backward()
    for name in ("lora_A.default.weight", "lora_B.default.weight", "dora_scale.default"):
        grad = dict(layer.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


@pytest.fixture(scope="module")
def host():
    return DiffusersHost(build_tiny_pipeline(seed=4))


def _dora_layers(handle):
    return [layer for layer in handle.layers() if isinstance(layer, DoraLayer)]


def _saved(handle, path, precision="fp32"):
    from lib_lora_train.train.saving import lora_tensors

    settings = TrainSettings(network="locon", dora_wd=True)
    save_lora_file(path, lora_tensors(handle, settings), {"ss_network_args": '{"dora_wd": "True"}'}, precision)
    return load_file(str(path))


def test_the_saved_file_gives_the_trained_weights_through_the_webui_and_comfyui_rules(host, tmp_path):
    parts = host.model_parts()
    settings = TrainSettings(network="locon", dora_wd=True, rank=3, alpha=1.5, conv_rank=2, conv_alpha=3.0)
    handle = inject_adapters(parts, settings)
    try:
        layers = _dora_layers(handle)
        assert len(layers) == len(handle.layers()) > 0  # every adapter of the run is a DoRA, TE included
        assert any(isinstance(layer.base_layer, nn.Conv2d) and layer.base_layer.kernel_size == (3, 3)
                   for layer in layers)  # fmt: skip
        _randomise(layers)
        tensors = _saved(handle, tmp_path / "dora.safetensors")
        checked = 0
        for injected in handle.targets:
            for path, name in keys.kohya_module_names(injected.target).items():
                layer = injected.target.module.get_submodule(path)
                if not isinstance(layer, DoraLayer):
                    continue
                module = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.split(".", 1)[0] == name}
                assert set(module) == {"lora_down.weight", "lora_up.weight", "alpha", "dora_scale"}
                weight = layer.base_layer.weight.detach()
                with torch.no_grad():
                    trained = layer.effective_weight()
                torch.testing.assert_close(_webui_weight(module, weight), trained, rtol=1e-5, atol=1e-6, msg=name)
                torch.testing.assert_close(_comfy_weight(module, weight), trained, rtol=1e-5, atol=1e-6, msg=name)
                assert not torch.allclose(trained, weight, atol=1e-3)  # the adapter does change the weight
                checked += 1
        assert checked == len(layers)
    finally:
        handle.remove()


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_saved_dora_reloads_bit_exactly(host, tmp_path, precision):
    parts = host.model_parts()
    settings = TrainSettings(network="locon", dora_wd=True, rank=3, alpha=1.5, conv_rank=2, conv_alpha=3.0)
    handle = inject_adapters(parts, settings)
    try:
        _randomise(_dora_layers(handle))
        first = _saved(handle, tmp_path / "a.safetensors", precision)
    finally:
        handle.remove()
    other = inject_adapters(parts, settings)  # fresh: lora_B zero, dora_scale the original norms
    try:
        loaded = 0
        for injected in other.targets:
            report = peft_bridge.load_adapter_state_dict(
                injected.target, keys.kohya_module_names(injected.target), first
            )
            assert not report.missing and not report.unused
            loaded += len(report.loaded)
        assert loaded == len({k.split(".")[0] for k in first})
        again = _saved(other, tmp_path / "b.safetensors", precision)
    finally:
        other.remove()
    assert set(again) == set(first)
    for key, value in first.items():
        assert torch.equal(again[key], value), key


def test_dora_and_plain_files_do_not_load_into_each_other(host, tmp_path):
    parts = host.model_parts()
    plain = TrainSettings(network="lora", rank=2, te_lr=0)
    dora = TrainSettings(network="lora", rank=2, te_lr=0, dora_wd=True)
    unet = parts.unet
    names = keys.kohya_module_names(unet)
    handle = inject_adapters(parts, dora, train_te=False)
    try:
        dora_tensors = peft_bridge.adapter_state_dict(unet, names, "lora")
    finally:
        handle.remove()
    handle = inject_adapters(parts, plain, train_te=False)
    try:
        plain_tensors = peft_bridge.adapter_state_dict(unet, names, "lora")
        with pytest.raises(ValueError, match="is a DoRA .*train with dora_wd on"):
            peft_bridge.load_adapter_state_dict(unet, names, dora_tensors)
    finally:
        handle.remove()
    handle = inject_adapters(parts, dora, train_te=False)
    try:
        with pytest.raises(ValueError, match="plain LoRA .*dora_wd off"):
            peft_bridge.load_adapter_state_dict(unet, names, plain_tensors)
        # a DoRA normalised per output row (LyCORIS wd_on_out=True): one scale per output channel
        per_row = dict(dora_tensors)
        name = next(k for k in per_row if k.endswith(".dora_scale")).rsplit(".", 1)[0]
        out_features = per_row[f"{name}.lora_up.weight"].shape[0]
        per_row[f"{name}.dora_scale"] = torch.ones(out_features, 1)
        with pytest.raises(ValueError, match="not one scale per input channel"):
            peft_bridge.load_adapter_state_dict(unet, names, per_row)
    finally:
        handle.remove()


def test_a_dora_run_trains_every_part_and_writes_dora_scale(tmp_path):
    from lib_lora_train.store.projects import ProjectStore
    from lib_lora_train.train.runner import train_version

    pipe = build_tiny_pipeline(seed=2)
    dataset = write_tiny_dataset(tmp_path / "data", count=2, size=64)
    version = ProjectStore(tmp_path / "outputs").create_version("p", "dora")
    settings = TrainSettings(resolution=64, batch_size=2, epochs=1, unet_lr=1e-2, te_lr=1e-3, mixed_precision="no",
                             seed=3, network="locon", dora_wd=True, rank=2, conv_rank=2, save_precision="fp32")  # fmt: skip
    unet_before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    result = train_version(DiffusersHost(pipe), settings, version, dataset_dir=dataset)
    assert result.status == "done", result.message
    tensors = load_file(str(result.checkpoints[-1]))
    scales = {k: v for k, v in tensors.items() if k.endswith(".dora_scale")}
    downs = [k for k in tensors if k.endswith(".lora_down.weight")]
    assert len(scales) == len(downs) > 0 and any(k.startswith("lora_te_") for k in scales)
    # the scales moved away from the original weight's norms: the magnitude is trained
    unet = pipe.unet
    moved = 0
    for path, name in keys.kohya_module_names(DiffusersHost(pipe).model_parts().unet).items():
        if f"{name}.dora_scale" in scales:
            norms = unet.get_submodule(path).weight.detach().transpose(0, 1).flatten(1).norm(dim=1)
            moved += not torch.allclose(scales[f"{name}.dora_scale"].flatten(), norms, atol=1e-6)
    assert moved > 0
    with safe_open(str(result.checkpoints[-1]), "pt") as handle:
        assert '"dora_wd": "True"' in handle.metadata()["ss_network_args"]
    assert all(torch.equal(v, unet_before[k]) for k, v in pipe.unet.state_dict().items())  # the host is restored


def test_the_standalone_renderer_applies_dora_as_the_webui_does(tmp_path):
    from lib_lora_train.standalone.lora_apply import applied

    pipe = build_tiny_pipeline(seed=5)
    parts = DiffusersHost(pipe).model_parts()
    handle = inject_adapters(parts, TrainSettings(network="lora", dora_wd=True, rank=2, te_lr=0), train_te=False)
    try:
        _randomise(_dora_layers(handle))
        path = tmp_path / "d.safetensors"
        tensors = _saved(handle, path)
        trained = {id(layer.base_layer): layer.effective_weight().detach() for layer in _dora_layers(handle)}
    finally:
        handle.remove()
    names = keys.kohya_module_names(parts.unet)
    before = {path: parts.unet.module.get_submodule(path).weight.detach().clone() for path in names}
    with applied(pipe, [(path, 0.5)]) as notes:
        assert notes == []
        checked = 0
        for module_path, name in names.items():
            layer = parts.unet.module.get_submodule(module_path)
            if id(layer) in trained:
                # weight w: W + w * (W' - W), the WebUI's multiplier on the decomposed update
                expected = before[module_path] + 0.5 * (trained[id(layer)] - before[module_path])
                torch.testing.assert_close(layer.weight, expected, rtol=1e-5, atol=1e-6, msg=name)
                checked += 1
        assert checked == len(trained) == len({k.split(".")[0] for k in tensors})
    for module_path in names:
        assert torch.equal(parts.unet.module.get_submodule(module_path).weight, before[module_path])


def test_kohyas_dropouts_reach_a_dora_layer():
    from lib_lora_train.train.dropouts import attach_dropouts

    torch.manual_seed(0)
    base = nn.Linear(12, 7)
    layer = DoraLayer(base, rank=4, alpha=4.0)
    _randomise([layer])
    x = _input(base, torch.Generator().manual_seed(1))
    with torch.no_grad():
        clean = layer(x)
    hooks = attach_dropouts([layer], TrainSettings(network="lora", dora_wd=True, rank_dropout=0.5, module_dropout=0.5))
    try:
        layer.train()
        torch.manual_seed(3)
        with torch.no_grad():
            outs = [layer(x) for _ in range(8)]
        assert any(torch.equal(out, base(x)) for out in outs)  # a module dropped: the original layer alone
        assert any(not torch.equal(out, base(x)) and not torch.allclose(out, clean) for out in outs)  # ranks dropped
        layer.eval()
        with torch.no_grad():
            assert torch.equal(layer(x), clean)  # nothing is dropped outside training
    finally:
        for hook in hooks:
            hook.remove()
