#!/usr/bin/env python3
"""GPU time of a decode step and of a verify batch under several WGMTP_* settings, side by side in
one process on one adapter: the way to decide a fusion or a layout by measurement.

Each setting gets its own backend (the switches are read when a model is built), loaded with the
setting in the environment; then the settings are timed in turn, round after round, so drift of
the machine (clock, other load) hits all of them alike. Times are GPU timestamps (wall time of a
submit + tiny readback where the adapter has none), the minimum over all rounds.

    python tools/ab_env.py -m model.gguf --verify 3 --rounds 5 "WGMTP_FUSE=none" "" "WGMTP_FUSE=all"

An empty setting is the defaults. Prints a table: dispatches of a decode step and of a verify
batch, decode ms, verify
ms, verify/decode, and decode time relative to the first setting. The decode step is a plain one
(no MTP head), the verify batch is n + 1 tokens with the MTP head's KV refill, as in bench.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.gettempdir())
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def parse_setting(s: str) -> dict[str, str]:
    out = {}
    for kv in s.split():
        k, sep, v = kv.partition("=")
        if not sep or not k.startswith("WGMTP_"):
            raise SystemExit(f"setting {kv!r}: write WGMTP_NAME=value (space-separated, or '' for defaults)")
        out[k] = v
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", default=None, help="GGUF (default: the demo model)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--verify", type=int, default=3, help="drafts per verify batch (0: decode only)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=5, help="timed runs per round and setting")
    ap.add_argument("settings", nargs="+", help="e.g. 'WGMTP_FUSE=none' ''")
    a = ap.parse_args()

    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from wgmtp.api import resolve_model
    from wgmtp.engine import GenRequest, Session
    from wgmtp.models.qwen35 import GGUFModel
    from wgmtp.models.qwen35.runner import Qwen35Runner

    path = resolve_model(a.model)
    gm = GGUFModel(path)
    n = a.verify if gm.has_mtp else 0
    runs = []
    for s in a.settings:
        env = parse_setting(s)
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            be = Qwen35Runner(gm, device=a.device or "auto", n_ctx=256, eog=set(), progress=False)
            sess = Session(be, 256, set())
            # a context of 64 tokens, then a spec round so the verify program exists (and compiles)
            prompt = [int(x) for x in np.random.default_rng(0).integers(0, gm.config.n_vocab, 64)]
            list(sess.generate(prompt, GenRequest(max_tokens=4, spec=n > 0, n_max=max(1, n))))
            be.time_programs(n, reps=1)      # builds (and compiles) the timed programs
            disp = len(be.model.feed(1, False, 1))
            vdisp = len(be.model.verify(n, 1)) if n else 0
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        runs.append({"setting": s or "(defaults)", "be": be, "disp": disp, "vdisp": vdisp, "dec": [], "ver": []})
    for _ in range(a.rounds):
        for r in runs:
            t = r["be"].time_programs(n, reps=a.reps)
            r["dec"].append(t["decode_s"])
            r["ver"].append(t["verify_s"])
            timing = t["timing"]

    tab = Table(title=f"{Path(path).name} on {runs[0]['be'].ctx.name} ({timing}, min of {a.rounds}x{a.reps})")
    tab.add_column("setting", justify="right", no_wrap=True)
    for c in ("dispatches decode/verify", "decode ms", f"verify{n} ms", "verify/decode", "decode vs first"):
        tab.add_column(c, justify="right")
    d0 = min(runs[0]["dec"])
    for r in runs:
        dec, ver = min(r["dec"]), min(r["ver"]) if n else 0.0
        tab.add_row(r["setting"], f"{r['disp']} / {r['vdisp']}", f"{dec * 1e3:.3f}", f"{ver * 1e3:.3f}" if n else "-",
                    f"{ver / dec:.2f}" if n else "-", f"{dec / d0:.3f}")
    Console(width=max(120, 100 + max(len(r['setting']) for r in runs))).print(tab)
    print("command: python tools/ab_env.py " + " ".join(
        [f"-m {a.model}" if a.model else "", f"--verify {a.verify}", f"--rounds {a.rounds}"]
        + [repr(s) for s in a.settings]).replace("  ", " "))
    return 0


if __name__ == "__main__":
    sys.exit(main())
