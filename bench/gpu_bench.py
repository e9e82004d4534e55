"""The Python half of bench/gpu_check.sh: our engine and kohya's sd-scripts side by side on one GPU, plus checks.

Subcommands (gpu_check.sh calls them; each writes its results as soon as it has them):

    env       GPU, driver and library versions, and the measured matmul rates (fp16/bf16/tf32) -> JSON
    versions  the versions of the libraries importable under the current PYTHONPATH -> JSON
    dataset   a kohya-style dataset folder (``2_demo/``: generated images + .txt captions) at one size
    ours      our engine (lib_lora_train.train.runner.train_version) on one base model, several configs in one
              process; after each config the host's tree and weights are checked bit for bit against the start
    kohya     one config of kohya's train_network.py / sdxl_train_network.py in its own process (through
              bench/kohya_timer.py, which adds the same step marks, memory, FLOP and profiler hooks)
    checks    correctness on the device: the same run twice (default and deterministic mode), fp16 loss scaling
              forced to overflow, host restoration after a done / stopped / failed run with fp16 host weights
    skip      record a config that was not run (budget, missing input)
    table     the comparison table from the results file

Every timed run follows one schedule W,F,T,P: W warm-up steps (cuDNN autotuning, allocator growth), F (0/1) step
counted with torch.utils.flop_counter.FlopCounterMode (untimed), T timed steps, P (0/1) step under torch.profiler.
A step's time is the distance between consecutive step-end CUDA events (no host sync inside the timed steps; one
synchronize after them); the figure is the median of the T steps. Peak memory is torch.cuda.max_memory_allocated /
max_memory_reserved, reset when the timed steps begin ("steps") and for the whole config ("run": loading, latent
caching and steps; for ours the model is loaded once per process, so "run" starts at the config).

REHEARSAL=1 in the environment: 64 px for every config, mixed precision "no" (CPU), nothing CUDA-only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))  # kohya_timer.export_profile

REHEARSAL = os.environ.get("REHEARSAL") == "1"
RANK, ALPHA, UNET_LR, TE_LR = 16, 8.0, 1e-4, 5e-5


@dataclass(frozen=True)
class Config:
    name: str
    arch: str  # sd15 | sdxl
    resolution: int
    batch: int
    te: bool  # text encoder(s) trained (else: UNet only, text-encoder outputs cached)
    gc: bool  # gradient checkpointing
    precision: str  # fp16 | bf16 | no

    def rehearsed(self) -> Config:
        return Config(self.name, self.arch, 64, self.batch, self.te, self.gc, "no") if REHEARSAL else self


def _configs() -> dict[str, Config]:
    out = {}
    for batch in (1, 4):
        for te in (True, False):
            for gc in (False, True):
                name = f"sd15-b{batch}-{'te' if te else 'unet'}{'-gc' if gc else ''}"
                out[name] = Config(name, "sd15", 512, batch, te, gc, "fp16")
    out["sdxl-b1-unet-gc"] = Config("sdxl-b1-unet-gc", "sdxl", 1024, 1, False, True, "bf16")
    return out


CONFIGS = _configs()
# the order kohya's runs go in (each is its own process): what matters most first, so a short budget keeps it
PRIORITY = ["sd15-b1-te", "sdxl-b1-unet-gc", "sd15-b4-te", "sd15-b1-unet", "sd15-b1-te-gc", "sd15-b4-unet",
            "sd15-b4-te-gc", "sd15-b1-unet-gc", "sd15-b4-unet-gc"]  # fmt: skip


def config(name: str) -> Config:
    if name not in CONFIGS:
        raise SystemExit(f"unknown config {name!r}; known: {', '.join(CONFIGS)}")
    return CONFIGS[name].rehearsed()


def parse_schedule(text: str) -> tuple[int, int, int, int]:
    w, f, t, p = (int(x) for x in text.split(","))
    if w < 1 or t < 1 or f not in (0, 1) or p not in (0, 1):
        raise SystemExit(f"schedule {text!r}: W>=1,F in 0/1,T>=1,P in 0/1")
    return w, f, t, p


def append_result(path: Path, row: dict) -> None:
    """One JSON line, flushed to disk at once (a later crash or timeout must not lose it)."""
    row = {"time": time.strftime("%H:%M:%S"), **row}
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    print("result " + json.dumps(row), flush=True)


def summarise_steps(step_s: list[float]) -> dict:
    if not step_s:
        return {}
    median = statistics.median(step_s)
    return {"step_s": [round(s, 5) for s in step_s], "s_per_step": median, "s_per_step_mean": statistics.mean(step_s),
            "it_per_s": 1 / median if median > 0 else None}  # fmt: skip


# --- env ---------------------------------------------------------------------------------------------------------


def matmul_rates(device) -> dict:
    """FLOP/s of one large square matrix product per dtype: the mean of 10 after 3 warm-ups (CUDA events)."""
    import torch

    rates = {}
    if device.type == "cuda":
        size = 8192
        for label, dtype, tf32 in (("fp16", torch.float16, False), ("bf16", torch.bfloat16, False),
                                   ("tf32", torch.float32, True)):  # fmt: skip
            saved = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = tf32
            a = torch.randn(size, size, device=device, dtype=dtype)
            b = torch.randn(size, size, device=device, dtype=dtype)
            for _ in range(3):
                a @ b
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(10):
                a @ b
            end.record()
            torch.cuda.synchronize()
            rates[label] = 2 * size**3 * 10 / (start.elapsed_time(end) / 1000)
            torch.backends.cuda.matmul.allow_tf32 = saved
            del a, b
        torch.cuda.empty_cache()
    else:  # the best of 5 (a shared CPU's mean says more about the neighbours than about the machine)
        size = 2048
        a, b = torch.randn(size, size), torch.randn(size, size)
        best = float("inf")
        for _ in range(6):
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
        rates["fp32"] = 2 * size**3 / best
    rates["no"] = rates.get("tf32", rates.get("fp32"))  # what mixed_precision=no runs at (TF32 on CUDA)
    return rates


def cmd_env(args) -> int:
    import platform

    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    info = {"python": platform.python_version(), "torch": torch.__version__, "device": device.type,
            "cpu_threads": torch.get_num_threads(), "rehearsal": REHEARSAL}  # fmt: skip
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, capability=f"{props.major}.{props.minor}", sms=props.multi_processor_count,
                    memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())  # fmt: skip
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm,power.limit",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=20)  # fmt: skip
            info["nvidia_smi"] = smi.stdout.strip()
        except (OSError, subprocess.SubprocessError) as exc:
            info["nvidia_smi"] = f"unavailable: {exc}"
    info["matmul_flops"] = matmul_rates(device)
    Path(args.out).write_text(json.dumps(info, indent=1), encoding="utf-8")
    print("env " + json.dumps(info), flush=True)
    return 0


def cmd_versions(args) -> int:
    import importlib.metadata as md

    out = {"label": args.label}
    for name in ("torch", "diffusers", "transformers", "accelerate", "peft", "huggingface_hub", "tokenizers",
                 "safetensors", "numpy"):  # fmt: skip
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    Path(args.out).write_text(json.dumps(out), encoding="utf-8")
    print("versions " + json.dumps(out), flush=True)
    return 0


def cmd_dataset(args) -> int:
    from lib_lora_train.hosts.tiny_model import write_tiny_dataset

    write_tiny_dataset(args.out, count=args.count, size=args.size)
    print(f"dataset {args.out}: {args.count} images of {args.size} px, 2 repeats", flush=True)
    return 0


# --- ours --------------------------------------------------------------------------------------------------------


def settings_for(cfg: Config, total_steps: int, **over):
    from lib_lora_train.settings import TrainSettings

    values = dict(
        resolution=cfg.resolution, batch_size=cfg.batch, rank=RANK, alpha=ALPHA, network="lora",
        unet_lr=UNET_LR, te_lr=TE_LR if cfg.te else 0.0, lr_scheduler="constant", weight_decay=0.01,
        max_grad_norm=1.0, max_steps=total_steps, save_every=0, mixed_precision=cfg.precision,
        gradient_checkpointing=cfg.gc, cache_latents="memory", min_bucket_side=64, shuffle_tags=False, seed=0,
    )  # fmt: skip
    values.update(over)
    return TrainSettings(**values)


def host_dtype(precision: str, device):
    """What the frozen weights are loaded as: the run's half type on CUDA (as kohya's weight_dtype), else fp32."""
    import torch

    if device.type != "cuda":
        return None
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)


def host_parts(pipe) -> dict:
    parts = {"unet": pipe.unet, "text_encoder": pipe.text_encoder}
    if getattr(pipe, "text_encoder_2", None) is not None:
        parts["text_encoder_2"] = pipe.text_encoder_2
    return parts


def tree_state(pipe) -> dict:
    """Module objects, parameter objects/flags/dtypes/devices, train modes, checkpointing flags, __dict__ keys and
    a CPU copy of every weight (with its storage pointer) of the host's UNet and text encoders."""
    state = {}
    for name, module in host_parts(pipe).items():
        named = list(module.named_modules(remove_duplicate=False))
        state[name] = {
            "modules": [(p, id(m)) for p, m in named],
            "params": {
                k: (id(p), p.requires_grad, str(p.dtype), str(p.device))
                for k, p in module.named_parameters(remove_duplicate=False)
            },  # fmt: skip
            "training": {p: m.training for p, m in named},
            "attributes": {p: sorted(vars(m)) for p, m in named},
            "gc": bool(getattr(module, "is_gradient_checkpointing", False)),
            "weights": {k: (_weight_record(v), v.data_ptr()) for k, v in module.state_dict().items()},
        }
    return state


