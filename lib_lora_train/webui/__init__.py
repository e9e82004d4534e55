"""Everything that touches the AUTOMATIC1111 WebUI: the host adapter, the tabs, the settings section and the API.

Only this sub-package imports the WebUI's ``modules`` or gradio (tests/test_layering.py checks the rest of
``lib_lora_train``); most of its files import them inside functions, so that they load and test without a WebUI.
"""
