"""The MoE FFN cases (kernels/moe.py): the whole FFN against its twin, and its batch invariance."""
from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as QT

from ... import tolerances as tol
from ...gpu.weights import upload_tensor
from ...kernels import Act
from ...reference import ops
from .common import Case, Check, read_f32, run_step
from .linear import make_weight

f32 = np.float32


def _moe_layer(ctx, qt: QT, NE: int, k: int, E: int, Fe: int, Fs: int, seed: int):
    from ...kernels import moe as moe_kernels
    rng = np.random.default_rng(seed)
    router = (rng.standard_normal((NE, E)) * 3 / np.sqrt(E)).astype(f32)
    gates = [make_weight(ctx, qt, Fe * NE, E, seed + 1), make_weight(ctx, qt, Fe * NE, E, seed + 2),
             make_weight(ctx, qt, E * NE, Fe, seed + 3)]
    sh = [make_weight(ctx, qt, Fs, E, seed + 4), make_weight(ctx, qt, Fs, E, seed + 5),
          make_weight(ctx, qt, E, Fs, seed + 6)]
    g_inp = (rng.standard_normal(E) / np.sqrt(E)).astype(f32)
    L = moe_kernels.MoEWeights(router=upload_tensor(ctx, "router", router, QT.F32, (E, NE)), gate=gates[0][2],
                               up=gates[1][2], down=gates[2][2],
                               shexp_gate_inp=upload_tensor(ctx, "gsh", g_inp, QT.F32, (E,)),
                               shexp_gate=sh[0][2], shexp_up=sh[1][2], shexp_down=sh[2][2])
    mats = (router, gates[0][1].reshape(NE, Fe, E), gates[1][1].reshape(NE, Fe, E), gates[2][1].reshape(NE, E, Fe),
            (g_inp, sh[0][1], sh[1][1], sh[2][1]))
    return L, mats


def moe_case(ctx, chk: Check, qt: QT, n_tok: int) -> None:
    """The whole MoE FFN (router, route + work list, experts, shared expert, combine) against
    ops.ffn_moe within tolerances.moe_ffn_tol."""
    from ...kernels import moe as moe_kernels
    NE, k, E, Fe, Fs = 6, 2, 256, 256, 256
    L, (router, g, u, d, sh) = _moe_layer(ctx, qt, NE, k, E, Fe, Fs, 40)
    h = np.random.default_rng(41).standard_normal((n_tok, E)).astype(f32)
    Hb, Y = ctx.upload(h), ctx.buffer(n_tok * E * 4)
    S = ctx.buffer(moe_kernels.ffn_scratch_words(E, NE, k, Fe, Fs, n_tok) * 4)
    run_step(ctx, lambda pb, st: moe_kernels.ffn(pb, L, Act(Hb), Act(Y), st, Act(S), k=k, max_tok=n_tok), n_tok)
    want = ops.ffn_moe(h, router, g, u, d, k, sh)
    chk.close("moe_ffn", read_f32(ctx, Y, n_tok * E).reshape(n_tok, E), want,
              tol.moe_ffn_tol(h, router, g, u, d, k, sh, qt.name, qt.name, qt.name))


def moe_batch_case(ctx, chk: Check) -> None:
    """Row t of an N-token MoE FFN (experts shared between tokens) equals its 1-token run, N = 2..16."""
    from ...kernels import moe as moe_kernels
    NE, k, E, Fe, Fs = 6, 2, 256, 256, 256
    L, _ = _moe_layer(ctx, QT.Q8_0, NE, k, E, Fe, Fs, 50)
    h = np.random.default_rng(51).standard_normal((16, E)).astype(f32)
    Hb = ctx.upload(h)

    def ffn_of(n):
        Y = ctx.buffer(n * E * 4)
        S = ctx.buffer(moe_kernels.ffn_scratch_words(E, NE, k, Fe, Fs, 16) * 4)
        run_step(ctx, lambda pb, st: moe_kernels.ffn(pb, L, Act(Hb), Act(Y), st, Act(S), k=k, max_tok=16), n)
        return read_f32(ctx, Y, n * E).reshape(n, E)
    ones = []
    for t in range(16):
        Y1, S1 = ctx.buffer(E * 4), ctx.buffer(moe_kernels.ffn_scratch_words(E, NE, k, Fe, Fs, 16) * 4)
        Ht = ctx.upload(h[t])
        run_step(ctx, lambda pb, st: moe_kernels.ffn(pb, L, Act(Ht), Act(Y1), st, Act(S1), k=k, max_tok=16), 1)
        ones.append(read_f32(ctx, Y1, E))
    for n in (2, 5, 16):
        chk.equal(f"moe_ffn N={n}", ffn_of(n), np.stack(ones[:n]), bits=True)


def cases() -> list[Case]:
    """The moe cases, in the order they run."""
    out: list[Case] = []
    for qt in (QT.Q8_0, QT.Q4_K, QT.F16):
        out.append(Case("moe", f"ffn {qt.name} NE6 k2 N3", lambda ctx, chk, qt=qt: moe_case(ctx, chk, qt, 3), op="moe"))
    out.append(Case("moe", "ffn Q8_0 N33 (prefill)", lambda ctx, chk: moe_case(ctx, chk, QT.Q8_0, 33), op="moe"))
    out.append(Case("moe", "batch N=2,5,16 exact", moe_batch_case, op="moe", tags=("batch",)))
    return out
