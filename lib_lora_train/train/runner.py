"""``train_version``: one training run of a project version on a host, from dataset scan to the final LoRA file.

The host's model is borrowed: every exit path (done, stopped, exception) takes the adapters out, restores flags,
gradient checkpointing, clip skip and the global RNG, and checks that the module tree is exactly as it was.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lib_lora_train.host import TrainingHost
from lib_lora_train.store.logs import LossLog
from lib_lora_train.train.adapters import inject_adapters
from lib_lora_train.train.blocks import unet_param_groups
from lib_lora_train.train.distributed import SOLO, Group
from lib_lora_train.train.events import ProgressEvent
from lib_lora_train.train.latents import LatentCache
from lib_lora_train.train.loop import LoopContext, run_loop
from lib_lora_train.train.noise import derived_seed
from lib_lora_train.train.optimizers import build_optimizer
from lib_lora_train.train.precision import fast_kernels, make_scaler, resolve_precision
from lib_lora_train.train.preflight import check_environment, check_model
from lib_lora_train.train.runlog import run_log
from lib_lora_train.train.saving import render_and_save_samples, sample_requests, save_checkpoint
from lib_lora_train.train.schedulers import build_scheduler
from lib_lora_train.train.start_weights import open_start_weights
from lib_lora_train.train.state import load_training_state, save_training_state
from lib_lora_train.train.tree_guard import TreeSnapshot

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    status: str  # "done" | "stopped" | "error"
    checkpoints: list[Path] = field(default_factory=list)
    steps: int = 0
    final_loss: float | None = None
    message: str = ""


def state_folder(version) -> Path:
    """Where ``save_state`` keeps the resumable state of a version."""
    return Path(version.path) / "state"


def plan_length(settings, steps_per_epoch: int) -> tuple[int, int]:
    """(total optimiser steps, total epochs): max_steps wins over epochs when set."""
    if settings.max_steps > 0:
        return settings.max_steps, math.ceil(settings.max_steps / steps_per_epoch)
    return settings.epochs * steps_per_epoch, settings.epochs


def train_version(
    host: TrainingHost,
    settings,
    version,
    *,
    dataset_dir: Path | None = None,
    resume: bool = False,
    group: Group = SOLO,
) -> TrainResult:
    """Train ``version`` (a store VersionPaths) on ``host`` with ``settings``; see the module docstring.

    With ``group`` (a data-parallel run, ``train.distributed``) this process trains its shard of every batch and
    only rank 0 writes files (checkpoints, state, samples, loss and run logs).
    """
    result = TrainResult("error")
    with run_log(Path(version.logs) / "run.log") if group.is_main else contextlib.nullcontext():
        try:
            with host.training_session():
                result = host.run_exclusive(lambda: _train(host, settings, version, dataset_dir, resume, result, group))
        except Exception as exc:  # reported, not raised: the UI shows the message, the log keeps the traceback
            log.error("training failed: %s\n%s", exc, traceback.format_exc())
            result.status = "error"
            result.message = f"{type(exc).__name__}: {exc}"
            host.report(ProgressEvent("error", result.steps, message=result.message))
    return result


def _train(host, settings, version, dataset_dir, resume, result: TrainResult, group: Group = SOLO) -> TrainResult:
    from lib_lora_train.dataset.scan import scan_dataset

    root = Path(dataset_dir) if dataset_dir is not None else Path(version.dataset)
    scan = scan_dataset(root, caption_extension=settings.caption_extension, default_repeats=settings.default_repeats)
    for problem in scan.problems:
        _report_problem(host, problem)
    parts = host.model_parts()
    check_environment(settings, root)
    check_model(settings, parts)  # before a single module of the host is touched
    start = open_start_weights(settings, parts)  # network_weights: the file's shape under dim_from_weights
    settings = start.settings if start is not None else settings
    if group.is_main and hasattr(version, "update_info"):
        # which model this version trained on, beside its settings (the files' ss_sd_model_* say it too)
        version.update_info(base_model={"name": parts.model_name, "hash": parts.model_hash, "arch": parts.arch})
    train_unet, train_te = settings.unet_lr > 0, settings.te_lr > 0
    precision = resolve_precision(settings.mixed_precision, parts.device, parts.weight_dtype)
    if precision.note:
        _say(host, precision.note)
    snapshots = [(t.module, TreeSnapshot.take(t.module)) for t in [parts.unet, *parts.text_encoders]]
    undo: list = []
    handle = None
    try:
        devices = [parts.device] if parts.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), fast_kernels(parts.device):
            for module, _ in snapshots:
                module.requires_grad_(False)
            if settings.clip_skip and settings.clip_skip != parts.clip_skip:
                undo.append(host.use_clip_skip(settings.clip_skip))
            cache_folder = Path(version.path) / "cache" / "latents"
            feed_cache = LatentCache(settings.cache_latents, cache_folder if settings.cache_latents == "disk" else None)
            from lib_lora_train.train.batches import BatchFeed

            reg_scan = _reg_images(host, settings)
            feed = BatchFeed(host, scan, settings, feed_cache, reg_scan, world=group.world)
            doing = "caching latents of" if settings.cache_latents != "none" else "checking"
            _say(host, f"{doing} {len(feed.items)} images")
            feed.precache(on_skip=lambda problem: _report_problem(host, problem))
            if settings.masked_loss:
                _say(host, feed.mask_summary())
            # peft draws the initial lora_down weights from the global generator: seed it for reproducible runs
            torch.manual_seed(derived_seed(settings.seed, "init"))
            handle = inject_adapters(parts, settings, train_unet=train_unet, train_te=train_te,
                                     module_ranks=start.ranks if start is not None else None)  # fmt: skip
            for line in handle.summary():
                _say(host, line)
            if start is not None and not resume:  # a resumed run's state holds its weights
                for line in start.load(handle):
                    _say(host, line)
            undo.append(host.set_gradient_checkpointing(settings.gradient_checkpointing))
            for module, _ in snapshots:
                module.train()
            groups = unet_param_groups(handle.params_by_path("unet"), handle.block_plan, settings.unet_lr)
            if train_te:
                groups.append({"params": handle.parameters("te"), "lr": settings.te_lr})
            groups = [g for g in groups if g["params"]]
            optimizer = build_optimizer(settings.optimizer, groups, weight_decay=settings.weight_decay)
            total_steps, total_epochs = plan_length(settings, feed.steps_per_epoch)
            scheduler = build_scheduler(optimizer, settings, total_steps)
            scaler = make_scaler(precision, parts.device)
            named = handle.named_parameters()
            start = 0
            if resume:
                point = load_training_state(
                    state_folder(version), params=named, optimizer=optimizer, scheduler=scheduler, scaler=scaler
                )
                start = point.step
                _say(host, f"resuming at step {start}")
            ctx = LoopContext(
                host,
                parts,
                settings,
                feed,
                optimizer,
                scheduler,
                scaler,
                precision,
                [p for g in groups for p in g["params"]],
                train_te,
                total_steps,
                total_epochs,
                loss_read_every=1 if parts.device.type == "cpu" else 10,
                group=group,
            )
            started_at = time.time()
            output_name = settings.output_name or version.output_name
            host.report(
                ProgressEvent(
                    "start",
                    start,
                    total_steps,
                    start // feed.steps_per_epoch,
                    total_epochs,
                    message=f"{len(named)} adapter tensors",
                )
            )

            saved_at = {"step": start}

            def save(epoch: int | None, step: int, path: Path | None = None) -> None:
                path = path or version.checkpoint_file(epoch)
                shown = epoch if epoch is not None else total_epochs
                save_checkpoint(
                    path,
                    handle,
                    parts,
                    settings,
                    scan,
                    output_name=output_name,
                    epoch=shown,
                    num_epochs=total_epochs,
                    steps=step,
                    started_at=started_at,
                    max_train_steps=total_steps,
                    num_batches_per_epoch=feed.batches_per_epoch,
                    mixed_precision=precision.name,
                    world_size=group.world,
                    reg_scan=reg_scan,
                )
                saved_at["step"] = step
                result.checkpoints.append(Path(path))
                host.report(ProgressEvent("checkpoint", step, total_steps, shown, total_epochs, path=str(path)))

            def save_state(step: int) -> None:
                save_training_state(
                    state_folder(version),
                    params=named,
                    optimizer=optimizer,
                    scheduler=scheduler,
                    scaler=scaler,
                    step=step,
                    epoch=step // feed.steps_per_epoch,
                )

            def on_epoch_end(epoch: int, step: int) -> None:
                last = step == total_steps
                host.report(ProgressEvent("epoch", step, total_steps, epoch, total_epochs))
                if not group.is_main:
                    return
                if last:
                    save(None, step)
                elif settings.save_every and epoch % settings.save_every == 0:
                    save(epoch, step)
                # the last epoch keeps its state too, so that a finished run can be extended with more epochs
                if settings.save_state and (last or not settings.save_every or epoch % settings.save_every == 0):
                    save_state(step)
                if settings.sample_every and settings.sample_prompts and (epoch % settings.sample_every == 0 or last):
                    _samples(host, snapshots, settings, version, epoch, step, total_steps, parts.model_name,
                             output_name)  # fmt: skip

            with LossLog(version.loss_log) if group.is_main else contextlib.nullcontext() as loss_log:
                write = (lambda rows: [loss_log.append(*r) for r in rows]) if group.is_main else (lambda rows: None)
                outcome = run_loop(ctx, start, on_epoch_end=on_epoch_end, on_losses=write)
            result.steps, result.final_loss = outcome.steps, outcome.last_loss
            if outcome.status == "stopped":
                if settings.save_state and group.is_main:
                    save_state(outcome.steps)
                if outcome.steps > saved_at["step"] and group.is_main:
                    # what was trained since the last save is kept, under a name no loader mistakes for an epoch
                    save(outcome.steps // feed.steps_per_epoch, outcome.steps, version.partial_file(outcome.steps))
                result.status, result.message = "stopped", f"stopped at step {outcome.steps} of {total_steps}"
                host.report(ProgressEvent("stopped", outcome.steps, total_steps, message=result.message))
            else:
                result.status, result.message = "done", f"trained {outcome.steps} steps"
                host.report(
                    ProgressEvent(
                        "done",
                        outcome.steps,
                        total_steps,
                        total_epochs,
                        total_epochs,
                        outcome.last_loss,
                        path=str(result.checkpoints[-1]) if result.checkpoints else "",
                    )
                )
    finally:
        _restore(handle, undo, snapshots)
    return result


def _reg_images(host, settings):
    """The regularisation images' scan (None without reg_data_dir), its problems reported like the dataset's."""
    if not settings.reg_data_dir.strip():
        return None
    from lib_lora_train.dataset.reg_images import scan_reg_images

    reg = scan_reg_images(settings.reg_data_dir, caption_extension=settings.caption_extension,
                          default_repeats=settings.default_repeats)  # fmt: skip
    for problem in reg.problems:
        _report_problem(host, problem)
    _say(host, f"{len(reg.items)} regularisation images from {settings.reg_data_dir} "
         f"(prior_loss_weight {settings.prior_loss_weight:g})")  # fmt: skip
    return reg


def _say(host, message: str) -> None:
    """A line for the run log (logs/run.log) and the UI alike."""
    log.info("%s", message)
    host.report(ProgressEvent("log", message=message))


def _report_problem(host, problem) -> None:
    """A dataset problem (found by the scan, or an image that failed to decode) into the run log and the UI."""
    host.report(ProgressEvent("log", message=str(problem)))
    log.warning("%s", problem)


def _samples(host, snapshots, settings, version, epoch: int, step: int, total_steps: int, model_name: str,
             output_name: str) -> None:  # fmt: skip
    for module, _ in snapshots:
        module.eval()
    try:
        paths = render_and_save_samples(host, sample_requests(settings), Path(version.samples), epoch,
                                        model_name=model_name, output_name=output_name)  # fmt: skip
    finally:
        for module, _ in snapshots:
            module.train()
    for path in paths:
        host.report(ProgressEvent("sample", step, total_steps, epoch, path=str(path)))


def _restore(handle, undo: list, snapshots) -> None:
    """Undo in reverse order; adapters out before the flags, then prove each tree is as it was."""
    errors = []
    for fn in reversed(undo):
        try:
            fn()
        except Exception as exc:  # keep restoring the rest
            errors.append(f"{exc}")
    if handle is not None:
        try:
            handle.remove()
        except Exception as exc:
            errors.append(f"{exc}")
    problems = []
    for module, snapshot in snapshots:
        snapshot.restore_flags(module)
        problems += snapshot.differences(module)
    if errors or problems:
        raise RuntimeError("could not restore the host's model: " + "; ".join((errors + problems)[:5]))
