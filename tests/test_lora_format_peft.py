"""peft adapters -> kohya tensors -> peft adapters, checked against the way the WebUI rebuilds each weight delta."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from lora_format_trees import one_torch_thread, tiny_clip, tiny_unet
from peft import LoHaConfig, LoKrConfig, LoraConfig, inject_adapter_in_model
from torch import nn

from lib_lora_train.host import AdapterTarget
from lib_lora_train.lora_format import keys, peft_bridge

pytestmark = pytest.mark.usefixtures(one_torch_thread.__name__)


def _inject(network: str, *, rank=4, alpha=2.0, conv_rank=2, conv_alpha=1.0, lokr_rank=None, seed=0, cp=False):
    """A tiny UNet + CLIP with adapters of ``network`` in kohya's targets and random (non-zero) adapter weights."""
    unet = AdapterTarget("lora_unet", tiny_unet(layers_per_block=1), "diffusers")
    te = AdapterTarget("lora_te", tiny_clip(), "hf_clip", is_text_encoder=True)
    for target in (unet, te):
        is_unet = target is unet
        paths = keys.unet_target_modules(target, network) if is_unet else keys.te_target_modules(target)
        ranks, alphas = peft_bridge.conv_rank_patterns(target, paths, conv_rank, conv_alpha)
        common = dict(target_modules=paths, rank_pattern=ranks, alpha_pattern=alphas)
        if network in ("lora", "locon"):
            config = LoraConfig(r=rank, lora_alpha=alpha, **common)
        elif network == "loha":
            config = LoHaConfig(r=rank, alpha=alpha, use_effective_conv2d=cp, **common)
        else:
            config = LoKrConfig(
                r=lokr_rank or rank, alpha=alpha, decompose_both=True, use_effective_conv2d=cp, **common
            )
        inject_adapter_in_model(config, target.module)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in target.module.named_parameters():
                if any(part in name for part in ("lora_", "hada_", "lokr_")):
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
        target.module.eval()
    return unet, te


def _webui_delta(parts: dict[str, torch.Tensor], shape: torch.Size) -> torch.Tensor:
    """The weight delta a loader builds from one module's kohya tensors (A1111's rules, restated for the test)."""
    alpha = float(parts["alpha"])

    def cp(t, wa, wb):  # the WebUI's make_weight_cp (Tucker core t with factors wa, wb)
        temp = torch.einsum("i j k l, j r -> i r k l", t, wb)
        return torch.einsum("i j k l, i r -> r j k l", temp, wa)

    if "hada_t1" in parts:
        one = cp(parts["hada_t1"], parts["hada_w1_a"], parts["hada_w1_b"])
        two = cp(parts["hada_t2"], parts["hada_w2_a"], parts["hada_w2_b"])
        return (one * two).reshape(shape) * alpha / parts["hada_w1_b"].shape[0]
    if "lora_down.weight" in parts:
        down, up = parts["lora_down.weight"], parts["lora_up.weight"]
        product = up.reshape(up.shape[0], -1) @ down.reshape(down.shape[0], -1)
        return product.reshape(shape) * alpha / down.shape[0]
    if "hada_w1_a" in parts:
        one = parts["hada_w1_a"] @ parts["hada_w1_b"].reshape(parts["hada_w1_b"].shape[0], -1)
        two = parts["hada_w2_a"] @ parts["hada_w2_b"].reshape(parts["hada_w2_b"].shape[0], -1)
        return (one * two).reshape(shape) * alpha / parts["hada_w1_b"].shape[0]
    w1 = parts["lokr_w1"] if "lokr_w1" in parts else parts["lokr_w1_a"] @ parts["lokr_w1_b"]
    if "lokr_w2" in parts:
        w2 = parts["lokr_w2"]
    elif "lokr_t2" in parts:
        w2 = cp(parts["lokr_t2"], parts["lokr_w2_a"], parts["lokr_w2_b"])
    else:
        w2 = parts["lokr_w2_a"] @ parts["lokr_w2_b"]
    dim = next((parts[p].shape[0] for p in ("lokr_w2_b", "lokr_w1_b") if p in parts), None)
    scale = alpha / dim if dim else 1.0
    if w2.dim() == 4:
        w1 = w1[:, :, None, None]
    return torch.kron(w1, w2).reshape(shape) * scale


