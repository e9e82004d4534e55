"""The bootstrap loop inside a host (the WebUI or the standalone app): one background thread that runs the loop's
phases with the host's own pieces — training through the shared job runner (so the GPU queue, progress, Stop and
publishing to the LoRA folder behave as for any run), candidates through the host's txt2img, scores through the
tagger already on disk. The tab and the HTTP routes share it; the loop's state is on disk, so after a restart
``resume`` goes on where it was."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lib_lora_train.bootstrap.crops import parse_boxes, quadrant_boxes, write_crops
from lib_lora_train.bootstrap.loop import BootstrapLoop, LoopConfig, LoopError, LoopHooks, current_version, start
from lib_lora_train.bootstrap.rounds import RoundFiles, read_state
from lib_lora_train.host import SampleRequest
from lib_lora_train.images import iter_image_files
from lib_lora_train.ui import services
from lib_lora_train.ui.runtime import current
from lib_lora_train.ui.train.jobs import TrainJob

SAMPLE_STEPS = 20


@dataclass
class StartRequest:
    project: str
    images: str  # a folder of 2-8 images, or one image (cut into crops)
    activation_tag: str
    traits: list[str]
    targets: list[int]
    views: list[str]
    seeds_per_view: int = 2
    crop: bool = False
    boxes: str = ""  # one "left, top, right, bottom" per line; empty: quadrants
    auto_select: bool = True
    seed: int = 42
    resolution: int = 0  # 0: the model's own (1024 for SDXL, else 512)
    settings: dict = field(default_factory=dict)  # user settings over the bootstrap preset
    version: str = "v1"


class BootstrapRunner:
    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.messages: list[str] = []
        self.error = ""
        self.project = ""

    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # --- start / resume / stop -------------------------------------------------------------------------------

    def start(self, request: StartRequest) -> None:
        """Cut or collect the start images, write the first version, and run the loop in the background."""
        from lib_lora_train.bootstrap.captions import caption_for

        with self._lock:
            if self.is_running() or services.jobs().is_running():
                raise LoopError("a training job or a bootstrap loop is running; stop it or wait for it")
            store = services.store()
            arch = current().model_arch() or "sd1"
            request.resolution = request.resolution or (1024 if arch == "sdxl" else 512)
            images = _start_images(request)
            tag = _tagger()
            tags = tag([_open(p) for p in images]) if tag else [{} for _ in images]
            captions = [caption_for(request.activation_tag, t, "", request.traits) for t in tags]
            config = LoopConfig(request.activation_tag, request.traits, request.targets, request.views,
                                request.seeds_per_view, request.seed, request.resolution,
                                arch, request.auto_select, request.settings)  # fmt: skip
            start(store, request.project, request.version, images, captions, config)
            self._launch(request.project)

    def resume(self, project: str) -> None:
        with self._lock:
            if self.is_running():
                raise LoopError("the bootstrap loop is running already")
            if current_version(services.store(), project) is None:
                raise LoopError(f"project {project!r} has no bootstrap loop; start one first")
            self._launch(project)

    def stop(self) -> None:
        self._stop.set()
        if services.jobs().is_running():
            services.jobs().stop()

    def wait(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.is_running()

    def _launch(self, project: str) -> None:
        self.project, self.error, self.messages = project, "", []
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(project,), name="lora-bootstrap", daemon=True)
        self._thread.start()

    def _run(self, project: str) -> None:
        try:
            current().state.begin("bootstrap")
            BootstrapLoop(services.store(), project, self._hooks()).run()
        except Exception as exc:  # the tab shows it; the loop's files stay for a resume
            self.error = f"{type(exc).__name__}: {exc}"
            self.messages.append(self.error)

    # --- what the host lends the loop ----------------------------------------------------------------------

    def _should_stop(self) -> bool:
        return self._stop.is_set() or bool(getattr(current().state, "interrupted", False))

    def _hooks(self) -> LoopHooks:
        def train(version, settings):
            runner = services.jobs()
            runner.start(TrainJob(version.project, version.version, settings, None))
            while not runner.wait(1.0):
                if self._stop.is_set():
                    runner.stop()
            status = runner.status()
            return [Path(p) for p in status.checkpoints] if status.state == "done" else []

        def render(prompt: str, seed: int):
            if self._should_stop():
                return None
            state = read_state(current_version(services.store(), self.project))
            size = state.resolution if state is not None else 512
            current().refresh_lora_list()
            return current().render_sample(SampleRequest(prompt, seed=seed, steps=SAMPLE_STEPS, width=size,
                                                         height=size))  # fmt: skip

        return LoopHooks(train=train, render=render, tag=_tagger(), should_stop=self._should_stop,
                         report=self.messages.append)  # fmt: skip

    # --- what the tab and the API show -------------------------------------------------------------------------

    def status(self, project: str) -> dict:
        version = current_version(services.store(), project) if project else None
        state = read_state(version) if version is not None else None
        data = {"project": project, "running": self.is_running() and self.project == project,
                "messages": self.messages[-50:] if self.project == project else [], "error": self.error}  # fmt: skip
        if state is None:
            return {**data, "version": None, "round": None, "phase": None}
        job = services.jobs().status()
        return {**data, "version": version.version, "round": state.round, "phase": state.phase,
                "targets": state.targets, "traits": state.traits, "activation_tag": state.activation_tag,
                "training": job.to_dict(history=False) if job.state == "running" else None}  # fmt: skip

    def candidates(self, project: str) -> dict:
        version = current_version(services.store(), project)
        if version is None:
            raise LoopError(f"project {project!r} has no bootstrap loop")
        state = read_state(version)
        files = RoundFiles(version, state.round)
        scores = files.load_scores() or []
        selection = files.load_selection() or {}
        return {"version": version.version, "round": state.round, "folder": str(files.candidates),
                "kept": selection.get("kept", []), "candidates": [s.to_dict() for s in scores]}  # fmt: skip

    def select(self, project: str, kept: Sequence[str], *, go_on: bool = True) -> None:
        """The user's keep/reject for the current round (names from ``candidates``); the loop then goes on."""
        version = current_version(services.store(), project)
        if version is None:
            raise LoopError(f"project {project!r} has no bootstrap loop")
        state = read_state(version)
        files = RoundFiles(version, state.round)
        names = {s.file for s in files.load_scores() or []}
        unknown = sorted(set(kept) - names)
        if unknown:
            raise LoopError(f"not candidates of round {state.round}: {unknown}")
        if not kept:
            raise LoopError("keep at least one candidate (or generate more seeds)")
        target = state.targets[min(state.round, len(state.targets)) - 1]
        files.save_selection(list(kept), sorted(names - set(kept)), auto=False, target=target)
        if go_on:
            self.resume(project)


