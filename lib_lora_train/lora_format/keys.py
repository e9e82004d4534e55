"""kohya's LoRA key names for the modules of a UNet or text encoder, and which modules get adapters.

A key is ``<prefix>_<module path with '.' replaced by '_'>.<part>``, where the module path is spelled the way
kohya's sd-scripts spells it:

- SD1/SD2 UNet: diffusers' names (``down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q``). A diffusers
  UNet already has them; the WebUI's ldm UNet is translated by ``ldm_names`` (naming "ldm").
- SDXL UNet: the original sgm names (``input_blocks_4_1_transformer_blocks_0_attn1_to_q``), naming "sgm".
- text encoders: Hugging Face CLIP names (``text_model_encoder_layers_0_self_attn_q_proj``, ``..._mlp_fc1``).
  OpenCLIP towers (WebUI SD2, SDXL's second encoder; naming "open_clip") are renamed to the same HF names:
  ``resblocks.N.attn`` -> ``self_attn_{q,k,v,out}_proj``, ``mlp.c_fc`` -> ``mlp_fc1``, ``mlp.c_proj`` -> ``mlp_fc2``.

OpenCLIP attention is one ``nn.MultiheadAttention`` with a fused ``in_proj_weight``. For such a module at path
``P`` the names are reported at four paths: ``P.q_proj``, ``P.k_proj``, ``P.v_proj`` (row thirds of the fused
projection; these paths exist only once a host splits the attention into separate linears) and ``P.out_proj``
(its real output linear). The WebUI applies an OpenCLIP text-encoder LoRA only when all four are present.

Modules already wrapped by peft (they have a ``base_layer``) are named like the module they wrap, so names are the
same before and after adapters are injected.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from torch import nn

from lib_lora_train.host import AdapterTarget
from lib_lora_train.lora_format.ldm_names import ldm_to_diffusers_names, ldm_units

UNET_NETWORKS_WITH_CONV = ("locon", "loha", "lokr")
MHA_PARTS = ("q_proj", "k_proj", "v_proj", "out_proj")  # the paths an OpenCLIP attention is named at
_DIFFUSERS_UNIT = re.compile(
    r"^(?:(?:down|up)_blocks\.\d+\.(attentions|resnets|downsamplers|upsamplers)|mid_block\.(attentions|resnets))\.\d+"
)
_HF_LAYER = re.compile(r"(?:^|\.)encoder\.layers\.(\d+)\.(self_attn\.(?:q|k|v|out)_proj|mlp\.fc[12])$")
_OPEN_CLIP_LAYER = re.compile(r"(?:^|\.)resblocks\.(\d+)\.(attn|attn\.(?:q|k|v|out)_proj|mlp\.c_fc|mlp\.c_proj)$")
_OPEN_CLIP_PARTS = {
    "attn.q_proj": "self_attn_q_proj",
    "attn.k_proj": "self_attn_k_proj",
    "attn.v_proj": "self_attn_v_proj",
    "attn.out_proj": "self_attn_out_proj",
    "mlp.c_fc": "mlp_fc1",
    "mlp.c_proj": "mlp_fc2",
}


def base_module(module: nn.Module) -> nn.Module:
    """The original layer behind a peft tuner layer (or the module itself)."""
    while hasattr(module, "base_layer") and isinstance(module.base_layer, nn.Module):
        module = module.base_layer
    return module


def iter_layers(root: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(path, layer) for every Linear / Conv2d / MultiheadAttention under ``root``, seen through peft wrappers.

    An ``nn.MultiheadAttention`` is yielded whole (its ``out_proj`` child is not yielded separately).
    """

    def walk(prefix: str, module: nn.Module) -> Iterator[tuple[str, nn.Module]]:
        for name, child in module.named_children():
            path = f"{prefix}.{name}" if prefix else name
            layer = base_module(child)
            if isinstance(layer, (nn.Linear, nn.Conv2d, nn.MultiheadAttention)):
                yield path, layer
            elif layer is child:
                yield from walk(path, child)

    yield from walk("", root)


def kohya_module_names(target: AdapterTarget) -> dict[str, str]:
    """Module path -> kohya module name (with the prefix, without a part suffix) for every adaptable layer.

    Example for a diffusers UNet: ``"down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"`` ->
    ``"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"``. See the module docstring for the
    OpenCLIP ``nn.MultiheadAttention`` convention.
    """
    layers = list(iter_layers(target.module))
    names: dict[str, str] = {}
    if target.naming == "ldm":
        ldm_map = ldm_to_diffusers_names(target.module, [path for path, _ in layers])
    for path, layer in layers:
        if isinstance(layer, nn.MultiheadAttention):
            for part in MHA_PARTS:
                names[f"{path}.{part}"] = _join(target.prefix, _kohya_path(target, f"{path}.{part}"))
            continue
        if target.naming == "ldm":
            names[path] = _join(target.prefix, ldm_map[path])
        else:
            names[path] = _join(target.prefix, _kohya_path(target, path))
    return names


