#!/usr/bin/env bash
# The whole test suite on a fresh Debian/Ubuntu machine, GPU or not:
#   1. a Vulkan driver: if no Vulkan ICD is installed, Mesa's lavapipe (apt mesa-vulkan-drivers),
#      a real Vulkan adapter that runs on the CPU (its llvmpipe GL adapter is a second backend);
#   2. a virtualenv (.venv) with wgmtp and its dev + hf extras (torch on the CPU, transformers);
#   3. pytest over tests/.
# Extra arguments go to pytest (e.g. tools/test.sh -k quants).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! ls /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json >/dev/null 2>&1 \
   || ! ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1' \
   || ! ldconfig -p 2>/dev/null | grep -q 'libEGL.so.1'; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "== installing Mesa's lavapipe Vulkan driver and the Vulkan/EGL loaders (apt)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mesa-vulkan-drivers libvulkan1 libegl1 libgl1 >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$PY" -m venv .venv
fi
echo "== installing wgmtp[dev,hf]"
pipi() {  # quiet pip install; show pip's output only when it fails
  local log; log=$(mktemp)
  if ! .venv/bin/python -m pip install -q "$@" >"$log" 2>&1; then
    grep -v "^WARNING: Location" "$log" >&2; echo "pip install $* failed" >&2; exit 1
  fi
}
# torch for the HF parity test: the CPU build where pip's find-links has it, else PyPI's.
pipi "torch==2.13.0"
pipi -e '.[dev,hf]'

export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}
echo "== running the tests"
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
