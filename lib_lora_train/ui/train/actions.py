"""What the Train Tools tab's buttons do, as plain functions over the project store and the job runner (no gradio),
so that they are tested without a browser. Each returns values for the tab to show; errors come back as messages."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, get_type_hints

from lib_lora_train import settings as S
from lib_lora_train.settings import SettingsError, TrainSettings
from lib_lora_train.train.plan import FolderPlan, apply_repeats, plan_steps, split_repeat_folder
from lib_lora_train.ui.train.jobs import JobBusy, JobRunner, JobStatus, TrainJob

CHOICES = S.CHOICES
# shown unfolded; every other engine option sits in the "Advanced" accordion
BASIC = ("network", "rank", "alpha", "resolution", "epochs", "batch_size", "unet_lr", "te_lr", "save_every",
         "sample_every", "sample_prompts", "seed")  # fmt: skip
FIELD_NAMES = tuple(f.name for f in dataclasses.fields(TrainSettings))
# the "Advanced" accordion, folded again by topic so that ~60 options stay findable; a field not named here (a
# setting added later) lands in "Other", so none is ever unreachable from the form
ADVANCED_GROUPS = {
    "Network": ("conv_rank", "conv_alpha", "dora_wd", "network_dropout", "rank_dropout", "module_dropout"),
    "Continue from a LoRA": ("network_weights", "dim_from_weights"),
    "Block-wise learning rates and ranks": ("down_lr_weight", "mid_lr_weight", "up_lr_weight", "block_dims",
                                            "block_alphas", "conv_block_dims", "conv_block_alphas"),
    "Data, buckets and captions": ("caption_extension", "default_repeats", "enable_buckets", "min_bucket_side",
                                   "max_bucket_side", "bucket_step", "bucket_no_upscale", "shuffle_tags",
                                   "keep_tokens", "caption_dropout", "tag_dropout", "flip"),
    "Regularisation images and masks": ("reg_data_dir", "prior_loss_weight", "masked_loss", "mask_dir"),
    "Optimiser and schedule": ("max_steps", "grad_accum", "optimizer", "weight_decay", "max_grad_norm",
                               "lr_scheduler", "lr_warmup", "lr_cycles", "lr_power"),
    "Noise and loss": ("noise_offset", "min_snr_gamma", "multires_noise_iterations", "multires_noise_discount",
                       "ip_noise_gamma", "debiased_estimation_loss", "zero_terminal_snr", "v_parameterization",
                       "loss_type", "huber_schedule", "huber_c", "min_timestep", "max_timestep"),
    "Precision, memory and saving": ("mixed_precision", "gradient_checkpointing", "cache_latents", "clip_skip",
                                     "save_precision", "save_state", "sample_steps", "output_name", "comment"),
}  # fmt: skip


def advanced_groups() -> dict[str, tuple[str, ...]]:
    """ADVANCED_GROUPS plus "Other" for any field that is neither basic nor grouped."""
    grouped = {name for names in ADVANCED_GROUPS.values() for name in names} | set(BASIC)
    rest = tuple(name for name in FIELD_NAMES if name not in grouped)
    return {**ADVANCED_GROUPS, **({"Other": rest} if rest else {})}
# "int", "float", "bool", "str", "list[str]": what each field's form widget is (str(int) would be "<class 'int'>")
FIELD_TYPES = {name: hint.__name__ if isinstance(hint, type) else str(hint)
               for name, hint in get_type_hints(TrainSettings).items()}  # fmt: skip


def table_rows(table: Any) -> list[list[Any]]:
    """A gradio Dataframe's value (a pandas DataFrame in gradio 3.41, lists elsewhere) as a list of rows."""
    if table is None:
        return []
    if hasattr(table, "values") and hasattr(table, "columns"):
        return table.values.tolist()
    return list(table)


def settings_from_values(values: list[Any]) -> TrainSettings:
    """The settings form (values in ``FIELD_NAMES`` order) -> validated settings; SettingsError names the field."""
    data = dict(zip(FIELD_NAMES, values, strict=True))
    for name, kind in FIELD_TYPES.items():
        if kind == "int" and isinstance(data[name], float):
            data[name] = int(data[name]) if data[name].is_integer() else data[name]
    return TrainSettings.from_dict(data)


def values_from_settings(settings: TrainSettings) -> list[Any]:
    """Settings -> form values (lists shown one per line)."""
    data = settings.to_dict()
    return ["\n".join(data[n]) if isinstance(data[n], list) else data[n] for n in FIELD_NAMES]


def scan_folders(folder: str, default_repeats: int = 1) -> list[list[Any]]:
    """Rows ``[folder, images, repeats]`` for the repeats table: each first-level sub-folder, or the folder itself."""
    from lib_lora_train.dataset.scan import scan_dataset

    scan = scan_dataset(Path(folder), default_repeats=default_repeats)
    return [[name, d["img_count"], d["n_repeats"]] for name, d in scan.dataset_dirs.items()]


