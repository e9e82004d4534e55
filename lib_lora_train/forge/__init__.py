"""Host adapter for Stable Diffusion WebUI Forge (lllyasviel/stable-diffusion-webui-forge, tested at dfdcbab): the
tabs' runtime over Forge's ``modules`` API and a ``TrainingHost`` over the ``backend/`` model objects Forge loads."""
