#!/usr/bin/env bash
# Paired speed/memory comparison: kohya-ss sd-scripts' train_network.py vs our bench/bench_train.py at identical
# settings (SD1.5 shape, 512 px, batch 1, LoRA rank 16 / alpha 8, AdamW, UNet lr 1e-4, text encoder trained at 5e-5,
# latents cached, fp32 on the CPU). It neither fetches nor builds sd-scripts: pass an existing checkout and the python
# of a venv where it runs. See bench/compare_kohya.md for how that venv, the checkpoint and the dataset were made.
#
#   bench/run_kohya_comparison.sh SD_SCRIPTS_DIR KOHYA_PYTHON CHECKPOINT DATA_DIR [ROUNDS] [STEPS] [OUR_REPO]
#
# DATA_DIR must hold a kohya-style folder such as 2_subject/ with two 512x512 images and .txt captions (our bench
# writes the same shape of dataset itself: two 512 px images, 2 repeats, so both runs see 4 steps per epoch).
# STEPS counts steps after the first (warm-up) step, for both trainers (default 3, so each run trains 4 steps: one
# epoch, no epoch boundary inside the timed steps). Runs alternate kohya, ours, kohya, ours... For every run it prints
# one line: wall s/step and process-CPU s/step over the timed steps, peak RSS (VmHWM) of the trainer process over
# its whole life (loading included), and the largest RSS sampled during the timed steps.
# CPU seconds per step are the figure to trust when other jobs share the cores; wall seconds when the machine is idle.
set -euo pipefail

if [[ $# -lt 4 ]]; then
    sed -n '2,15p' "$0"
    exit 2
fi
SD_SCRIPTS=$(realpath "$1")
KOHYA_PY=$2
CKPT=$(realpath "$3")
DATA=$(realpath "$4")
ROUNDS=${5:-2}
STEPS=${6:-3}
OURS=$(realpath "${7:-$(dirname "$0")/..}")
OUR_PY=${OUR_PY:-$OURS/.venv/bin/python}
LOGS=${LOGS:-$(mktemp -d)}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
: "${HF_HOME:?set HF_HOME to a Hugging Face cache holding openai/clip-vit-large-patch14 (tokenizer + config)}"
export HF_HOME

# Runs one command, samples its CPU time and peak RSS from /proc every 0.2 s, and finds when each step finished:
# kohya from its tqdm counter ("k/N ["), ours from the time column of the loss CSV that the run keeps open.
MONITOR=$(
    cat <<'PY'
import bisect, glob, os, re, subprocess, sys, threading, time

kind, log_path, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
tick = os.sysconf("SC_CLK_TCK")
log = open(log_path, "wb")
proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
samples, steps, csv_path, hwm_kib = [], {}, None, 0

def reader():
    tail = b""
    for chunk in iter(lambda: proc.stdout.read1(4096), b""):
        log.write(chunk)
        log.flush()
        tail = (tail + chunk)[-4096:]
        for m in re.finditer(rb"steps:.*?(\d+)/(\d+) \[", tail):
            steps.setdefault(int(m[1]), time.time())

threading.Thread(target=reader, daemon=True).start()
while proc.poll() is None:
    try:
        fields = open(f"/proc/{proc.pid}/stat").read().rsplit(")", 1)[1].split()
        status = open(f"/proc/{proc.pid}/status").read()
        rss_kib = int(re.search(r"VmRSS:\s+(\d+)", status)[1])
        samples.append((time.time(), (int(fields[11]) + int(fields[12])) / tick, rss_kib))
        hwm_kib = int(re.search(r"VmHWM:\s+(\d+)", status)[1])
        if kind == "ours" and csv_path is None:
            for fd in glob.glob(f"/proc/{proc.pid}/fd/*"):
                target = os.readlink(fd)
                if target.endswith(".csv") and "/logs/" in target:
                    csv_path = target
        if csv_path and os.path.exists(csv_path):
            for row in open(csv_path).read().splitlines()[1:]:
                cells = row.split(",")
                if len(cells) == 6:
                    steps.setdefault(int(cells[0]), float(cells[5]))
    except (FileNotFoundError, ProcessLookupError, ValueError, TypeError):
        pass
    time.sleep(0.2)
proc.wait()

def cpu_at(t):
    i = min(max(bisect.bisect([s[0] for s in samples], t), 1), len(samples) - 1)
    (t0, c0, _), (t1, c1, _) = samples[i - 1], samples[i]
    return c0 + (c1 - c0) * (t - t0) / (t1 - t0) if t1 > t0 else c1

done = sorted(steps)
if proc.returncode != 0 or 1 not in steps or done[-1] < 2:
    print(f"{kind}: failed (exit {proc.returncode}, steps seen {done}); log {log_path}")
    sys.exit(1)
first, last = steps[1], steps[done[-1]]
n = done[-1] - 1
for line in open(log_path, errors="replace").read().splitlines():
    if line.startswith("bench_train "):
        print(line)
print(
    f"compare trainer={kind} timed_steps={n} wall_s_per_step={(last - first) / n:.2f} "
    f"cpu_s_per_step={(cpu_at(last) - cpu_at(first)) / n:.2f} peak_rss_mib={hwm_kib / 1024:.0f} "
    f"steps_rss_max_mib={max(r for t, _, r in samples if first <= t <= last) / 1024:.0f} "
    f"load1={os.getloadavg()[0]:.1f} log={log_path}"
)
PY
)

run_kohya() {
    local out="$LOGS/kohya-out-$1"
    (cd "$SD_SCRIPTS" && "$OUR_PY" -c "$MONITOR" kohya "$LOGS/kohya-$1.log" "$KOHYA_PY" train_network.py \
        --pretrained_model_name_or_path "$CKPT" --train_data_dir "$DATA" --caption_extension .txt \
        --output_dir "$out" --output_name bench --save_model_as safetensors \
        --network_module networks.lora --network_dim 16 --network_alpha 8 \
        --resolution 512 --train_batch_size 1 --cache_latents --max_train_steps $((STEPS + 1)) \
        --mixed_precision no --optimizer_type AdamW --learning_rate 1e-4 --unet_lr 1e-4 --text_encoder_lr 5e-5 \
        --max_grad_norm 1.0 --sdpa --seed 0 --max_data_loader_n_workers 0)
}

run_ours() {
    (cd "$OURS" && "$OUR_PY" -c "$MONITOR" ours "$LOGS/ours-$1.log" "$OUR_PY" bench/bench_train.py \
        --base "$CKPT" --resolution 512 --batch 1 --rank 16 --te-lr 5e-5 --steps "$STEPS" --mixed-precision no)
}

echo "logs in $LOGS; kohya $(git -C "$SD_SCRIPTS" describe --tags 2>/dev/null || echo "(no git)"); ours $(git -C "$OURS" rev-parse --short HEAD 2>/dev/null || echo "(no git)")"
for round in $(seq 1 "$ROUNDS"); do
    echo "round $round $(date -u +%H:%M:%S) $(cut -d' ' -f1-3 /proc/loadavg)"
    run_kohya "$round"
    run_ours "$round"
done
