#!/usr/bin/env bash
# One device call: our engine against kohya-ss sd-scripts on one GPU, side by side at identical settings, plus the
# CUDA correctness checks and a torch.profiler trace of one step (issue 16). See bench/compare_kohya.md.
#
#   bench/gpu_check.sh SD_SCRIPTS_DIR WHEEL_DIR HF_HOME_DIR
#
# SD_SCRIPTS_DIR  a copy of kohya-ss/sd-scripts v0.10.1 (its .py files, library/, networks/); never part of this repo
# WHEEL_DIR       wheels/ours/*.whl (diffusers 0.27.2, transformers 4.30.2, accelerate 0.21.0, peft 0.13.2,
#                 huggingface_hub 0.25.2) and wheels/kohya/*.whl (sd-scripts' pins: diffusers 0.32.1,
#                 transformers 4.54.1, accelerate 1.6.0, huggingface_hub 0.34.3, tokenizers 0.21, ftfy, wcwidth, toml,
#                 voluptuous, imagesize); each set is installed --no-deps into its own --target folder and put first
#                 on PYTHONPATH for that trainer only, over the machine's own torch/numpy/safetensors/opencv/einops
# HF_HOME_DIR     a Hugging Face cache holding openai/clip-vit-large-patch14 (tokenizer + config); copied, and the
#                 laion/CLIP-ViT-bigG-14 tokenizer that kohya's SDXL asks for is added as a copy of it
#
# It builds the SD1.5- and SDXL-shaped random checkpoints (bench/make_sd15_checkpoint.py, make_sdxl_checkpoint.py)
# and the datasets, then runs, most important first, each stage only if it fits the budget:
#   ours  (one process per architecture): every SD1.5 config, then SDXL; host restored bit for bit after each;
#   kohya (one process per config):       sd15-b1-te, then (after the checks) SDXL, then the other SD1.5 configs;
#   checks (ours, SD1.5 fp16 host on CUDA): same run twice (default / deterministic), fp16 overflow, host restore.
# In order: ours SD1.5, kohya sd15-b1-te, checks, ours SDXL, kohya SDXL, kohya's other SD1.5 configs.
# Configs (bench/gpu_bench.py): sd15-b{1,4}-{te,unet}[-gc] at 512 px fp16, sdxl-b1-unet-gc at 1024 px bf16; LoRA
# rank 16 / alpha 8, AdamW, UNet lr 1e-4, TE lr 5e-5, constant schedule, latents cached, text-encoder outputs cached
# when the text encoder is not trained. Every step schedule is W warm-up, 1 FLOP-counted, T timed (+1 profiled).
#
# Output in $OUT (at most 8 files, as the device tool returns them): console.log, results.jsonl (one line per run,
# written the moment it ends), env.json, checks.json, table.txt, logs.tgz (every log, the versions) and traces.tar
# (the profiled step of ours and of kohya: chrome-trace .json.gz and the top-kernel table .txt).
# The table is printed last, with whatever finished.
#
# Environment: OUT (default bench/out/gpu-results), WORK (scratch, default /tmp/gpu-check), PYTHON (python3),
# CONFIGS (comma list, default all), TRAINERS (ours,kohya), CHECKS (1), SCHEDULE (W,F,T: 3,1,10),
# PROFILE_CONFIG (sd15-b1-te), BUDGET_S (430: no stage starts unless its estimate fits), HARD_S (470: no stage runs
# past it), KEEP_CKPT=1 (reuse checkpoints already in WORK).
# REHEARSAL=1: the same script on the CPU: 64 px, fp32, schedule 1,1,1, three configs (CONFIGS=all: every one), tiny
# SDXL for ours (kohya's SDXL is fixed full size: skipped unless REHEARSAL_SDXL=full), checks on a tiny pipeline;
# no budget.
set -uo pipefail

