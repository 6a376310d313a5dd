#!/usr/bin/env python3
"""Rollback of a verify round of n drafts, two ways, at the GDN shapes of real models: GPU time and
state memory of one GDN layer for one sequence.

    planes  the verify (ssm_conv + gdn over n + 1 rows) writes a snapshot plane per row; a rollback
            to k accepted drafts is free (the next batch starts from plane n - k). State: n + 1
            planes.
    long    the engine's long round (program.slot_long_round): the verify runs in sub-batches of
            16 rows, each storing only its final state (into the next sub-batch's plane); after
            acceptance the kept rows of the one sub-batch holding row k run again through ssm_conv
            + gdn alone (STORE_FINAL, no weights but the conv taps read) from that sub-batch's
            plane. State: one plane per sub-batch, plus the rows' in-projections (qkv, z, alpha,
            beta: conv_dim + value_dim + 2 Hv floats a row).

Both use the same kernels, so the state is bit-identical (tests/test_long_drafts.py). The rerun is
timed for the round's mean acceptance (k = n / 2) and the worst case for it (k = n, the whole last
sub-batch). Only the recurrent part is timed: the projections and attention cost the same either
way (the long round's sub-batches read the weights once per 16 rows, as a verify of 16 rows does).

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
SUB = 16          # rows per verify sub-batch of a long round (program.LONG_SUB)


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
    print("| shape | n | planes: verify ms | long: verify ms | + rerun k=n/2 ms | + rerun k=n ms "
          "| planes MiB | long MiB |")
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
        cp, sp = K.conv_plane(d.conv_dim, KC), d.ssm_plane
        for n in ns:
            planes = n + 1
            subs = [(r0, min(SUB, n + 1 - r0)) for r0 in range(0, n + 1, SUB)]
            n_long = len(subs)
            cap = max(planes, n_long)
            CS, SS = ctx.buffer(cap * cp * 4), ctx.buffer(min(cap * sp * 4, ctx.binding_limit))

            def timed(records: list[tuple[int, int, int]], n_planes: int) -> float:
                """GPU ms of ssm_conv + gdn per record (rows, record word 2, row0), in one program."""
                STEP = ctx.buffer(len(records) * STEP_WORDS * 4)
                pb = ProgramBuilder(ctx, "rollback")
                for i in range(len(records)):
                    st = Act(STEP, i * STEP_WORDS)
                    K.ssm_conv(pb, st, Act(X), W, Act(CS), Act(C), n_slots=n_planes)
                    K.gdn(pb, st, Act(C), Act(AL), Act(BE), A, DTB, Act(SS), Act(O), d, n_slots=n_planes, eps=1e-6)
                prog = pb.build()
                rec = np.zeros((len(records), STEP_WORDS), np.uint32)
                for i, (rows, word, row0) in enumerate(records):
                    rec[i, 0], rec[i, 2], rec[i, 5] = rows, word, row0
                out = []
                for _ in range(a.reps + 1):
                    runner.run([prog], writes=[(STEP, 0, rec.tobytes())], timed=True)
                    out.append(sum(runner.last_gpu_s) * 1e3)
                return statistics.median(out[1:])          # the first run warms the pipelines

            def rerun(k: int) -> float:
                c = k // SUB
                return timed([(k - c * SUB + 1, store_word(c, STORE_FINAL, 0), c * SUB)], n_long)

            fits = planes * sp * 4 <= ctx.binding_limit
            v_planes = f"{timed([(n + 1, store_word(0, STORE_PLANES), 0)], planes):.2f}" if fits \
                else "over the binding limit"
            v_long = timed([(rows, store_word(c, STORE_NONE) if c == n_long - 1 else
                             store_word(c, STORE_FINAL, c + 1), r0) for c, (r0, rows) in enumerate(subs)], n_long)
            mib = 4 / 2**20
            planes_mib = planes * (cp + sp) * mib
            long_mib = (n_long * (cp + sp) + (n + 1) * (d.conv_dim + d.value_dim + 2 * hv)) * mib
            print(f"| {name} | {n} | {v_planes} | {v_long:.2f} | {v_long + rerun(n // 2):.2f} | "
                  f"{v_long + rerun(n):.2f} | {planes_mib:.1f} | {long_mib:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
