#!/usr/bin/env python3
"""Rollback of a verify round of n drafts, two ways, at the GDN shapes of real models: GPU time and
state memory of one GDN layer for one sequence.

    planes  the verify (ssm_conv + gdn over n + 1 rows) writes a snapshot plane per row; a rollback
            to k accepted drafts is free (the next batch starts from plane n - k). State: n + 1
            planes.
    rerun   the verify stores no state (STORE_NONE); after acceptance the kept k + 1 rows run again
            through ssm_conv + gdn alone (STORE_FINAL, no weights but the conv taps read), from the
            round's start. State: one plane, plus the rows' conv inputs and gates
            ((conv_dim + 2 Hv) floats a row).

Both use the same kernels, so the state is bit-identical (tests/test_kernel_gdn.py,
test_store_modes_roll_back_without_planes). The rerun's time is given for the mean acceptance of
the round (k = n / 2) and the worst (k = n). Only the recurrent part is timed: the projections
and attention cost the same either way.

    python tools/rollback_bench.py [--shapes 0.8B,27B] [--n 3,8,16,48] [--reps 5] [--device N]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.gettempdir())
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# GDN heads of the reference's configuration table (Hk, Hv, Dk = Dv)
SHAPES = {"0.8B": (16, 16, 128), "27B": (16, 48, 128), "35B-A3B": (16, 32, 128)}
KC = 4


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default="0.8B,27B")
    ap.add_argument("--n", default="3,8,16,48", help="draft lengths")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--device", default=None)
    a = ap.parse_args()

    from wgmtp.gpu.device import open_context
    from wgmtp.gpu.program import ProgramBuilder, Runner
    from wgmtp.gpu.weights import upload_array
    from wgmtp.kernels import STEP_WORDS, STORE_FINAL, STORE_NONE, STORE_PLANES, Act, store_word
    from wgmtp.kernels import gdn as K

    ctx = open_context(None if a.device is None else int(a.device) if a.device.isdigit() else a.device)
    runner = Runner(ctx)
    if not runner.can_time:
        print(f"{ctx.name}: no timestamp queries, cannot time GPU work", file=sys.stderr)
        return 1
    ns = [int(x) for x in a.n.split(",")]
    print(f"adapter: {ctx.name}; one GDN layer, one sequence; GPU ms (median of {a.reps}); MiB of state\n")
    print("| shape | n | planes: verify ms | rerun: verify ms | + rerun k=n/2 ms | + rerun k=n ms "
          "| planes MiB | rerun MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in a.shapes.split(","):
        hk, hv, dk = SHAPES[name]
        d = K.GDNDims(hk, hv, dk, dk)
        rng = np.random.default_rng(0)
        R = max(ns) + 1
        W = upload_array(ctx, "ssm_conv1d.weight", (rng.standard_normal((d.conv_dim, KC)) * 0.5).astype(np.float32))
        A = upload_array(ctx, "ssm_a", (-np.exp(rng.uniform(-1.5, 0.5, hv))).astype(np.float32))
        DTB = upload_array(ctx, "ssm_dt.bias", rng.uniform(-1, 1, hv).astype(np.float32))
        X = ctx.upload(rng.standard_normal((R, d.conv_dim)).astype(np.float32))
        AL = ctx.upload((rng.standard_normal((R, hv)) - 2).astype(np.float32))
        BE = ctx.upload(rng.standard_normal((R, hv)).astype(np.float32))
        C, O = ctx.buffer(R * d.conv_dim * 4), ctx.buffer(R * d.value_dim * 4)
        STEP = ctx.buffer(STEP_WORDS * 4)
        cp, sp = K.conv_plane(d.conv_dim, KC), d.ssm_plane
        for n in ns:
            planes = n + 1
            CS, SS = ctx.buffer(planes * cp * 4), ctx.buffer(min(planes * sp * 4, ctx.binding_limit))

            def timed(rows: int, store: int, n_planes: int) -> float:
                pb = ProgramBuilder(ctx, "rollback")
                K.ssm_conv(pb, Act(STEP), Act(X), W, Act(CS), Act(C), n_slots=n_planes)
                K.gdn(pb, Act(STEP), Act(C), Act(AL), Act(BE), A, DTB, Act(SS), Act(O), d, n_slots=n_planes, eps=1e-6)
                prog = pb.build()
                rec = np.zeros(STEP_WORDS, np.uint32)
                rec[0], rec[2] = rows, store_word(0, store)
                out = []
                for _ in range(a.reps + 1):
                    runner.run([prog], writes=[(STEP, 0, rec.tobytes())], timed=True)
                    out.append(sum(runner.last_gpu_s) * 1e3)
                return statistics.median(out[1:])          # the first run warms the pipelines

            fits = planes * sp * 4 <= ctx.binding_limit
            v_planes = f"{timed(n + 1, STORE_PLANES, planes):.2f}" if fits else "over the binding limit"
            v_none = timed(n + 1, STORE_NONE, 1)
            half, full = timed(n // 2 + 1, STORE_FINAL, 1), timed(n + 1, STORE_FINAL, 1)
            mib = 4 / 2**20
            planes_mib = planes * (cp + sp) * mib
            rerun_mib = (cp + sp + (n + 1) * (d.conv_dim + 2 * hv)) * mib
            print(f"| {name} | {n} | {v_planes} | {v_none:.2f} | {v_none + half:.2f} | {v_none + full:.2f} "
                  f"| {planes_mib:.1f} | {rerun_mib:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
