#!/usr/bin/env bash
# The demo on a fresh machine: install what is needed (see tools/setup.sh), then generate with
# the small demo model that ships in wgmtp/data/, with MTP speculative decoding on.
# Extra arguments go to `wgmtp run` (e.g. --spec-type none, -n 200, -p "your prompt").
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup.sh ""
MODEL=()
if [ ! -f wgmtp/data/wgmtp-demo.gguf ]; then   # only before the demo model existed
  .venv/bin/python tools/make_model.py /tmp/wgmtp-synthetic.gguf --type Q8_0 >/dev/null
  MODEL=(-m /tmp/wgmtp-synthetic.gguf)
fi
exec .venv/bin/wgmtp run "${MODEL[@]}" -p "The command line" -n 96 --spec-type draft-mtp -v "$@"
