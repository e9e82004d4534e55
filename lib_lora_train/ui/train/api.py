"""HTTP API of Train Tools under ``/train-tools/v1/``: list projects, start and stop training, read its status.

Models are plain pydantic ``BaseModel``s with ``typing`` annotations, valid under the WebUI's pydantic 1 and under
pydantic 2. The routes appear in the WebUI's ``/docs``. ``settings`` in a train request uses the engine's option names
(``rank``, ``resolution``, ``epochs``…); a bad or unknown name is answered with 422 naming the field.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional  # noqa: UP035 - pydantic 1 reads these annotations at runtime

from fastapi import APIRouter, Depends, FastAPI, HTTPException
from pydantic import BaseModel, Field

from lib_lora_train.settings import SettingsError, TrainSettings
from lib_lora_train.ui.train.jobs import JobBusy, JobRunner, TrainJob

PREFIX = "/train-tools/v1"


class TrainRequest(BaseModel):
    project: str = Field(..., description="project name (created when missing)", example="alice")
    version: str = Field(..., description="version name (created when missing)", example="v1")
    dataset: Optional[str] = Field(
        None, description="folder of images + captions to snapshot into the version; omit to reuse the snapshot"
    )
    settings: dict[str, Any] = Field(
        default_factory=dict, description="training settings by CLI name", example={"rank": 16, "epochs": 10}
    )
    base_model: Optional[str] = Field(
        None, description="train on this checkpoint of the host (its title, file name or hash) instead of the loaded "
        "one; the host's own loader switches to it", example="v1-5-pruned-emaonly.safetensors",
    )  # fmt: skip
    restore_model: bool = Field(True, description="with base_model: load the previous checkpoint back afterwards")
    compare_after: bool = Field(
        False, description="render an Epoch Compare grid of the version when the run ends (its sample prompts, steps, "
        "resolution and seed); the grids are listed in the status",
    )  # fmt: skip
    resume: bool = Field(False, description="continue from the version's saved training state")


class JobStatusModel(BaseModel):
    state: str = Field(..., description="idle, running, done, stopped or error")
    job_id: str = ""
    project: str = ""
    version: str = ""
    step: int = 0
    total: int = 0
    epoch: int = 0
    total_epochs: int = 0
    loss: Optional[float] = None
    loss_avg: Optional[float] = None
    it_per_s: Optional[float] = None
    eta_s: Optional[float] = None
    memory: str = Field("", description="memory in use: GPU allocated / reserved of total, or the process's RAM")
    message: str = ""
    checkpoints: list[str] = Field(default_factory=list, description="checkpoint files written by this job")
    published: list[str] = Field(default_factory=list, description="their copies/links in the LoRA folder")
    samples: list[str] = Field(default_factory=list)
    grids: list[str] = Field(default_factory=list, description="Epoch Compare grids rendered after the run")
    losses: list[tuple[int, float]] = Field(default_factory=list, description="(step, loss); with ?history=true")
    log: list[str] = Field(default_factory=list, description="run log lines; with ?history=true")
    started_at: Optional[float] = None
    finished_at: Optional[float] = None


class CheckpointModel(BaseModel):
    name: str = Field(..., description="file stem, the name to use in <lora:NAME:weight>")
    epoch: Optional[int] = Field(None, description="epoch number; null for the final file")
    path: str


class VersionModel(BaseModel):
    name: str
    path: str
    created: str = ""
    has_config: bool = False
    checkpoints: list[CheckpointModel] = Field(default_factory=list)


class ProjectModel(BaseModel):
    name: str
    versions: list[VersionModel] = Field(default_factory=list)


class PartFingerprintModel(BaseModel):
    weights: str
    structure: str
    flags: str
    placement: str
    tensors: int


class FingerprintModel(BaseModel):
    digest: str = Field(..., description="sha256 over all parts; equal before and after a training run")
    parts: dict[str, PartFingerprintModel]


def _epoch_of(path: Path, output_name: str) -> Optional[int]:
    tail = path.stem[len(output_name) :].lstrip("-")
    return int(tail) if path.stem.startswith(output_name) and tail.isdigit() else None


def project_models(store) -> list[ProjectModel]:
    """Every project with its versions and checkpoint files, as the API lists them."""
    projects = []
    for project in store.list_projects():
        versions = []
        for info in project.versions:
            prefix = f"{project.name}-{info.name}"
            checkpoints = [
                CheckpointModel(name=p.stem, epoch=_epoch_of(p, prefix), path=str(p)) for p in info.checkpoints
            ]
            versions.append(
                VersionModel(
                    name=info.name,
                    path=str(info.path),
                    created=info.created,
                    has_config=info.has_config,
                    checkpoints=checkpoints,
                )
            )
        projects.append(ProjectModel(name=project.name, versions=versions))
    return projects


def _loaded_model_only(name: str | None) -> str:
    if name:
        raise ValueError("this host trains on the loaded model only; leave base_model empty")
    return ""


def fingerprint_model(parts: dict) -> FingerprintModel:
    """Wrap ``model_state.fingerprint`` output; ``digest`` combines every part."""
    digest = hashlib.sha256(repr(sorted((k, vars(v)) for k, v in parts.items())).encode()).hexdigest()
    return FingerprintModel(digest=digest, parts={k: PartFingerprintModel(**vars(v)) for k, v in parts.items()})


def build_router(*, jobs: JobRunner, store_factory: Callable[[], Any], fingerprint_fn: Callable[[], dict] | None,
                 auth_dependency: Callable | None, resolve_model: Callable[[str | None], str] | None = None,
                 check_host: Callable[[], None] | None = None) -> APIRouter:  # fmt: skip
    """The routes, with ``auth_dependency`` (basic auth for ``--api-auth``) on every one of them; ``resolve_model``
    names a request's base model as the host does (ValueError when it has none of that name)."""
    router = APIRouter(prefix=PREFIX, tags=["LoRA Train Tools"])
    resolve_model = resolve_model or _loaded_model_only
    deps = [Depends(auth_dependency)] if auth_dependency else []

    def status_model(history: bool) -> JobStatusModel:
        return JobStatusModel(**jobs.status().to_dict(history=history))

    @router.get("/projects", response_model=list[ProjectModel], dependencies=deps)
    def list_projects():
        """Projects with their versions and the checkpoint files of each version."""
        return project_models(store_factory())

    @router.post("/train", response_model=JobStatusModel, dependencies=deps)
    def start_training(request: TrainRequest):
        """Create the version if needed, snapshot the dataset, save the settings and start training. Answers at once;
        poll ``/status``. 409 while another job runs, 422 for a bad setting, 400 for a bad name or folder."""
        from lib_lora_train.train.preflight import check_environment

        try:
            if check_host is not None:
                check_host()
        except ValueError as exc:  # a host that cannot train at all (Forge, for now)
            raise HTTPException(501, detail=str(exc)) from None
        try:
            settings = TrainSettings.from_dict(request.settings)
            check_environment(settings, request.dataset or None)  # before the version folder is made
        except SettingsError as exc:
            raise HTTPException(422, detail={"field": exc.field, "message": str(exc)}) from None
        dataset = Path(request.dataset).expanduser() if request.dataset else None
        if dataset is not None and not dataset.is_dir():
            raise HTTPException(400, detail=f"{dataset}: dataset folder not found; pass a folder of images")
        try:
            base_model = resolve_model(request.base_model)
        except ValueError as exc:
            raise HTTPException(422, detail={"field": "base_model", "message": str(exc)}) from None
        job = TrainJob(request.project, request.version, settings, dataset, request.resume, base_model,
                       request.restore_model, request.compare_after)  # fmt: skip
        try:
            jobs.start(job)
        except JobBusy as exc:
            raise HTTPException(409, detail=str(exc)) from None
        except (ValueError, OSError) as exc:  # StoreError is a ValueError: bad names, empty dataset
            raise HTTPException(400, detail=str(exc)) from None
        return status_model(False)

    @router.get("/status", response_model=JobStatusModel, dependencies=deps)
    def job_status(history: bool = False):
        """The current or last job: state (idle, running, done, stopped, error), step/total, epoch, loss, files."""
        return status_model(history)

    @router.post("/stop", response_model=JobStatusModel, dependencies=deps)
    def stop_training():
        """Ask the running job to stop after the current step."""
        jobs.stop()
        return status_model(False)

    if fingerprint_fn is not None:

        @router.get("/host-fingerprint", response_model=FingerprintModel, dependencies=deps)
        def host_fingerprint(live: bool = False):
            """sha256 of the loaded model's UNet, text encoder(s) and VAE state (weights, module tree, flags,
            devices, dtypes): compare before and after training to check that the WebUI was left as it was.
            A LoRA the WebUI merged into the weights counts as the original weights it keeps as backup, unless
            ``live=true`` (then the weights as they are in memory)."""
            if jobs.is_running():
                raise HTTPException(409, detail="a training job is running; fingerprint the model after it ends")
            return fingerprint_model(fingerprint_fn(live=live))

    return router


def mount_train_api(app: FastAPI, *, jobs: JobRunner, store_factory: Callable[[], Any],
                    fingerprint_fn: Callable[[], dict] | None = None, auth_dependency: Callable | None = None,
                    resolve_model: Callable[[str | None], str] | None = None,
                    check_host: Callable[[], None] | None = None) -> None:  # fmt: skip
    """Add the Train Tools routes to the host's FastAPI app."""
    app.include_router(
        build_router(jobs=jobs, store_factory=store_factory, fingerprint_fn=fingerprint_fn,
                     auth_dependency=auth_dependency, resolve_model=resolve_model, check_host=check_host)  # fmt: skip
    )


def mount_default_train_api(app: FastAPI, auth_dependency: Callable | None = None) -> None:
    """The Train Tools routes bound to the process's shared job runner and store (``ui.services``)."""
    from lib_lora_train.ui import services

    mount_train_api(app, jobs=services.jobs(), store_factory=services.store, fingerprint_fn=services.host_fingerprint,
                    auth_dependency=auth_dependency, resolve_model=services.resolve_base_model,
                    check_host=services.check_can_train)  # fmt: skip
