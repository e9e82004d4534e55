"""Test-wide settings."""

from hypothesis import settings

# Property tests check behaviour, not speed. Hypothesis' default 200 ms deadline per example fails them on a shared
# 2-core machine whenever another job takes the CPU (seen in a CI run: 264 ms for one example, 0.02 ms again).
settings.register_profile("lora_train_tools", deadline=None)
settings.load_profile("lora_train_tools")
