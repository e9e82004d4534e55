"""Projects and their versions on disk: ``<root>/<project>/versions/<version>/``.

The store root (``outputs/train_tools`` under the WebUI) is chosen by the caller. Names are validated before any
path is built from them, deleting moves into ``<root>/.trash/``, and listing reads only folder entries and the small
``version.json`` files, so it stays cheap with many checkpoints.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from lib_lora_train.store.names import StoreError, validate_name
from lib_lora_train.store.trash import TRASH_DIR, move_to_trash
from lib_lora_train.store.versions import VersionPaths, now_iso

__all__ = ["ProjectInfo", "ProjectStore", "StoreError", "VersionInfo", "VersionPaths"]

_VERSION_SUBFOLDERS = ("dataset", "checkpoints", "samples", "logs", "compare")


@dataclass(frozen=True)
class VersionInfo:
    """One version as listed: its folder, checkpoint files (epoch order, final last), whether settings exist and
    when it was created (ISO 8601, UTC)."""

    name: str
    path: Path
    checkpoints: list[Path] = field(default_factory=list)
    has_config: bool = False
    created: str = ""


@dataclass(frozen=True)
class ProjectInfo:
    name: str
    versions: list[VersionInfo] = field(default_factory=list)


class ProjectStore:
    """All projects under ``root``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def project_path(self, project: str) -> Path:
        return self.root / validate_name(project, "project")

    def paths(self, project: str, version: str) -> VersionPaths:
        """The paths of a version whether or not it exists yet."""
        return VersionPaths(self.root, project, version)

    # --- create and open ----------------------------------------------------------------------------------------

    def create_version(self, project: str, version: str) -> VersionPaths:
        """Make a new, empty version (creating the project if needed); StoreError if it already exists."""
        paths = self.paths(project, version)
        paths.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            paths.path.mkdir()
        except FileExistsError:
            raise StoreError(
                f"version {version!r} of project {project!r} already exists; open it or choose another name"
            ) from None
        for sub in _VERSION_SUBFOLDERS:
            (paths.path / sub).mkdir()
        paths.update_info(project=project, version=version, created=now_iso())
        return paths

    def version(self, project: str, version: str) -> VersionPaths:
        """An existing version; StoreError naming what is missing otherwise."""
        paths = self.paths(project, version)
        if not paths.path.is_dir():
            if not self.project_path(project).is_dir():
                raise StoreError(f"there is no project {project!r} in {self.root}; create it first")
            raise StoreError(f"project {project!r} has no version {version!r}; create it first")
        return paths

    def has_version(self, project: str, version: str) -> bool:
        return self.paths(project, version).path.is_dir()

    # --- listing ------------------------------------------------------------------------------------------------

    def list_projects(self) -> list[ProjectInfo]:
        """Every project (sorted by name) with its versions (sorted by creation time, then name).

        Folders whose names would not pass validation (hidden ones such as ``.trash``) are not projects.
        """
        if not self.root.is_dir():
            return []
        projects = []
        for entry in sorted(self.root.iterdir(), key=lambda p: p.name):
            if entry.is_dir() and _valid(entry.name):
                projects.append(ProjectInfo(entry.name, self.list_versions(entry.name)))
        return projects

    def list_versions(self, project: str) -> list[VersionInfo]:
        versions_dir = self.project_path(project) / "versions"
        if not versions_dir.is_dir():
            return []
        infos = []
        for entry in versions_dir.iterdir():
            if entry.is_dir() and _valid(entry.name):
                infos.append(self._version_info(VersionPaths(self.root, project, entry.name)))
        return sorted(infos, key=lambda info: (info.created, info.name))

    def _version_info(self, paths: VersionPaths) -> VersionInfo:
        created = paths.read_info().get("created")
        if not isinstance(created, str) or not created:
            # a version made by hand or by an older release: fall back to the folder's time
            created = datetime.fromtimestamp(paths.path.stat().st_mtime, timezone.utc).isoformat(timespec="seconds")
        return VersionInfo(
            name=paths.version,
            path=paths.path,
            checkpoints=[path for _, path in paths.list_checkpoints()],
            has_config=paths.config.is_file(),
            created=created,
        )

    # --- clone and delete ---------------------------------------------------------------------------------------

    def clone_version(self, project: str, src: str, dst: str) -> VersionPaths:
        """A new version ``dst`` with the settings and dataset snapshot of ``src`` (no checkpoints, samples, logs).

        The copy is made in a hidden folder and renamed into place, so a failure leaves no half-made version.
        """
        source = self.version(project, src)
        target = self.paths(project, dst)
        if target.path.exists():
            raise StoreError(f"version {dst!r} of project {project!r} already exists; choose another name")
        staging = target.path.with_name(f".{dst}.cloning")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            staging.mkdir(parents=True)
            for sub in _VERSION_SUBFOLDERS:
                if sub == "dataset" and source.dataset.is_dir():
                    shutil.copytree(source.dataset, staging / sub, copy_function=shutil.copy2)
                else:
                    (staging / sub).mkdir()
            if source.config.is_file():
                shutil.copy2(source.config, staging / "config.json")
            os.rename(staging, target.path)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        info = {k: v for k, v in source.read_info().items() if k.startswith("dataset_")}
        target.update_info(**info, project=project, version=dst, created=now_iso(), cloned_from=src)
        return target

    def delete_version(self, project: str, version: str) -> Path:
        """Move a version to ``<root>/.trash/<project>/<version>-<timestamp>``; returns where it went."""
        paths = self.version(project, version)
        return move_to_trash(self.root, paths.path, project, version)

    def delete_project(self, project: str) -> Path:
        """Move a whole project to ``<root>/.trash/<project>-<timestamp>``; returns where it went."""
        path = self.project_path(project)
        if not path.is_dir():
            raise StoreError(f"there is no project {project!r} in {self.root}")
        return move_to_trash(self.root, path, project)

    @property
    def trash(self) -> Path:
        return self.root / TRASH_DIR


def _valid(name: str) -> bool:
    try:
        validate_name(name)
    except StoreError:
        return False
    return True
