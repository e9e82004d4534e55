#!/usr/bin/env bash
# Creates .venv with the WebUI v1.10.x package pins plus our runtime and dev packages.
# Idempotent: a second run with everything present only checks the stamp.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
stamp="$venv/.requirements.sha256"
want=$(cat "$root"/requirements/*.txt | sha256sum | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
python3 -m venv "$venv"
# pip on these machines warns about every missing mirror folder; keep real errors only
pip_q() { "$venv/bin/python" -m pip install -q "$@" 2>&1 | grep -v "is ignored: it is neither" || true; }
pip_q --upgrade "pip<25" "setuptools>=77" wheel
# torch first, on its own: the pinned CPU build, so nothing later pulls a CUDA one.
pip_q torch==2.13.0
pip_q -r "$root/requirements/dev.txt"
"$venv/bin/python" -c "import torch, peft, onnxruntime, diffusers, gradio" || { echo "setup_venv: the install is incomplete (see the pip output above)" >&2; exit 1; }
echo "$want" > "$stamp"
