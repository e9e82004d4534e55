"""OpenCLIP attention split into q/k/v/out linears for training: exact outputs, gradients, restoration, kohya keys."""

from collections import OrderedDict

import pytest
import torch
from torch import nn

from lib_lora_train.host import AdapterTarget, ModelParts
from lib_lora_train.lora_format.file import read_lora_file, save_lora_file
from lib_lora_train.settings import TrainSettings
from lib_lora_train.train import adapters
from lib_lora_train.train.adapters import inject_adapters
from lib_lora_train.train.mha_split import SplitAttention, SplitError, split_attention
from lib_lora_train.train.saving import lora_tensors
from lib_lora_train.train.tree_guard import TreeSnapshot

WIDTH, HEADS, LAYERS, SEQ = 16, 4, 3, 5


class ResBlock(nn.Module):
    """The shape of open_clip 2.20's ResidualAttentionBlock: attn is called as attn(x, x, x, need_weights=False)."""

    def __init__(self):
        super().__init__()
        self.ln_1 = nn.LayerNorm(WIDTH)
        self.attn = nn.MultiheadAttention(WIDTH, HEADS)
        self.ln_2 = nn.LayerNorm(WIDTH)
        self.mlp = nn.Sequential(
            OrderedDict([("c_fc", nn.Linear(WIDTH, 4 * WIDTH)), ("gelu", nn.GELU()), ("c_proj", nn.Linear(64, WIDTH))])
        )

    def forward(self, x, attn_mask=None):
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=attn_mask)[0]
        return x + self.mlp(self.ln_2(x))


class TinyOpenClip(nn.Module):
    """token embedding + resblocks over (L, N, D) with a causal mask, like the WebUI's OpenCLIP text towers."""

    def __init__(self):
        super().__init__()
        self.token_embedding = nn.Embedding(10, WIDTH)
        self.transformer = nn.Module()
        self.transformer.resblocks = nn.ModuleList([ResBlock() for _ in range(LAYERS)])
        self.register_buffer("attn_mask", torch.full((SEQ, SEQ), float("-inf")).triu_(1), persistent=False)

    def forward(self, tokens):
        x = self.token_embedding(tokens).permute(1, 0, 2)
        for block in self.transformer.resblocks:
            x = block(x, attn_mask=self.attn_mask)
        return x.permute(1, 0, 2)


def _causal(n, as_bool=False):
    mask = torch.ones(n, n, dtype=torch.bool).triu_(1)
    return mask if as_bool else torch.zeros(n, n).masked_fill_(mask, float("-inf"))


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(need_weights=False, attn_mask=_causal(SEQ)),
        dict(need_weights=False, attn_mask=_causal(SEQ, as_bool=True)),
        dict(need_weights=False),
        dict(need_weights=True, attn_mask=_causal(SEQ)),
        dict(need_weights=True, average_attn_weights=False),
        dict(need_weights=False, key_padding_mask=torch.tensor([[False] * 4 + [True]] * 3)),
        dict(need_weights=False, attn_mask=torch.randn(3 * HEADS, SEQ, SEQ)),
    ],
)
def test_split_attention_equals_multihead_attention(batch_first, kwargs):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(WIDTH, HEADS, batch_first=batch_first)
    split = SplitAttention(mha)
    x = torch.randn(3, SEQ, WIDTH) if batch_first else torch.randn(SEQ, 3, WIDTH)
    for mode in ("train", "eval"):
        getattr(mha, mode)()
        getattr(split, mode)()
        with torch.no_grad():  # no_grad + eval lets nn.MultiheadAttention take its fused fast path
            expected, expected_w = mha(x, x, x, **kwargs)
            got, got_w = split(x, x, x, **kwargs)
        assert got.shape == expected.shape
        assert torch.allclose(got, expected, atol=1e-6, rtol=0)
        assert (got_w is None) == (expected_w is None)
        if expected_w is not None:
            assert torch.allclose(got_w, expected_w, atol=1e-6, rtol=0)


def test_split_linears_are_views_of_the_original_weights():
    mha = nn.MultiheadAttention(WIDTH, HEADS)
    split = SplitAttention(mha)
    base = mha.in_proj_weight.data_ptr()
    step = WIDTH * WIDTH * mha.in_proj_weight.element_size()
    assert [split.q_proj.weight.data_ptr(), split.k_proj.weight.data_ptr(), split.v_proj.weight.data_ptr()] == [
        base,
        base + step,
        base + 2 * step,
    ]
    assert split.out_proj.weight.data_ptr() == mha.out_proj.weight.data_ptr()
    assert torch.equal(split.v_proj.bias, mha.in_proj_bias[2 * WIDTH :])
    assert isinstance(split.q_proj, nn.Linear) and split.q_proj.weight is not mha.in_proj_weight


