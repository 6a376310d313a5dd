#!/usr/bin/env python3
"""Files written by llama.cpp's own quantizer, run by wgmtp: the ground-truth check for the GGUF
reader and the dequantizers on bytes wgmtp did not write itself.

tools/make_model.py writes an F16 qwen35 (with its MTP block) through gguf-py, as llama.cpp's
converter does; `llama-quantize` (llama.cpp's C++ GGUF writer and quantizers, from the build
tools/bench_llamacpp.py makes and caches) turns it into each type. For every file:

1. wgmtp's reader (wgmtp/gguf_reader.py) equals gguf-py's: every field's values and types, every
   tensor's name, type, shape, offset, size, dtype and bytes; and wgmtp's dequantizer (the numpy
   twin the GPU kernels are judged by) equals ggml's own to_float on every tensor, bit for bit
   (tools/llamacpp/ggml_blocks.cpp, compiled against the same libggml);
2. the GPU's logits over a 20-token prompt lie within tolerances.model_logits_tol of the numpy
   reference's;
3. greedy MTP speculation (n_max 3) emits exactly what plain greedy decoding does;
4. wgmtp's greedy tokens equal llama.cpp Vulkan's on the same file and adapter, up to a near tie:
   at a first divergence the numpy reference decides (near_tie): wgmtp's token must be its argmax
   and the reference's gap to llama.cpp's token within the logits tolerance, else the check fails
   (llama.cpp's Vulkan mat-vec quantizes activations to 8 bits, so a tie may flip there).

The low-bit IQ types need an importance matrix: `llama-imatrix` (built on first use) computes one
on the F16 model from a short text, and every llama-quantize call gets it; the MTP layer, which
llama-imatrix does not run, is kept at Q8_0 (`--tensor-type blk.4.=q8_0`). The lattice codebooks
wgmtp uses (gguf-py's tables) are compared with the arrays in ggml-common.h, entry by entry.
MXFP4 is written by llama-quantize only for MoE experts (MXFP4_MOE), which a dense model lacks:
`--write-fixture` checks it (and every other block type) on blocks from ggml_quantize_chunk.

    python tools/check_llamacpp_quants.py [--types Q8_0,Q4_K_M,...] [-n 16]
    python tools/check_llamacpp_quants.py --write-fixture tests/data/ggml_blocks.npz

Exit status 1 when a check fails.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.gettempdir())
TOOLS = Path(__file__).resolve().parent
sys.path[:0] = [str(TOOLS.parent), str(TOOLS)]

import bench_llamacpp as B  # noqa: E402

TYPES = ("Q8_0,Q4_0,Q4_1,Q5_0,Q5_1,Q4_K_M,Q5_K_M,Q6_K,Q2_K,Q3_K_M,IQ4_NL,IQ4_XS,IQ3_XXS,IQ3_S,IQ3_M,"
         "IQ2_XXS,IQ2_XS,IQ2_S,IQ2_M,IQ1_S,IQ1_M")
BLOCKS_SRC = TOOLS / "llamacpp" / "ggml_blocks.cpp"
IMATRIX_TEXT = ("The quick brown fox jumps over the lazy dog. Speculative decoding drafts tokens that the "
                "target model verifies in one batch; quantized weights keep the model small. ") * 40
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


def compile_blocks(src: Path, bin_dir: Path) -> Path:
    """tools/llamacpp/ggml_blocks.cpp against the libggml of the build (recompiled when newer)."""
    out = bin_dir / "wgmtp-ggml-blocks"
    if not out.exists() or out.stat().st_mtime < BLOCKS_SRC.stat().st_mtime:
        cxx = shutil.which("c++") or shutil.which("g++")
        B.run(B.nice_prefix() + [cxx, "-O2", "-std=c++17", str(BLOCKS_SRC), "-I", str(src / "ggml" / "include"),
                                 "-L", str(bin_dir), "-lggml", "-lggml-base", f"-Wl,-rpath,{bin_dir}", "-o", str(out)])
    return out


def ggml_to_float(helper: Path, qtype, raw, work: Path):
    """ggml's to_float of raw blocks (uint8) as float32."""
    import numpy as np
    n = raw.size // quants_block(qtype)[1] * quants_block(qtype)[0]
    (work / "blk.bin").write_bytes(np.ascontiguousarray(raw).tobytes())
    subprocess.run([str(helper), "deq", str(int(qtype)), str(n), str(work / "blk.bin"), str(work / "blk.f32")],
                   check=True)
    return np.frombuffer((work / "blk.f32").read_bytes(), np.float32)


def quants_block(qtype) -> tuple[int, int]:
    from wgmtp import quants
    return quants.block_info(qtype)


