"""The pure-torch steps of the Forge host on stand-ins for Forge's objects: inference-mode weights become trainable
without a copy and come back as the same objects; Forge-style Linear layers are stood in for by ``nn.Linear`` over
the same Parameters; a merged LoRA is taken out and the merged tensors put back."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lib_lora_train.forge.inference_weights import thaw
from lib_lora_train.forge.linear_standins import LinearStandIn, swap_linears
from lib_lora_train.forge.lora_patches import take_out


class Linear(nn.Module):  # shaped like backend.operations.ForgeOperations.Linear: weights set at load time
    def __init__(self, i, o):
        super().__init__()
        self.in_features, self.out_features = i, o
        self.weight = nn.Parameter(torch.randn(o, i))
        self.bias = nn.Parameter(torch.randn(o))

    def forward(self, x):
        return nn.functional.linear(x, self.weight, self.bias)


def _forge_like():
    with torch.inference_mode():
        return nn.Sequential(Linear(4, 4), nn.LayerNorm(4), Linear(4, 2))


def test_inference_weights_cannot_train_until_thawed_and_come_back_as_the_same_objects():
    model = _forge_like()
    x = torch.randn(3, 4, requires_grad=True)
    with pytest.raises(RuntimeError, match="[Ii]nference tensors"):
        model(x).sum().backward()
    originals = [p for p in model.parameters()]
    thawed = thaw(model)
    assert all(not p.is_inference() for p in model.parameters())
    assert [p.data_ptr() for p in model.parameters()] == [p.data_ptr() for p in originals]  # no copy
    model(x).sum().backward()
    assert x.grad is not None
    thawed.restore()
    assert all(a is b for a, b in zip(model.parameters(), originals, strict=True))


def test_forge_linears_get_nn_linear_stand_ins_over_the_same_parameters():
    model = _forge_like()
    thawed = thaw(model)
    first = model[0]
    x = torch.randn(3, 4)
    expected = model(x)
    swap = swap_linears(model)
    assert isinstance(model[0], LinearStandIn) and isinstance(model[2], LinearStandIn)
    assert model[0].weight is first.weight and model[0].bias is first.bias
    assert torch.equal(model(x), expected)
    swap.restore()
    thawed.restore()
    assert model[0] is first and type(model[2]) is Linear


def test_a_merged_lora_is_taken_out_and_the_merged_tensors_put_back():
    model = nn.Sequential(nn.Linear(4, 4))
    original = model[0].weight
    merged = nn.Parameter(original.detach() + 1.0)
    model[0].weight = merged
    model.lora_loader = type("Loader", (), {"backup": {"0.weight": original}})()
    out = take_out(model)
    assert out.layers == 1 and model[0].weight is original
    out.put_back()
    assert model[0].weight is merged
