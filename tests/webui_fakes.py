"""Stand-ins shared by the tests of the job runner and the API: a host and a training function that behave like the
engine's (events, stop between steps, checkpoints written into the version) without a model."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from lib_lora_train.train.events import ProgressEvent


@dataclass
class FakeResult:
    status: str
    checkpoints: list[Path] = field(default_factory=list)
    steps: int = 0
    final_loss: float | None = None
    message: str = ""


class FakeHost:
    def __init__(self, stop_event: threading.Event, listener, task_id):
        self.stop_event, self.listener, self.task_id = stop_event, listener, task_id
        self.exclusive_calls = 0

    def run_exclusive(self, fn):
        self.exclusive_calls += 1
        return fn()

    def report(self, event):
        self.listener(event)

    def should_stop(self):
        return self.stop_event.is_set()


def fake_train(gate: threading.Event | None = None, fail: bool = False):
    """A train_fn: 2 epochs x 2 steps, a checkpoint per epoch; waits on ``gate`` before each step when given."""

    def train(host, settings, version, *, resume=False):
        total = 4
        host.report(ProgressEvent("start", 0, total, 0, 2))
        written = []
        for step in range(1, total + 1):
            if gate is not None:
                gate.wait(5)
            if host.should_stop():
                host.report(ProgressEvent("stopped", step - 1, total, message="stopped"))
                return FakeResult("stopped", written, step - 1, message=f"stopped at step {step - 1}")
            if fail and step == 2:
                raise RuntimeError("out of memory")
            host.report(ProgressEvent("step", step, total, (step - 1) // 2 + 1, 2, loss=1.0 / step))
            if step % 2 == 0:
                path = version.checkpoint_file(step // 2)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"lora")
                written.append(path)
                host.report(ProgressEvent("checkpoint", step, total, step // 2, 2, path=str(path)))
        return FakeResult("done", written, total, 0.25, "trained 4 steps")

    return train


def make_dataset(folder: Path, n: int = 2) -> Path:
    sub = folder / "5_alice"
    sub.mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", (64, 64), (i * 40, 10, 10)).save(sub / f"{i}.png")
        (sub / f"{i}.txt").write_text("alice, smile", encoding="utf-8")
    return folder