def _weight_record(tensor):
    """What a weight is compared by: a CPU copy of a GPU tensor (host RAM is plentiful there, the compare exact); on
    the CPU a BLAKE2 digest of its bytes, since a second copy of a CPU model in RAM slowed the rehearsal's steps."""
    import hashlib

    if tensor.device.type != "cpu":
        return tensor.detach().to("cpu", copy=True)
    raw = tensor.detach().contiguous().reshape(-1).view(torch_uint8()).numpy()
    return (str(tensor.dtype), tuple(tensor.shape), hashlib.blake2b(raw.data, digest_size=16).hexdigest())


def torch_uint8():
    import torch

    return torch.uint8


def tree_differences(before: dict, pipe) -> list[str]:
    import torch

    after = tree_state(pipe)
    problems = []
    for name, b in before.items():
        a = after[name]
        for what in ("modules", "params", "training", "attributes", "gc"):
            if a[what] != b[what]:
                problems.append(f"{name}: {what} differ")
        if set(a["weights"]) != set(b["weights"]):
            problems.append(f"{name}: state_dict keys differ")
        for key, (value, ptr) in b["weights"].items():
            if key in a["weights"]:
                now, now_ptr = a["weights"][key]
                same = (
                    now == value if isinstance(value, tuple) else now.dtype == value.dtype and torch.equal(now, value)
                )
                if now_ptr != ptr or not same:
                    problems.append(f"{name}.{key}: weight changed")
                    break
    return problems


