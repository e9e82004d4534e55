"""The LoRA training engine: adapters, optimisers, schedules, the step loop and ``train_version``."""
