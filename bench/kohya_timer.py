"""Run one kohya sd-scripts training script with per-step timing, memory, FLOP and profiler hooks; nothing of
sd-scripts is changed or copied: its own ``__main__`` runs (runpy) after two tqdm methods are wrapped.

    cd SD_SCRIPTS && PYTHONPATH=KOHYA_SITE python /path/to/bench/kohya_timer.py RESULT.json SCHEDULE -- \\
        train_network.py --pretrained_model_name_or_path ... (kohya's own arguments)

kohya advances its "steps" progress bar once per optimiser step (``progress_bar.update(1)`` after
``optimizer.step()``), so the wrapped ``tqdm.update`` marks step ends. SCHEDULE is ``W,F,T,P``: W warm-up steps,
F (0/1) steps counted with torch's FlopCounterMode, T timed steps, P (0/1) steps under torch.profiler, in that
order (run with ``--max_train_steps W+F+T+P``). Step ends are CUDA events on the current stream (no host sync in
the timed steps; one synchronize after them), or host clocks on the CPU. Peak memory is reset at the start of the
timed steps and read at their end (the "steps" figures) and also kept for the whole process ("run" figures).
RESULT.json is written even when the script fails (``error`` holds the exception). Environment: KOHYA_TRACE (path
prefix for the profiler's trace .json.gz and its table .txt).
"""

from __future__ import annotations

import gzip
import json
import os
import resource
import runpy
import shutil
import sys
import time
import traceback


def main() -> int:
    sep = sys.argv.index("--")
    result_path, schedule = sys.argv[1], sys.argv[2]
    script_argv = sys.argv[sep + 1 :]
    warmup, flop_steps, timed, profiled = (int(x) for x in schedule.split(","))

    import torch
    import tqdm.std

    cuda = torch.cuda.is_available()
    state = {"host": [], "events": [], "avr_loss": [], "flops": None, "error": None, "steps_peak": {}, "pre_peak": {},
             "trace": None}  # fmt: skip
    flop_mode = {"mode": None}
    prof = {"p": None}
    first_timed = warmup + flop_steps  # step ends counted 1..; timing starts at the end of this step
    last_timed = first_timed + timed

    def on_step_end(k: int) -> None:
        """Called at the end of optimiser step k (1-based)."""
        state["host"].append(time.perf_counter())
        if cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            state["events"].append(event)
        if flop_steps and k == warmup:
            from torch.utils.flop_counter import FlopCounterMode

            flop_mode["mode"] = FlopCounterMode(display=False)
            flop_mode["mode"].__enter__()
        if flop_steps and k == warmup + 1 and flop_mode["mode"] is not None:
            flop_mode["mode"].__exit__(None, None, None)
            state["flops"] = flop_mode["mode"].get_total_flops()
            flop_mode["mode"] = None
        if k == first_timed and cuda:
            state["pre_peak"] = {
                "alloc": torch.cuda.max_memory_allocated(),
                "reserved": torch.cuda.max_memory_reserved(),
            }
            torch.cuda.reset_peak_memory_stats()
        if k == last_timed and cuda:
            torch.cuda.synchronize()
            state["steps_peak"] = {
                "alloc": torch.cuda.max_memory_allocated(),
                "reserved": torch.cuda.max_memory_reserved(),
            }
        if profiled and k == last_timed:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if cuda:
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            prof["p"] = torch.profiler.profile(activities=activities, record_shapes=True)
            prof["p"].__enter__()
        if profiled and k == last_timed + 1 and prof["p"] is not None:
            if cuda:
                torch.cuda.synchronize()
            prof["p"].__exit__(None, None, None)
            state["trace"] = export_profile(prof["p"], os.environ.get("KOHYA_TRACE", result_path + ".trace"), cuda)
            prof["p"] = None

    original_update = tqdm.std.tqdm.update
    original_postfix = tqdm.std.tqdm.set_postfix

    def update(self, n=1):
        if getattr(self, "desc", "") == "steps":
            on_step_end(len(state["host"]) + 1)
        return original_update(self, n)

    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
        if getattr(self, "desc", "") == "steps" and "avr_loss" in kwargs:
            state["avr_loss"].append(float(kwargs["avr_loss"]))
        return original_postfix(self, ordered_dict, refresh, **kwargs)

    tqdm.std.tqdm.update = update
    tqdm.std.tqdm.set_postfix = set_postfix

    started = time.perf_counter()
    sys.argv = script_argv
    sys.path.insert(0, os.getcwd())
    try:
        runpy.run_path(script_argv[0], run_name="__main__")
    except SystemExit as exc:
        if exc.code not in (0, None):
            state["error"] = f"SystemExit({exc.code})"
    except BaseException as exc:  # reported in the result, then re-raised as a failed exit
        state["error"] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    finally:
        if flop_mode["mode"] is not None:
            flop_mode["mode"].__exit__(None, None, None)
        write_result(result_path, state, started, cuda, first_timed, last_timed)
    return 1 if state["error"] else 0


def step_durations(state: dict, cuda: bool, first: int, last: int) -> list[float]:
    """Seconds of steps first+1..last from consecutive step-end marks (CUDA events when there are any)."""
    marks = state["events"] if cuda else state["host"]
    if len(marks) < last:
        return []
    if cuda:
        torch = sys.modules["torch"]
        torch.cuda.synchronize()
        return [marks[i - 1].elapsed_time(marks[i]) / 1000 for i in range(first, last)]
    return [marks[i] - marks[i - 1] for i in range(first, last)]


def write_result(path: str, state: dict, started: float, cuda: bool, first: int, last: int) -> None:
    out = {
        "steps_seen": len(state["host"]),
        "step_s": step_durations(state, cuda, first, last) if first > 0 else [],
        "flops_step": state["flops"],
        "avr_loss": state["avr_loss"][-1] if state["avr_loss"] else None,
        "error": state["error"],
        "wall_s": time.perf_counter() - started,
        "trace": state["trace"],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if cuda:
        torch = sys.modules["torch"]
        pre, steps = state["pre_peak"], state["steps_peak"]
        out.update(
            peak_alloc_steps_mib=steps.get("alloc", 0) / 2**20 or None,
            peak_reserved_steps_mib=steps.get("reserved", 0) / 2**20 or None,
            # the peaks were reset when the timed steps began: the whole run's is the larger of before and since
            peak_alloc_run_mib=max(pre.get("alloc", 0), torch.cuda.max_memory_allocated()) / 2**20,
            peak_reserved_run_mib=max(pre.get("reserved", 0), torch.cuda.max_memory_reserved()) / 2**20,
        )
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(out, handle)


def export_profile(prof, prefix: str, cuda: bool) -> dict:
    """The one-step trace as gzipped chrome-trace JSON and the top kernels as a text table."""
    raw = prefix + ".json"
    prof.export_chrome_trace(raw)
    with open(raw, "rb") as src, gzip.open(raw + ".gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.remove(raw)
    averages = prof.key_averages()
    table = None
    for key in ("self_device_time_total", "self_cuda_time_total") if cuda else ("self_cpu_time_total",):
        try:
            table = averages.table(sort_by=key, row_limit=45)
            break
        except (AttributeError, KeyError, ValueError):
            continue
    with open(prefix + ".txt", "w", encoding="utf-8") as handle:
        handle.write(table or str(averages))
    return {"trace": raw + ".gz", "table": prefix + ".txt"}


if __name__ == "__main__":
    sys.exit(main())
