"""Epoch comparison, host-neutral: plan epoch x weight grids, hand them to the X/Y/Z plot, score and pick.

- ``plan``: user choices -> grids of cells with their exact prompts; ``lora_tags``: the ``<lora:…>`` tag in a prompt;
- ``xyz``: Prompt S/R strings, txt2img payload and infotext for the WebUI's X/Y/Z plot;
- ``run``: render each cell once through a host callback, save cells/grids with PNG info, score;
- ``grid`` / ``score_chart``: Pillow drawing; ``scoring`` / ``traits``: tagger-based fidelity and flexibility;
- ``pick``: record the chosen epoch and weight, publish it under a clean name with the LoRA card's metadata.
"""
