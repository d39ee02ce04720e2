#!/usr/bin/env bash
# Makes the webgpu backend runnable on a Debian/Ubuntu machine without a GPU: installs the
# `chromium` package (it ships SwiftShader's Vulkan driver, which Dawn accepts; Mesa's lavapipe
# it rejects) and the Vulkan loader, then prints the VK_ICD_FILENAMES to use. The backend finds
# that driver by itself when VK_ICD_FILENAMES is unset, so exporting it is optional.
#
#   scripts/setup-webgpu.sh            # install when missing, print the export line
#   eval "$(scripts/setup-webgpu.sh)"  # ... and export it into this shell
#
# Needs root (or sudo) for apt-get. SwiftShader runs shaders on the CPU: fine for tests, slower
# than the cpu backend for training.
set -euo pipefail

find_icd() {
  local f
  for f in /usr/lib/chromium/vk_swiftshader_icd.json; do
    [ -f "$f" ] && { echo "$f"; return 0; }
  done
  if command -v dpkg >/dev/null 2>&1; then
    f=$(dpkg -L chromium-common chromium 2>/dev/null | grep -m1 'vk_swiftshader_icd.json$' || true)
    [ -n "$f" ] && [ -f "$f" ] && { echo "$f"; return 0; }
  fi
  return 1
}

has_loader() {
  ldconfig -p 2>/dev/null | grep 'libvulkan\.so\.1 ' >/dev/null
}

icd=$(find_icd || true)
if [ -z "$icd" ] || ! has_loader; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup-webgpu: no apt-get here; install Chromium (for SwiftShader's vk_swiftshader_icd.json) and the Vulkan loader yourself" >&2
    exit 1
  fi
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "setup-webgpu: installing chromium and libvulkan1 (SwiftShader Vulkan driver + loader)..." >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >&2
  $SUDO apt-get install -y -qq --no-install-recommends chromium libvulkan1 >&2
  icd=$(find_icd || true)
fi

if [ -z "$icd" ]; then
  echo "setup-webgpu: chromium is installed but vk_swiftshader_icd.json was not found" >&2
  exit 1
fi

# A second software adapter, with shader-f16 (SwiftShader has none): Mesa 25's lavapipe, from
# bookworm-backports on Debian 12 (Debian 12's own Mesa 22.3 lavapipe is rejected by Dawn). Only
# test/webgpu-f16.test.ts uses it, by VK_ICD_FILENAMES; SwiftShader stays the default. Optional:
# without it that test skips.
lvp=/usr/share/vulkan/icd.d/lvp_icd.json
mesa_ok() { dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null | grep '^2[4-9]\.' >/dev/null; }
if command -v apt-get >/dev/null 2>&1 && ! mesa_ok && grep -qs 'VERSION_CODENAME=bookworm' /etc/os-release; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "setup-webgpu: installing Mesa's lavapipe from bookworm-backports (an adapter with shader-f16)..." >&2
  export DEBIAN_FRONTEND=noninteractive
  if [ ! -f /etc/apt/sources.list.d/minigpt-backports.list ] && ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "deb http://deb.debian.org/debian bookworm-backports main" | $SUDO tee /etc/apt/sources.list.d/minigpt-backports.list >/dev/null
  fi
  { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends -t bookworm-backports mesa-vulkan-drivers; } >&2 \
    || echo "setup-webgpu: lavapipe not installed; the f16 storage tests will skip" >&2
fi
[ -f "$lvp" ] && mesa_ok && echo "setup-webgpu: lavapipe with shader-f16 at $lvp" >&2

echo "export VK_ICD_FILENAMES=$icd"
