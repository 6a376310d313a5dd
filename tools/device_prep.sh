#!/usr/bin/env bash
# Run HERE (a machine with the package registries) before carrying the repo to a lent GPU machine
# (which reaches no network): downloads the wheels wgmtp needs there into .whl/ and the Vulkan/EGL
# loaders into .gl/ (both git-ignored). Then, on the device, tools/device_smoke.sh uses them:
#   run(command="bash tools/device_smoke.sh", carry=[".whl", ".gl"])
set -euo pipefail
cd "$(dirname "$0")/.."
PYV=${DEVICE_PYTHON_VERSION:-3.12}
mkdir -p .whl
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
# what the device image lacks (numpy, jinja2, rich, regex, tokenizers are there)
for spec in wgpu==0.32.0 gguf==0.19.0 cffi pycparser rendercanvas sniffio; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp \
    "${plat[@]}" -d .whl "$spec"
done
mkdir -p .gl /tmp/amd64/partial
o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
apt-get $o update -qq
(cd .gl && apt-get $o download -qq libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
ls -la .whl .gl
