#!/usr/bin/env python3
"""Save, then compare bit for bit, what the engine outputs: the way to show a refactor changed
nothing. For each model (the demo, a synthetic Q4_K_M and a synthetic MoE model) it records the
logits of a prompt and 64 greedy tokens, plain and with MTP at n_max 3, through the public API only
(`wgmtp.load`, `Model.logits`, `Model.generate_ids`), so the same script runs on any revision.

    python tools/golden.py save /tmp/golden-before.npz
    python tools/golden.py compare /tmp/golden-before.npz      # exit 1 on any difference

Comparison is exact: logits by their bytes (np.array_equal after a float32 view as uint32, so a
NaN or a -0.0 counts too), token ids as lists.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.gettempdir())
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

PROMPT = "The built-in function len() returns the number of items in a container."
LONG = " ".join([PROMPT] * 8)     # > 64 tokens: prefill in mat-mul chunks (and the chunked GDN)


def models(tmp: Path) -> dict[str, Path]:
    from make_model import ModelSpec, make_model
    demo = ROOT / "wgmtp" / "data" / "wgmtp-demo.gguf"
    common = dict(n_embd=128, n_layer=4, n_ff=256, block_out_scale=0.3, mtp_copy=True, seed=7)
    q4 = make_model(tmp / "q4km.gguf", ModelSpec(wtype="Q4_K_M", n_embd=256, **{k: v for k, v in common.items()
                                                                               if k != "n_embd"}))
    moe = make_model(tmp / "moe.gguf", ModelSpec(wtype="Q8_0", n_expert=8, n_expert_used=2, **common))
    return {"demo": demo, "q4km": q4, "moe": moe}


def record(device: str) -> dict:
    import numpy as np

    import wgmtp
    print(f"wgmtp from {Path(wgmtp.__file__).parent}")
    out = {}
    with tempfile.TemporaryDirectory() as d:
        for name, path in models(Path(d)).items():
            m = wgmtp.load(path, device=device, n_ctx=512)
            ids = m.tokenizer.encode(PROMPT)
            out[f"{name}.prompt"] = np.asarray(ids, np.int64)
            out[f"{name}.logits"] = m.logits(ids).astype(np.float32)
            long_ids = m.tokenizer.encode(LONG)
            for label, spec, prompt, n in (("plain", None, ids, 64), ("mtp3", "draft-mtp", ids, 64),
                                           ("long.plain", None, long_ids, 32),
                                           ("long.mtp3", "draft-mtp", long_ids, 32)):
                toks = list(m.generate_ids(prompt, max_tokens=n, temperature=0.0, spec=spec, n_max=3))
                out[f"{name}.{label}"] = np.asarray(toks, np.int64)
                print(f"{name} {label}: prompt {len(prompt)}, {len(toks)} tokens, first {toks[:8]}"
                      + (f", acceptance {m.stats['acceptance']:.3f}" if spec else ""))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=["save", "compare"])
    ap.add_argument("file")
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    import numpy as np
    got = record(a.device)
    if a.mode == "save":
        np.savez(a.file, **got)
        print(f"saved {len(got)} arrays to {a.file}")
        return 0
    want = dict(np.load(a.file))
    bad = []
    for k in sorted(set(want) | set(got)):
        if k not in want or k not in got:
            bad.append(f"{k}: only in {'saved' if k in want else 'this run'}")
            continue
        w, g = want[k], got[k]
        same = w.shape == g.shape and (np.array_equal(w.view(np.uint32), g.view(np.uint32)) if w.dtype == np.float32
                                       else np.array_equal(w, g))
        if not same:
            bad.append(f"{k}: differs (shapes {w.shape} vs {g.shape})")
    for b in bad:
        print("DIFF", b)
    print(f"{len(want)} saved arrays, {len(got)} recorded: {'identical' if not bad else f'{len(bad)} differ'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