def _adapted_layers(target: AdapterTarget):
    for path, name in keys.kohya_module_names(target).items():
        layer = target.module.get_submodule(path)
        if peft_bridge.adapter_kind(layer):
            yield path, name, layer


def _layer_effect(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(what the adapter adds to the layer's output, the input used) for a fixed random input."""
    base = layer.get_base_layer()
    generator = torch.Generator().manual_seed(1)
    if isinstance(base, nn.Conv2d):
        x = torch.randn(1, base.in_channels, 6, 6, generator=generator)
    else:
        x = torch.randn(3, base.in_features, generator=generator)
    with torch.no_grad():
        return layer(x) - base(x), x


def _apply(base: nn.Module, delta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if isinstance(base, nn.Conv2d):
        return F.conv2d(x, delta, stride=base.stride, padding=base.padding)
    return F.linear(x, delta)


@pytest.mark.parametrize(
    "network, extra",
    [
        ("lora", {}),
        ("locon", {}),
        ("loha", {}),
        ("loha", {"cp": True}),
        ("lokr", {}),
        ("lokr", {"lokr_rank": 1}),
        ("lokr", {"lokr_rank": 1, "cp": True}),
    ],
    ids=["lora", "locon", "loha", "loha-cp", "lokr-full", "lokr-decomposed", "lokr-cp"],
)
def test_saved_tensors_reproduce_what_peft_trained(network, extra):
    for target in _inject(network, **extra):
        names = keys.kohya_module_names(target)
        tensors = peft_bridge.adapter_state_dict(target, names, network, 2.0, 1.0)
        grouped: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            module, _, part = key.partition(".")
            grouped.setdefault(module, {})[part] = value
        layers = list(_adapted_layers(target))
        assert layers and set(grouped) == {name for _, name, _ in layers}
        for _path, name, layer in layers:
            effect, x = _layer_effect(layer)
            base = layer.get_base_layer()
            rebuilt = _apply(base, _webui_delta(grouped[name], base.weight.shape), x)
            torch.testing.assert_close(rebuilt, effect, rtol=1e-4, atol=1e-6, msg=name)


def test_lora_parts_shapes_alpha_and_parameter_counts():
    unet, te = _inject("locon", rank=4, alpha=2.0, conv_rank=2, conv_alpha=1.0)
    total_file = total_formula = 0
    for target in (unet, te):
        tensors = peft_bridge.adapter_state_dict(target, keys.kohya_module_names(target), "locon")
        for _path, name, layer in _adapted_layers(target):
            base = layer.get_base_layer()
            down, up = tensors[f"{name}.lora_down.weight"], tensors[f"{name}.lora_up.weight"]
            if isinstance(base, nn.Conv2d) and base.kernel_size != (1, 1):
                rank, alpha = 2, 1.0
                assert down.shape == (rank, base.in_channels, *base.kernel_size)
                assert up.shape == (base.out_channels, rank, 1, 1)
                total_formula += rank * base.in_channels * base.kernel_size[0] * base.kernel_size[1]
                total_formula += base.out_channels * rank
            else:
                rank, alpha = 4, 2.0
                in_dim, out_dim = base.weight.shape[1], base.weight.shape[0]
                total_formula += rank * in_dim * base.weight[0, 0].numel() + out_dim * rank
                assert down.shape[:2] == (rank, in_dim) and up.shape[:2] == (out_dim, rank)
            assert float(tensors[f"{name}.alpha"]) == alpha
            total_file += down.numel() + up.numel()
        adapter_params = sum(p.numel() for n, p in target.module.named_parameters() if "lora_" in n)
        assert adapter_params == sum(v.numel() for k, v in tensors.items() if not k.endswith(".alpha"))
    assert total_file == total_formula


@pytest.mark.parametrize("network", ["locon", "loha", "lokr"])
def test_load_adapter_state_dict_restores_the_same_effect(network):
    source_unet, _ = _inject(network, seed=0)
    tensors = peft_bridge.adapter_state_dict(source_unet, keys.kohya_module_names(source_unet), network)
    # the resumed run uses another alpha: the loader rescales so the adapter's effect is the file's
    fresh_unet, _ = _inject(network, alpha=8.0, conv_alpha=3.0, seed=5)
    report = peft_bridge.load_adapter_state_dict(fresh_unet, keys.kohya_module_names(fresh_unet), tensors)
    assert not report.missing and not report.unused
    assert len(report.loaded) == len({k.split(".")[0] for k in tensors})
    for (_, name, source_layer), (_, _, fresh_layer) in zip(
        _adapted_layers(source_unet), _adapted_layers(fresh_unet), strict=True
    ):
        torch.testing.assert_close(_layer_effect(fresh_layer)[0], _layer_effect(source_layer)[0], msg=name)


def test_load_reports_missing_and_unused_and_rejects_wrong_rank():
    unet, _ = _inject("lora")
    names = keys.kohya_module_names(unet)
    tensors = peft_bridge.adapter_state_dict(unet, names, "lora")
    dropped = "lora_unet_mid_block_attentions_0_proj_in"
    partial = {k: v for k, v in tensors.items() if not k.startswith(dropped + ".")}
    partial["lora_unet_not_a_module.alpha"] = torch.tensor(1.0)
    report = peft_bridge.load_adapter_state_dict(unet, names, partial)
    assert report.missing == [dropped] and report.unused == ["lora_unet_not_a_module"]
    other_rank, _ = _inject("lora", rank=2)
    with pytest.raises(ValueError, match="resume with the rank"):
        peft_bridge.load_adapter_state_dict(other_rank, names, tensors)


def test_network_mismatch_is_reported():
    unet, _ = _inject("loha")
    with pytest.raises(ValueError, match="holds a loha adapter"):
        peft_bridge.adapter_state_dict(unet, keys.kohya_module_names(unet), "lora")


@pytest.mark.parametrize("network, extra", [("loha", {}), ("loha", {"cp": True}), ("lokr", {"lokr_rank": 1})],
                         ids=["loha", "loha-cp", "lokr-decomposed"])  # fmt: skip
def test_lycoris_types_merge_the_same_under_the_double_scaling_merge_rule(network, extra):
    # LyCORIS merge_to scales LoHa by alpha/rank twice; written with alpha = rank, both rules give the same delta
    for target in _inject(network, rank=4, alpha=2.0, conv_alpha=1.0, **extra):
        names = keys.kohya_module_names(target)
        tensors = peft_bridge.adapter_state_dict(target, names, network)
        grouped: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            module, _, part = key.partition(".")
            grouped.setdefault(module, {})[part] = value
        for _path, name, layer in _adapted_layers(target):
            parts, base = grouped[name], layer.get_base_layer()
            dim = peft_bridge._loader_dim(peft_bridge.adapter_kind(layer), parts)
            webui = _webui_delta(parts, base.weight.shape)
            if dim is None:  # LoKr with both factors full: no loader applies alpha at all
                continue
            assert float(parts["alpha"]) == dim, name  # alpha = rank: (alpha/rank)^2 == alpha/rank == 1
            merged = webui * (float(parts["alpha"]) / dim)  # the second alpha/rank of LyCORIS's merge
            torch.testing.assert_close(merged, webui, rtol=0, atol=0)
            effect, x = _layer_effect(layer)
            torch.testing.assert_close(_apply(base, merged, x), effect, rtol=1e-4, atol=1e-6, msg=name)
