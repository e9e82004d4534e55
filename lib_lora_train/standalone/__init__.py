"""The standalone app: the four tabs served without a WebUI, on a diffusers model (its runtime, model picker,
LoRA application for renders, and the page)."""
