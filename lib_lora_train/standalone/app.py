"""``python -m lib_lora_train ui``: the four tabs without a WebUI, on a diffusers model: the command line, the
standalone runtime and its base model; the gradio page itself is ``ui.page`` (this package imports no gradio)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from lib_lora_train.standalone import models
from lib_lora_train.standalone.runtime import StandaloneRuntime
from lib_lora_train.ui import services
from lib_lora_train.ui.page import serve

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base", type=Path, help="base model: a diffusers folder or a single-file SD1/SD2/SDXL "
                        "checkpoint (a .yaml beside it is used) [the tiny test model]")  # fmt: skip
    parser.add_argument("--models", type=Path, action="append", default=[], metavar="DIR",
                        help="another folder whose models the picker lists (repeatable)")  # fmt: skip
    parser.add_argument(
        "--outputs", type=Path, default=Path("outputs/train_tools"), help="projects folder [%(default)s]"
    )
    parser.add_argument("--models-dir", type=Path, default=Path("models/tagger"),
                        help="tagger models: one sub-folder per model [%(default)s]")  # fmt: skip
    parser.add_argument("--lora-dir", type=Path, default=Path("models/Lora"),
                        help="LoRA folder: trained epochs are published here, <lora:…> reads it [%(default)s]")  # fmt: skip
    parser.add_argument("--listen", default="127.0.0.1", metavar="HOST", help="address to serve on [%(default)s]")
    parser.add_argument("--port", type=int, default=7861, help="port [%(default)s]")
    parser.add_argument("--auth", metavar="USER:PASS", help="ask for this login in the page and on the HTTP API")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 … [auto]")


def make_runtime(args: argparse.Namespace) -> StandaloneRuntime:
    outputs = args.outputs.expanduser().resolve()
    return StandaloneRuntime(
        outputs=outputs, models_dir=args.models_dir.expanduser().resolve(),
        lora_dir=args.lora_dir.expanduser().resolve(), cache_dir=outputs.parent / "cache", device=args.device,
    )  # fmt: skip


def main(args: argparse.Namespace) -> int:
    """Check the command line, then serve until Ctrl+C; exit code 2 for bad options (nothing started)."""
    import sys

    if args.auth is not None and ":" not in args.auth:
        print("error: --auth takes USER:PASS (several as USER:PASS,USER2:PASS2)", file=sys.stderr)
        return 2
    runtime = make_runtime(args)
    if args.base is not None:
        base = args.base.expanduser().resolve()
        if not models.is_model(base):
            print(f"error: --base {args.base}: not a diffusers folder (with model_index.json) or a .safetensors/.ckpt "
                  "checkpoint", file=sys.stderr)  # fmt: skip
            return 2
    else:
        base = models.tiny_model(runtime.cache_dir())
        print(f"no --base given: using the tiny test model {base} (it makes noise, not pictures)", file=sys.stderr)
    try:
        runtime.model.load(base)
        runtime.choices = models.candidates(base, [d.expanduser().resolve() for d in args.models])
        demo, url = serve(runtime, listen=args.listen, port=args.port, auth=args.auth)
    except (OSError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"LoRA Train Tools is running at {url} (Ctrl+C to stop)", flush=True)
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        services.stop_jobs()
        demo.close()
    return 0
