#!/usr/bin/env bash
# Packs what the WebGPU benchmarks and tests need on a Linux x64 machine that has a GPU but no
# network and no Node: this machine's Node binary, the runtime npm dependencies (with only the
# linux-x64 build of Dawn), the built dist/ (without the browser bundle), and the Debian packages
# of the Vulkan loader and the glvnd libraries (Dawn needs libvulkan1; NVIDIA's Vulkan driver
# needs glvnd, else "Could not get vkCreateInstance"). About 60 MB, xz-compressed.
#
#   npm run build && scripts/pack-gpu-bench.sh DIR     # here: writes DIR/{node.xz,deps.tar.xz,dist.tar.xz,debs/,run.sh}
#   bash DIR/run.sh COMMAND...                         # there, from a copy of the repository: sets up, then runs
#
# For example, there: bash DIR/run.sh node dist/src/cli/main.js bench --backend webgpu --config seed
# PyTorch on that machine (CUDA) comes from its own python3: PYTHON=python3 is set for bench/compare-torch.mjs.
set -euo pipefail
out=${1:?usage: scripts/pack-gpu-bench.sh DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
[ -f "$root/dist/src/cli/main.js" ] || { echo "build first: npm run build" >&2; exit 1; }
mkdir -p "$out/debs"
out=$(cd "$out" && pwd)

xz -T0 -6 -c "$(command -v node)" > "$out/node.xz"

# Runtime dependencies as npm resolves them (webgpu is optional but needed here), minus other platforms' Dawn.
cd "$root"
deps=$(npm ls --omit=dev --all --parseable 2>/dev/null | grep '/node_modules/' | sed "s|^$root/||")
tar -cJf "$out/deps.tar.xz" --exclude='node_modules/webgpu/dist/darwin-*' --exclude='node_modules/webgpu/dist/win32-*' \
  --exclude='node_modules/webgpu/dist/linux-arm64*' $deps
tar -cJf "$out/dist.tar.xz" --exclude='dist/web' dist

(cd "$out/debs" && apt-get download libvulkan1 libglvnd0 libegl1 libgl1 libglx0 libopengl0 libgles2 >/dev/null)

cat > "$out/run.sh" <<'EOF'
#!/usr/bin/env bash
# Unpacks the pack beside this script into the current directory (a copy of the repository) and
# runs the command with that Node, the Vulkan loader and the GPU's Vulkan driver.
set -euo pipefail
pack=$(cd "$(dirname "$0")" && pwd)
prefix=$pack/root
if [ ! -d "$prefix" ]; then
  mkdir -p "$prefix/bin"
  for d in "$pack"/debs/*.deb; do dpkg -x "$d" "$prefix"; done
  xz -dc "$pack/node.xz" > "$prefix/bin/node" && chmod +x "$prefix/bin/node"
fi
[ -d node_modules/webgpu ] || tar -xJf "$pack/deps.tar.xz"
tar -xJf "$pack/dist.tar.xz"
export PATH=$prefix/bin:$PATH
export LD_LIBRARY_PATH=$prefix/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
# The NVIDIA driver's Vulkan ICD, where container runtimes put it, unless one is chosen already.
if [ -z "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ]; then
  for icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json; do
    [ -f "$icd" ] && { export VK_DRIVER_FILES=$icd; break; }
  done
fi
export PYTHON=${PYTHON:-python3}
exec "$@"
EOF
chmod +x "$out/run.sh"
du -sh "$out"
