#!/usr/bin/env bash
# Gather what bench/gpu_check.sh needs on the device machine and lacks there, into one git-ignored folder that the
# device tool's `carry` takes along: the two wheel sets (ours, and sd-scripts' pins) for Python 3.12 x86-64, and the
# Hugging Face cache entry of openai/clip-vit-large-patch14 (tokenizer + config; no weights).
#
#   bench/gpu_prepare.sh [CARRY_DIR] [HF_HOME_SRC]
#
# CARRY_DIR defaults to bench/out/gpu-carry (bench/out/ is in .gitignore), HF_HOME_SRC to the fixtures' offline cache
# ../shared/fixtures/webui-tiny/hf_home. It does not fetch or build sd-scripts: put a copy of its v0.10.1 source in
# CARRY_DIR/sd-scripts as bench/compare_kohya.md says (that folder is never committed). Needs pip and PyPI.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CARRY=${1:-$REPO/bench/out/gpu-carry}
HF_SRC=${2:-$REPO/../shared/fixtures/webui-tiny/hf_home}
PY=${PYTHON:-python3}
mkdir -p "$CARRY/wheels/ours" "$CARRY/wheels/kohya"
# the device's python is 3.12 on x86-64; --no-deps: everything else is on the machine already
PLATFORM=(--no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
    --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
    --platform manylinux1_x86_64)
# ours: the WebUI v1.10 stack the product runs on (requirements/host-pins.txt, runtime.txt) plus diffusers 0.27.2
"$PY" -m pip download -q "${PLATFORM[@]}" -d "$CARRY/wheels/ours" diffusers==0.27.2 transformers==4.30.2 \
    huggingface_hub==0.25.2 accelerate==0.21.0 peft==0.13.2
# kohya: sd-scripts v0.10.1's requirements.txt pins (and the libraries it imports that the device lacks)
"$PY" -m pip download -q "${PLATFORM[@]}" -d "$CARRY/wheels/kohya" diffusers==0.32.1 transformers==4.54.1 \
    huggingface_hub==0.34.3 accelerate==1.6.0 "tokenizers>=0.21,<0.22" ftfy==6.3.1 wcwidth toml==0.10.2 \
    voluptuous==0.15.2 imagesize==1.4.1
mkdir -p "$CARRY/hf_home/hub"
cp -r "$HF_SRC/hub/models--openai--clip-vit-large-patch14" "$CARRY/hf_home/hub/"
chmod -R u+w "$CARRY/hf_home"
if [[ ! -f $CARRY/sd-scripts/train_network.py ]]; then
    echo "note: $CARRY/sd-scripts/ has no sd-scripts source yet (see bench/compare_kohya.md)"
fi
du -sh "$CARRY"/* "$CARRY"
git -C "$REPO" check-ignore -q "$CARRY" && echo "$CARRY is git-ignored" || echo "WARNING: $CARRY is not git-ignored"
