"""Command line: ``python -m lib_lora_train train --dataset DIR --base MODEL --project NAME --version NAME [...]``,
and ``python -m lib_lora_train ui [--base MODEL]`` for the standalone app (``lib_lora_train.standalone.app``).

Every TrainSettings field is an option (``cli_settings``: ``rank`` -> ``--rank``, ``te_lr`` -> ``--te-lr``), generated from the
dataclass so that no setting is unreachable; ``--settings config.json`` loads a saved config, and options given on
the command line override it. The run goes into ``<outputs>/<project>/versions/<version>/`` of the project store.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

from lib_lora_train.cli_settings import add_settings_arguments, settings_from_args
from lib_lora_train.settings import SettingsError, TrainSettings

DEFAULT_OUTPUTS = "outputs/train_tools"

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lib_lora_train", description="LoRA Train Tools, command line")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a LoRA from a dataset folder on a base model")
    train.add_argument("--dataset", type=Path, help="folder of images + captions (kohya N_name folders give "
                       "repeats); needed for a new version, not with --resume")  # fmt: skip
    train.add_argument(
        "--base", type=Path, required=True, help="base model: a diffusers folder or a .safetensors checkpoint"
    )
    train.add_argument("--project", required=True, help="project name")
    train.add_argument("--version", required=True, help="version name")
    train.add_argument("--outputs", type=Path, default=Path(DEFAULT_OUTPUTS), help=f"store folder [{DEFAULT_OUTPUTS}]")
    train.add_argument("--settings", type=Path, help="a config.json of TrainSettings; options given here override it")
    train.add_argument("--resume", action="store_true",
                       help="continue (or extend with more --epochs) a version trained with --save-state")  # fmt: skip
    train.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... [auto]")
    add_settings_arguments(train)
    versions = commands.add_parser("versions", help="list the projects and versions of a store, or move one to the "
                                   "trash")  # fmt: skip
    versions.add_argument("action", nargs="?", choices=("list", "delete"), default="list", help="[list]")
    versions.add_argument("project", nargs="?", help="project name (list: only this project)")
    versions.add_argument("version", nargs="?", help="version name (delete)")
    versions.add_argument(
        "--outputs", type=Path, default=Path(DEFAULT_OUTPUTS), help=f"store folder [{DEFAULT_OUTPUTS}]"
    )
    bootstrap = commands.add_parser("bootstrap", help="the bootstrap loop unattended: a few images (or one, cut "
                                    "into crops) grown round by round into a character LoRA")  # fmt: skip
    from lib_lora_train.standalone.bootstrap_cli import add_arguments as add_bootstrap_arguments

    add_bootstrap_arguments(bootstrap)
    ui = commands.add_parser("ui", help="the four tabs in a standalone web app (no WebUI needed)")
    from lib_lora_train.standalone.app import add_arguments

    add_arguments(ui)
    return parser


class _ProgressPrinter:
    """A tqdm bar fed from ProgressEvents; other events are printed above it."""

    def __init__(self) -> None:
        self.bar = None

    def __call__(self, event: Any) -> None:
        from tqdm import tqdm

        if event.kind == "step":
            if self.bar is None:
                self.bar = tqdm(total=event.total_steps, initial=event.step - 1, unit="step", dynamic_ncols=True)
            post = {"epoch": f"{event.epoch}/{event.total_epochs}"}
            if event.loss_avg is not None:
                post["loss"] = f"{event.loss_avg:.4f}"
            if event.lr is not None:
                post["lr"] = f"{event.lr:.2e}"
            if event.memory:
                post["mem"] = event.memory.split(" (")[0]
            self.bar.set_postfix(post, refresh=False)  # before the update, which draws the bar with it
            self.bar.update(event.step - self.bar.n)
        elif event.kind in ("checkpoint", "sample"):
            self._write(f"{event.kind}: {event.path}")
        elif event.kind in ("log", "start") and event.message:  # stopped/error: the closing line says it once
            self._write(f"{event.kind}: {event.message}")

    def _write(self, text: str) -> None:
        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def check_device(name: str):
    """``--device`` -> a torch.device this torch can use; SettingsError saying what the build lacks otherwise."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise SettingsError("device", f"--device {name!r} is not a device; use cpu, cuda, cuda:1 or auto") from None
    if device.type == "cuda":
        if not torch.backends.cuda.is_built():
            raise SettingsError("device", f"--device {name}: this torch ({torch.__version__}) is a CPU build without "
                                "CUDA; use --device cpu, or install a CUDA build of torch")  # fmt: skip
        if not torch.cuda.is_available():
            raise SettingsError("device", f"--device {name}: torch has CUDA but sees no GPU (driver or "
                                "CUDA_VISIBLE_DEVICES); use --device cpu")  # fmt: skip
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SettingsError("device", f"--device {name}: there are {torch.cuda.device_count()} GPU(s) (cuda:0…)")
    elif device.type != "cpu":
        raise SettingsError("device", f"--device {name}: only cpu and cuda are supported")
    return device