if [[ $# -lt 3 ]]; then
    sed -n '2,37p' "$0"
    exit 2
fi
REPO=$(cd "$(dirname "$0")/.." && pwd)
SD_SCRIPTS=$(realpath "$1")
WHEELS=$(realpath "$2")
HF_SRC=$(realpath "$3")
PY=${PYTHON:-python3}
REHEARSAL=${REHEARSAL:-0}
export REHEARSAL
OUT=${OUT:-$REPO/bench/out/gpu-results}
WORK=${WORK:-/tmp/gpu-check}
rm -rf "$WORK/logs" "$WORK/traces" "$WORK"/ours-store-* "$WORK"/checks-store-* "$WORK"/kohya-out-* "$WORK"/kohya-*.json
mkdir -p "$OUT" "$WORK/logs" "$WORK/traces" "$WORK/ckpt"
rm -f "$OUT"/{results.jsonl,checks.json,table.txt,console.log,env.json,logs.tgz,traces.tar}
exec > >(tee -a "$OUT/console.log") 2>&1

if [[ $REHEARSAL == 1 ]]; then
    DEV=cpu
    BUDGET_S=${BUDGET_S:-100000}
    HARD_S=${HARD_S:-100000}
    SCHEDULE=${SCHEDULE:-1,1,1}
    # every flag once (TE trained and not, batch 1 and 4, checkpointing on and off) in a few minutes; CONFIGS=all
    # for the full matrix (tens of minutes on two shared cores)
    CONFIGS=${CONFIGS:-sd15-b1-te,sdxl-b1-unet-gc,sd15-b4-unet-gc}
    FACTOR=20 # stage timeouts: CPU steps are that much slower
else
    DEV=cuda
    BUDGET_S=${BUDGET_S:-430}
    HARD_S=${HARD_S:-470}
    SCHEDULE=${SCHEDULE:-3,1,10}
    FACTOR=1
fi
ALL="sd15-b1-te,sdxl-b1-unet-gc,sd15-b4-te,sd15-b1-unet,sd15-b1-te-gc,sd15-b4-unet,sd15-b4-te-gc,sd15-b1-unet-gc,sd15-b4-unet-gc"
CONFIGS=${CONFIGS:-$ALL}
[[ $CONFIGS == all ]] && CONFIGS=$ALL
TRAINERS=${TRAINERS:-ours,kohya}
CHECKS=${CHECKS:-1}
PROFILE_CONFIG=${PROFILE_CONFIG:-sd15-b1-te}
RESULTS=$OUT/results.jsonl
T0=$SECONDS

say() { echo "[gpu_check +$((SECONDS - T0))s] $*"; }
has() { [[ ",$1," == *",$2,"* ]]; }
# fits NEED: the stage's estimate fits in what is left of the budget
fits() { ((SECONDS - T0 + $1 <= BUDGET_S)); }
# limit TIMEOUT: the stage's own timeout, cut so that nothing runs past HARD_S
limit() {
    local left=$((HARD_S - (SECONDS - T0)))
    local t=$(($1 * FACTOR))
    ((t > left)) && t=$left
    ((t < 5)) && t=5
    echo "$t"
}
# the logs and the traces in two archives, rewritten after every stage (a trace too large to come back must not
# take the logs with it)
pack() {
    tar -czf "$OUT/logs.tgz.tmp" -C "$WORK" logs && mv "$OUT/logs.tgz.tmp" "$OUT/logs.tgz"
    tar -cf "$OUT/traces.tar.tmp" -C "$WORK" traces && mv "$OUT/traces.tar.tmp" "$OUT/traces.tar"
}
# run_logged NAME TIMEOUT CMD...: output to logs/NAME.log, its result lines to the console, the tail on failure
run_logged() {
    local name=$1 t=$2
    shift 2
    local log=$WORK/logs/$name.log
    say "$name: start (timeout ${t}s)"
    (cd "$REPO" && timeout -k 10 "$t" "$@") >"$log" 2>&1
    local rc=$?
    grep -E '^(result|check|env|versions|dataset|make_sd|verify|ours:)' "$log" | cut -c1-400
    if ((rc != 0)); then
        say "$name: exit $rc$( ((rc == 124 || rc == 137)) && echo ' (timeout)'); last lines:"
        tail -n 15 "$log" | cut -c1-300
    fi
    say "$name: done"
    pack
    return $rc
}
skip() { (cd "$REPO" && "$PY" bench/gpu_bench.py skip --results "$RESULTS" --config "$1" --trainer "$2" --status "${4:-skipped}" --reason "$3") >/dev/null; }
has_row() { grep -q "\"config\": \"$1\", \"trainer\": \"$2\"" "$RESULTS" 2>/dev/null; }

say "repo $REPO ($(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo no-git)), sd-scripts $SD_SCRIPTS, device $DEV, rehearsal $REHEARSAL, budget ${BUDGET_S}s/${HARD_S}s"

# --- the two library sets, the HF cache ---------------------------------------------------------------------------
OSITE=$WORK/site-ours
KSITE=$WORK/site-kohya
rm -rf "$OSITE" "$KSITE"
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$OSITE" "$WHEELS"/ours/*.whl || say "ours' wheels failed to install"
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$KSITE" "$WHEELS"/kohya/*.whl || say "kohya's wheels failed to install"
# transformers 4.30.2 refuses to import beside the machine's tokenizers (it wants <0.14, which has no cp312 wheel);
# it uses none of it here (slow CLIP tokenizer), so its version check is given the version it asks for
mkdir -p "$OSITE/tokenizers-0.13.3.dist-info"
printf 'Metadata-Version: 2.1\nName: tokenizers\nVersion: 0.13.3\n' >"$OSITE/tokenizers-0.13.3.dist-info/METADATA"
export HF_HOME=$WORK/hf_home HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DIFFUSERS_OFFLINE=1 PYTHONUNBUFFERED=1 \
    TOKENIZERS_PARALLELISM=false
rm -rf "$HF_HOME"
cp -r "$HF_SRC" "$HF_HOME" && chmod -R u+w "$HF_HOME"
CLIP_L=$HF_HOME/hub/models--openai--clip-vit-large-patch14
BIGG=$HF_HOME/hub/models--laion--CLIP-ViT-bigG-14-laion2B-39B-b160k
mkdir -p "$BIGG" && cp -r "$CLIP_L/refs" "$CLIP_L/snapshots" "$BIGG/"
OURS=(env PYTHONPATH="$OSITE" "$PY")
KOHYA=(env PYTHONPATH= "$PY" bench/gpu_bench.py kohya --sd-scripts "$SD_SCRIPTS" --python "$PY" --site "$KSITE"
    --device-label "$DEV")

run_logged env 120 "${OURS[@]}" bench/gpu_bench.py env --out "$OUT/env.json"
run_logged versions-ours 60 "${OURS[@]}" bench/gpu_bench.py versions --label ours --out "$WORK/logs/versions-ours.json"
run_logged versions-kohya 60 env PYTHONPATH="$KSITE" "$PY" bench/gpu_bench.py versions --label kohya \
    --out "$WORK/logs/versions-kohya.json"
cat "$SD_SCRIPTS/COMMIT" 2>/dev/null || git -C "$SD_SCRIPTS" log -1 --format='sd-scripts %H %s' 2>/dev/null || true

SD15_CONFIGS=""
for c in ${CONFIGS//,/ }; do [[ $c == sd15-* ]] && SD15_CONFIGS+="${SD15_CONFIGS:+,}$c"; done
OURS_SCHED="$SCHEDULE,1"
kohya_sched() { if [[ $1 == "$PROFILE_CONFIG" ]]; then echo "$SCHEDULE,1"; else echo "$SCHEDULE,0"; fi; }
RES_SD15=512
RES_SDXL=1024
[[ $REHEARSAL == 1 ]] && RES_SD15=64 RES_SDXL=64

# --- SD1.5 ----------------------------------------------------------------------------------------------------------
SD15=$WORK/ckpt/sd15-random.safetensors
sd15_ready=0
if [[ -n $SD15_CONFIGS ]]; then
    if [[ ${KEEP_CKPT:-0} == 1 && -f $SD15 && -f ${SD15%.safetensors}.yaml ]]; then
        say "reusing $SD15"
        sd15_ready=1
    elif fits 40; then
        run_logged ckpt-sd15 "$(limit 150)" "${OURS[@]}" bench/make_sd15_checkpoint.py "$SD15" --device "$DEV" && sd15_ready=1
    fi
    run_logged data-$RES_SD15 "$(limit 60)" "${OURS[@]}" bench/gpu_bench.py dataset --out "$WORK/data-$RES_SD15" --size $RES_SD15
fi
if [[ -n $SD15_CONFIGS ]] && has "$TRAINERS" ours; then
    if ((sd15_ready)) && fits 90; then
        run_logged ours-sd15 "$(limit 240)" "${OURS[@]}" bench/gpu_bench.py ours --base "$SD15" --configs "$SD15_CONFIGS" \
            --data "$WORK/data-$RES_SD15" --results "$RESULTS" --work "$WORK" --schedule "$OURS_SCHED" \
            --profile "$PROFILE_CONFIG" --trace-prefix "$WORK/traces/ours"
    fi
    for c in ${SD15_CONFIGS//,/ }; do
        has_row "$c" ours || skip "$c" ours "not run: checkpoint missing, budget, or the ours-sd15 process ended early" not-run
    done
fi
kohya_one() {
    local c=$1 ckpt=$2 data=$3 need=$4 t=$5
    if ! fits "$need"; then
        skip "$c" kohya "budget: ${need}s estimate did not fit"
        return
    fi
    local outer
    outer=$(limit "$t")
    # kohya's own process is stopped 15 s before this stage's timeout, so that its row is still written
    run_logged "kohya-$c" "$outer" "${KOHYA[@]}" --config "$c" --base "$ckpt" --data "$data" --results "$RESULTS" \
        --work "$WORK" --logdir "$WORK/logs" --schedule "$(kohya_sched "$c")" --trace-prefix "$WORK/traces/kohya" \
        --timeout $((outer > 30 ? outer - 15 : outer))
    has_row "$c" kohya || skip "$c" kohya "no result (see logs/kohya-$c.log)" failed
}
KOHYA_DONE=","
if has "$TRAINERS" kohya && ((sd15_ready)); then
    for c in ${SD15_CONFIGS//,/ }; do
        kohya_one "$c" "$SD15" "$WORK/data-$RES_SD15" 30 120
        KOHYA_DONE+="$c,"
        break # the first (most important) one now, the others after the checks and SDXL
    done
fi

# --- correctness on the device ---------------------------------------------------------------------------------------
if [[ $CHECKS == 1 ]]; then
    if [[ $REHEARSAL == 1 ]]; then
        CHECK_BASE=(--tiny)
        [[ -d $WORK/data-$RES_SD15 ]] || run_logged data-$RES_SD15 60 "${OURS[@]}" bench/gpu_bench.py dataset --out "$WORK/data-$RES_SD15" --size $RES_SD15
    else
        CHECK_BASE=(--base "$SD15")
    fi
    if [[ $REHEARSAL == 1 ]] || { ((sd15_ready)) && fits 50; }; then
        run_logged checks "$(limit 150)" env CUBLAS_WORKSPACE_CONFIG=:4096:8 PYTHONPATH="$OSITE" "$PY" bench/gpu_bench.py \
            checks "${CHECK_BASE[@]}" --data "$WORK/data-$RES_SD15" --out "$OUT/checks.json" --work "$WORK" --steps 4
    else
        say "checks: skipped (budget or no SD1.5 checkpoint)"
    fi
fi

# --- SDXL -----------------------------------------------------------------------------------------------------------
if has "$CONFIGS" sdxl-b1-unet-gc; then
    SDXL=$WORK/ckpt/sdxl-random.safetensors
    TINY_SDXL=()
    if [[ $REHEARSAL == 1 && ${REHEARSAL_SDXL:-tiny} != full ]]; then
        SDXL=$WORK/ckpt/sdxl-tiny.safetensors
        TINY_SDXL=(--tiny --hf-home "$HF_HOME")
    fi
    sdxl_ready=0
    if [[ ${KEEP_CKPT:-0} == 1 && -f $SDXL && -f ${SDXL%.safetensors}.yaml && ${#TINY_SDXL[@]} == 0 ]]; then
        say "reusing $SDXL"
        sdxl_ready=1
    elif fits 60; then
        run_logged ckpt-sdxl "$(limit 240)" "${OURS[@]}" bench/make_sdxl_checkpoint.py "$SDXL" --device "$DEV" \
            "${TINY_SDXL[@]}" && sdxl_ready=1
    fi
    run_logged data-$RES_SDXL "$(limit 60)" "${OURS[@]}" bench/gpu_bench.py dataset --out "$WORK/data-$RES_SDXL" --size $RES_SDXL
    if has "$TRAINERS" ours; then
        if ((sdxl_ready)) && fits 80; then
            run_logged ours-sdxl "$(limit 200)" "${OURS[@]}" bench/gpu_bench.py ours --base "$SDXL" \
                --configs sdxl-b1-unet-gc --data "$WORK/data-$RES_SDXL" --results "$RESULTS" --work "$WORK" \
                --schedule "$OURS_SCHED" --profile "$PROFILE_CONFIG" --trace-prefix "$WORK/traces/ours"
        fi
        has_row sdxl-b1-unet-gc ours || skip sdxl-b1-unet-gc ours "not run: checkpoint missing, budget, or the process ended early" not-run
    fi
    if has "$TRAINERS" kohya; then
        if ((${#TINY_SDXL[@]})); then
            skip sdxl-b1-unet-gc kohya "rehearsal: kohya's SDXL is full size only (REHEARSAL_SDXL=full)"
        elif ((sdxl_ready)); then
            kohya_one sdxl-b1-unet-gc "$SDXL" "$WORK/data-$RES_SDXL" 80 200
        else
            skip sdxl-b1-unet-gc kohya "no SDXL checkpoint" not-run
        fi
    fi
fi

# --- the other SD1.5 configs for kohya ------------------------------------------------------------------------------
if has "$TRAINERS" kohya && ((sd15_ready)); then
    for c in ${SD15_CONFIGS//,/ }; do
        has "$KOHYA_DONE" "$c" && continue
        kohya_one "$c" "$SD15" "$WORK/data-$RES_SD15" 30 120
    done
elif has "$TRAINERS" kohya; then
    for c in ${SD15_CONFIGS//,/ }; do has_row "$c" kohya || skip "$c" kohya "no SD1.5 checkpoint" not-run; done
fi

# --- the table --------------------------------------------------------------------------------------------------------
pack
say "finished in $((SECONDS - T0))s"
(cd "$REPO" && "$PY" bench/gpu_bench.py table --results "$RESULTS" --env "$OUT/env.json" --checks "$OUT/checks.json" \
    --versions "$WORK/logs/versions-ours.json" "$WORK/logs/versions-kohya.json" --out "$OUT/table.txt")
sleep 1 # let tee finish console.log before the device tool collects $OUT