class StepHook:
    """Step-end marks, the FLOP-counted step, the peak-memory window and the profiled step for one run of ours."""

    def __init__(self, schedule: tuple[int, int, int, int], device, profile: int, trace_prefix: str | None):
        self.w, self.f, self.t, _ = schedule
        self.p = profile
        self.device = device
        self.trace_prefix = trace_prefix
        self.host_marks: list[float] = []
        self.events: list = []
        self.flops = None
        self.mode = None
        self.prof = None
        self.pre_peak = (0, 0)
        self.steps_peak = (0, 0)
        self.trace = None
        self.first_timed = self.w + self.f
        self.last_timed = self.first_timed + self.t
        self.adapter_dtypes: set[str] = set()
        self.base_dtypes: set[str] = set()
        self.pipe = None

    def __call__(self, event) -> None:
        if event.kind != "step":
            return
        import torch

        cuda = self.device.type == "cuda"
        k = event.step
        self.host_marks.append(time.perf_counter())
        if cuda:
            mark = torch.cuda.Event(enable_timing=True)
            mark.record()
            self.events.append(mark)
        if k == 1 and self.pipe is not None:
            self._dtypes()
        if self.f and k == self.w:
            from torch.utils.flop_counter import FlopCounterMode

            self.mode = FlopCounterMode(display=False)
            self.mode.__enter__()
        if self.f and k == self.w + 1 and self.mode is not None:
            self.mode.__exit__(None, None, None)
            self.flops, self.mode = self.mode.get_total_flops(), None
        if k == self.first_timed and cuda:
            self.pre_peak = (torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved())
            torch.cuda.reset_peak_memory_stats()
        if k == self.last_timed and cuda:
            torch.cuda.synchronize()
            self.steps_peak = (torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved())
        if self.p and k == self.last_timed:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if cuda:
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self.prof = torch.profiler.profile(activities=activities, record_shapes=True)
            self.prof.__enter__()
        if self.p and k == self.last_timed + 1 and self.prof is not None:
            if cuda:
                torch.cuda.synchronize()
            self.prof.__exit__(None, None, None)
            from kohya_timer import export_profile

            self.trace = export_profile(self.prof, self.trace_prefix, cuda)
            self.prof = None

    def _dtypes(self) -> None:
        """Adapter and frozen-weight dtypes as they are during training (peft wrappers are in place at step 1)."""
        for module in host_parts(self.pipe).values():
            for m in module.modules():
                lora_a = getattr(m, "lora_A", None)
                if lora_a is not None and hasattr(m, "base_layer") and len(lora_a):
                    self.adapter_dtypes.update(str(p.dtype) for p in lora_a.parameters())
                    self.base_dtypes.add(str(m.base_layer.weight.dtype))

    def close(self) -> None:
        if self.mode is not None:
            self.mode.__exit__(None, None, None)
            self.mode = None
        if self.prof is not None:
            self.prof.__exit__(None, None, None)
            self.prof = None

    def step_seconds(self) -> list[float]:
        import torch

        if len(self.host_marks) < self.last_timed:
            return []
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            marks = self.events
            return [marks[i - 1].elapsed_time(marks[i]) / 1000 for i in range(self.first_timed, self.last_timed)]
        marks = self.host_marks
        return [marks[i] - marks[i - 1] for i in range(self.first_timed, self.last_timed)]


