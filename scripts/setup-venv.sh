#!/usr/bin/env bash
# Creates .venv at the repository root with exactly what the Python-backed tests need
# (test/hf.test.ts, test/gguf.test.ts, test/ddp.test.ts): torch (CPU), transformers, gguf,
# safetensors, numpy. Offline: the package indexes come from `pip config get
# global.extra-index-url` (the first is used as --index-url, the rest as --extra-index-url);
# without that config, pip's default index is used. A no-op when .venv already has them.
#
#   scripts/setup-venv.sh              # env: PYTHON (default python3), TORCH_SPEC (default torch==2.13.0+cpu)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0+cpu}
CHECK='import torch, transformers, gguf, safetensors, numpy; from transformers import ArceeForCausalLM'

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "$CHECK" >/dev/null 2>&1; then
  echo "setup-venv: $VENV already has torch, transformers, gguf, safetensors, numpy"
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"

index_args=()
urls=$(pip config get global.extra-index-url 2>/dev/null || "$PYTHON" -m pip config get global.extra-index-url 2>/dev/null || true)
if [ -n "$urls" ]; then
  first=1
  for url in $urls; do
    if [ $first = 1 ]; then index_args+=(--index-url "$url"); first=0
    else index_args+=(--extra-index-url "$url"); fi
  done
fi

"$VENV/bin/pip" install --disable-pip-version-check "${index_args[@]}" \
  "$TORCH_SPEC" 'transformers>=4.56' gguf safetensors numpy
"$VENV/bin/python" -c "$CHECK"
echo "setup-venv: $VENV ready"
