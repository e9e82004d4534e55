"""The AUTOMATIC1111 WebUI as a host: its runtime for the tabs, the training host adapter around its loaded model
(model parts, state snapshots, LoRA un-merging), its renderer, the settings section and the registration.

Only this sub-package imports the WebUI's ``modules`` (tests/test_layering.py checks it); most files import them
inside functions, so that they load and are tested without a WebUI.
"""