def check_base(path: Path) -> None:
    """The base model exists and is one (a LoRA, a VAE or a broken file is named as such); SettingsError if not."""
    from lib_lora_train.hosts.single_file import CheckpointError, inspect_checkpoint

    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise SettingsError("base", f"{path}: not a diffusers model folder (no model_index.json)")
        return
    if not path.is_file():
        raise SettingsError("base", f"{path}: no such model folder or checkpoint file; pass --base a diffusers "
                            "folder or a .safetensors checkpoint")  # fmt: skip
    try:
        inspect_checkpoint(path)
    except CheckpointError as exc:
        raise SettingsError("base", str(exc)) from None


def check_dataset(path: Path | None) -> None:
    from lib_lora_train.store.snapshot import count_images, plan_snapshot

    if path is None:
        raise SettingsError("dataset", "give --dataset DIR (a folder of images with .txt captions) for a new version")
    if not path.is_dir():
        raise SettingsError("dataset", f"{path}: the dataset folder does not exist")
    if count_images(plan_snapshot(path)) == 0:
        raise SettingsError("dataset", f"{path}: no images found; put .png/.jpg/.webp images (and captions) in it")


def _open_version(store, args: argparse.Namespace):
    """The version to train: a new one, or one that exists with nothing trained in it yet (a failed or empty run is
    reused); SettingsError naming the ways forward when it holds trained files."""
    if not store.has_version(args.project, args.version):
        return store.create_version(args.project, args.version)
    return _reusable_version(store, args)


def _reusable_version(store, args: argparse.Namespace):
    """The existing version of that name if nothing was trained in it (None if there is none); SettingsError else."""
    if not store.has_version(args.project, args.version):
        return None
    version = store.version(args.project, args.version)
    trained = [p for _, p in version.list_checkpoints()] + version.list_partial()
    if trained or read_resume_point_of(version) is not None:
        raise SettingsError(
            "version",
            f"{args.project}/{args.version} already holds a trained run ({len(trained)} LoRA file(s) in "
            f"{version.checkpoints}); continue it with --resume, pass another --version, or move it to the trash "
            f"with: python -m lib_lora_train versions delete {args.project} {args.version} --outputs {args.outputs}",
        )
    return version


def read_resume_point_of(version):
    from lib_lora_train.train.runner import state_folder
    from lib_lora_train.train.state import read_resume_point

    return read_resume_point(state_folder(version))


