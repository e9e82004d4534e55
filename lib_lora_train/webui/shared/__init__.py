"""What the AUTOMATIC1111 WebUI v1.10 and WebUI Forge share: the ``modules`` API (settings, folders, the GPU queue,
progress state, ``process_images``, the LoRA list, "Send to" buttons). The two host adapters (``webui/`` for A1111,
``forge/``) build on it and differ only in the model objects and how training reaches them."""
