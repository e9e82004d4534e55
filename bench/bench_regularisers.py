"""The step-time cost of each regulariser and loss option: ms per optimiser step against a run without any, on an
SD1.5-shaped model (random weights, no download).

    .venv/bin/python bench/bench_regularisers.py                       # CPU: 64 px, 2 timed steps x 3 repeats
    .venv/bin/python bench/bench_regularisers.py --resolution 512 --steps 10 --repeats 5 --mixed-precision fp16
    .venv/bin/python bench/bench_regularisers.py --shape tiny --only baseline,rank_dropout

Each option is a whole ``train_version`` run on the same host and seed with one untimed warm-up step; the timed
figure is the wall time between consecutive step events (latents are cached first, so the VAE is not in it). The
repeats go round the options in turn, so that a slower stretch of a shared machine spreads over all of them. The
table gives min / median / max ms per step and the median and min against the baseline's (on a shared machine the
min is the steadier figure). An option the engine refuses
(its setting is not implemented yet) is skipped with the reason; one whose losses and weights equal the baseline's
is marked "no effect" (a setting the engine does not read yet).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]


def options(mask_dir: Path) -> dict[str, dict]:
    """Option name -> the settings it changes (kohya's usual values)."""
    down_mid_up = ["8"] * 12 + ["16"] + ["16"] * 12  # kohya's example shape: smaller ranks in the down blocks
    return {
        "baseline": {},
        "network_dropout": {"network_dropout": 0.1},
        "rank_dropout": {"rank_dropout": 0.1},
        "module_dropout": {"module_dropout": 0.1},
        "all three dropouts": {"network_dropout": 0.1, "rank_dropout": 0.1, "module_dropout": 0.1},
        "dora_wd": {"dora_wd": True},
        "multires_noise": {"multires_noise_iterations": 6, "multires_noise_discount": 0.3},
        "ip_noise_gamma": {"ip_noise_gamma": 0.1},
        "debiased_estimation": {"debiased_estimation_loss": True},
        "huber (snr)": {"loss_type": "huber", "huber_schedule": "snr", "huber_c": 0.1},
        "masked_loss": {"masked_loss": True, "mask_dir": str(mask_dir)},
        "block_dims": {"block_dims": ",".join(down_mid_up)},
        "block lr weights": {"down_lr_weight": "sine", "mid_lr_weight": "0.5", "up_lr_weight": "cosine+0.1"},
    }


def write_masks(dataset: Path, folder: Path) -> Path:
    """A mask per training image: the left half trains, the right half does not."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for image_path in sorted(dataset.rglob("*.png")):
        with Image.open(image_path) as image:
            width, height = image.size
        mask = Image.new("L", (width, height), 0)
        mask.paste(255, (0, 0, width // 2, height))
        mask.save(folder / image_path.name)
    return folder


def run_once(host, base_settings, changes: dict, dataset: Path, store, name: str, steps: int):
    """(ms per timed step, losses, final tensors) of one run, or (None, reason, None) when it cannot run."""
    from safetensors.torch import load_file

    from lib_lora_train.settings import SettingsError
    from lib_lora_train.train.runner import train_version

    try:
        settings = base_settings.replace(**changes, max_steps=steps + 1)
    except SettingsError as exc:
        return None, f"refused: {exc}", None
    stamps: list[float] = []

    def on_event(event) -> None:
        if event.kind == "step":
            stamps.append(time.perf_counter())

    host.on_event = on_event
    version = store.create_version("bench", name)
    result = train_version(host, settings, version, dataset_dir=dataset)
    if result.status != "done":
        return None, f"failed: {result.message}", None
    times = [(b - a) * 1000 for a, b in zip(stamps, stamps[1:], strict=False)]
    losses = [line.split(",")[2] for line in Path(version.loss_log).read_text().splitlines()[1:]]
    tensors = load_file(str(version.checkpoint_file(None)))
    return times, losses, tensors


def same_as(a, b) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=["sd15", "tiny"], default="sd15")
    parser.add_argument("--resolution", type=int, default=64, help="64 on a CPU; 512 for SD1.5's own")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--network", default="lora")
    parser.add_argument("--te-lr", type=float, default=0.0, help="0 = UNet only")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per run (after one warm-up step)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mixed-precision", default="no")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--only", default="", help="comma-separated option names (baseline is always run)")
    args = parser.parse_args()

    import torch
    from bench_train import build_sd15_pipeline

    from lib_lora_train.hosts.diffusers_host import DiffusersHost
    from lib_lora_train.hosts.tiny_model import build_tiny_pipeline, write_tiny_dataset
    from lib_lora_train.settings import TrainSettings
    from lib_lora_train.store.projects import ProjectStore

    device = torch.device(
        "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device.replace("auto", "cpu")
    )
    pipe = build_sd15_pipeline() if args.shape == "sd15" else build_tiny_pipeline()
    if device.type == "cuda" and args.mixed_precision == "fp16":
        pipe.to(torch.float16)
    host = DiffusersHost(pipe.to(device))
    base = TrainSettings(
        resolution=args.resolution, min_bucket_side=min(64, args.resolution), batch_size=args.batch, rank=args.rank,
        alpha=args.rank / 2, network=args.network, te_lr=args.te_lr, unet_lr=1e-4, save_every=0,
        mixed_precision=args.mixed_precision, cache_latents="memory", seed=7,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        dataset = write_tiny_dataset(work / "data", count=max(2, args.batch), size=args.resolution)
        table = options(write_masks(dataset, work / "masks"))
        wanted = {"baseline", *filter(None, (n.strip() for n in args.only.split(",")))}
        names = [n for n in table if not args.only or n in wanted]
        store = ProjectStore(work / "out")
        times: dict[str, list[float]] = {n: [] for n in names}
        notes: dict[str, str] = {}
        reference: dict[str, tuple] = {}
        started = time.perf_counter()
        for repeat in range(args.repeats):
            for index, name in enumerate(names):
                if name in notes and notes[name].startswith(("refused", "failed")):
                    continue
                ms, losses, tensors = run_once(host, base, table[name], dataset, store, f"r{repeat}o{index}",
                                               args.steps)  # fmt: skip
                if ms is None:
                    notes[name] = losses
                    continue
                times[name] += ms
                if repeat == 0:
                    reference[name] = (losses, tensors)
            if repeat == 0 and "baseline" in reference:
                base_losses, base_tensors = reference["baseline"]
                for name, (losses, tensors) in reference.items():
                    if name != "baseline" and losses == base_losses and same_as(tensors, base_tensors):
                        notes[name] = "no effect: same losses and weights as the baseline (not implemented yet?)"
                reference.clear()  # the tensors are large
    total = time.perf_counter() - started
    baseline = times.get("baseline") or None
    print(f"bench_regularisers shape={args.shape} device={device.type} threads={torch.get_num_threads()} "
          f"res={args.resolution} batch={args.batch} rank={args.rank} network={args.network} te_lr={args.te_lr} "
          f"precision={args.mixed_precision} steps={args.steps}x{args.repeats} total_s={total:.0f}")  # fmt: skip
    print(f"{'option':<22} {'min ms':>9} {'median ms':>10} {'max ms':>9} {'median vs':>10} {'min vs':>8}  note")
    for name in names:
        values = times[name]
        if not values:
            print(f"{name:<22} {'-':>9} {'-':>10} {'-':>9} {'-':>10} {'-':>8}  skipped: {notes.get(name, 'no steps')}")
            continue
        median, low = statistics.median(values), min(values)
        vs_median = f"{median / statistics.median(baseline) - 1:+.1%}" if baseline and name != "baseline" else ""
        vs_min = f"{low / min(baseline) - 1:+.1%}" if baseline and name != "baseline" else ""
        line = f"{name:<22} {low:9.0f} {median:10.0f} {max(values):9.0f} {vs_median:>10} {vs_min:>8}"
        print(f"{line}  {notes.get(name, '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
