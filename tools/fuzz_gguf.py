#!/usr/bin/env python3
"""Hostile files: seeded mutants of GGUF models, each run through `wgmtp inspect` and a short
`wgmtp run` (numpy reference and GPU, plain and MTP) in its own subprocess under a time and
memory limit, classified as

    ok        every stage exited 0
    error     a stage exited 1 with a one-line message (the file was refused, as it should be)
    traceback a Python traceback escaped
    signal    the process died of a signal (SIGABRT, SIGSEGV, ...)
    hang      the time limit passed
    oom       the memory limit was hit (MemoryError or the kernel's kill)
    disagree  the reference and the GPU both accepted the file but generated different tokens

Targets: 0 of every class but ok and error. The mutations are structural, from a walk of the
header that records where each count, length, type, offset and value sits: truncations at every
region (header, metadata, tensor infos, alignment padding, each tensor's data), byte flips in the
header, counts and lengths set to 0 / huge / off by one, types changed to other types, tensor
offsets shifted, dims changed (also to 0 and to 5 dims' worth), keys renamed or duplicated,
tokenizer arrays and chat templates replaced by hostile ones, NaN and Inf written into data.

    python tools/fuzz_gguf.py --n 1000                   # the whole suite (minutes)
    python tools/fuzz_gguf.py --n 20 --seed 3 --json r.json
Each mutant's seed names it: `--only SEED` reruns one (and keeps it with --keep DIR).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

CLASSES = ("ok", "error", "traceback", "signal", "hang", "oom", "disagree")
SEVERITY = ("ok", "error", "disagree", "oom", "hang", "signal", "traceback")   # a mutant's class: its worst stage

# value types of GGUF metadata (gguf-py's GGUFValueType)
_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
STRING, ARRAY = 8, 9


@dataclass
class Spot:
    """A place in the header: what it is, where, how many bytes."""
    kind: str            # "count", "strlen", "vtype", "value", "arrlen", "ndims", "dim", "ttype", "offset", "key"
    at: int
    size: int
    info: str = ""


@dataclass
class Layout:
    spots: list[Spot] = field(default_factory=list)
    regions: list[tuple[str, int]] = field(default_factory=list)      # (name, start offset)
    strings: list[tuple[str, int, int]] = field(default_factory=list)  # (key, value offset, length) of string values
    tensors: list[tuple[str, int, int]] = field(default_factory=list)  # (name, data start, type)
    data_start: int = 0


def walk(b: bytes) -> Layout:
    """Where every field of a well-formed GGUF header sits (the file to mutate)."""
    L = Layout()
    u32 = lambda o: struct.unpack_from("<I", b, o)[0]   # noqa: E731
    u64 = lambda o: struct.unpack_from("<Q", b, o)[0]   # noqa: E731
    L.regions.append(("magic", 0))
    L.spots += [Spot("count", 8, 8, "n_tensors"), Spot("count", 16, 8, "n_kv")]
    n_t, n_kv = u64(8), u64(16)
    o = 24
    L.regions.append(("metadata", o))
    align = 32

    def string(o: int, kind: str = "strlen") -> tuple[str, int]:
        n = u64(o)
        L.spots.append(Spot(kind, o, 8))
        return b[o + 8: o + 8 + n].decode("utf-8", "replace"), o + 8 + n

    for _ in range(n_kv):
        key_at = o
        key, o = string(o)
        L.spots.append(Spot("key", key_at + 8, len(key.encode()), key))
        vt = u32(o)
        L.spots.append(Spot("vtype", o, 4, key))
        o += 4
        if vt == STRING:
            n = u64(o)
            L.strings.append((key, o, n))
            _, o = string(o)
        elif vt == ARRAY:
            st, n = u32(o), u64(o + 4)
            L.spots += [Spot("vtype", o, 4, key + "[]"), Spot("arrlen", o + 4, 8, key)]
            o += 12
            for _ in range(n):
                if st == STRING:
                    _, o = string(o)
                else:
                    o += _SIZES[st]
        else:
            L.spots.append(Spot("value", o, _SIZES[vt], key))
            if key == "general.alignment":
                align = u32(o)
            o += _SIZES[vt]
    L.regions.append(("tensor infos", o))
    infos = []
    for _ in range(n_t):
        name, o = string(o)
        nd = u32(o)
        L.spots.append(Spot("ndims", o, 4, name))
        for d in range(nd):
            L.spots.append(Spot("dim", o + 4 + 8 * d, 8, name))
        o += 4 + 8 * nd
        L.spots += [Spot("ttype", o, 4, name), Spot("offset", o + 4, 8, name)]
        infos.append((name, u32(o), u64(o + 4)))
        o += 12
    L.regions.append(("padding", o))
    L.data_start = -(-o // align) * align
    for name, tt, rel in infos:
        L.tensors.append((name, L.data_start + rel, tt))
        L.regions.append((f"data of {name}", L.data_start + rel))
    return L


HOSTILE_TEMPLATES = [
    "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
    "{{ messages|tojson(indent=100000000) }}",
    "{{ 'x' * 100000000 }}",
    "",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{% set x = cycler.__init__.__globals__ %}{{ x }}",
    "{{ raise_exception('boom') }}",
    "{% for m in messages %}{{ m['content'] }}",
]


def mutate(src: bytes, L: Layout, rng: random.Random) -> tuple[bytes, str]:
    """One seeded mutation of `src`; returns (bytes, description)."""
    b = bytearray(src)
    kind = rng.choice(["truncate", "flip", "count", "strlen", "vtype", "arrlen", "ndims", "dim", "ttype",
                       "offset", "key", "template", "tokens", "nan", "value"])
    if kind == "truncate":
        name, at = rng.choice(L.regions)
        cut = max(0, min(len(b) - 1, at + rng.choice([0, 1, 7, rng.randrange(1, 4096)])))
        return bytes(b[:cut]), f"truncated at {cut} ({name})"
    if kind == "flip":
        at = rng.randrange(0, L.data_start)
        b[at] ^= 1 << rng.randrange(8)
        return bytes(b), f"bit flip at header byte {at}"
    if kind == "template":
        tpl = [s for s in L.strings if s[0] == "tokenizer.chat_template"]
        t = rng.choice(HOSTILE_TEMPLATES).encode()
        if tpl and len(t) <= tpl[0][2]:
            # same length (padded with spaces), so nothing after it moves: only the template is hostile
            key, at, n = tpl[0]
            b[at + 8: at + 8 + n] = t.ljust(n, b" ")
            return bytes(b), "hostile template " + t[:40].decode()
        kind = "tokens"
    if kind == "nan":
        name, at, tt = rng.choice(L.tensors)
        v = rng.choice([b"\x00\x7e", b"\x00\x7c", b"\x00\xfc"])       # f16 NaN, +Inf, -Inf
        w = rng.choice([struct.pack("<f", float("nan")), struct.pack("<f", float("inf"))])
        blob = w if tt == 0 else v
        if at + len(blob) <= len(b):
            b[at: at + len(blob)] = blob
        return bytes(b), f"non-finite value at the start of {name}"
    spots = [s for s in L.spots if s.kind == kind] or L.spots
    if kind == "tokens":
        spots = [s for s in L.spots if s.kind == "arrlen" and s.info.startswith("tokenizer.")] or spots
    s = rng.choice(spots)
    if s.kind == "key":
        other = rng.choice([x for x in L.spots if x.kind == "key"])
        new = other.info.encode()[: s.size].ljust(s.size, b"x") if rng.random() < 0.5 else \
            bytes(rng.randrange(256) for _ in range(s.size))
        b[s.at: s.at + s.size] = new
        return bytes(b), f"key '{s.info}' -> {new[:40]!r}"
    old = int.from_bytes(b[s.at: s.at + s.size], "little")
    top = (1 << (8 * s.size)) - 1
    choices = [0, 1, old + 1, max(0, old - 1), top, top >> 1, old * 2 + 1, rng.randrange(top + 1)]
    if s.kind == "ttype":
        choices += list(range(0, 40))
    if s.kind == "offset":
        choices += [old + 1, old + 3, old + 31, 0]
    if s.kind == "ndims":
        choices += [5, 0, 8]
    new = rng.choice(choices) & top
    b[s.at: s.at + s.size] = new.to_bytes(s.size, "little")
    return bytes(b), f"{s.kind} of {s.info or 'header'}: {old} -> {new}"


DRIVER = r"""
import io, json, os, sys, contextlib, traceback
os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
sys.path.insert(0, {root!r})
from wgmtp.cli import main
path, stages = sys.argv[1], json.loads(sys.argv[2])
out = []
for argv in stages:
    so, se = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(so), contextlib.redirect_stderr(se):
            code = main([a.replace("MODEL", path) for a in argv])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except MemoryError:
        out.append({{"argv": argv, "class": "oom"}}); break
    except BaseException as e:
        out.append({{"argv": argv, "class": "traceback", "detail": traceback.format_exc()[-600:]}}); break
    err = se.getvalue().strip()
    lines = [l for l in err.splitlines() if l.strip()]
    cls = "ok" if code == 0 else ("error" if code == 1 and len(lines) <= 1 else "traceback")
    if argv[0] == "inspect" and code == 1 and not lines:
        cls = "error"                       # inspect says why on stdout ("supported: no (...)")
    out.append({{"argv": argv, "class": cls, "code": code, "stderr": err[-300:], "stdout": so.getvalue()[-2000:]}})
