"""The only part of the product that touches the WebUI (``modules``) and gradio: tabs, host adapter, API routes."""
