"""The project store: projects, versions and their files under one root folder (``outputs/train_tools``)."""

from lib_lora_train.store.logs import LossLog, read_loss_log
from lib_lora_train.store.names import StoreError, validate_name
from lib_lora_train.store.projects import ProjectInfo, ProjectStore, VersionInfo
from lib_lora_train.store.versions import VersionPaths

__all__ = [
    "LossLog",
    "ProjectInfo",
    "ProjectStore",
    "StoreError",
    "VersionInfo",
    "VersionPaths",
    "read_loss_log",
    "validate_name",
]
