#!/usr/bin/env bash
# The whole test suite on a fresh Debian/Ubuntu machine, GPU or not: installs Mesa's lavapipe
# (apt mesa-vulkan-drivers) when no Vulkan driver exists -- a real Vulkan adapter that runs on
# the CPU, with llvmpipe OpenGL as a second backend --, creates .venv with wgmtp[dev,hf] (torch on
# the CPU, transformers, ruff), checks the tree with ruff and runs pytest over tests/. Extra
# arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup.sh "dev,hf"
echo "== ruff (the tree must be clean)"
.venv/bin/ruff check .
echo "== running the tests"
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