def twin_equals_ggml(path: Path, helper: Path, work: Path) -> list[str]:
    """Tensors whose wgmtp dequantization differs from ggml's to_float in any bit (empty: none)."""
    import gguf
    import numpy as np

    from wgmtp import quants
    bad = []
    for t in gguf.GGUFReader(str(path)).tensors:
        qt = gguf.GGMLQuantizationType(int(t.tensor_type))
        if qt in (qt.F32, qt.F16, qt.BF16) or qt not in quants.SUPPORTED:
            continue
        want = ggml_to_float(helper, qt, np.asarray(t.data), work)
        got = quants.dequantize(np.asarray(t.data), qt).reshape(-1)
        if not np.array_equal(got.view(np.uint32), want.view(np.uint32)):
            bad.append(f"{t.name} ({qt.name})")
    return bad


def codebooks_equal_ggml(src: Path) -> list[str]:
    """wgmtp's lattice codebooks vs the uint32/uint64 tables of ggml-common.h (names that differ)."""
    import re

    import numpy as np

    from wgmtp import quants
    text = (src / "ggml" / "src" / "ggml-common.h").read_text()
    bad = []
    for name in ("iq2xxs", "iq2xs", "iq2s", "iq3xxs", "iq3s", "iq1s"):
        m = re.search(r"GGML_TABLE_BEGIN\(\s*uint(\d+)_t\s*,\s*" + name + r"_grid\s*,\s*\w+\s*\)(.*?)GGML_TABLE_END",
                      text, re.S)
        g = quants.lattice(name)
        mine = np.ascontiguousarray(g).view(np.uint64 if g.shape[1] == 8 else np.uint32).reshape(-1)
        theirs = [int(v, 16) for v in re.findall(r"0x[0-9a-fA-F]+", m.group(2))] if m else []
        if not np.array_equal(mine, np.array(theirs, dtype=mine.dtype)):
            bad.append(name)
    return bad


def write_fixture(helper: Path, out: Path, work: Path) -> list[str]:
    """tests/data/ggml_blocks.npz: for every block type wgmtp reads, 2 rows x 256 of blocks written by
    ggml_quantize_chunk (with an importance vector) and the SHA-256 of ggml's to_float of them;
    returns the lines to print (each type's twin-vs-ggml result)."""
    import hashlib

    import numpy as np
    from gguf import GGMLQuantizationType as QT

    from wgmtp import quants
    rows, cols = 2, 256
    rng = np.random.default_rng(20)
    x = (rng.standard_normal((rows, cols)) * rng.uniform(0.01, 2.0, (rows, 1))).astype(np.float32)
    x[1, :8] *= 30
    (work / "x.f32").write_bytes(x.tobytes())
    (work / "im.f32").write_bytes((1.0 + rng.random(cols)).astype(np.float32).tobytes())
    data, lines = {}, []
    for qt in quants.SUPPORTED:
        if qt in (QT.F32, QT.F16, QT.BF16):
            continue
        subprocess.run([str(helper), "quant", str(int(qt)), str(rows), str(cols), str(work / "x.f32"),
                        str(work / "q.bin"), str(work / "im.f32")], check=True)
        blocks = np.frombuffer((work / "q.bin").read_bytes(), np.uint8).reshape(rows, -1)
        want = ggml_to_float(helper, qt, blocks, work)
        same = np.array_equal(quants.dequantize(blocks, qt).reshape(-1).view(np.uint32), want.view(np.uint32))
        lines.append(f"  {qt.name:8s} twin == ggml to_float on ggml_quantize_chunk blocks: {same}")
        data[qt.name] = blocks
        data[qt.name + ".sha256"] = np.frombuffer(hashlib.sha256(want.astype("<f4").tobytes()).digest(), np.uint8)
    np.savez_compressed(out, **data)
    return lines


def make_imatrix(bin_dir: Path, f16: Path, work: Path, jobs: int, env: dict) -> Path:
    """llama-imatrix on the F16 model over a short text (built on first use)."""
    exe = bin_dir / "llama-imatrix"
    if not exe.exists():
        B.run(["cmake", "--build", str(bin_dir.parent), "-j", str(jobs), "--target", "llama-imatrix"])
    text = work / "imatrix.txt"
    text.write_text(IMATRIX_TEXT)
    out = work / "imatrix.gguf"
    subprocess.run([str(exe), "-m", str(f16), "-f", str(text), "-o", str(out), "-c", "128", "--chunks", "8",
                    "-ngl", "0"], env=env, check=True, capture_output=True)
    return out


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


