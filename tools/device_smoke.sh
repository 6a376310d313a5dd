#!/usr/bin/env bash
# The one script to run on a lent GPU machine (and it runs here on lavapipe too): sets up wgpu from
# carried wheels (.whl, made by tools/device_prep.sh) and Vulkan/EGL loaders (.gl) when present,
# reports whether a Vulkan loader and driver exist, lists adapters, runs `wgmtp check` (op suite on
# every adapter, then model mode on a synthetic model), `wgmtp bench` on the same model and
# tools/ab_env.py (the mat-vec fusions and layouts timed side by side). Writes
# JSON under $OUT when set (else a temp dir). Exit status: non-zero when a check failed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}
export PYTHONUNBUFFERED=1
log() { printf '\n== %s\n' "$*"; }

log "Vulkan loader and driver"
if [ -d .gl ] && ! ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1'; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
  echo "unpacked the carried loaders from .gl"
fi
ldconfig -p 2>/dev/null | grep -E 'libvulkan.so.1|libEGL.so.1' || echo "no Vulkan/EGL loader found"
if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
  export VK_DRIVER_FILES=${VK_DRIVER_FILES:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}
  export __EGL_VENDOR_LIBRARY_FILENAMES=${__EGL_VENDOR_LIBRARY_FILENAMES:-/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json}
fi
ls /usr/share/vulkan/icd.d/ /etc/vulkan/icd.d/ /usr/local/nvidia/share/vulkan/icd.d/ 2>/dev/null || true
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

log "Python"
if [ -x .venv/bin/python ]; then
  PY=.venv/bin/python
else
  PY=python3
  if [ -d .whl ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
  else
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
  fi
fi
$PY -c "import wgpu, gguf, numpy; print('wgpu', wgpu.__version__, 'gguf ok, numpy', numpy.__version__)" || exit 1
W="$PY -m wgmtp.cli"

log "adapters"
$W devices
$W devices --json > "$OUT/devices.json"

log "op suite (every adapter)"
$W check --device all --json "$OUT/check_ops.json"; rc_ops=$?

log "synthetic model"
MODEL=${SMOKE_MODEL:-/tmp/wgmtp-smoke.gguf}
[ -f "$MODEL" ] || $PY tools/make_model.py "$MODEL" --embd 256 --ff 768 --layers 8 --heads 4 --kv-heads 2 \
    --head-dim 64 --gdn-k-heads 2 --gdn-v-heads 4 --gdn-dim 64 --type Q8_0 >/dev/null

log "model check"
$W check -m "$MODEL" --json "$OUT/check_model.json"; rc_model=$?

log "bench"
$W bench -m "$MODEL" -p 64 -n 32 -r 2 --spec-draft-n-max 0,3 --synthetic-acceptance 0.7 --json > "$OUT/bench.json"; rc_bench=$?
$PY - "$OUT/bench.json" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1])):
    print(f"{r['test']:>12} {r['tok_s']:9.2f} tok/s  {r.get('frac_peak', 0) * 100:5.1f}% of {r['peak_gb_s']:.1f} GB/s"
          + (f"  verify/decode {r['verify_decode_ratio']:.2f}" if r.get('verify_decode_ratio') else ""))
PY

log "mat-vec fusions and layouts side by side (GPU time of a decode step and a verify batch)"
$PY tools/ab_env.py -m "$MODEL" --verify 3 --rounds 3 "WGMTP_FUSE=none" "WGMTP_FUSE=add,glu" "" \
    "WGMTP_MATVEC=rowwise" 2>&1 | tee "$OUT/ab_fusions.txt"

log "results in $OUT: op suite rc=$rc_ops, model check rc=$rc_model, bench rc=$rc_bench"
[ $rc_ops -eq 0 ] && [ $rc_model -eq 0 ] && [ $rc_bench -eq 0 ]
