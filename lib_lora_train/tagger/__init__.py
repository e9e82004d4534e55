"""WD14 booru tagging: model registry and download, onnxruntime sessions, exact preprocessing, batched pipelined
inference, tag selection and formatting, and caption files that never lose the user's text.

Host-neutral: the WebUI tab and API in ``lib_lora_train.webui`` call ``service.TaggerService``.
"""
