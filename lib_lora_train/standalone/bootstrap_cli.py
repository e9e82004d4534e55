"""``python -m lib_lora_train bootstrap``: the whole bootstrap loop unattended on the diffusers host, for users
without the WebUI: start images (or one image cut into crops) -> rounds of train / generate / score / auto-select /
grow -> the final character LoRA. Interrupted (Ctrl+C), it resumes where it stopped when run again.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from pathlib import Path

from lib_lora_train.settings import SettingsError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lib_lora_train.cli import DEFAULT_OUTPUTS, add_settings_arguments

    parser.add_argument("--dataset", type=Path, help="the start images (2-8, with or without captions), or one "
                        "image to cut with --crop")  # fmt: skip
    parser.add_argument("--crop", type=int, choices=(4,), help="cut the one --dataset image into 4 overlapping crops")
    parser.add_argument("--base", type=Path, required=True, help="base model: a diffusers folder or a checkpoint")
    parser.add_argument("--project", required=True, help="project name")
    parser.add_argument("--outputs", type=Path, default=Path(DEFAULT_OUTPUTS), help=f"store folder [{DEFAULT_OUTPUTS}]")
    parser.add_argument("--targets", default="16,40", help="image counts to grow to, one round each [16,40]")
    parser.add_argument("--activation", help="activation tag [the project name]")
    parser.add_argument("--traits", default="", help="trait tags, comma-separated [what the tagger sees in most "
                        "start images]")  # fmt: skip
    parser.add_argument("--views", default="", help="view prompts, comma-separated [from side, from behind, …]")
    parser.add_argument("--seeds-per-view", type=int, default=3, help="candidates per view and round [3]")
    parser.add_argument("--weight", type=float, default=0.8, help="LoRA weight of the candidates [0.8]")
    parser.add_argument("--tagger", type=Path, help="a local WD14 tagger folder (model.onnx + selected_tags.csv) "
                        "for captions and scoring [none: candidates ranked by novelty only]")  # fmt: skip
    parser.add_argument("--sample-size", type=int, default=0, help="candidate size in px [the resolution]")
    parser.add_argument("--render-steps", type=int, default=20, help="sampling steps per candidate [20]")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 … [auto]")
    add_settings_arguments(parser)


def _start_images(args, work: Path) -> list[Path]:
    from lib_lora_train.bootstrap.crops import quadrant_boxes, write_crops
    from lib_lora_train.images import is_image_file, iter_image_files

    if args.dataset is None or not args.dataset.exists():
        raise SettingsError("dataset", f"--dataset {args.dataset}: no such image or folder")
    if args.crop:
        source = args.dataset if args.dataset.is_file() else next(iter(iter_image_files(args.dataset)), None)
        if source is None or not is_image_file(source):
            raise SettingsError("dataset", f"--crop needs one image: {args.dataset} is none")
        from PIL import Image

        with Image.open(source) as image:
            boxes = quadrant_boxes(*image.size)
        return write_crops(source, boxes, work, args.resolution or 512)  # crops below the training size are enlarged
    images = sorted(iter_image_files(args.dataset)) if args.dataset.is_dir() else [args.dataset]
    if not 2 <= len(images) <= 8:
        raise SettingsError("dataset", f"{args.dataset}: {len(images)} image(s); the loop starts from 2-8 images, "
                            "or one image with --crop 4")  # fmt: skip
    return images


def main(args: argparse.Namespace) -> int:
    from lib_lora_train.bootstrap.captions import caption_for, common_traits
    from lib_lora_train.bootstrap.loop import BootstrapLoop, LoopConfig, LoopError, current_version, start
    from lib_lora_train.bootstrap.prompts import DEFAULT_VIEWS, parse_views
    from lib_lora_train.bootstrap.selection import parse_targets
    from lib_lora_train.cli import check_base, check_device, settings_from_args
    from lib_lora_train.store import ProjectStore, StoreError

    try:
        settings = settings_from_args(args)
        check_base(args.base)
        device = check_device(args.device)
        targets = parse_targets(args.targets)
        store = ProjectStore(args.outputs)
        resuming = store.has_version(args.project, "v1") and current_version(store, args.project) is not None
        if not resuming and args.tagger is not None and not (args.tagger / "model.onnx").is_file():
            raise SettingsError("tagger", f"--tagger {args.tagger}: no model.onnx in it")
        images = [] if resuming else _start_images(args, Path(tempfile.mkdtemp(prefix="lora-bootstrap-crops-")))
    except (SettingsError, StoreError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    host, tag = _host(args, device), _tagger(args.tagger)
    activation = args.activation or args.project
    if not resuming:
        start_tags = tag([_open(p) for p in images]) if tag else [{} for _ in images]
        traits = [t.strip() for t in args.traits.split(",") if t.strip()] or common_traits(start_tags, activation)
        captions = []
        for image, tags in zip(images, start_tags, strict=True):
            beside = Path(image).with_suffix(".txt")
            text = beside.read_text(encoding="utf-8").strip() if beside.is_file() else ""
            captions.append(caption_for(activation, tags, "", traits) if not text else
                            ", ".join(dict.fromkeys([activation, *[t.strip() for t in text.split(",") if t.strip()]])))  # fmt: skip
        views = parse_views(args.views) or list(DEFAULT_VIEWS)
        user = {f: getattr(args, f) for f in settings.to_dict() if getattr(args, f, None) is not None}
        config = LoopConfig(activation, traits, targets, views, args.seeds_per_view, settings.seed,
                            settings.resolution, host.model_parts().arch, True, user)  # fmt: skip
        start(store, args.project, "v1", images, captions, config)
        print(f"started {args.project}: {len(images)} images, traits: {', '.join(traits) or 'none'}", flush=True)
    stop = {"requested": False}
    previous = signal.signal(signal.SIGINT, lambda *_: stop.update(requested=True))
    try:
        loop = BootstrapLoop(store, args.project, _hooks(args, settings, host, tag, stop))
        state = loop.run()
    except (LoopError, StoreError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, previous)
    version = loop.version()
    if state.phase != "done":
        print(f"stopped in round {state.round} ({state.phase}) of {version.version}; run again to resume")
        return 130
    final = version.checkpoint_file(None)
    print(f"done: {final}")
    return 0


def _open(path: Path):
    from PIL import Image

    return Image.open(path).convert("RGB")


def _host(args, device):
    from lib_lora_train.hosts.diffusers_host import DiffusersHost

    return DiffusersHost.from_path(args.base, device=device)


def _tagger(folder: Path | None):
    if folder is None:
        return None
    from lib_lora_train.compare.tagger_bridge import tagger_functions
    from lib_lora_train.tagger.runtime import LoadedTagger

    tag_images, _ = tagger_functions(LoadedTagger(folder.name, folder, use_gpu=False))
    return tag_images


def _hooks(args, settings, host, tag, stop):
    from lib_lora_train.bootstrap.loop import LoopHooks
    from lib_lora_train.standalone.models import LoadedModel
    from lib_lora_train.standalone.runtime import StandaloneRuntime
    from lib_lora_train.train.runner import train_version

    def train(version, settings):
        host.stop_requested = lambda: stop["requested"]
        result = train_version(host, settings, version)
        print(f"  {version.version}: {result.status} ({result.message})", flush=True)
        return [p for _, p in version.list_checkpoints()] if result.status == "done" else []

    runtime = StandaloneRuntime(
        outputs=args.outputs,
        models_dir=args.outputs / "models",
        cache_dir=args.outputs / "cache",
        lora_dir=args.outputs / args.project / "versions",
    )  # every round's checkpoints
    runtime.model.loaded = LoadedModel(args.base, host.pipe, host.model_parts().arch)

    def render(prompt: str, seed: int):
        if stop["requested"]:
            return None
        size = args.sample_size or settings.resolution
        image, _ = runtime.render(prompt, seed=seed, steps=args.render_steps, cfg_scale=7.5, width=size, height=size,
                                  sampler=None)  # fmt: skip
        return image

    return LoopHooks(train=train, render=render, tag=tag, should_stop=lambda: stop["requested"],
                     report=lambda message: print(message, flush=True))  # fmt: skip