def _start_images(request: StartRequest) -> list[Path]:
    source = Path(request.images).expanduser()
    if not source.exists():
        raise LoopError(f"{source}: no such image or folder")
    if request.crop:
        image = source if source.is_file() else next(iter(iter_image_files(source)), None)
        if image is None:
            raise LoopError(f"{source}: no image to cut into crops")
        with _open(image) as picture:
            size = picture.size
        boxes = parse_boxes(request.boxes, *size) if request.boxes.strip() else quadrant_boxes(*size)
        work = services.store().root / ".bootstrap-crops" / request.project / str(int(time.time()))
        return write_crops(image, boxes, work, request.resolution)
    images = sorted(iter_image_files(source)) if source.is_dir() else [source]
    if not 2 <= len(images) <= 8:
        raise LoopError(f"{source}: {len(images)} image(s); start from 2-8 images, or one image cut into crops")
    return images


def _open(path: Path):
    from PIL import Image

    return Image.open(path).convert("RGB")


def _tagger():
    """The tagger function of a model already on disk (never a download), or None."""
    from lib_lora_train.ui.compare.render import find_scorer

    scorer, _ = find_scorer()
    return scorer.tag_images if scorer is not None else None


_runner: BootstrapRunner | None = None


def bootstrap_runner() -> BootstrapRunner:
    global _runner
    if _runner is None:
        _runner = BootstrapRunner()
    return _runner
