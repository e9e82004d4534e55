#!/usr/bin/env bash
# The README's "run the product": set up .venv, make a small dataset, train a LoRA from the command line on a
# tiny model, and say where the files are. Uses ../shared/fixtures/diffusers-tiny-sd1 when it is beside the clone,
# otherwise builds a tiny random diffusers model first. Runs on a CPU in about a minute.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash tools/setup_venv.sh
py="$root/.venv/bin/python"

base="$root/../shared/fixtures/diffusers-tiny-sd1"
if [ ! -f "$base/model_index.json" ]; then
  base="$root/outputs/demo_base_tiny_sd1"
  if [ ! -f "$base/model_index.json" ]; then
    echo "building a tiny random SD1 model in $base (no ../shared/fixtures here)"
    "$py" -m lib_lora_train.hosts.tiny_model "$base" >/dev/null
  fi
fi

dataset="$root/outputs/demo_dataset"
rm -rf "$dataset"
"$py" -c "from lib_lora_train.hosts.tiny_model import write_tiny_dataset; write_tiny_dataset('$dataset', count=6, size=64)"
echo "dataset: $dataset ($(find "$dataset" -name '*.png' | wc -l) images with captions)"

version="v$(date +%Y%m%d-%H%M%S)"
"$py" -m lib_lora_train train \
  --dataset "$dataset" --base "$base" --project demo --version "$version" \
  --outputs "$root/outputs/train_tools" --network lora --rank 4 --alpha 2 \
  --resolution 64 --batch-size 2 --epochs 2 --save-every 1 --unet-lr 1e-3 --te-lr 1e-4 --seed 1 \
  --sample-every 2 --sample-prompts "demo, red square, white background" --sample-steps 4

out="$root/outputs/train_tools/demo/versions/$version"
echo
echo "LoRA files:   $out/checkpoints/"
ls -1 "$out/checkpoints/"
echo "samples:      $out/samples/"
echo "loss log:     $out/logs/loss.csv"
echo "settings:     $out/config.json"