def step_summary(rows: list[list[Any]], batch_size: float, epochs: float, grad_accum: float = 1,
                 max_steps: float = 0, reg_data_dir: str = "") -> str:  # fmt: skip
    """The live step calculator's text."""
    folders = []
    for row in table_rows(rows):
        try:
            folders.append(FolderPlan(str(row[0]), int(row[1]), max(1, int(row[2]))))
        except (TypeError, ValueError, IndexError):
            continue
    reg_images = _count_reg_images(reg_data_dir)
    plan = plan_steps(folders, batch_size=int(batch_size or 1), epochs=int(epochs or 1),
                      grad_accum=int(grad_accum or 1), max_steps=int(max_steps or 0),
                      reg_images=reg_images)  # fmt: skip
    reg = ""
    if plan.reg_per_epoch:
        reg = f" + **{plan.reg_per_epoch}** regularisation samples (from {reg_images} class images)"
    elif (reg_data_dir or "").strip():
        reg = " (no class images found in reg_data_dir)"
    return (
        f"**{plan.per_epoch_images}** images × repeats per epoch{reg} → **{plan.steps_per_epoch}** steps per epoch, "
        f"**{plan.total_steps}** steps over {plan.epochs} epochs. {plan.advice}."
    )


def _count_reg_images(folder: str) -> int:
    from lib_lora_train.images import iter_image_files

    path = Path((folder or "").strip()).expanduser()
    if not str(folder or "").strip() or not path.is_dir():
        return 0
    return sum(1 for _ in iter_image_files(path))


def repeats_by_folder(rows: list[list[Any]]) -> dict[str, int]:
    """Repeats table -> {bare folder name: repeats} for ``apply_repeats``."""
    table = {}
    for row in table_rows(rows):
        try:
            table[split_repeat_folder(str(row[0]))[1]] = max(1, int(row[2]))
        except (TypeError, ValueError, IndexError):
            continue
    return table


def start_job(runner: JobRunner, store, project: str, version: str, folder: str, rows, settings: TrainSettings,
              *, task_id: str | None = None, base_model: str = "", restore_model: bool = True,
              compare_after: bool = False) -> tuple[bool, str]:  # fmt: skip
    """Snapshot the dataset with the table's repeats and start training; (started, a message for the status).

    ``base_model`` is already resolved (``services.resolve_base_model``); "" trains on the loaded model."""
    if not project or not version:
        return False, "Pick or create a project and a version first."
    folder = (folder or "").strip()
    try:
        from lib_lora_train.train.preflight import check_environment

        existing = store.version(project, version).dataset if store.has_version(project, version) else None
        check_environment(settings, folder or existing)  # before the version folder is made
        paths = store.version(project, version) if store.has_version(project, version) else None
        if paths is None:
            paths = store.create_version(project, version)
        if folder:
            paths.snapshot_dataset(folder)
        repeats = repeats_by_folder(rows)
        if repeats and paths.dataset.is_dir():
            apply_repeats(paths.dataset, repeats)
        job = TrainJob(project, version, settings, None, base_model=base_model, restore_model=restore_model,
                       compare_after=compare_after)  # fmt: skip
        runner.start(job, task_id=task_id)
    except (JobBusy, SettingsError, ValueError, OSError) as exc:
        return False, f"Not started: {exc}"
    return True, f"Training {project}/{version}…"


def status_markdown(status: JobStatus) -> str:
    """One status line: state, step/total, epoch, loss, speed, ETA and memory, last message."""
    if status.state == "idle":
        return "No training job has run since the WebUI started."
    parts = [f"**{status.state}** {status.project}/{status.version}", f"step {status.step}/{status.total}",
             f"epoch {status.epoch}/{status.total_epochs}"]  # fmt: skip
    if status.loss_avg is not None:
        parts.append(f"loss {status.loss_avg:.4f}")
    if status.it_per_s:
        parts.append(f"{status.it_per_s:.2f} it/s")
    if status.eta_s and status.state == "running":
        parts.append(f"ETA {int(status.eta_s) // 60}:{int(status.eta_s) % 60:02d}")
    if status.memory and status.state == "running":
        parts.append(status.memory)
    text = " · ".join(parts)
    if status.total:  # a bar of its own, so that progress shows on hosts without the WebUI's progress bar too
        done = min(status.step, status.total) / status.total
        text += f"\n\n`{'█' * round(done * 30)}{'░' * (30 - round(done * 30))}` {done:.0%}"
    return text + (f"\n\n{status.message}" if status.message else "")


def checkpoint_rows(store, project: str, version: str) -> list[list[Any]]:
    """``[file, epoch, steps, rank/alpha, network, lora tag]`` for each checkpoint of a version, from its metadata."""
    if not project or not version or not store.has_version(project, version):
        return []
    rows = []
    paths = store.version(project, version)
    files = [*paths.list_checkpoints(), *(("partial", p) for p in paths.list_partial())]
    for epoch, path in files:
        meta = read_metadata(path)
        # a partial file is not published, so no <lora:…> of it would work in the host's prompts
        use = "(partial: not published)" if epoch == "partial" else f"<lora:{path.stem}:0.8>"
        rows.append([
            path.name, epoch if epoch is not None else "final", meta.get("ss_steps", ""),
            f"{meta.get('ss_network_dim', '?')}/{meta.get('ss_network_alpha', '?')}",
            meta.get("ss_network_module", ""), use,
        ])  # fmt: skip
    return rows


def read_metadata(path: Path) -> dict[str, str]:
    """A safetensors file's metadata, read from the header only; {} when unreadable."""
    try:
        with open(path, "rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            if not 0 < length < 100_000_000:
                return {}
            return json.loads(handle.read(length)).get("__metadata__", {}) or {}
    except (OSError, ValueError):
        return {}
