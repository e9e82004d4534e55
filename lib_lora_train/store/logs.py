"""The loss / learning-rate history of a run: a CSV file appended to at every logged step.

Each row is flushed as it is written, so the UI's loss chart can read the file while training runs and a crash loses
at most the row being written. ``read_loss_log`` skips a half-written last row instead of failing.
"""

from __future__ import annotations

import csv
import math
import os
import time
from pathlib import Path
from typing import IO, Any

COLUMNS = ("step", "epoch", "loss", "loss_avg", "lr", "time")
_INT_COLUMNS = frozenset({"step", "epoch"})


class LossLog:
    """Append-only CSV writer of ``step, epoch, loss, loss_avg, lr, time`` rows; a header is written to a new file.

    Use as a context manager or call :meth:`close`. Appending to an existing log (a resumed run) keeps its rows.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        needs_header = not self.path.exists() or self.path.stat().st_size == 0
        self._handle: IO[str] | None = self.path.open("a", encoding="utf-8", newline="")
        self._writer = csv.writer(self._handle)
        if needs_header:
            self._writer.writerow(COLUMNS)
            self._handle.flush()

    def append(
        self, step: int, epoch: int, loss: float, loss_avg: float, lr: float, time_s: float | None = None
    ) -> None:
        """Write one row and flush it; ``time_s`` defaults to now (seconds since the epoch)."""
        if self._handle is None:
            raise ValueError(f"{self.path}: the loss log is closed")
        moment = time.time() if time_s is None else time_s
        self._writer.writerow(
            [int(step), int(epoch), repr(float(loss)), repr(float(loss_avg)), repr(float(lr)), f"{moment:.3f}"]
        )
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> LossLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_loss_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a loss log as dicts (step and epoch ints, the rest floats); [] for a missing file.

    Rows that do not parse (a row cut short by a crash, a stray line) are skipped.
    """
    p = Path(path)
    if not p.is_file():
        return []
    rows: list[dict[str, Any]] = []
    with p.open("r", encoding="utf-8", newline="") as handle:
        for record in csv.DictReader(handle):
            row = _parse_row(record)
            if row is not None:
                rows.append(row)
    return rows


def _parse_row(record: dict[str, Any]) -> dict[str, Any] | None:
    row: dict[str, Any] = {}
    for column in COLUMNS:
        value = record.get(column)
        if value is None or value == "":
            return None
        try:
            row[column] = int(value) if column in _INT_COLUMNS else float(value)
        except ValueError:
            return None
        if column in ("lr", "time") and not math.isfinite(row[column]):
            # a NaN loss is worth showing (the run diverged); a NaN time or lr means the row is damaged
            return None
    return row