def near_tie(path: Path, ids: list[int], ours: list[int], theirs: list[int], at: int, bound: float) -> dict:
    """The numpy reference at the first divergence of the greedy sequences: its logits after the
    common prefix, its own choice, and the gap between the two engines' tokens. A divergence is a
    near tie when wgmtp's token is the reference's argmax and the reference's gap to llama.cpp's
    token is within the logits tolerance (llama.cpp's Vulkan mat-vec quantizes the activations to
    8 bits, which moves logits by about that much)."""
    from wgmtp.models.qwen35 import GGUFModel
    from wgmtp.reference.backend import RefBackend
    lr = RefBackend(GGUFModel(path)).logits(ids + ours[:at])[-1]
    gap = float(lr[ours[at]] - lr[theirs[at]])
    return {"reference_token": int(lr.argmax()), "gap": gap, "tie": int(lr.argmax()) == ours[at] and gap <= bound}


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
    ap.add_argument("--write-fixture", type=Path, help="write ggml's blocks of every type to this .npz and exit")
    a = ap.parse_args()
    a.repack, a.threads = 0, None                      # what bench_llamacpp.llama_greedy reads

    info = B.build(a.cache_dir, a.lcp_version, a.jobs, a.skip_build_deps)
    bin_dir = Path(info["bin"])
    quantize = bin_dir / "llama-quantize"
    if not quantize.exists():                          # a cached build from before it was a target
        B.run(["cmake", "--build", str(bin_dir.parent), "-j", str(a.jobs), "--target", "llama-quantize"])
    src = Path(info["src"])
    helper = compile_blocks(src, bin_dir)
    work = Path(tempfile.mkdtemp(prefix="wgmtp-quants-"))
    if a.write_fixture:
        print("\n".join(write_fixture(helper, a.write_fixture, work)))
        print(f"wrote {a.write_fixture}")
        return 0
    cb_bad = codebooks_equal_ggml(src)
    vk, vk_name = B.pick_vk_device(bin_dir / "llama-bench", a.vk_device)
    f16 = work / "f16.gguf"
    subprocess.run([sys.executable, str(TOOLS / "make_model.py"), str(f16), *DIMS, "--type", "F16"], check=True,
                   capture_output=True)
    ids = B.prompt_ids(f16)
    env = dict(os.environ, LD_LIBRARY_PATH=str(bin_dir))
    imatrix = make_imatrix(bin_dir, f16, work, a.jobs, env)
    rows, failed = [], bool(cb_bad)
    for t in [x.strip() for x in a.types.split(",") if x.strip()]:
        out = work / f"{t}.gguf"
        # llama-imatrix never runs the MTP block (blk.4 here), and llama-quantize refuses the very low-bit
        # types without its entries: that layer stays Q8_0, as a user's --tensor-type would keep it
        q = subprocess.run([str(quantize), "--imatrix", str(imatrix), "--tensor-type", r"blk\.4\.=q8_0", str(f16),
                            str(out), t], env=env, capture_output=True, text=True)
        if q.returncode != 0:
            rows.append((t, "llama-quantize failed: " + (q.stderr.strip().splitlines() or ["?"])[-1]))
            failed = True
            continue
        diff = same_as_gguf_py(out) + [f"dequantize != ggml: {x}" for x in twin_equals_ggml(out, helper, work)]
        w = run_wgmtp(out, a.device, a.n_tokens, ids)
        g = B.llama_greedy(Path(info["greedy"]), out, "vulkan", vk, ids, a.n_tokens, a)
        c = (B.compare({"tokens": w["plain"]}, g, B.end_ids(out)) if g.get("ok")
             else {"agree": False, "note": g.get("errors")})
        at = c.get("first_divergence")
        tie = near_tie(out, ids, w["plain"], g["tokens"], at, w["bound"]) if at is not None else None
        ok = not diff and w["err"] <= w["bound"] and w["lossless"] and (c["agree"] or bool(tie and tie["tie"]))
        failed |= not ok
        greedy = (f"all agree ({c['note']})" if c.get("note") else "all agree") if c["agree"] else (
            f"first divergence at {at}: wgmtp {w['plain'][at]}, llama.cpp {g['tokens'][at]} (its top-2 margin "
            f"{c.get('margin_other')}), the numpy reference {tie['reference_token']} with a gap of {tie['gap']:.2e} "
            f"between the two: {'a near tie, wgmtp has the reference token' if tie['tie'] else 'not a near tie'}"
            if tie is not None else str(c.get("note")))
        rows.append((t, f"tensor types {'/'.join(w['types'])}; reader == gguf-py, dequantize == ggml to_float: "
                        f"{not diff or diff[:3]}; "
                        f"logits {w['err']:.2e} <= {w['bound']:.2e}: {w['err'] <= w['bound']}; "
                        f"MTP lossless: {w['lossless']}; greedy {a.n_tokens} vs llama.cpp Vulkan: {greedy}"
                        + ("" if ok else "  <-- FAILED")))
    print(f"llama.cpp {info.get('llama_cpp_commit')} llama-quantize on {f16.name} ({' '.join(DIMS)}); "
          f"llama.cpp Vulkan device: {vk_name}; imatrix from llama-imatrix; codebooks == ggml-common.h: "
          f"{not cb_bad or cb_bad}")
    for t, line in rows:
        print(f"  {t:8s} {line}")
    print("command: python tools/check_llamacpp_quants.py --types " + a.types)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
