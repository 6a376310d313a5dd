#!/usr/bin/env python3
"""Files written by llama.cpp's own quantizer, run by wgmtp: the ground-truth check for the GGUF
reader and the dequantizers on bytes wgmtp did not write itself.

tools/make_model.py writes an F16 qwen35 (with its MTP block) through gguf-py, as llama.cpp's
converter does; `llama-quantize` (llama.cpp's C++ GGUF writer and quantizers, from the build
tools/bench_llamacpp.py makes and caches) turns it into each type. For every file:

1. wgmtp's reader (wgmtp/gguf_reader.py) equals gguf-py's: every field's values and types, every
   tensor's name, type, shape, offset, size, dtype and bytes;
2. the GPU's logits over a 20-token prompt lie within tolerances.model_logits_tol of the numpy
   reference's;
3. greedy MTP speculation (n_max 3) emits exactly what plain greedy decoding does;
4. wgmtp's greedy tokens equal llama.cpp Vulkan's on the same file and adapter (the first
   divergence and both top-2 logit margins there are printed otherwise: a near-tie can flip).

    python tools/check_llamacpp_quants.py [--types Q8_0,Q4_K_M,...] [-n 16]

Exit status 1 when a check fails.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.gettempdir())
TOOLS = Path(__file__).resolve().parent
sys.path[:0] = [str(TOOLS.parent), str(TOOLS)]

import bench_llamacpp as B  # noqa: E402

TYPES = "Q8_0,Q4_0,Q4_1,Q5_0,Q5_1,Q4_K_M,Q5_K_M,Q6_K"
DIMS = ["--embd", "256", "--layers", "4", "--pattern", "GGGA", "--heads", "4", "--kv-heads", "2", "--head-dim", "64",
        "--ff", "512", "--gdn-k-heads", "2", "--gdn-v-heads", "4", "--gdn-dim", "64", "--mtp"]


def same_as_gguf_py(path: Path) -> list[str]:
    """Differences between wgmtp's reader and gguf-py's on one file (empty: none)."""
    import gguf
    import numpy as np

    from wgmtp.gguf_reader import GGUFReader
    a, b = GGUFReader(path), gguf.GGUFReader(str(path))
    bad = [f"field set: {sorted(set(a.fields) ^ set(b.fields))}"] if list(a.fields) != list(b.fields) else []
    for k in a.fields.keys() & b.fields.keys():
        if a.fields[k].contents() != b.fields[k].contents() or list(a.fields[k].types) != list(b.fields[k].types):
            bad.append(f"field {k}")
    if len(a.tensors) != len(b.tensors):
        bad.append(f"{len(a.tensors)} tensors vs {len(b.tensors)}")
    for x, y in zip(a.tensors, b.tensors):
        if (x.name, x.tensor_type, list(x.shape), x.data_offset, x.n_bytes) != \
                (y.name, y.tensor_type, list(y.shape), y.data_offset, y.n_bytes) or \
                x.data.dtype != y.data.dtype or x.data.shape != y.data.shape or not np.array_equal(x.data, y.data):
            bad.append(f"tensor {x.name}")
    return bad


def run_wgmtp(path: Path, device: str, n: int, ids: list[int]) -> dict:
    import numpy as np

    from wgmtp import tolerances as tol
    from wgmtp.api import load
    from wgmtp.models.qwen35 import GGUFModel
    from wgmtp.reference.backend import RefBackend
    m = load(path, device=device, n_ctx=256)
    toks = [int(t) for t in np.random.default_rng(0).integers(0, m.config.n_vocab, 20)]
    lg = m.logits(toks)
    lr = RefBackend(GGUFModel(path), kv_f16=m.backend.ctx.f16).logits(toks)
    plain = list(m.generate_ids(ids, max_tokens=n))
    spec = list(m.generate_ids(ids, max_tokens=n, spec="draft-mtp", n_max=3))
    return {"types": sorted({t.qtype.name for t in m.gguf.tensors.values()}), "err": float(np.abs(lg - lr).max()),
            "bound": float(tol.model_logits_tol(m.config, lr)), "plain": plain, "lossless": spec == plain}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--types", default=TYPES, help=f"llama-quantize types (default {TYPES})")
    ap.add_argument("-n", "--n-tokens", type=int, default=16, help="greedy tokens compared")
    ap.add_argument("--device", default="auto", help="wgmtp adapter")
    ap.add_argument("--vk-device", default="auto", help="llama.cpp Vulkan device (GGML_VK_VISIBLE_DEVICES)")
    ap.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "wgmtp")
    ap.add_argument("--lcp-version", default=B.LCP_VERSION)
    ap.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--skip-build-deps", action="store_true")
    ap.add_argument("--timeout", type=float, default=1800)
    a = ap.parse_args()
    a.repack, a.threads = 0, None                      # what bench_llamacpp.llama_greedy reads

    info = B.build(a.cache_dir, a.lcp_version, a.jobs, a.skip_build_deps)
    bin_dir = Path(info["bin"])
    quantize = bin_dir / "llama-quantize"
    if not quantize.exists():                          # a cached build from before it was a target
        B.run(["cmake", "--build", str(bin_dir.parent), "-j", str(a.jobs), "--target", "llama-quantize"])
    vk, vk_name = B.pick_vk_device(bin_dir / "llama-bench", a.vk_device)
    work = Path(tempfile.mkdtemp(prefix="wgmtp-quants-"))
    f16 = work / "f16.gguf"
    subprocess.run([sys.executable, str(TOOLS / "make_model.py"), str(f16), *DIMS, "--type", "F16"], check=True,
                   capture_output=True)
    ids = B.prompt_ids(f16)
    env = dict(os.environ, LD_LIBRARY_PATH=str(bin_dir))
    rows, failed = [], False
    for t in [x.strip() for x in a.types.split(",") if x.strip()]:
        out = work / f"{t}.gguf"
        q = subprocess.run([str(quantize), str(f16), str(out), t], env=env, capture_output=True, text=True)
        if q.returncode != 0:
            rows.append((t, "llama-quantize failed: " + (q.stderr.strip().splitlines() or ["?"])[-1]))
            failed = True
            continue
        diff = same_as_gguf_py(out)
        w = run_wgmtp(out, a.device, a.n_tokens, ids)
        g = B.llama_greedy(Path(info["greedy"]), out, "vulkan", vk, ids, a.n_tokens, a)
        c = B.compare({"tokens": w["plain"]}, g) if g.get("ok") else {"agree": False, "note": g.get("errors")}
        ok = not diff and w["err"] <= w["bound"] and w["lossless"] and c["agree"]
        failed |= not ok
        greedy = "all agree" if c["agree"] else (
            f"first divergence at {c.get('first_divergence')} (margins wgmtp {c.get('margin_ref')}, "
            f"llama.cpp {c.get('margin_other')})" if c.get("first_divergence") is not None else str(c.get("note")))
        rows.append((t, f"tensor types {'/'.join(w['types'])}; reader == gguf-py: {not diff or diff[:3]}; "
                        f"logits {w['err']:.2e} <= {w['bound']:.2e}: {w['err'] <= w['bound']}; "
                        f"MTP lossless: {w['lossless']}; greedy {a.n_tokens} vs llama.cpp Vulkan: {greedy}"
                        + ("" if ok else "  <-- FAILED")))
    print(f"llama.cpp {info.get('llama_cpp_commit')} llama-quantize on {f16.name} ({' '.join(DIMS)}); "
          f"llama.cpp Vulkan device: {vk_name}")
    for t, line in rows:
        print(f"  {t:7s} {line}")
    print("command: python tools/check_llamacpp_quants.py --types " + a.types)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
