"""The Tagger tab: the gradio layout, its settings readers and the WD14-compatible HTTP API."""
