"""The Dataset Tag Editor's core: load a folder of images and captions, filter, batch-edit, undo, save.

Host-neutral (no WebUI, no gradio); ``lib_lora_train.ui.tag_editor.tab`` builds the tab on top of it.
"""
