#!/usr/bin/env bash
# Shared by tools/test.sh and tools/demo.sh: make sure a Vulkan driver exists (Mesa's lavapipe on
# a machine without a GPU) and that .venv holds wgmtp with the extras given as arguments.
# Usage: source tools/setup.sh [extras]   e.g. "dev,hf"
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# (compgen: one existing folder of ICDs is enough; the libraries from one ldconfig listing, since
# `ldconfig -p | grep -q` under pipefail fails whenever grep stops reading first)
LIBS=$(ldconfig -p 2>/dev/null || true)
if ! { compgen -G "/usr/share/vulkan/icd.d/*.json" || compgen -G "/etc/vulkan/icd.d/*.json"; } >/dev/null \
   || [[ "$LIBS" != *libvulkan.so.1* ]] || [[ "$LIBS" != *libEGL.so.1* ]]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "== installing Mesa's lavapipe Vulkan driver and the Vulkan/EGL loaders (apt)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mesa-vulkan-drivers libvulkan1 libegl1 libgl1 >/dev/null
fi

# the live view's windowed test (tests/test_view.py) runs under Xvfb, a display server in memory, and
# glfw (the view's window) loads the X11 client libraries at run time
if [[ ",${1:-}," == *",dev,"* ]] && ! command -v Xvfb >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "== installing Xvfb and the X11 libraries glfw loads, for the live view's window test (apt)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq xvfb libx11-6 libxrandr2 libxcursor1 libxi6 \
    libxinerama1 libxkbcommon-x11-0 >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$PY" -m venv .venv
fi
pipi() {  # quiet pip install; show pip's output only when it fails
  local log; log=$(mktemp)
  if ! .venv/bin/python -m pip install -q "$@" >"$log" 2>&1; then
    grep -v "^WARNING: Location" "$log" >&2; echo "pip install $* failed" >&2; exit 1
  fi
}
EXTRAS=${1:-}
echo "== installing wgmtp${EXTRAS:+[$EXTRAS]}"
if [[ ",$EXTRAS," == *",hf,"* ]]; then
  # torch for the HF parity test: the CPU build where pip's find-links has it, else PyPI's.
  pipi "torch==2.13.0"
fi
pipi -e ".${EXTRAS:+[$EXTRAS]}"
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}