def file_finite(path) -> tuple[bool | None, int]:
    """(every tensor finite, tensor count) of a saved LoRA file."""
    import torch
    from safetensors.torch import load_file

    if path is None or not Path(path).exists():
        return None, 0
    tensors = load_file(str(path))
    return all(bool(torch.isfinite(t.float()).all()) for t in tensors.values()), len(tensors)


def losses_of(version) -> list[float]:
    import csv

    path = Path(version.loss_log)
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as handle:
        return [float(row["loss"]) for row in csv.DictReader(handle)]


def load_host(base: Path, precision: str, device):
    from lib_lora_train.hosts.diffusers_host import DiffusersHost

    return DiffusersHost.from_path(base, device=device, dtype=host_dtype(precision, device))


def cmd_ours(args) -> int:
    import torch

    from lib_lora_train.store.projects import ProjectStore

    names = [n for n in args.configs.split(",") if n]
    cfgs = [config(n) for n in names]
    schedule = parse_schedule(args.schedule)
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    results, logdir = Path(args.results), Path(args.work)
    t0 = time.perf_counter()
    try:
        host = load_host(args.base, cfgs[0].precision, device)
    except Exception as exc:
        for cfg in cfgs:
            append_result(results, {"config": cfg.name, "trainer": "ours", "status": "failed",
                                    "reason": f"loading {args.base.name}: {type(exc).__name__}: {exc}"})  # fmt: skip
        raise
    load_s = time.perf_counter() - t0
    print(f"ours: loaded {args.base} in {load_s:.1f}s on {device} (weights {host.pipe.unet.dtype})", flush=True)
    before = tree_state(host.pipe)
    store = ProjectStore(logdir / f"ours-store-{os.getpid()}")  # fresh: a rerun in the same WORK must not clash
    for cfg in cfgs:
        row = run_ours_config(cfg, schedule, args, host, store, before, device, load_s)
        if row.get("status") != "ok" and schedule[1]:
            # the FLOP counter (a dispatch mode with module hooks) is the one thing here that users never run:
            # if the run failed, try once more without it, so that the timing is not lost with the count
            print(f"ours: {cfg.name} failed ({row.get('reason')}); again without the FLOP-counted step", flush=True)
            retry = run_ours_config(cfg, (schedule[0], 0, *schedule[2:]), args, host, store, before, device, load_s)
            retry["first_try"] = row.get("reason")
            row = retry
        append_result(results, row)
    return 0


def run_ours_config(cfg, schedule, args, host, store, before, device, load_s) -> dict:
    import gc as pygc

    import torch

    from lib_lora_train.train.runner import train_version

    w, f, t, p = schedule
    profile = 1 if (p and cfg.name == args.profile) else 0
    total = w + f + t + profile
    hook = StepHook(schedule, device, profile, f"{args.trace_prefix}-{cfg.name}" if profile else None)
    hook.pipe = host.pipe
    host.on_event = hook
    row = {"config": cfg.name, "trainer": "ours", **asdict(cfg), "device": device.type, "load_s": load_s}
    pygc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    try:
        version = store.create_version("bench", f"{cfg.name}-f{f}")
        try:
            result = train_version(host, settings_for(cfg, total), version, dataset_dir=Path(args.data))
        finally:
            hook.close()
        measure_ours(row, cfg, hook, result, version, before, host, device, started)
    except Exception as exc:  # one config failing must not lose the others
        import traceback

        traceback.print_exc()
        row.update(status="failed", reason=f"{type(exc).__name__}: {exc}")
    return row


