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

    from wgmtp.engine import GenRequest, Session
    from wgmtp.gpu.program import DispatchTime, by_kernel
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
    runs = []
    for rep in range(a.reps + 1):       # every dispatch in its own timed pass (gpu/program.py: Runner.profile_next)
        be.runner.profile_next()
        be.runner.run(progs, writes=[(m.step_buf.buffer, 0, head)])
        if rep:
            runs.append(be.runner.last_dispatches)
    med = [DispatchTime(d.program, d.label, float(np.median([r[i].seconds for r in runs])))
           for i, d in enumerate(runs[0])]
    per_prog = defaultdict(float)
    for d in med:
        per_prog[d.program] += d.seconds * 1e3
    total = sum(per_prog.values())
    print(f"{a.model}: {len(med)} dispatches, {total:.2f} ms GPU "
          f"({'verify of %d' % n_tok if spec else 'decode'} step"
          + (": " + ", ".join(f"{k} {v:.2f} ms" for k, v in per_prog.items()) if spec else "") + ")")
    for kernel, sec, n in by_kernel(med):
        print(f"  {kernel:28s} {sec * 1e3:9.3f} ms  {100 * sec * 1e3 / total:5.1f}%  x{n}")
    by_label = defaultdict(list)
    for d in med:
        by_label[(d.program, d.label)].append(d.seconds * 1e3)
    rows = sorted(((k, float(np.median(v)), len(v)) for k, v in by_label.items()), key=lambda r: -r[1] * r[2])
    for (prog, label), ms, n in rows[:a.top]:
        print(f"  {prog:10s} {label:48s} {ms:8.3f} ms x{n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
