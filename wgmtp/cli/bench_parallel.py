"""`wgmtp bench --parallel 1,2,4,8`: many sequences decoded together (wgmtp/batching.py). Per
count of parallel sequences, with and without MTP: aggregate generation tok/s (all sequences'
tokens over the wall time of the decode), per-sequence tok/s, and the GPU time of one batched
step over a one-sequence step (timestamp queries where the adapter has them, else wall time).

Measured side by side in one run on one engine; never asserted in a test.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from .args import ints_of


def _step_time(rn, rounds, reps: int = 5) -> float:
    """Best GPU (or wall) seconds of one submission of `rounds` (state clobbered: call last)."""
    best = float("inf")
    for i in range(reps + 1):
        t0 = time.perf_counter()
        rn.step(rounds, timed=True)
        dt = rn.last_gpu_s or (time.perf_counter() - t0)
        if i:
            best = min(best, dt)
        for w in rounds:        # stay at the same positions
            rn.slots[w.slot].pos -= 1
            rn.slots[w.slot].src_plane = 0
    return best


def run_parallel(a: argparse.Namespace, gm, base: dict) -> list[dict]:
    from ..batching import BatchEngine, Request
    from ..models.qwen35.slots import Round, SlotRunner

    counts = sorted(set(ints_of(a.parallel)))
    n_max = max(ints_of(a.spec_draft_n_max) + [0])
    mtp = gm.has_mtp and n_max > 0
    n_ctx = 8 + a.n_gen + n_max + 40
    rn = SlotRunner(gm, device=a.device or "auto", n_ctx=n_ctx, n_seq=max(counts), n_max=n_max if mtp else 0,
                    mtp=mtp, prefill_chunk=a.prefill_chunk, eog=set(), progress=True)
    eng = BatchEngine(rn, set())
    V, rng = gm.config.n_vocab, np.random.default_rng(0)
    rows = []
    modes = [False] + ([True] if mtp else [])

    def batch(P: int, spec: bool, n_gen: int) -> list:
        hs = [eng.submit(Request(prompt=[int(x) for x in rng.integers(0, V, 8)], max_tokens=n_gen, spec=spec,
                                 n_max=n_max)) for _ in range(P)]
        eng.run_until_idle()
        return hs

    for spec in modes:              # warm-up: every program shape the measured runs use
        for P in counts:
            batch(P, spec, n_max + 3)
    single = {}
    for spec in modes:
        for P in counts:
            agg, per = [], []
            for _ in range(a.reps):
                hs = batch(P, spec, a.n_gen)
                toks = sum(h.stats.gen_tokens for h in hs)
                wall = max(h.stats.gen_s for h in hs)
                agg.append(toks / wall if wall > 0 else 0.0)
                per.append(float(np.mean([h.stats.gen_tokens / h.stats.gen_s for h in hs if h.stats.gen_s > 0])))
            row = dict(base, test=f"tg{a.n_gen} x{P}" + (f"+mtp{n_max}" if spec else ""), parallel=P,
                       n_max=n_max if spec else 0, tok_s=float(np.mean(agg)), tok_s_std=float(np.std(agg)),
                       per_seq_tok_s=float(np.mean(per)))
            if spec:
                acc = [h.stats.spec.acceptance for h in hs if h.stats.spec]
                row["acceptance"] = float(np.mean(acc)) if acc else 0.0
            single.setdefault(spec, row["tok_s"] if P == counts[0] and P == 1 else None)
            if single.get(spec):
                row["vs_single"] = row["tok_s"] / single[spec]
            rows.append(row)
    # GPU time of one batched plain step over one single-sequence step, at the same position
    for P in counts:
        for s in range(P):
            rn.start(s)
            rn.slots[s].pos = 8
        t1 = _step_time(rn, [Round(0, 1)])
        tP = _step_time(rn, [Round(s, 1) for s in range(P)])
        for r in rows:
            if r["parallel"] == P and r["n_max"] == 0:
                r.update(step_gpu_ms=tP * 1e3, step_ratio=tP / t1 if t1 else 0.0)
    return rows
