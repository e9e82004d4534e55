"""The LoRA file format that kohya's sd-scripts writes and A1111, Forge, ComfyUI and diffusers read.

- ``keys``: kohya module names for UNet / text-encoder module trees, and which modules get adapters.
- ``ldm_names``: the ldm/sgm -> diffusers UNet name map, derived from the module structure.
- ``peft_bridge``: peft adapter layers <-> kohya tensors (LoRA, LoCon, LoHa, LoKr).
- ``file``: save (atomic, with the sshs hashes) and read ``.safetensors`` LoRA files.
- ``metadata``: the ``ss_*`` and ``modelspec.*`` metadata.
"""