def measure_ours(row, cfg, hook, result, version, before, host, device, started) -> None:
    """Timings, memory, losses, adapter sanity and the host-restore check of one finished run, into ``row``."""
    import math
    import resource

    import torch

    row["wall_s"] = time.perf_counter() - started
    row["status"] = "ok" if result.status == "done" else "failed"
    if result.status != "done":
        row["reason"] = result.message
    row.update(summarise_steps(hook.step_seconds()))
    row["flops_step"] = hook.flops
    if device.type == "cuda":
        run_alloc = max(hook.pre_peak[0], torch.cuda.max_memory_allocated())
        run_reserved = max(hook.pre_peak[1], torch.cuda.max_memory_reserved())
        row.update(peak_alloc_steps_mib=hook.steps_peak[0] / 2**20, peak_reserved_steps_mib=hook.steps_peak[1] / 2**20,
                   peak_alloc_run_mib=run_alloc / 2**20, peak_reserved_run_mib=run_reserved / 2**20)  # fmt: skip
    row["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    losses = losses_of(version)
    row["loss_last"] = losses[-1] if losses else None
    row["losses_finite"] = bool(losses) and all(math.isfinite(x) for x in losses)
    last_file = result.checkpoints[-1] if result.checkpoints else None
    row["adapters_finite"], row["adapter_tensors"] = file_finite(last_file)
    row["adapter_dtypes"], row["base_dtypes"] = sorted(hook.adapter_dtypes), sorted(hook.base_dtypes)
    problems = tree_differences(before, host.pipe)
    row["restore_ok"], row["restore_problems"] = not problems, problems[:5]
    if hook.trace:
        row["trace"] = hook.trace


# --- kohya -------------------------------------------------------------------------------------------------------


def kohya_command(cfg: Config, base: Path, data: Path, out: Path, total_steps: int) -> list[str]:
    """kohya's command line for ``cfg``: the same model, data, network, optimiser and precision as ours."""
    script = "sdxl_train_network.py" if cfg.arch == "sdxl" else "train_network.py"
    cmd = [
        script, "--pretrained_model_name_or_path", str(base), "--train_data_dir", str(data),
        "--caption_extension", ".txt", "--output_dir", str(out), "--output_name", "bench",
        "--save_model_as", "safetensors", "--network_module", "networks.lora", "--network_dim", str(RANK),
        "--network_alpha", str(int(ALPHA)), "--resolution", str(cfg.resolution), "--train_batch_size", str(cfg.batch),
        "--cache_latents", "--max_train_steps", str(total_steps), "--mixed_precision", cfg.precision,
        "--optimizer_type", "AdamW", "--learning_rate", str(UNET_LR), "--unet_lr", str(UNET_LR),
        "--lr_scheduler", "constant", "--max_grad_norm", "1.0", "--sdpa", "--seed", "0",
        "--max_data_loader_n_workers", "0",
    ]  # fmt: skip
    if cfg.te:
        cmd += ["--text_encoder_lr", str(TE_LR)]
    else:
        cmd += ["--network_train_unet_only"]
        if cfg.arch == "sdxl":
            cmd += ["--cache_text_encoder_outputs"]  # ours caches frozen text encoders' outputs too
    if cfg.gc:
        cmd += ["--gradient_checkpointing"]
    return cmd


def cmd_kohya(args) -> int:
    cfg = config(args.config)
    schedule = parse_schedule(args.schedule)
    started = time.perf_counter()
    row, steps_seen = run_kohya_once(cfg, schedule, args, args.timeout)
    left = args.timeout - (time.perf_counter() - started)
    if row["status"] == "failed" and schedule[1] and steps_seen >= schedule[0] and left > 30:
        # failed at or after the FLOP-counted step: once more without the counter, so the timing is not lost
        print(f"kohya: {cfg.name} failed ({row.get('reason')}); again without the FLOP-counted step", flush=True)
        retry, _ = run_kohya_once(cfg, (schedule[0], 0, *schedule[2:]), args, left)
        retry["first_try"] = row.get("reason")
        row = retry
    append_result(Path(args.results), row)
    return 0 if row["status"] == "ok" else 1


def run_kohya_once(cfg: Config, schedule, args, timeout: float) -> tuple[dict, int]:
    w, f, t, p = schedule
    total = w + f + t + p
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    Path(args.logdir).mkdir(parents=True, exist_ok=True)
    out = work / f"kohya-out-{cfg.name}-f{f}"
    result_json = work / f"kohya-{cfg.name}-f{f}.json"
    result_json.unlink(missing_ok=True)
    log = Path(args.logdir) / f"kohya-{cfg.name}{'' if f else '-noflops'}.log"
    cmd = [args.python, str(HERE / "kohya_timer.py"), str(result_json), f"{w},{f},{t},{p}", "--",
           *kohya_command(cfg, args.base, Path(args.data), out, total)]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=args.site or "", PYTHONUNBUFFERED="1")
    if p:
        env["KOHYA_TRACE"] = f"{args.trace_prefix}-{cfg.name}"
    row = {"config": cfg.name, "trainer": "kohya", **asdict(cfg), "device": args.device_label}
    started = time.perf_counter()
    with open(log, "w", encoding="utf-8") as handle:
        handle.write("$ " + " ".join(cmd) + "\n")
        handle.flush()
        try:
            proc = subprocess.run(cmd, cwd=args.sd_scripts, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                  timeout=timeout, start_new_session=True)  # fmt: skip
            code = proc.returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    row["wall_s"] = time.perf_counter() - started
    timer = json.loads(result_json.read_text(encoding="utf-8")) if result_json.exists() else {}
    ok = code == 0 and not timer.get("error") and bool(timer.get("step_s"))
    row["status"] = "ok" if ok else ("timeout" if code == "timeout" else "failed")
    if not ok:
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
        row["reason"] = timer.get("error") or f"exit {code}: " + " | ".join(tail)[-400:]
    row.update(summarise_steps(timer.get("step_s") or []))
    for key in ("flops_step", "peak_alloc_steps_mib", "peak_reserved_steps_mib", "peak_alloc_run_mib",
                "peak_reserved_run_mib", "peak_rss_mib", "trace"):  # fmt: skip
        if timer.get(key) is not None:
            row[key] = timer[key]
    row["loss_last"] = timer.get("avr_loss")
    files = sorted(out.glob("*.safetensors")) if out.exists() else []
    row["adapters_finite"], row["adapter_tensors"] = _finite_in_subprocess(
        args.python, env, files[-1] if files else None
    )
    return row, int(timer.get("steps_seen") or 0)


