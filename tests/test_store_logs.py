"""The loss log: appended and flushed row by row, readable while written, robust to a cut-off last row."""

from __future__ import annotations

import math

from lib_lora_train.store.logs import COLUMNS, LossLog, read_loss_log


def test_rows_are_readable_before_close_and_keep_their_types(tmp_path):
    path = tmp_path / "logs" / "loss.csv"
    log = LossLog(path)
    log.append(1, 1, 0.5, 0.5, 1e-4, time_s=100.0)
    log.append(2, 1, 0.25, 0.375, 9.5e-5, time_s=101.5)
    # not closed: what a UI polling the file during training sees
    rows = read_loss_log(path)
    assert rows == [
        {"step": 1, "epoch": 1, "loss": 0.5, "loss_avg": 0.5, "lr": 1e-4, "time": 100.0},
        {"step": 2, "epoch": 1, "loss": 0.25, "loss_avg": 0.375, "lr": 9.5e-5, "time": 101.5},
    ]
    log.close()
    assert path.read_text().splitlines()[0] == ",".join(COLUMNS)


def test_resuming_appends_without_a_second_header(tmp_path):
    path = tmp_path / "loss.csv"
    with LossLog(path) as log:
        log.append(1, 1, 0.5, 0.5, 1e-4)
    with LossLog(path) as log:
        log.append(2, 1, 0.4, 0.45, 1e-4)
    assert [r["step"] for r in read_loss_log(path)] == [1, 2]
    assert path.read_text().count("step") == 1


def test_half_written_rows_are_skipped_and_nan_loss_kept(tmp_path):
    path = tmp_path / "loss.csv"
    with LossLog(path) as log:
        log.append(1, 1, float("nan"), float("nan"), 1e-4, time_s=5.0)
    with path.open("a") as handle:
        handle.write("2,1,0.3")  # a crash mid-row
    rows = read_loss_log(path)
    assert len(rows) == 1 and math.isnan(rows[0]["loss"])


def test_missing_log_reads_as_empty(tmp_path):
    assert read_loss_log(tmp_path / "none.csv") == []