print("\n@@" + json.dumps(out))
"""

STAGES = [
    ["inspect", "MODEL"],
    ["run", "-m", "MODEL", "-p", "Hello", "-n", "4", "--device", "cpu"],
    ["run", "-m", "MODEL", "-p", "Hello", "-n", "4"],
    ["run", "-m", "MODEL", "-p", "Hello", "-n", "4", "--spec-type", "draft-mtp"],
    ["run", "-m", "MODEL", "-cnv", "-n", "4"],                  # the chat template (stdin: one user line)
]


def _limits(mem_bytes: int):
    def f() -> None:
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (mem_bytes, mem_bytes))
    return f


def _generated(stdout: str) -> str:
    """The generated text of a `wgmtp run` (its stdout, without the stats line on stderr)."""
    return stdout.strip()


def run_mutant(path: Path, timeout: float, mem: int) -> dict:
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-c", DRIVER.format(root=str(ROOT)), str(path), json.dumps(STAGES)],
                           input="Hello\n", capture_output=True, text=True, timeout=timeout, preexec_fn=_limits(mem),
                           env=dict(os.environ, WGMTP_NO_PROGRESS="1", COLUMNS="2000"))
    except subprocess.TimeoutExpired:
        return {"class": "hang", "seconds": timeout}
    dt = time.perf_counter() - t0
    if p.returncode < 0:
        sig = -p.returncode
        return {"class": "oom" if sig == 9 else "signal", "signal": sig, "seconds": dt, "stderr": p.stderr[-400:]}
    if "@@" not in p.stdout:
        oom = "MemoryError" in p.stderr or "Cannot allocate" in p.stderr
        return {"class": "oom" if oom else "traceback", "seconds": dt, "stderr": p.stderr[-600:]}
    stages = json.loads(p.stdout.rsplit("@@", 1)[1])
    worst = max((s["class"] for s in stages), key=SEVERITY.index)
    res = {"class": worst, "seconds": dt, "stages": stages}
    ins, cpu, gpu = (stages + [None] * 3)[:3]
    # inspect always checks weights for NaN/Inf, run only with --check-tensors (llama.cpp's split)
    nonfinite = bool(ins) and "NaN or infinity" in ins.get("stdout", "")
    # a context too small for the prompt is the request's problem, not the file's; logits that are
    # not finite from finite weights (an overflow) show only when the model runs, on both devices
    small_ctx = bool(cpu) and "does not fit the context" in cpu.get("stderr", "")
    nonfinite = nonfinite or (bool(cpu) and "the logits are not finite" in cpu.get("stderr", ""))
    if worst in ("ok", "error"):
        both = cpu and gpu and cpu["class"] == gpu["class"] == "ok"
        if both and _generated(cpu["stdout"]) != _generated(gpu["stdout"]):
            res.update({"class": "disagree", "why": "reference and GPU generated different text"})
        elif ins and cpu and (ins["code"] == 0) != (cpu["code"] == 0) and not (nonfinite or small_ctx):
            res.update({"class": "disagree", "why": "inspect and run do not agree whether the file runs"})
    return res


def sources(tmp: Path) -> list[Path]:
    """The demo model and two synthetic ones (Q8_0 with MTP and a chat template; Q4_K_M MoE)."""
    from make_model import ModelSpec, make_model
    out = [ROOT / "wgmtp" / "data" / "wgmtp-demo.gguf"]
    out.append(make_model(tmp / "s-q8.gguf", ModelSpec(wtype="Q8_0", seed=11)))
    out.append(make_model(tmp / "s-moe.gguf", ModelSpec(n_expert=4, n_expert_used=2, wtype="Q4_K_M", seed=12,
                                                      n_embd=256, n_ff=256, head_dim=32, n_head=2, n_head_kv=1,
                                                      ssm_d_state=32)))
    return [p for p in out if p.exists()]


def fuzz(n: int, seed: int, timeout: float, mem: int, keep: Path | None = None, only: int | None = None,
         progress: bool = True) -> list[dict]:
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        srcs = sources(tmp)
        blobs = [(p, p.read_bytes()) for p in srcs]
        layouts = [walk(b) for _, b in blobs]
        results = []
        seeds = [only] if only is not None else [seed * 100000 + i for i in range(n)]
        for s in seeds:
            rng = random.Random(s)
            k = rng.randrange(len(blobs))
            data, what = mutate(blobs[k][1], layouts[k], rng)
            m = (keep or tmp) / f"mutant-{s}.gguf"
            m.parent.mkdir(parents=True, exist_ok=True)
            m.write_bytes(data)
            r = run_mutant(m, timeout, mem)
            r.update(seed=s, source=blobs[k][0].name, mutation=what)
            results.append(r)
            if progress:
                print(f"{s:>9} {r['class']:<9} {r['seconds']:5.1f}s {blobs[k][0].name}: {what}", flush=True)
            if keep is None:
                m.unlink()
        return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="mutants")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per mutant (all stages)")
    ap.add_argument("--mem", type=float, default=4.0, help="GiB of address space per mutant")
    ap.add_argument("--only", type=int, default=None, help="rerun the mutant of this seed")
    ap.add_argument("--keep", type=Path, default=None, help="keep the mutant files in this folder")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    if a.n < 1 or a.timeout <= 0 or a.mem <= 0:
        print("fuzz_gguf: --n, --timeout and --mem must be positive", file=sys.stderr)
        return 1
    res = fuzz(a.n, a.seed, a.timeout, int(a.mem * 2**30), a.keep, a.only)
    counts = Counter(r["class"] for r in res)
    print("summary: " + ", ".join(f"{c} {counts.get(c, 0)}" for c in CLASSES) + f" of {len(res)} mutants")
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))
    bad = sum(counts.get(c, 0) for c in CLASSES[2:])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