def test_unsupported_attention_is_refused_without_touching_the_tree():
    model = TinyOpenClip()
    model.transformer.resblocks[1].attn = nn.MultiheadAttention(WIDTH, HEADS, add_bias_kv=True)
    before = TreeSnapshot.take(model)
    paths = [f"transformer.resblocks.{i}.attn" for i in range(LAYERS)]
    with pytest.raises(SplitError):
        split_attention(model, paths)
    assert before.differences(model) == []


def _parts(te: nn.Module, prefix="lora_te2") -> ModelParts:
    unet = AdapterTarget("lora_unet", nn.Linear(2, 2), "diffusers")
    target = AdapterTarget(prefix, te, "open_clip", is_text_encoder=True)
    return ModelParts("sdxl", "eps", unet, [target], torch.linspace(0.99, 0.01, 10), torch.device("cpu"), torch.float32)


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_lora_on_split_attention_trains_saves_four_parts_and_restores_exactly(tmp_path):
    torch.manual_seed(1)
    model = TinyOpenClip().requires_grad_(False).eval()
    tokens = torch.randint(0, 10, (2, SEQ))
    reference = model(tokens)
    attns = [block.attn for block in model.transformer.resblocks]
    params = {name: p for name, p in model.named_parameters()}
    state, snapshot = _state(model), TreeSnapshot.take(model)
    settings = TrainSettings(rank=2, alpha=1)
    handle = inject_adapters(_parts(model), settings, train_unet=False)
    try:
        assert all(isinstance(block.attn, SplitAttention) for block in model.transformer.resblocks)
        assert "lora_te2: adapters on 18 modules (3 OpenCLIP attention layers split" in handle.summary()[0]
        # the split tree with fresh adapters (lora_up = 0) computes what the original did
        assert torch.allclose(model(tokens), reference, atol=1e-6, rtol=0)
        for p in handle.parameters("te"):  # make lora_up non-zero so that every adapter matters
            p.data.normal_(0, 0.1)
        model(tokens).square().mean().backward()
        named = handle.named_parameters("te")
        for part in ("q_proj", "k_proj", "v_proj", "out_proj"):
            grads = [p.grad for name, p in named.items() if f"attn.{part}/lora_A" in name]
            assert len(grads) == LAYERS and all(g is not None and g.abs().sum() > 0 for g in grads)
        assert all(p.grad is None for p in params.values())
        tensors = lora_tensors(handle, settings)
        save_lora_file(tmp_path / "te2.safetensors", tensors, {"ss_network_module": "networks.lora"})
    finally:
        handle.remove()
    assert [block.attn for block in model.transformer.resblocks] == attns
    assert all(block.attn is attn for block, attn in zip(model.transformer.resblocks, attns, strict=True))
    assert {name: p for name, p in model.named_parameters()} == params
    assert snapshot.differences(model) == []
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert torch.equal(model(tokens), reference)

    modules = read_lora_file(tmp_path / "te2.safetensors").modules
    for i in range(LAYERS):
        for part in ("self_attn_q_proj", "self_attn_k_proj", "self_attn_v_proj", "self_attn_out_proj"):
            name = f"lora_te2_text_model_encoder_layers_{i}_{part}"
            assert name in modules
            down = tensors[f"{name}.lora_down.weight"]
            assert tuple(down.shape) == (2, WIDTH)
        assert f"lora_te2_text_model_encoder_layers_{i}_mlp_fc1" in modules


def test_sd2_text_encoder_leaves_its_unused_last_layer_alone():
    model = TinyOpenClip()
    last = model.transformer.resblocks[-1].attn
    handle = inject_adapters(_parts(model, prefix="lora_te"), TrainSettings(rank=2), train_unet=False)
    try:
        assert model.transformer.resblocks[-1].attn is last
        assert isinstance(model.transformer.resblocks[0].attn, SplitAttention)
    finally:
        handle.remove()
    assert all(isinstance(b.attn, nn.MultiheadAttention) for b in model.transformer.resblocks)


def test_a_failed_injection_puts_the_attention_back(monkeypatch):
    model = TinyOpenClip()
    attns = [block.attn for block in model.transformer.resblocks]
    snapshot = TreeSnapshot.take(model)

    def fail(*args, **kwargs):
        raise RuntimeError("injection failed")

    monkeypatch.setattr(adapters, "inject_into_target", fail)
    with pytest.raises(RuntimeError, match="injection failed"):
        inject_adapters(_parts(model), TrainSettings(rank=2), train_unet=False)
    assert all(block.attn is attn for block, attn in zip(model.transformer.resblocks, attns, strict=True))
    assert snapshot.differences(model) == []
