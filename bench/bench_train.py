"""Training speed and memory: seconds per optimiser step and peak memory for one base model and setting.

    .venv/bin/python bench/bench_train.py --shape sd15 --resolution 512 --batch 1 --rank 16 --steps 3
    .venv/bin/python bench/bench_train.py --base ../shared/fixtures/diffusers-tiny-sd1 --resolution 64

``--shape sd15`` builds a full-size SD1.5-shaped UNet / CLIP-L text encoder / VAE from configs with random weights
(no download). Latents are cached before the timed steps (like kohya's --cache_latents), so the VAE is not in the
per-step figure. Prints one summary line; peak memory is the process's max RSS on the CPU, or
torch.cuda.max_memory_allocated on CUDA.

``--count-flops`` also counts the floating-point operations of one training step (torch's FlopCounterMode:
matmuls, convolutions and attention, forward and backward; one extra untimed step) and measures this machine's
fp32 matrix-multiply rate, then prints the step's share of it: how close to the hardware a step already runs, so
how much faster any trainer could go on it.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build_sd15_pipeline():
    """SD1.5's architecture (UNet 320/640/1280/1280, CLIP-L text encoder, 8x VAE) with random weights."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from lib_lora_train.hosts.tiny_model import SD1_SCHEDULE, write_char_tokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64, cross_attention_dim=768, attention_head_dim=8, block_out_channels=(320, 640, 1280, 1280)
    )
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
        sample_size=512,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
            vocab_size=49408,
            bos_token_id=49406,
            eos_token_id=49407,
            hidden_act="quick_gelu",
        )
    )
    with tempfile.TemporaryDirectory() as tmp:
        write_char_tokenizer(Path(tmp))
        tokenizer = CLIPTokenizer(
            f"{tmp}/vocab.json",
            f"{tmp}/merges.txt",
            unk_token="<|endoftext|>",
            bos_token="<|startoftext|>",
            eos_token="<|endoftext|>",
            pad_token="<|endoftext|>",
            model_max_length=77,
        )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDIMScheduler(**SD1_SCHEDULE),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--base", type=Path, help="a diffusers folder or single-file checkpoint")
    source.add_argument("--shape", choices=["sd15", "tiny"], help="a random-weight model of this shape")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--network", default="lora")
    parser.add_argument("--te-lr", type=float, default=5e-5, help="0 = UNet only (text-encoder outputs cached)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (after one untimed warm-up step)")
    parser.add_argument("--mixed-precision", default="fp16", help="fp16 on CUDA; falls back to fp32 on the CPU")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--count-flops", action="store_true", help="count one step's FLOPs (see the docstring)")
    args = parser.parse_args()

    import torch

    from lib_lora_train.hosts.diffusers_host import DiffusersHost
    from lib_lora_train.hosts.tiny_model import build_tiny_pipeline, write_tiny_dataset
    from lib_lora_train.settings import TrainSettings
    from lib_lora_train.store.projects import ProjectStore
    from lib_lora_train.train.runner import train_version

    device = torch.device(
        "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device.replace("auto", "cpu")
    )
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    t0 = time.perf_counter()
    if args.base is not None:
        dtype = torch.float16 if device.type == "cuda" and args.mixed_precision == "fp16" else None
        host = DiffusersHost.from_path(args.base, device=device, dtype=dtype)
        name = args.base.name
    else:
        pipe = build_sd15_pipeline() if args.shape == "sd15" else build_tiny_pipeline()
        if device.type == "cuda" and args.mixed_precision == "fp16":
            pipe.to(torch.float16)
        host = DiffusersHost(pipe.to(device))
        name = args.shape
    build_s = time.perf_counter() - t0
    step_times: list[float] = []
    counter = FlopCount() if args.count_flops else None

    def on_event(event) -> None:
        if event.kind != "step":
            return
        if counter is not None and counter.wants(event.step):
            step_times.clear()  # the counted step is not timed: timing starts where it ended
        step_times.append(time.perf_counter())

    host.on_event = on_event
    with tempfile.TemporaryDirectory() as tmp:
        dataset = write_tiny_dataset(Path(tmp) / "data", count=max(2, args.batch), size=args.resolution)
        version = ProjectStore(Path(tmp) / "out").create_version("bench", "v")
        settings = TrainSettings(
            resolution=args.resolution,
            batch_size=args.batch,
            rank=args.rank,
            alpha=args.rank / 2,
            network=args.network,
            te_lr=args.te_lr,
            max_steps=args.steps + 1 + (1 if counter else 0),
            save_every=0,
            mixed_precision=args.mixed_precision,
            gradient_checkpointing=args.gradient_checkpointing,
            cache_latents="memory",
            min_bucket_side=64,
        )
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        result = train_version(host, settings, version, dataset_dir=dataset)
    if result.status != "done" or len(step_times) < 2:
        print(f"bench_train failed: {result.status} {result.message}")
        return 1
    per_step = (step_times[-1] - step_times[0]) / (len(step_times) - 1)
    if device.type == "cuda":
        peak = f"peak_cuda_alloc_mib={torch.cuda.max_memory_allocated() / 2**20:.0f}"
    else:
        peak = f"peak_rss_mib={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}"
    print(
        f"bench_train base={name} device={device.type} threads={torch.get_num_threads()} res={args.resolution} "
        f"batch={args.batch} rank={args.rank} network={args.network} te_lr={args.te_lr} "
        f"precision={args.mixed_precision} gc={args.gradient_checkpointing} steps={len(step_times) - 1} "
        f"s_per_step={per_step:.3f} it_per_s={1 / per_step:.3f} {peak} build_s={build_s:.1f}"
    )
    if counter is not None:
        flops = counter.total
        peak_rate = matmul_rate(device)
        print(
            f"bench_train flops: one step = {flops / 1e12:.3f} TFLOP (matmul, conv, attention; fwd+bwd); at "
            f"{per_step:.3f} s/step that is {flops / per_step / 1e9:.0f} GFLOP/s; this machine's fp32 matmul rate "
            f"(4096x4096, {torch.get_num_threads()} threads) is {peak_rate / 1e9:.0f} GFLOP/s, so a step runs at "
            f"{flops / per_step / peak_rate:.0%} of it and could take no less than {flops / peak_rate:.2f} s"
        )
    return 0


class FlopCount:
    """Counts the FLOPs of the step after the first: the counter is switched on when step 1 ends, off when step 2
    ends (the training loop runs in this thread, and the events come from it)."""

    def __init__(self):
        from torch.utils.flop_counter import FlopCounterMode

        self.mode = FlopCounterMode(display=False)
        self.total = 0

    def wants(self, step: int) -> bool:
        """Called at the end of every step; True for the step that was counted (and for the one that starts it)."""
        if step == 1:
            self.mode.__enter__()
            return False  # step 1 is the warm-up the timing skips anyway
        if step == 2:
            self.mode.__exit__(None, None, None)
            self.total = self.mode.get_total_flops()
            return True
        return False


def matmul_rate(device, size: int = 4096, repeats: int = 5) -> float:
    """The best fp32 matrix-multiply rate of ``repeats`` runs, in FLOP/s."""
    import torch

    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    best = float("inf")
    for _ in range(repeats + 1):  # the first run warms up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


if __name__ == "__main__":
    sys.exit(main())
