"""`wgmtp bench --parallel 1,2,4,8`: many sequences decoded together (wgmtp/batching.py). Per
count of parallel sequences, plain and with the --spec-type list: aggregate generation tok/s (all
sequences' tokens over the wall time of the decode), per-sequence tok/s, and the GPU time of one
batched step over a one-sequence step (timestamp queries where the adapter has them, else wall
time). The n-gram drafters and adaptive n exist only in the engine, so `wgmtp bench` measures them
here, on one slot unless --parallel says otherwise.

Measured side by side in one run on one engine; never asserted in a test.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np

from .args import ints_of
from .run import spec_settings, uses_engine


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


def spec_modes(a: argparse.Namespace) -> list[tuple[str, int, dict]]:
    """(test suffix, n_max, Request fields) of each measured mode: plain, then the --spec-type list
    at each draft length > 0 (draft-mtp alone at the largest only: its lengths are the
    one-sequence rows' business)."""
    ns = sorted({n for n in ints_of(a.spec_draft_n_max) if n > 0})
    s = spec_settings(a, n_max=max(ns, default=0))
    plain = [("", 0, {})]
    if not s.types or not ns:
        return plain
    if not uses_engine(s):
        ns = ns[-1:]
    name = s.label.replace("draft-mtp", "mtp")
    return plain + [(f"+{name}{n}" + ("/adaptive" if s.adaptive else ""), n, replace(s, n_max=n).request_fields())
                    for n in ns]


def run_parallel(a: argparse.Namespace, gm, base: dict, counts: list[int] | None = None) -> list[dict]:
    from ..api import open_draft
    from ..batching import BatchEngine, Request
    from ..models.qwen35.slots import Round, SlotRunner

    counts = sorted(set(counts or ints_of(a.parallel)))
    modes = [m for m in spec_modes(a) if gm.has_mtp or not m[2].get("spec")]
    n_max = max(n for _, n, _ in modes)
    mtp = gm.has_mtp and any(f.get("spec") for _, _, f in modes)
    n_ctx = 8 + a.n_gen + n_max + 40
    rn = SlotRunner(gm, device=a.device or "auto", n_ctx=n_ctx, n_seq=max(counts), n_max=n_max,
                    mtp=mtp, prefill_chunk=a.prefill_chunk, eog=set(), progress=True)
    draft = spec_settings(a, n_max=n_max).files(a.mtp_file)[1]
    dm = None if draft is None else open_draft(draft, rn, n_max=max(n_max, 1), device_draft=a.device_draft,
                                                progress=True)
    eng = BatchEngine(rn, set(), draft=dm)
    V, rng = gm.config.n_vocab, np.random.default_rng(0)
    rows = []

    def batch(P: int, fields: dict, n_gen: int) -> list:
        hs = [eng.submit(Request(prompt=[int(x) for x in rng.integers(0, V, 8)], max_tokens=n_gen, **fields))
              for _ in range(P)]
        eng.run_until_idle()
        return hs

    eng.warm_up(n_max, p_min=a.spec_draft_p_min, vocab=a.spec_draft_vocab)
    for _, n, fields in modes:      # warm-up: every program shape the measured runs use
        for P in counts:
            batch(P, fields, n + 3)
    single = {}
    for suffix, n, fields in modes:
        for P in counts:
            agg, per = [], []
            for _ in range(a.reps):
                hs = batch(P, fields, a.n_gen)
                toks = sum(h.stats.gen_tokens for h in hs)
                wall = max(h.stats.gen_s for h in hs)
                agg.append(toks / wall if wall > 0 else 0.0)
                per.append(float(np.mean([h.stats.gen_tokens / h.stats.gen_s for h in hs if h.stats.gen_s > 0])))
            row = dict(base, test=f"tg{a.n_gen} x{P}{suffix}", parallel=P, n_max=n, tok_s=float(np.mean(agg)),
                       tok_s_std=float(np.std(agg)), per_seq_tok_s=float(np.mean(per)))
            sp = [h.stats.spec for h in hs if h.stats.spec]
            if sp:
                row["acceptance"] = float(np.mean([x.acceptance for x in sp]))
                row["mean_accepted_len"] = float(np.mean([x.mean_accepted_len for x in sp]))
            single.setdefault(suffix, row["tok_s"] if P == counts[0] and P == 1 else None)
            if single.get(suffix):
                row["vs_single"] = row["tok_s"] / single[suffix]
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
