"""The four tabs and their HTTP routes, one sub-package per tab, written once for every host.

Gradio and fastapi are allowed here, a host's own packages (the WebUI's ``modules``) are not: everything a tab needs
from its host goes through ``ui.runtime`` (tests/test_layering.py checks both).
"""
