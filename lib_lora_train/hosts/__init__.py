"""Hosts that lend the training engine a model: the diffusers one lives here; the WebUI one in lib_lora_train.webui."""
