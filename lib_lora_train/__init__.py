"""LoRA Train Tools: the host-neutral core.

Everything under this package except ``lib_lora_train.webui`` is free of the WebUI's ``modules`` package and of
gradio, so it runs in tests, from the command line and under any host that implements ``host.TrainingHost``.
"""

__version__ = "0.1.0"
