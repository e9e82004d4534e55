"""Command line: ``python -m lib_lora_train train --dataset DIR --base MODEL --project NAME --version NAME [...]``,
and ``python -m lib_lora_train ui [--base MODEL]`` for the standalone app (``lib_lora_train.standalone.app``).

Every TrainSettings field is an option (``rank`` -> ``--rank``, ``te_lr`` -> ``--te-lr``), generated from the
dataclass so that no setting is unreachable; ``--settings config.json`` loads a saved config, and options given on
the command line override it. The run goes into ``<outputs>/<project>/versions/<version>/`` of the project store.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
from pathlib import Path
from typing import Any, get_type_hints

from lib_lora_train import settings as S
from lib_lora_train.settings import SettingsError, TrainSettings

DEFAULT_OUTPUTS = "outputs/train_tools"

CHOICES = {
    "network": S.NETWORKS,
    "optimizer": S.OPTIMIZERS,
    "lr_scheduler": S.SCHEDULERS,
    "mixed_precision": S.PRECISIONS,
    "save_precision": S.SAVE_PRECISIONS,
    "cache_latents": S.LATENT_CACHE,
}

HELP = {
    "network": "adapter type: lora (linear layers), locon (+3x3 convs), loha, lokr",
    "rank": "network rank (dim)",
    "alpha": "network alpha; the update is scaled by alpha/rank",
    "conv_rank": "rank of the 3x3 convolutions (locon/loha/lokr)",
    "conv_alpha": "alpha of the 3x3 convolutions",
    "resolution": "training resolution in px (a multiple of 64)",
    "epochs": "number of epochs",
    "max_steps": "stop after this many optimiser steps (overrides --epochs when > 0)",
    "save_every": "save a checkpoint every N epochs (0 = only the final file)",
    "unet_lr": "UNet learning rate (0 = do not train the UNet)",
    "te_lr": "text-encoder learning rate (0 = do not train the text encoder)",
    "lr_warmup": "warmup: a fraction of all steps (< 1) or a number of steps",
    "lr_cycles": "restarts of cosine_with_restarts",
    "grad_accum": "gradient accumulation steps",
    "mixed_precision": "autocast precision (fp16 falls back to fp32 on the CPU)",
    "cache_latents": "encode the images once and keep the latents in memory or on disk",
    "min_snr_gamma": "min-SNR-gamma loss weighting (0 = off, 5 is usual)",
    "clip_skip": "clip skip to train with (0 = the model's own, 1 = last layer, 2 = penultimate)",
    "save_state": "also save optimiser state so the run can be resumed with --resume",
    "sample_every": "render the sample prompts every N epochs (0 = never)",
    "sample_prompts": "prompts for the samples ('prompt --n negative' for a negative prompt)",
    "seed": "seed: the same seed and settings give the same weights",
}


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per TrainSettings field, default None so that only what the user typed overrides --settings."""
    hints = get_type_hints(TrainSettings)
    group = parser.add_argument_group("training settings (see README; defaults in brackets)")
    for f in dataclasses.fields(TrainSettings):
        hint = hints[f.name].__name__ if isinstance(hints[f.name], type) else str(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        text = f"{HELP.get(f.name, f.name.replace('_', ' '))} [{default!r}]"
        kwargs: dict[str, Any] = {"dest": f.name, "default": None, "help": text}
        if hint == "bool" or hints[f.name] is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif hint.startswith("list"):
            kwargs["nargs"] = "+"
            kwargs["metavar"] = "TEXT"
        else:
            kwargs["type"] = {"int": int, "float": float}.get(hint, str)
            if f.name in CHOICES:
                kwargs["choices"] = CHOICES[f.name]
            else:
                kwargs["metavar"] = {"int": "N", "float": "X"}.get(hint, "TEXT")
        group.add_argument(_option(f.name), **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lib_lora_train", description="LoRA Train Tools, command line")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a LoRA from a dataset folder on a base model")
    train.add_argument("--dataset", type=Path, help="folder of images + captions (kohya N_name folders give repeats)")
    train.add_argument(
        "--base", type=Path, required=True, help="base model: a diffusers folder or a .safetensors checkpoint"
    )
    train.add_argument("--project", required=True, help="project name")
    train.add_argument("--version", required=True, help="version name")
    train.add_argument("--outputs", type=Path, default=Path(DEFAULT_OUTPUTS), help=f"store folder [{DEFAULT_OUTPUTS}]")
    train.add_argument("--settings", type=Path, help="a config.json of TrainSettings; options given here override it")
    train.add_argument("--resume", action="store_true", help="continue the version's saved state (needs --save-state)")
    train.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... [auto]")
    add_settings_arguments(train)
    ui = commands.add_parser("ui", help="the four tabs in a standalone web app (no WebUI needed)")
    from lib_lora_train.standalone.app import add_arguments

    add_arguments(ui)
    return parser


def settings_from_args(args: argparse.Namespace, base: dict[str, Any] | None = None) -> TrainSettings:
    """``base`` (a resumed version's config), then the --settings file, then every option the user gave.

    Raises SettingsError on bad values.
    """
    data: dict[str, Any] = dict(base or {})
    if args.settings is not None:
        try:
            data.update(json.loads(Path(args.settings).read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:
            raise SettingsError("settings", f"{args.settings}: cannot read it as JSON ({exc})") from None
    for f in dataclasses.fields(TrainSettings):
        value = getattr(args, f.name, None)
        if value is not None:
            data[f.name] = value
    return TrainSettings.from_dict(data)


class _ProgressPrinter:
    """A tqdm bar fed from ProgressEvents; other events are printed above it."""

    def __init__(self) -> None:
        self.bar = None

    def __call__(self, event: Any) -> None:
        from tqdm import tqdm

        if event.kind == "step":
            if self.bar is None:
                self.bar = tqdm(total=event.total_steps, initial=event.step - 1, unit="step", dynamic_ncols=True)
            self.bar.update(event.step - self.bar.n)
            post = {"epoch": f"{event.epoch}/{event.total_epochs}"}
            if event.loss_avg is not None:
                post["loss"] = f"{event.loss_avg:.4f}"
            if event.lr is not None:
                post["lr"] = f"{event.lr:.2e}"
            self.bar.set_postfix(post, refresh=False)
        elif event.kind in ("checkpoint", "sample"):
            self._write(f"{event.kind}: {event.path}")
        elif event.kind in ("log", "start", "stopped", "error") and event.message:
            self._write(f"{event.kind}: {event.message}")

    def _write(self, text: str) -> None:
        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_train(args: argparse.Namespace) -> int:
    import torch

    from lib_lora_train.hosts.diffusers_host import DiffusersHost
    from lib_lora_train.store.names import StoreError
    from lib_lora_train.store.projects import ProjectStore
    from lib_lora_train.train.runner import train_version

    try:
        store = ProjectStore(args.outputs)
        if args.resume:
            # a resumed run continues with the settings it was started with; options given now still override
            version = store.version(args.project, args.version)
            base = version.load_settings().to_dict() if version.config.exists() else None
            settings = settings_from_args(args, base)
        else:
            settings = settings_from_args(args)
            if args.dataset is None:
                raise SettingsError("dataset", "give --dataset DIR (a folder of images with .txt captions)")
            version = store.create_version(args.project, args.version)
            version.snapshot_dataset(args.dataset)
        version.save_settings(settings)
    except (SettingsError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    device = torch.device(
        "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device.replace("auto", "cpu")
    )
    dtype = (
        {"fp16": torch.float16, "bf16": torch.bfloat16}.get(settings.mixed_precision) if device.type == "cuda" else None
    )
    stop = {"requested": False}

    def on_sigint(signum, frame):  # first Ctrl+C: stop after the current step; second: abort
        if stop["requested"]:
            raise KeyboardInterrupt
        stop["requested"] = True
        print("\nstopping after this step (Ctrl+C again to abort)", file=sys.stderr)

    printer = _ProgressPrinter()
    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        print(f"loading {args.base}", file=sys.stderr)
        host = DiffusersHost.from_path(
            args.base, device=device, dtype=dtype, on_event=printer, stop_requested=lambda: stop["requested"]
        )
        host.events = _NoHistory()
        result = train_version(host, settings, version, resume=args.resume)
    except (FileNotFoundError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, previous)
        printer.close()
    print(f"{result.status}: {result.message}")
    for path in result.checkpoints:
        print(f"  {path}")
    print(f"version folder: {version.path}")
    return {"done": 0, "stopped": 130}.get(result.status, 1)


class _NoHistory(list):
    """The CLI streams events to the progress bar; it keeps no history of them."""

    def append(self, item: Any) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "train":
        return run_train(args)
    if args.command == "ui":
        from lib_lora_train.standalone.app import main as serve_ui

        return serve_ui(args)
    return 2
