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
"$venv/bin/python" -m pip install -q --upgrade "pip<25" "setuptools>=77" wheel
# torch first, on its own: the pinned CPU build, so nothing later pulls a CUDA one.
"$venv/bin/python" -m pip install -q torch==2.13.0
"$venv/bin/python" -m pip install -q -r "$root/requirements/dev.txt"
echo "$want" > "$stamp"
