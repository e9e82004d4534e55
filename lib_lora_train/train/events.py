"""Progress events the engine sends to the host, and the meter that computes speed, ETA and the loss average."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Literal

EventKind = Literal["start", "step", "epoch", "checkpoint", "sample", "log", "done", "stopped", "error"]


@dataclass
class ProgressEvent:
    kind: EventKind
    step: int = 0
    total_steps: int = 0
    epoch: int = 0
    total_epochs: int = 0
    loss: float | None = None
    loss_avg: float | None = None
    lr: float | None = None
    it_per_s: float | None = None
    eta_s: float | None = None
    message: str = ""
    path: str = ""
    memory: str = ""  # e.g. "GPU 3.1 / 4.0 of 24.0 GiB (allocated / reserved)" (train.memory)


class ProgressMeter:
    """Speed over the last ``window`` steps, ETA, and the moving average of the loss."""

    def __init__(self, total_steps: int, start_step: int = 0, window: int = 20, clock=time.perf_counter):
        self.total_steps = total_steps
        self.clock = clock
        self._times: deque[tuple[int, float]] = deque([(start_step, clock())], maxlen=window + 1)
        self._losses: deque[float] = deque(maxlen=window * 5)

    def add_loss(self, loss: float) -> None:
        self._losses.append(loss)

    def tick(self, step: int) -> None:
        self._times.append((step, self.clock()))

    @property
    def loss_avg(self) -> float | None:
        return sum(self._losses) / len(self._losses) if self._losses else None

    @property
    def it_per_s(self) -> float | None:
        (s0, t0), (s1, t1) = self._times[0], self._times[-1]
        if s1 <= s0 or t1 <= t0:
            return None
        return (s1 - s0) / (t1 - t0)

    def eta_s(self, step: int) -> float | None:
        speed = self.it_per_s
        return (self.total_steps - step) / speed if speed else None
