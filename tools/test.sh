#!/usr/bin/env bash
# The whole test suite on a fresh Debian/Ubuntu machine, GPU or not: installs Mesa's lavapipe
# (apt mesa-vulkan-drivers) when no Vulkan driver exists -- a real Vulkan adapter that runs on
# the CPU, with llvmpipe OpenGL as a second backend --, creates .venv with wgmtp[dev,hf] (torch on
# the CPU, transformers, ruff), checks the tree with ruff and runs pytest over tests/ in
# WGMTP_TEST_WORKERS processes (pytest-xdist, default 2: CI's cores; each test file stays in one
# process, so a module's fixtures are built once). Extra arguments go to pytest (-n 0: one process).
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup.sh "dev,hf"
echo "== ruff (the tree must be clean)"
.venv/bin/ruff check .
echo "== running the tests"
exec .venv/bin/python -m pytest -q -p no:cacheprovider -n "${WGMTP_TEST_WORKERS:-2}" --dist loadfile "$@"
