"""One background training job at a time, shared by the Train Tools tab and the HTTP API.

``start`` prepares the version synchronously (names, dataset snapshot, settings saved) so that bad input is answered
at once, then trains in a thread; ``status`` returns a copy of what the engine last reported; ``stop`` asks the job to
stop between steps. The host is built per job by a factory, so this module knows nothing of the WebUI and is tested
with a stand-in host and training function.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lib_lora_train.settings import TrainSettings

log = logging.getLogger(__name__)

STATES = ("idle", "running", "done", "stopped", "error")
MAX_LOG_LINES = 300
MAX_LOSS_POINTS = 5000


class JobBusy(RuntimeError):
    """A job is already running; only one can use the GPU at a time."""


@dataclass
class TrainJob:
    """What to train: a version of a project, with settings and (optionally) a dataset folder to snapshot first."""

    project: str
    version: str
    settings: TrainSettings
    dataset: Path | None = None
    resume: bool = False
    # train on another of the host's checkpoints ("" = the loaded one), switched by the host's own loader; the
    # user's model is loaded back afterwards unless restore_model is False
    base_model: str = ""
    restore_model: bool = True
    # render an Epoch Compare grid of the version when the run ends (as the older train-tools extension did)
    compare_after: bool = False


@dataclass
class JobStatus:
    """A snapshot of the current (or last) job, as the tab and ``GET /train-tools/v1/status`` show it."""

    state: str = "idle"
    job_id: str = ""
    project: str = ""
    version: str = ""
    step: int = 0
    total: int = 0
    epoch: int = 0
    total_epochs: int = 0
    loss: float | None = None
    loss_avg: float | None = None
    it_per_s: float | None = None
    eta_s: float | None = None
    memory: str = ""
    message: str = ""
    checkpoints: list[str] = field(default_factory=list)
    published: list[str] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)
    grids: list[str] = field(default_factory=list)  # Epoch Compare grids rendered after the run (compare_after)
    losses: list[tuple[int, float]] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    started_at: float | None = None
    finished_at: float | None = None

    def to_dict(self, *, history: bool = True) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if not history:
            data.pop("losses")
            data.pop("log")
        return data


# make_host(stop_event, listener, task_id) -> TrainingHost
HostFactory = Callable[[threading.Event, Callable[[Any], None], "str | None"], Any]
# train_fn(host, settings, version_paths, resume=...) -> TrainResult (lib_lora_train.train.runner.train_version)
TrainFn = Callable[..., Any]
# after_done(version_paths, checkpoints) -> (published paths, notes)
AfterDone = Callable[[Any, list[Path]], "tuple[list[Path], list[str]]"]
# compare(job, version_paths) -> (grid paths, notes), after the GPU is free again
CompareAfter = Callable[[Any, Any], "tuple[list[Path], list[str]]"]


class JobRunner:
    """Runs ``TrainJob``s one at a time in a daemon thread."""

    def __init__(self, *, make_host: HostFactory, store_factory: Callable[[], Any], train_fn: TrainFn | None = None,
                 after_done: AfterDone | None = None, waiting: Callable[[], str] | None = None,
                 before_clear: Callable[[Any], Any] | None = None,
                 loaded_model: Callable[[], str] | None = None,
                 switch_model: Callable[[str], str] | None = None,
                 compare: CompareAfter | None = None):  # fmt: skip
        """``waiting`` says what a started job waits for before its first step (the host's queue, its device);
        ``before_clear(version)`` runs before an earlier run's files are trashed (to unpublish them);
        ``loaded_model()`` names the host's loaded checkpoint and ``switch_model(name)`` loads one (returning its
        full name), both called with the GPU held, for ``TrainJob.base_model``."""
        self.before_clear = before_clear
        self.loaded_model = loaded_model
        self.switch_model = switch_model
        self.compare = compare
        self.make_host = make_host
        self.waiting = waiting or (lambda: "queued: waiting for the model to be free")
        self.store_factory = store_factory
        self.train_fn = train_fn
        self.after_done = after_done
        self._lock = threading.Lock()
        self._status = JobStatus()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._notes: list[str] = []

    # --- public ------------------------------------------------------------------------------------------------

    def status(self) -> JobStatus:
        with self._lock:
            return dataclasses.replace(
                self._status,
                checkpoints=list(self._status.checkpoints),
                published=list(self._status.published),
                samples=list(self._status.samples),
                grids=list(self._status.grids),
                losses=list(self._status.losses),
                log=list(self._status.log),
            )

    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, job: TrainJob, *, task_id: str | None = None) -> JobStatus:
        """Prepare the version and start training; ``JobBusy`` if a job runs, store/settings errors as raised."""
        with self._lock:
            if self.is_running():
                raise JobBusy(f"{self._status.project}/{self._status.version} is training; stop it or wait")
            paths = self._prepare(job)
            self._stop.clear()
            self._status = JobStatus(
                state="running",
                job_id=task_id or uuid.uuid4().hex[:12],
                project=job.project,
                version=job.version,
                total_epochs=job.settings.epochs,
                message=self.waiting(),
                started_at=time.time(),
                log=list(self._notes),
            )
            self._thread = threading.Thread(
                target=self._run, args=(job, paths, self._status.job_id), name="lora-train-tools-job", daemon=True
            )
            self._thread.start()
        return self.status()

    def stop(self) -> JobStatus:
        """Ask the running job to stop after the current step (a checkpoint is kept when the engine saves one)."""
        if self.is_running():
            self._stop.set()
            self._add_log("stop requested")
        return self.status()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job thread ends; True when it has."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return not self.is_running()

    # --- the job -----------------------------------------------------------------------------------------------

    def _prepare(self, job: TrainJob):
        store = self.store_factory()
        paths = store.version(job.project, job.version) if store.has_version(job.project, job.version) else None
        if paths is None:
            paths = store.create_version(job.project, job.version)
        if job.dataset is not None:
            paths.snapshot_dataset(job.dataset)
        elif not paths.dataset.is_dir() or not any(paths.dataset.iterdir()):
            raise ValueError(f"{paths.dataset}: the version has no dataset yet; pass a dataset folder")
        paths.save_settings(job.settings)
        self._notes = [] if job.resume else self._clear_previous_run(store, paths)
        return paths

    def _compare(self, job: TrainJob, paths) -> list[str]:
        """The after-run grid; a failure is a note in the log, never a failed training job."""
        if self.compare is None:
            return ["no Epoch Compare on this host: the grid was not rendered"]
        self._add_log("rendering the Epoch Compare grid of the new epochs")
        try:
            grids, notes = self.compare(job, paths)
        except Exception as exc:  # the LoRA files are made; the user can render the grid from the tab
            log.exception("Epoch Compare after training failed")
            return [f"Epoch Compare after training failed: {type(exc).__name__}: {exc}"]
        with self._lock:
            self._status.grids = [str(p) for p in grids]
        return [*notes, *(f"Epoch Compare grid: {p}" for p in grids)]

    def _on_base_model(self, job: TrainJob, train: Callable[[], Any]) -> Any:
        """``train()`` on the job's base model: switched to first (with the GPU held, so no generation sees the
        switch) and, unless the job says otherwise, the previous model loaded back on every exit path."""
        if not job.base_model:
            return train()
        if self.switch_model is None or self.loaded_model is None:
            raise ValueError("this host cannot switch checkpoints; load the model yourself and leave base_model empty")
        previous = self.loaded_model()
        if job.base_model == previous:
            return train()
        self._add_log(f"loading {job.base_model} to train on (previously loaded: {previous or 'none'})")
        self._add_log(f"loaded {self.switch_model(job.base_model)}")
        try:
            return train()
        finally:
            if job.restore_model and previous:
                self._add_log(f"loading {previous} back")
                self.switch_model(previous)

    def _clear_previous_run(self, store, paths) -> list[str]:
        """A fresh run into a version that holds an earlier run's files: those go to the trash (published copies
        taken out first), so that its epochs do not mix with the new ones in the table, Epoch Compare or the LoRA
        list; resume (``TrainJob.resume``) keeps them."""
        from lib_lora_train.store.trash import move_to_trash

        old = [p for _, p in paths.list_checkpoints()] + paths.list_partial()
        if old and self.before_clear is not None:
            self.before_clear(paths)
        notes = []
        for folder, what in ((paths.checkpoints, "checkpoints"), (paths.path / "state", "state")):
            if folder.is_dir() and any(folder.iterdir()):
                where = move_to_trash(store.root, folder, paths.project, f"{paths.version}-{what}")
                notes.append(f"the previous run's {what} moved to {where}")
        paths.checkpoints.mkdir(parents=True, exist_ok=True)
        return notes

    def _run(self, job: TrainJob, paths, job_id: str) -> None:
        try:
            train_fn = self.train_fn or _default_train_fn()
            host = self.make_host(self._stop, self._on_event, job_id)
            result = host.run_exclusive(lambda: self._on_base_model(job, lambda: train_fn(host, job.settings, paths,
                                                                                           resume=job.resume)))
            checkpoints = [Path(p) for p in getattr(result, "checkpoints", [])]
            published, notes = self.after_done(paths, checkpoints) if self.after_done and checkpoints else ([], [])
            if job.compare_after and result.status == "done" and checkpoints:
                notes += self._compare(job, paths)
            with self._lock:
                status = self._status
                status.state = result.status if result.status in STATES else "error"
                status.message = result.message or status.message
                status.checkpoints = [str(p) for p in checkpoints]
                status.published = [str(p) for p in published]
                status.log.extend(notes)
        except Exception as exc:  # the job must end in a state the UI can show, whatever happened
            log.exception("LoRA training job failed")
            with self._lock:
                self._status.state = "error"
                self._status.message = f"{type(exc).__name__}: {exc}"
        finally:
            with self._lock:
                self._status.finished_at = time.time()

    def _on_event(self, event: Any) -> None:
        if isinstance(event, str):
            self._add_log(event)
            return
        with self._lock:
            status = self._status
            for name in ("step", "epoch", "loss", "loss_avg", "it_per_s", "eta_s", "memory"):
                value = getattr(event, name, None)
                if value not in (None, "") and (value != 0 or name not in ("step", "epoch")):
                    setattr(status, name, value)
            if getattr(event, "total_steps", 0):
                status.total = event.total_steps
            if getattr(event, "total_epochs", 0):
                status.total_epochs = event.total_epochs
            kind = getattr(event, "kind", "")
            if kind == "step" and event.loss is not None and len(status.losses) < MAX_LOSS_POINTS:
                status.losses.append((event.step, float(event.loss)))
            elif kind == "checkpoint" and event.path:
                status.checkpoints.append(event.path)
            elif kind == "sample" and event.path:
                status.samples.append(event.path)
                status.log.append(f"[sample] {event.path}")
            message = getattr(event, "message", "")
            if kind != "step" and (message or kind in ("epoch", "checkpoint")):
                status.message = message or f"{kind} {event.epoch}"
                status.log.append(f"[{kind}] {message or event.path or event.epoch}")
                del status.log[:-MAX_LOG_LINES]

    def _add_log(self, line: str) -> None:
        with self._lock:
            self._status.log.append(line)
            del self._status.log[:-MAX_LOG_LINES]


def _default_train_fn() -> TrainFn:
    from lib_lora_train.train.runner import train_version

    return train_version
