"""`wgmtp check -m model.gguf [-md sidecar]`: the whole model on a GPU against the numpy twins.

1. Op by op (check/trace.py): a prompt, then a few speculative rounds (draft chain, verify, MTP
   refill, acceptance) run one op at a time; each op's output is compared with its twin computed
   from the op's own GPU inputs, so a wrong kernel is named by layer and op, not found as drift.
2. End to end: the logits at every prompt position against an independent numpy run (skipped for
   models too big to run in numpy; the op checks then sample rows of big matrices).
3. Lossless: greedy output with draft-mtp equals greedy output without it.
4. Acceptance canary: draft acceptance on a few prompts, GPU vs numpy reference; flagged when the
   GPU's is clearly lower (the symptom users see on broken drivers: near-zero acceptance).
"""
from __future__ import annotations

import argparse
import time
from typing import Any, Callable

import numpy as np

from .. import tolerances as tol
from ..engine import GenRequest, Session
from ..models.qwen35 import GGUFModel

REF_LIMIT_BYTES = 1 << 30      # run the independent numpy model only below this weight size


def _row(op: str, case: str, ok: bool | None, max_abs: float = 0.0, max_rel: float = 0.0, tol_: float = 0.0,
         t: float = 0.0, layer: int | None = None, note: str = "", status: str | None = None) -> dict:
    return {"op": op, "case": case, "max_abs": float(max_abs), "max_rel": float(max_rel), "tol": float(tol_),
            "status": status or ("pass" if ok else "fail"), "time_s": float(t), "layer": layer, "note": note}


def run_model_check(a: argparse.Namespace, *, backend_hook: Callable[[Any], None] | None = None) -> dict:
    """Returns {"rows": [...], "adapter": {...}, "first_divergence": str | None}. `backend_hook`
    (tests only) gets the GPU backend before anything runs, e.g. to corrupt a weight."""
    from ..api import resolve_model
    from ..models.qwen35.runner import Qwen35Runner
    from ..reference.backend import RefBackend
    from .trace import attach, detach

    path = resolve_model(getattr(a, "model", None))
    gm = GGUFModel(path, getattr(a, "mtp_file", None))
    n_tok = int(getattr(a, "n_tokens", None) or 12)
    device = getattr(a, "device", None)
    be = Qwen35Runner(gm, device=device if device not in (None, "all") else "auto", n_ctx=256, eog=set(),
                      progress=False)
    if backend_hook:
        backend_hook(be)
    adapter = {"name": be.ctx.name, "backend": be.ctx.desc.backend, "variant": be.ctx.variant()}
    rows: list[dict] = []
    rng = np.random.default_rng(0)
    V = gm.config.n_vocab
    prompt = [int(x) for x in rng.integers(0, V, n_tok)]
    small = gm.weight_bytes(mtp=True) <= REF_LIMIT_BYTES

    # 1. op by op over a prompt and (with MTP) a few speculative rounds
    checker = attach(be, stop_on_divergence=False)
    t0 = time.perf_counter()
    sess = Session(be, 256, set())
    req = GenRequest(max_tokens=8, spec=gm.has_mtp, n_max=3)
    list(sess.generate(prompt, req))
    dt = (time.perf_counter() - t0) / max(1, len(checker.results))
    first = None
    groups: dict[tuple, list] = {}           # one row per (op, layer): the worst of its runs
    for r in checker.results:
        if r.note == "not compared":
            continue
        where = "draft" if r.where.startswith("draft") else r.where
        groups.setdefault((where, r.op, r.layer, r.shape), []).append(r)
        if not r.ok and first is None:
            first = r.message()
    for (where, op, layer, shape), rs in groups.items():
        worst = max(rs, key=lambda r: (not r.ok, r.max_abs / r.tol if r.tol > 0 else (0 if r.max_abs == 0 else 1e30)))
        fails = sum(1 for r in rs if not r.ok)
        note = "; ".join(x for x in (worst.note, ", ".join(worst.outputs),
                                     f"{len(rs)} runs" + (f", {fails} failed" if fails else "")) if x)
        rows.append(_row(f"{where}.{op}", f"layer {layer} {shape}".strip() if layer >= 0 else shape, fails == 0,
                         worst.max_abs, worst.max_rel, worst.tol, dt * len(rs), layer, note))
    detach(be)

    # 2. end to end against an independent numpy run
    if small:
        ref = RefBackend(gm, kv_f16=be.ctx.f16)
        t0 = time.perf_counter()
        lr = ref.logits(prompt)
        lg = be.logits(prompt)
        bound = tol.model_logits_tol(gm.config, lr)
        err = float(np.abs(lg - lr).max())
        rows.append(_row("model.logits", f"{n_tok} positions vs numpy", err <= bound, err,
                         err / max(1e-30, float(np.abs(lr).max())), bound, time.perf_counter() - t0))
    else:
        rows.append(_row("model.logits", "vs numpy", None, status="skip",
                         note=f"weights over {REF_LIMIT_BYTES >> 20} MiB: op checks above sample rows instead"))

    # 3. lossless speculation and 4. the acceptance canary
    if gm.has_mtp:
        t0 = time.perf_counter()
        plain = list(Session(be, 256, set()).generate(prompt, GenRequest(max_tokens=32)))
        s_spec = Session(be, 256, set())
        spec = list(s_spec.generate(prompt, GenRequest(max_tokens=32, spec=True, n_max=3)))
        same = plain == spec
        div = next((i for i, (x, y) in enumerate(zip(plain, spec)) if x != y), None)
        rows.append(_row("spec.lossless", "greedy 32 tokens, n_max 3", same, 0.0 if same else 1.0,
                         t=time.perf_counter() - t0, note="" if same else f"first difference at token {div}"))
        if small:
            t0 = time.perf_counter()
            acc_g, acc_r = [], []
            ref = RefBackend(gm, kv_f16=be.ctx.f16)
            for seed in range(3):
                p = [int(x) for x in np.random.default_rng(100 + seed).integers(0, V, 8)]
                sg, sr = Session(be, 256, set()), Session(ref, 256, set())
                list(sg.generate(p, GenRequest(max_tokens=24, spec=True, n_max=3)))
                list(sr.generate(p, GenRequest(max_tokens=24, spec=True, n_max=3)))
                acc_g.append(sg.stats.spec.acceptance)
                acc_r.append(sr.stats.spec.acceptance)
            g, r_ = float(np.mean(acc_g)), float(np.mean(acc_r))
            ok = not (g < 0.8 * r_ - 0.05)
            rows.append(_row("spec.acceptance", "GPU vs numpy, 3 prompts x 24 tokens", ok, abs(g - r_), 0.0, 0.0,
                             time.perf_counter() - t0, note=f"GPU {g:.3f} vs reference {r_:.3f}"
                             + ("" if ok else " -- the GPU's drafts are clearly worse: suspect the MTP path")))
    else:
        rows.append(_row("spec", "no MTP block", None, status="skip", note="give -md mtp-*.gguf to check MTP"))
    if first is None:
        bad = next((r for r in rows if r["status"] == "fail"), None)
        if bad:
            first = f"{bad['op']} {bad['case']}: {bad['note'] or 'failed'}"
    return {"rows": rows, "adapter": adapter, "first_divergence": first}