def _join(prefix: str, path: str) -> str:
    return f"{prefix}_{path.replace('.', '_')}"


def _kohya_path(target: AdapterTarget, path: str) -> str:
    if target.naming == "hf_clip":
        match = _HF_LAYER.search(path)
        if match:
            return f"text_model.encoder.layers.{match.group(1)}.{match.group(2)}"
        index = path.find("text_model.")
        return path[index:] if index >= 0 else path
    if target.naming == "open_clip":
        match = _OPEN_CLIP_LAYER.search(path)
        if match and match.group(2) in _OPEN_CLIP_PARTS:
            return f"text_model.encoder.layers.{match.group(1)}.{_OPEN_CLIP_PARTS[match.group(2)]}"
        return path
    return path


def _is_conv3x3(layer: nn.Module) -> bool:
    return isinstance(layer, nn.Conv2d) and tuple(layer.kernel_size) != (1, 1)


def _unet_units(target: AdapterTarget) -> dict[str, str]:
    """Unit path -> 'transformer' / 'resnet' / 'sampler' for the UNet's blocks in any naming."""
    if target.naming in ("ldm", "sgm"):
        kinds = ldm_units(target.module)
        return {path: ("sampler" if kind in ("downsample", "upsample") else kind) for path, kind in kinds.items()}
    units: dict[str, str] = {}
    for path, _ in target.module.named_modules():
        match = _DIFFUSERS_UNIT.match(path)
        if match and match.group(0) == path:
            collection = match.group(1) or match.group(2)
            units[path] = {"attentions": "transformer", "resnets": "resnet"}.get(collection, "sampler")
    return units


def unet_target_modules(target: AdapterTarget, network: str) -> list[str]:
    """Module paths of the UNet that get adapters, following kohya's choice.

    ``lora``: every Linear and 1x1 Conv2d inside the transformer blocks (attention q/k/v/out, feed-forward,
    proj_in/proj_out). ``locon``/``loha``/``lokr`` add every Linear/Conv2d of the ResNet blocks (3x3 convs,
    time-embedding projection, 1x1 shortcut) and the down/up-sampler convs. Use ``conv3x3_modules`` to find the
    paths that take the conv rank and conv alpha.
    """
    if network not in ("lora", *UNET_NETWORKS_WITH_CONV):
        raise ValueError(f"unknown network {network!r}; use one of lora, locon, loha, lokr")
    wanted = {"transformer"} if network == "lora" else {"transformer", "resnet", "sampler"}
    units = [path for path, kind in _unet_units(target).items() if kind in wanted]
    paths = []
    for path, layer in iter_layers(target.module):
        if not any(path.startswith(unit + ".") for unit in units):
            continue
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            paths.append(path)
    return paths


def te_target_modules(target: AdapterTarget, *, unused_last_layers: int | None = None) -> list[str]:
    """Module paths of a text encoder that get adapters: attention q/k/v/out and MLP fc1/fc2 of every layer.

    For an OpenCLIP tower the attention is one ``nn.MultiheadAttention``: its path is returned as is (a host
    that trains it splits it into q/k/v/out linears, named as in ``kohya_module_names``).

    ``unused_last_layers`` drops the final layers that the model never runs. By default that is the last layer of
    SD2's OpenCLIP encoder (prefix ``lora_te``): SD2 conditions on the penultimate layer, and kohya's SD2 text
    encoder has no last layer, so its LoRAs carry no keys for it. SDXL's second encoder keeps every layer (its
    pooled output comes from the last one).
    """
    pattern = _HF_LAYER if target.naming == "hf_clip" else _OPEN_CLIP_LAYER
    found = [(path, int(match.group(1))) for path, _ in iter_layers(target.module) if (match := pattern.search(path))]
    if unused_last_layers is None:
        unused_last_layers = 1 if target.naming == "open_clip" and target.prefix == "lora_te" else 0
    if not found or unused_last_layers <= 0:
        return [path for path, _ in found]
    last_used = max(index for _, index in found) - unused_last_layers
    return [path for path, index in found if index <= last_used]


def conv3x3_modules(target: AdapterTarget, paths: list[str]) -> list[str]:
    """The members of ``paths`` that are convolutions with a kernel larger than 1x1 (they take conv rank/alpha)."""
    layers = dict(iter_layers(target.module))
    return [path for path in paths if path in layers and _is_conv3x3(layers[path])]
