#!/usr/bin/env bash
# The WebGPU measurements BENCHMARKS.md still lacks, as one script for a lent GPU machine. Two
# halves, each under the device tool's 10 minutes per command (every part has its own time
# limit, and a failed part does not stop the rest):
#   here:  npm run build && scripts/pack-gpu-bench.sh PACK
#   there: bash PACK/run.sh bash bench/gpu-pending.sh kernels   # from a copy of the repository
#          bash PACK/run.sh bash bench/gpu-pending.sh train
# Writes each part's output to ${OUT:-.}/gpu-pending/NAME.txt and prints its tail.
#  kernels: the adapter (name, features: shader-f16? subgroups? subgroup matrices with unsafe
#           APIs?, limits); attention kernels (rows, each split tile, blocked) at gpt2-small,
#           medium and seed sizes; gpt2-small with --amp fp16 (f16 storage where there is shader-f16)
#  train:   against PyTorch eager on CUDA with the defaults (attention auto: tuned per shape),
#           minigpt alone with --attention rows and split, against PyTorch with --sync-every 10
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-.}/gpu-pending
mkdir -p "$out"
part() {
  local name=$1 limit=$2
  shift 2
  echo "== $name: $*"
  timeout "$limit" "$@" > "$out/$name.txt" 2>&1
  echo "   (exit $?)"
  grep -v 'artificially reduced' "$out/$name.txt" | tail -n 14
}
cat > "$out/adapter.mjs" <<'EOF'
import { create } from 'webgpu';
for (const flags of [[], ['enable-dawn-features=allow_unsafe_apis']]) {
  const a = await create(flags).requestAdapter();
  if (!a) { console.log('no adapter', flags); continue; }
  console.log(flags.join(' ') || 'default', '|', a.info.vendor, a.info.architecture, a.info.description);
  console.log('  features:', [...a.features].sort().join(' '));
  console.log('  workgroup storage', a.limits.maxComputeWorkgroupStorageSize, 'invocations', a.limits.maxComputeInvocationsPerWorkgroup);
}
EOF
what=${1:-kernels}
if [ "$what" = kernels ]; then
  cp "$out/adapter.mjs" ./gpu-pending-adapter.mjs
  part adapter 60 node gpu-pending-adapter.mjs
  rm -f gpu-pending-adapter.mjs
  for c in gpt2-small medium seed; do
    part "attention-$c" 100 node bench/webgpu-kernels.mjs --config "$c" --only attention --attention rows,split:0,split:1,split:2,blocked
  done
  part amp-fp16 90 node dist/src/cli/main.js bench --backend webgpu --config gpt2-small --amp fp16
elif [ "$what" = train ]; then
  cmp=(node bench/compare-torch.mjs --backend webgpu --torch-device cuda --no-compile --steps 10)
  part train-auto 240 "${cmp[@]}" --configs seed,medium,gpt2-small
  for a in rows split; do
    for c in medium gpt2-small; do
      part "train-$a-$c" 45 node dist/src/cli/main.js bench --backend webgpu --config "$c" --attention "$a"
    done
  done
  part train-sync10 120 "${cmp[@]}" --configs seed,medium --sync-every 10
else
  echo "usage: bench/gpu-pending.sh kernels|train" >&2
  exit 2
fi