def run_train(args: argparse.Namespace) -> int:
    from lib_lora_train.store.names import StoreError, validate_name
    from lib_lora_train.store.projects import ProjectStore
    from lib_lora_train.train.preflight import check_environment

    # everything is checked before anything is created, so that a retry with the same names just works
    try:
        validate_name(args.project, "project")
        validate_name(args.version, "version")
        store = ProjectStore(args.outputs)
        if args.resume:
            if not store.has_version(args.project, args.version):
                raise SettingsError("resume", f"{args.project}/{args.version} does not exist in {args.outputs}; "
                                    "start it without --resume")  # fmt: skip
            version = store.version(args.project, args.version)
            if read_resume_point_of(version) is None:
                raise SettingsError("resume", f"{args.project}/{args.version} has no saved training state to resume; "
                                    "train with --save-state to be able to resume or extend a run")  # fmt: skip
            # a resumed run continues with the settings it was started with; options given now still override
            base = version.load_settings().to_dict() if version.config.exists() else None
            settings = settings_from_args(args, base)
        else:
            settings = settings_from_args(args)
            check_dataset(args.dataset)
            version = None
            _reusable_version(store, args)
        check_environment(settings, args.dataset if not args.resume else version.dataset)
        check_base(args.base)
        from lib_lora_train.train.distributed import process_device

        device = process_device(check_device(args.device))  # cuda:LOCAL_RANK under torchrun / accelerate launch
    except (SettingsError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return _train_in_store(args, settings, store, version, device)


def _prepare_version(args: argparse.Namespace, settings: TrainSettings, store, version):
    """Once the model has passed ``check_model``: the version folder (new or reused), its dataset and config."""
    if version is None:
        version = _open_version(store, args)
        version.snapshot_dataset(args.dataset)
    version.save_settings(settings)
    return version


def _train_in_store(args: argparse.Namespace, settings: TrainSettings, store, version, device) -> int:
    import torch

    from lib_lora_train.hosts.diffusers_host import DiffusersHost
    from lib_lora_train.store.names import StoreError
    from lib_lora_train.train import distributed
    from lib_lora_train.train.preflight import check_model
    from lib_lora_train.train.runner import train_version

    dtype = (
        {"fp16": torch.float16, "bf16": torch.bfloat16}.get(settings.mixed_precision) if device.type == "cuda" else None
    )
    stop = {"requested": False, "at": 0.0}

    def on_sigint(signum, frame):  # first Ctrl+C: stop after the current step; second: abort
        if stop["requested"]:
            # torchrun passes the terminal's Ctrl+C on to its processes, which then see it twice at once
            if group.active and time.monotonic() - stop["at"] < 2.0:
                return
            raise KeyboardInterrupt
        stop["requested"], stop["at"] = True, time.monotonic()
        if group.is_main:
            print("\nstopping after this step (Ctrl+C again to abort)", file=sys.stderr)

    group = distributed.init_from_env(device)  # a data-parallel run: every process arrives here
    printer = _ProgressPrinter() if group.is_main else _Quiet()
    previous = signal.signal(signal.SIGINT, on_sigint)
    # the launcher ends its processes with SIGTERM (a peer failed, or Ctrl+C reached it): stop cleanly as for Ctrl+C
    previous_term = signal.signal(signal.SIGTERM, on_sigint) if group.active else None
    if not group.is_main:
        logging.getLogger("lib_lora_train").setLevel(logging.ERROR)  # rank 0 logs and prints for the run
        _quiet_loaders()
    try:
        if group.is_main:
            print(f"loading {args.base}", file=sys.stderr)
        host = DiffusersHost.from_path(
            args.base, device=device, dtype=dtype, on_event=printer, stop_requested=lambda: stop["requested"]
        )
        host.events = _NoHistory()
        try:
            check_model(settings, host.model_parts())
            if group.is_main:
                version = _prepare_version(args, settings, store, version)
            group.barrier()  # the other processes open the version folder rank 0 made
            if version is None:
                version = store.version(args.project, args.version)
        except (SettingsError, StoreError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        result = train_version(host, settings, version, resume=args.resume, group=group)
        if result.status != "error":
            group.barrier()  # every process ends once rank 0 has written the last files
    except (FileNotFoundError, RuntimeError, OSError, ValueError) as exc:
        printer.close()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, previous)
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)
        printer.close()
        distributed.teardown(group)
    if not group.is_main:
        if result.status == "error":
            print(f"error: {result.message}", file=sys.stderr)
        return {"done": 0, "stopped": 130}.get(result.status, 1)
    print(f"{result.status}: {result.message}")
    for path in result.checkpoints:
        print(f"  {path}")
    print(f"version folder: {version.path}")
    return {"done": 0, "stopped": 130}.get(result.status, 1)


def run_versions(args: argparse.Namespace) -> int:
    """``versions [list] [PROJECT]`` prints one line per version; ``versions delete PROJECT VERSION`` trashes one."""
    from lib_lora_train.store.names import StoreError
    from lib_lora_train.store.projects import ProjectStore

    store = ProjectStore(args.outputs)
    try:
        if args.action == "delete":
            if not (args.project and args.version):
                raise SettingsError("version", "versions delete needs PROJECT and VERSION")
            print(f"moved to the trash: {store.delete_version(args.project, args.version)}")
            return 0
        projects = [p for p in store.list_projects() if args.project in (None, p.name)]
        if args.project and not projects:
            raise SettingsError("project", f"no project {args.project!r} in {args.outputs}")
    except (SettingsError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not projects:
        print(f"no projects in {args.outputs}")
    for project in projects:
        if not project.versions:
            print(f"{project.name}: no versions")
        for info in project.versions:
            paths = store.version(project.name, info.name)
            state = read_resume_point_of(paths)
            notes = [f"{len(info.checkpoints)} LoRA file(s)"]
            notes += [f"{len(paths.list_partial())} partial"] if paths.list_partial() else []
            notes += [f"state at step {state.step}"] if state else []
            print(f"{project.name}/{info.name}\t{info.created}\t{', '.join(notes)}\t{info.path}")
    return 0


def _quiet_loaders() -> None:
    """No loading bars from diffusers/transformers in the processes other than rank 0."""
    try:
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.disable_progress_bar()
    except ImportError:
        pass


class _Quiet:
    """The progress printer of a process other than rank 0: it prints nothing."""

    def __call__(self, event: Any) -> None:
        pass

    def close(self) -> None:
        pass


class _NoHistory(list):
    """The CLI streams events to the progress bar; it keeps no history of them."""

    def append(self, item: Any) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "train":
        return run_train(args)
    if args.command == "versions":
        return run_versions(args)
    if args.command == "bootstrap":
        from lib_lora_train.standalone.bootstrap_cli import main as run_bootstrap

        return run_bootstrap(args)
    if args.command == "ui":
        from lib_lora_train.standalone.app import main as serve_ui

        return serve_ui(args)
    return 2