def _finite_in_subprocess(python: str, env: dict, path: Path | None):
    """Whether kohya's saved LoRA is all finite (read with kohya's own environment's torch/safetensors)."""
    if path is None:
        return None, 0
    code = ("import sys, torch; from safetensors.torch import load_file; t = load_file(sys.argv[1]); "
            "print(int(all(bool(torch.isfinite(v.float()).all()) for v in t.values())), len(t))")  # fmt: skip
    try:
        out = subprocess.run([python, "-c", code, str(path)], env=env, capture_output=True, text=True, timeout=120)
        finite, count = out.stdout.split()
        return finite == "1", int(count)
    except (ValueError, subprocess.SubprocessError, OSError):
        return None, 0


def cmd_skip(args) -> int:
    cfg = CONFIGS.get(args.config)
    row = {"config": args.config, "trainer": args.trainer, "status": args.status, "reason": args.reason}
    if cfg is not None:
        row.update(asdict(cfg.rehearsed()))
    append_result(Path(args.results), row)
    return 0


# --- checks ------------------------------------------------------------------------------------------------------


def cmd_checks(args) -> int:
    import math
    import warnings

    import torch

    import lib_lora_train.train.runner as runner
    from lib_lora_train.hosts.diffusers_host import DiffusersHost
    from lib_lora_train.store.projects import ProjectStore
    from lib_lora_train.train.runner import train_version

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out_path = Path(args.out)
    report: dict = {"device": device.type, "checks": {}}

    def save(name: str, value: dict) -> None:
        report["checks"][name] = value
        out_path.write_text(json.dumps(report, indent=1), encoding="utf-8")
        print(f"check {name}: {json.dumps(value)}", flush=True)

    cfg = config("sd15-b1-te")
    if args.tiny:
        from lib_lora_train.hosts.tiny_model import build_tiny_pipeline

        pipe = build_tiny_pipeline(seed=1)
        dtype = host_dtype(cfg.precision, device)
        if dtype is not None:
            pipe.to(dtype)
        host = DiffusersHost(pipe.to(device))
    else:
        host = load_host(args.base, cfg.precision, device)
    pipe = host.pipe
    report["host"] = {"base": str(args.base) if not args.tiny else "tiny", "weights": str(pipe.unet.dtype)}
    store = ProjectStore(Path(args.work) / f"checks-store-{os.getpid()}")
    data = Path(args.data)
    steps = args.steps

    def run(label: str, host_obj=None, **over):
        version = store.create_version("check", label)
        settings = settings_for(cfg, steps, save_precision="fp32", **over)
        result = train_version(host_obj or host, settings, version, dataset_dir=data)
        return result, version

    def lora(result):
        from safetensors.torch import load_file

        return load_file(str(result.checkpoints[-1])) if result.checkpoints else {}

    def compare(a: dict, b: dict) -> dict:
        if not a or a.keys() != b.keys():
            return {"identical": False, "why": "missing file or different tensors"}
        diffs = [float((a[k].float() - b[k].float()).abs().max()) for k in a]
        same = sum(torch.equal(a[k], b[k]) for k in a)
        return {"identical": same == len(a), "tensors": len(a), "bitwise_equal": same, "max_abs_diff": max(diffs)}

    # 1. the same run twice, as users run it (cuDNN autotuning on, default algorithms)
    try:
        r1, _ = run("default-1")
        r2, _ = run("default-2")
        save("same_run_twice_default", {**compare(lora(r1), lora(r2)), "status": [r1.status, r2.status]})
    except Exception as exc:
        save("same_run_twice_default", {"error": f"{type(exc).__name__}: {exc}"})

    # 2. the same in deterministic mode: which ops have no deterministic kernel is reported, not fatal
    try:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            d1, _ = run("deterministic-1")
            d2, _ = run("deterministic-2")
        messages = {str(w.message) for w in caught if "deterministic" in str(w.message).lower()}
        nondeterministic = sorted(m.split(" does not have")[0][:160] for m in messages)
        save("same_run_twice_deterministic", {**compare(lora(d1), lora(d2)), "status": [d1.status, d2.status],
             "CUBLAS_WORKSPACE_CONFIG": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
             "nondeterministic_ops_warned": nondeterministic})  # fmt: skip
    except Exception as exc:
        save("same_run_twice_deterministic", {"error": f"{type(exc).__name__}: {exc}"})
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False

    # 3. fp16 loss scaling forced to overflow: steps must be skipped, never applied as inf/NaN
    if device.type == "cuda" and cfg.precision == "fp16":
        original = runner.make_scaler
        scales: list[float] = []

        def hot_scaler(precision, dev):
            scaler = original(precision, dev)
            if not scaler.is_enabled():
                return scaler
            scaler = torch.amp.GradScaler(dev.type, init_scale=2.0**24, growth_interval=2)
            update = scaler.update

            def recorded(new_scale=None):
                update(new_scale)
                scales.append(float(scaler.get_scale()))

            scaler.update = recorded
            return scaler

        runner.make_scaler = hot_scaler
        try:
            hot, version = run("fp16-overflow", max_steps=max(steps, 12))
            tensors = lora(hot)
            finite = bool(tensors) and all(bool(torch.isfinite(t.float()).all()) for t in tensors.values())
            ups = [k for k in tensors if "lora_up" in k]
            moved = sum(bool(tensors[k].abs().max() > 0) for k in ups)
            backoffs = sum(1 for a, b in zip([2.0**24, *scales], scales, strict=False) if b < a)
            losses = losses_of(version)
            save("fp16_loss_scaling_overflow", {
                "status": hot.status, "scales": scales, "skipped_steps": backoffs, "adapters_finite": finite,
                "lora_up_tensors_changed": f"{moved}/{len(ups)}",
                "losses_finite": bool(losses) and all(math.isfinite(x) for x in losses),
                "ok": hot.status == "done" and finite and backoffs > 0 and moved > 0,
            })  # fmt: skip
        except Exception as exc:
            save("fp16_loss_scaling_overflow", {"error": f"{type(exc).__name__}: {exc}"})
        finally:
            runner.make_scaler = original
    else:
        save("fp16_loss_scaling_overflow", {"skipped": f"needs CUDA and fp16 (device {device.type})"})

    # 4. the host exactly restored after a done, a stopped and a failed run (checkpointing on, TE trained, LoCon)
    class ScriptedHost(DiffusersHost):
        def __init__(self, pipe, stop_after=None, fail_at=None):
            super().__init__(pipe)
            self.stop_after, self.fail_at, self.calls = stop_after, fail_at, 0

        def should_stop(self):
            return self.stop_after is not None and sum(e.kind == "step" for e in self.events) >= self.stop_after

        def predict(self, noisy_latents, timesteps, cond):
            self.calls += 1
            if self.fail_at is not None and self.calls >= self.fail_at:
                raise RuntimeError("boom: the UNet failed (scripted)")
            return super().predict(noisy_latents, timesteps, cond)

    pipe.text_encoder.requires_grad_(False)  # a host with its own mix of flags, as the tests do
    pipe.unet.up_blocks[0].eval()
    before = tree_state(pipe)
    for outcome, scripted in (("done", ScriptedHost(pipe)), ("stopped", ScriptedHost(pipe, stop_after=2)),
                              ("error", ScriptedHost(pipe, fail_at=3))):  # fmt: skip
        try:
            result, _ = run(f"restore-{outcome}", scripted, network="locon", gradient_checkpointing=True,
                            max_steps=max(steps, 4))  # fmt: skip
            problems = tree_differences(before, pipe)
            save(f"host_restored_after_{outcome}", {
                "status": result.status, "expected": outcome, "problems": problems[:5],
                "ok": result.status == outcome and not problems, "message": result.message[:200],
                "weights": str(pipe.unet.dtype), "device": str(pipe.unet.device),
            })  # fmt: skip
        except Exception as exc:
            save(f"host_restored_after_{outcome}", {"error": f"{type(exc).__name__}: {exc}"})
    return 0


