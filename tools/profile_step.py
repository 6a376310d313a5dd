#!/usr/bin/env python3
"""GPU time of every dispatch of one decode step (or one verify round), grouped by kernel: the
map of where a token's time goes. Each dispatch runs in its own compute pass with timestamp
queries (needs the adapter's timestamp-query feature), so absolute numbers include a pass
boundary each; the shares are what to look at.

    python tools/profile_step.py -m model.gguf [--verify N] [--reps 5]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.gettempdir())
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("--device", default=None)
    ap.add_argument("--verify", type=int, default=0, help="profile a verify round of N drafts instead")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--ctx", type=int, default=64, help="tokens already in the context")
    ap.add_argument("--top", type=int, default=0, help="also list the N slowest dispatches by label (weight names)")
    a = ap.parse_args()

    import wgpu

    from wgmtp.engine import GenRequest, Session
    from wgmtp.models.qwen35 import GGUFModel
    from wgmtp.models.qwen35.runner import Qwen35Runner
    from wgmtp.models.qwen35.step_data import Batch
    gm = GGUFModel(a.model)
    be = Qwen35Runner(gm, device=a.device or "auto", n_ctx=a.ctx + 64, eog=set(), progress=False)
    if not be.runner.can_time:
        print("this adapter has no timestamp queries")
        return 1
    spec = a.verify > 0
    s = Session(be, a.ctx + 64, set())
    list(s.generate(list(range(1, a.ctx + 1)), GenRequest(max_tokens=2, spec=spec, n_max=max(1, a.verify))))
    m = be.model
    progs = [m.draft(a.verify, 0.0, gm.config.n_vocab), m.verify(a.verify, 1)] if spec else \
        [m.feed(1, False, 1)]
    n_tok = a.verify + 1 if spec else 1
    head = be.lay.head(Batch.of_sequence(0, be.n_past, n_tok, be.src_plane), [1] * n_tok, a.verify)
    dispatches = [(p.label, d) for p in progs for d in p.dispatches]
    ctx = be.ctx
    qs = ctx.device.create_query_set(type=wgpu.QueryType.timestamp, count=2 * len(dispatches))
    qbuf = ctx.buffer(16 * len(dispatches), usage=wgpu.BufferUsage.QUERY_RESOLVE | wgpu.BufferUsage.COPY_SRC)
    times = defaultdict(list)
    for rep in range(a.reps + 1):
        ctx.queue.write_buffer(be.model.step_buf.buffer, 0, head)
        enc = ctx.device.create_command_encoder()
        for i, (_, d) in enumerate(dispatches):
            cp = enc.begin_compute_pass(timestamp_writes={"query_set": qs, "beginning_of_pass_write_index": 2 * i,
                                                          "end_of_pass_write_index": 2 * i + 1})
            cp.set_pipeline(d.pipeline)
            cp.set_bind_group(0, d.bind_group)
            cp.dispatch_workgroups(*d.grid)
            cp.end()
        enc.resolve_query_set(qs, 0, 2 * len(dispatches), qbuf, 0)
        ctx.queue.submit([enc.finish()])
        t = np.frombuffer(ctx.read(qbuf), np.uint64).astype(np.float64).reshape(-1, 2)
        if rep:
            for (prog, d), (t0, t1) in zip(dispatches, t):
                times[(prog, d.label)].append((t1 - t0) * 1e-6)
    rows = sorted(((k, float(np.median(v)), len(v) // a.reps) for k, v in times.items()), key=lambda r: -r[1] * r[2])
    agg, per_prog = defaultdict(float), defaultdict(float)
    for (prog, label), ms, n in rows:
        agg[label.split(":")[0]] += ms * n
        per_prog[prog] += ms * n
    total = sum(agg.values())
    print(f"{a.model}: {len(dispatches)} dispatches, {total:.2f} ms GPU "
          f"({'verify of %d' % n_tok if spec else 'decode'} step"
          + (": " + ", ".join(f"{k} {v:.2f} ms" for k, v in per_prog.items()) if spec else "") + ")")
    for label, ms in sorted(agg.items(), key=lambda kv: -kv[1]):
        print(f"  {label:28s} {ms:9.3f} ms  {100 * ms / total:5.1f}%")
    for (prog, label), ms, n in rows[:a.top]:
        print(f"  {prog:10s} {label:48s} {ms:8.3f} ms x{n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
