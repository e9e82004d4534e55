#!/usr/bin/env bash
# The README's "run the product": set up .venv on first use, then serve the four tabs in the standalone app and
# print its URL. Without --base it uses the tiny test model (../shared/fixtures, or one it builds), so every tab
# can be tried at once on a machine without a GPU. Options: python -m lib_lora_train ui --help
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash tools/setup_venv.sh
export GRADIO_ANALYTICS_ENABLED=False
exec "$root/.venv/bin/python" -m lib_lora_train ui "$@"