# --- table -------------------------------------------------------------------------------------------------------


def _fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def cmd_table(args) -> int:
    rows = []
    path = Path(args.results)
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                pass
    env = {}
    if args.env and Path(args.env).exists():
        env = json.loads(Path(args.env).read_text(encoding="utf-8"))
    rates = env.get("matmul_flops", {})
    latest: dict[tuple[str, str], dict] = {}
    for row in rows:
        latest[(row["config"], row["trainer"])] = row  # a rerun replaces an earlier row
    lines = []
    if env:
        gpu = env.get("gpu") or f"CPU ({env.get('cpu_threads')} threads)"
        rate_text = ", ".join(f"{k} {v / 1e12:.0f} TFLOP/s" if v > 1e12 else f"{k} {v / 1e9:.0f} GFLOP/s"
                              for k, v in rates.items() if k != "no")  # fmt: skip
        lines.append(f"device: {gpu}; torch {env.get('torch')} CUDA {env.get('cuda')} cuDNN {env.get('cudnn')}; "
                     f"python {env.get('python')}; matmul {rate_text}")  # fmt: skip
        if env.get("nvidia_smi"):
            lines.append(f"nvidia-smi: {env['nvidia_smi']}")
    for extra in args.versions or []:
        if Path(extra).exists():
            v = json.loads(Path(extra).read_text(encoding="utf-8"))
            lines.append(f"{v.pop('label')}: " + ", ".join(f"{k} {val}" for k, val in v.items() if val))
    header = ("| config | trainer | status | it/s | s/step (median) | vs kohya | alloc steps MiB | reserved steps MiB | "
              "alloc run MiB | reserved run MiB | TFLOP/step | MFU | loss | finite | restored |")  # fmt: skip
    lines += ["", header, "|" + "---|" * 15]
    order = [n for n in PRIORITY if any(k[0] == n for k in latest)] + sorted({k[0] for k in latest} - set(PRIORITY))
    for name in order:
        for trainer in ("ours", "kohya"):
            row = latest.get((name, trainer))
            if row is None:
                continue
            ips = row.get("it_per_s")
            versus = "-"
            other = latest.get((name, "kohya"))
            if trainer == "ours" and other and other.get("it_per_s") and ips:
                versus = f"{ips / other['it_per_s']:.2f}x"
                if other.get("peak_alloc_run_mib") and row.get("peak_alloc_run_mib"):
                    versus += f", mem {row['peak_alloc_run_mib'] / other['peak_alloc_run_mib']:.2f}x"
            flops = row.get("flops_step")
            rate = rates.get(row.get("precision") or "no")
            # on the CPU (the rehearsal) the matmul rate of a shared machine means little: no MFU there
            on_gpu = row.get("device") == "cuda"
            mfu = f"{flops * ips / rate:.1%}" if flops and ips and rate and on_gpu else "-"
            finite = row.get("adapters_finite")
            cells = [
                name, trainer, row.get("status", "?") + (f" ({row['reason'][:90]})" if row.get("status") != "ok"
                                                         and row.get("reason") else ""),
                _fmt(ips, ".2f"), _fmt(row.get("s_per_step"), ".4f"), versus,
                _fmt(row.get("peak_alloc_steps_mib"), ".0f"), _fmt(row.get("peak_reserved_steps_mib"), ".0f"),
                _fmt(row.get("peak_alloc_run_mib"), ".0f"), _fmt(row.get("peak_reserved_run_mib"), ".0f"),
                _fmt(flops / 1e12 if flops else None, ".3f"), mfu, _fmt(row.get("loss_last"), ".4f"),
                "-" if finite is None else ("yes" if finite else "NO"),
                "-" if "restore_ok" not in row else ("yes" if row["restore_ok"] else "NO"),
            ]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    if args.checks and Path(args.checks).exists():
        checks = json.loads(Path(args.checks).read_text(encoding="utf-8"))
        lines += ["", f"checks on {checks.get('device')} (host {checks.get('host')}):"]
        for name, value in checks.get("checks", {}).items():
            lines.append(f"- {name}: {json.dumps(value)[:400]}")
    text = "\n".join(lines)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(text, flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("env")
    p.add_argument("--out", required=True)
    p = sub.add_parser("versions")
    p.add_argument("--label", required=True)
    p.add_argument("--out", required=True)
    p = sub.add_parser("dataset")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--count", type=int, default=16)
    p = sub.add_parser("ours")
    p.add_argument("--base", type=Path, required=True)
    p.add_argument("--configs", required=True, help="comma-separated config names (one architecture)")
    p.add_argument("--data", required=True)
    p.add_argument("--results", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--schedule", default="3,1,10,1")
    p.add_argument("--profile", default="", help="the config whose last step is profiled (needs P=1)")
    p.add_argument("--trace-prefix", default="trace-ours")
    p.add_argument("--device", default="auto")
    p = sub.add_parser("kohya")
    p.add_argument("--sd-scripts", required=True)
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--site", default="", help="PYTHONPATH for kohya's process (its carried libraries)")
    p.add_argument("--config", required=True)
    p.add_argument("--base", type=Path, required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--results", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--logdir", required=True)
    p.add_argument("--schedule", default="3,1,10,0")
    p.add_argument("--trace-prefix", default="trace-kohya")
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--device-label", default="cuda")
    p = sub.add_parser("checks")
    p.add_argument("--base", type=Path)
    p.add_argument("--tiny", action="store_true", help="a tiny random SD1 pipeline instead of --base (rehearsal)")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--steps", type=int, default=4)
    p = sub.add_parser("skip")
    p.add_argument("--results", required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--trainer", required=True)
    p.add_argument("--status", default="skipped")
    p.add_argument("--reason", required=True)
    p = sub.add_parser("table")
    p.add_argument("--results", required=True)
    p.add_argument("--env")
    p.add_argument("--checks")
    p.add_argument("--versions", nargs="*")
    p.add_argument("--out")
    args = parser.parse_args()
    return {"env": cmd_env, "versions": cmd_versions, "dataset": cmd_dataset, "ours": cmd_ours, "kohya": cmd_kohya,
            "checks": cmd_checks, "skip": cmd_skip, "table": cmd_table}[args.command](args)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
