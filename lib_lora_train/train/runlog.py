"""The run's text log (logs/run.log) and its loss history (logs/loss.csv)."""

from __future__ import annotations

import contextlib
import csv
import logging
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def run_log(path: Path) -> Iterator[None]:
    """Copy the library's log records into ``path`` for the duration of a run (appending across resumes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("lib_lora_train")
    previous = logger.level
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
        handler.close()


class LossCsv:
    """Appends ``step,loss,lr`` rows; each flush is a whole line, so a killed run leaves a readable file."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            self.path.write_text("step,loss,lr\n", encoding="utf-8")

    def append(self, rows: list[tuple[int, float, float]]) -> None:
        with open(self.path, "a", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            for step, loss, lr in rows:
                writer.writerow([step, f"{loss:.6g}", f"{lr:.6g}"])
