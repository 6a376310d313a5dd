"""MoE kernels (kernels/moe.py: moe_route.wgsl, moe.wgsl, moe_combine.wgsl) against reference.moe /
reference.ops, on every adapter variant (moe.wgsl includes matvec_common.wgsl; moe_route.wgsl and
moe_combine.wgsl share the workgroup sum/max of wg_reduce.wgsl).

- route: NE 4 .. 1024 x k 1, 2, 8, 16 on logits from a 1/8 grid (many exact ties in
  probability, inside the top k and across its boundary), a token whose logits are all equal and
  one with a wide range; 5 of 7 grid slots used: ids exact, weights within route_tol, the work
  list exact (slots by expert id, pairs by token), nothing written past n_tok; and prefill-sized
  batches (150 x top-8 of 64, 70 x top-16 of 256: over 1024 pairs);
- expert mat-vecs on F32 (43 columns: float row tail), Q8_0, Q5_0, Q4_K (256-wide rows): the
  fused gate_up layout read whole (rows 2Fe) and its up half alone (row_offset Fe, bit-identical
  to the whole read), down with one input per pair; 16 tokens choosing 2 of 6 experts (each
  expert shared by several tokens, so several 4-pair chunks); within matvec_tol of the twin per
  pair, batch rows bit-identical to 16 single-token runs, nothing written past n_tok*k, the same
  bits with one workgroup group looping over all slots (slot_groups=1); F32 and
  Q8_0 again on a device with a 4 KiB max_binding, so experts straddle weight parts;
- swiglu and combine (with and without the shared expert, its gate stored {E} and {E, 1}, E = 300
  spanning 2 column blocks) within the bounds below;
- the whole FFN (router linear, route, gate/up, swiglu, down, shared expert, combine = kernels.moe.ffn)
  vs ops.ffn_moe within ffn_tol: separate gate/up Q4_K + Q5_0 down + Q8_0 shared expert at
  n_tok 13 of 16 and a prefill-sized n_tok = 33; and exact batch invariance of the whole FFN for
  N = 2..16 (fused Q8_0 gate_up, 6 experts top-2: tokens share experts) against N = 1 runs.

Bounds not yet in wgmtp/tolerances.py (derived here; 1 ULP taken as 2u, the strict value):
route_tol, combine_tol, ffn_tol.
"""
from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT
from gpu_util import ctx, read_f32, run  # noqa: F401

from wgmtp import quants
from wgmtp import tolerances as tol
from wgmtp.gpu.device import open_context
from wgmtp.gpu.weights import upload_array, upload_tensor
from wgmtp.kernels import STEP_WORDS, Act, elementwise, moe
from wgmtp.reference import moe as rm
from wgmtp.reference import ops

U = tol.U
SENT = 0xDEADBEEF


# ---- bounds --------------------------------------------------------------------------------------

def check_close(got, want, bound, what):
    err = np.abs(got.astype(np.float64) - want)
    bad = ~(err <= bound)
    assert not bad.any(), f"{what}: {bad.sum()} elements off, worst {err.max():.3g} (bound {bound[bad].min():.3g})"


# ---- helpers -------------------------------------------------------------------------------------

def steps(ctx, counts):
    rec = np.zeros((len(counts), STEP_WORDS), np.uint32)
    rec[:, 0] = counts
    return ctx.upload(rec)


def sentinel_u32(ctx, n):
    return ctx.upload(np.full(n, SENT, np.uint32))


def sentinel_f32(ctx, n):
    return ctx.upload(np.full(n, SENT, np.uint32))


def read_u32(ctx, buf, n, off=0):
    return ctx.read_array(buf, np.uint32, n, off)


def expert_weight(ctx, qt, NE, rows, cols, rng, name, scale=0.5):
    """(dequantized [NE, rows, cols], GPUTensor of the 3-D GGUF tensor {cols, rows, NE})."""
    w = (rng.standard_normal((NE * rows, cols)) * scale).astype(np.float32)
    raw = quants.quantize(w, qt)
    deq = quants.dequantize(raw, qt, (NE * rows, cols)).reshape(NE, rows, cols)
    return deq, upload_tensor(ctx, name, raw, qt, (cols, rows, NE))


def weight2d(ctx, qt, rows, cols, rng, name, scale=0.5):
    w = (rng.standard_normal((rows, cols)) * scale).astype(np.float32)
    raw = quants.quantize(w, qt)
    return quants.dequantize(raw, qt, (rows, cols)), upload_tensor(ctx, name, raw, qt, (cols, rows))


def onehot_logits(ids, NE):
    """Router logits that select exactly `ids` [T, k] in that order."""
    T, k = ids.shape
    L = np.zeros((T, NE), np.float32)
    for t in range(T):
        L[t, ids[t]] = 8.0 - np.arange(k)
    return L


# ---- route ---------------------------------------------------------------------------------------

ROUTE_CASES = [(4, 1), (4, 2), (8, 1), (8, 2), (8, 8), (64, 1), (64, 2), (64, 8), (256, 1), (256, 8), (512, 16),
               (1024, 8)]


@pytest.mark.parametrize("NE,k", ROUTE_CASES, ids=lambda v: str(v))
def test_route(ctx, NE, k):
    rng = np.random.default_rng(NE * 100 + k)
    n, max_tok = 5, 7
    L = (rng.integers(-24, 25, (max_tok, NE)) / 8).astype(np.float32)   # many exact ties
    L[1] = 0.5                                                          # all tied: ids 0..k-1
    L[2] = (rng.integers(-240, 1, NE) / 8).astype(np.float32)          # range up to 30
    L[3, : min(NE, k + 2)] = L[3].max()                                 # a tie across the top-k boundary
    Lb = ctx.upload(L)
    Ib = sentinel_u32(ctx, max_tok * k)
    Wb = sentinel_f32(ctx, max_tok * k)
    nw = moe.worklist_words(NE, k, max_tok)
    WLb = sentinel_u32(ctx, nw)
    St = steps(ctx, [n])
    run(ctx, lambda pb: moe.route(pb, Act(St), Act(Lb), Act(Ib), Act(Wb), Act(WLb), n_expert=NE, k=k,
                                  max_tok=max_tok))
    ids = read_u32(ctx, Ib, max_tok * k).reshape(max_tok, k)
    wts = read_f32(ctx, Wb, max_tok * k).reshape(max_tok, k)
    wl = read_u32(ctx, WLb, nw)
    want_ids, want_w = rm.route(L[:n], k)
    assert np.array_equal(ids[:n], want_ids), f"route NE={NE} k={k}: ids differ"
    assert np.all(ids[n:] == SENT) and np.all(wts[n:].view(np.uint32) == SENT), "route wrote past n_tok"
    check_close(wts[:n], want_w, tol.moe_route_tol(L[:n], want_w), f"route NE={NE} k={k} weights")
    want_wl = rm.worklist(want_ids, NE, max_tok)
    assert np.array_equal(rm.worklist_used(wl, NE, k, max_tok), rm.worklist_used(want_wl, NE, k, max_tok)), \
        f"route NE={NE} k={k}: work list differs"


@pytest.mark.parametrize("NE,k,n", [(64, 8, 150), (256, 16, 70)], ids=lambda v: str(v))
def test_route_prefill(ctx, NE, k, n):
    """Prefill-sized batches: more than 1024 pairs, so the work list streams the ids in tiles."""
    rng = np.random.default_rng(n)
    L = (rng.integers(-40, 41, (n, NE)) / 8).astype(np.float32)
    Lb, Ib, Wb = ctx.upload(L), ctx.buffer(n * k * 4), ctx.buffer(n * k * 4)
    nw = moe.worklist_words(NE, k, n)
    WLb = sentinel_u32(ctx, nw)
    St = steps(ctx, [n])
    run(ctx, lambda pb: moe.route(pb, Act(St), Act(Lb), Act(Ib), Act(Wb), Act(WLb), n_expert=NE, k=k, max_tok=n))
    want_ids, want_w = rm.route(L, k)
    assert np.array_equal(read_u32(ctx, Ib, n * k).reshape(n, k), want_ids)
    check_close(read_f32(ctx, Wb, n * k).reshape(n, k), want_w, tol.moe_route_tol(L, want_w), "route prefill weights")
    assert np.array_equal(rm.worklist_used(read_u32(ctx, WLb, nw), NE, k, n),
                          rm.worklist_used(rm.worklist(want_ids, NE, n), NE, k, n)), "work list differs"


# ---- expert mat-vecs -----------------------------------------------------------------------------

MV_NE, MV_K, MV_T = 6, 2, 16
MV_SHAPES = {QT.F32: (43, 20), QT.Q8_0: (96, 64), QT.Q5_0: (64, 96), QT.Q4_K: (256, 256)}   # (E, Fe)
SPLIT_BINDING = 4096


def check_expert_matvecs(ctx, qt, seed, split=False):
    NE, k, T = MV_NE, MV_K, MV_T
    E, Fe = MV_SHAPES[qt]
    rng = np.random.default_rng(seed)
    GUd, GU = expert_weight(ctx, qt, NE, 2 * Fe, E, rng, "gate_up_exps")
    Dd, D = expert_weight(ctx, qt, NE, E, Fe, rng, "down_exps")
    if split:
        assert all(p.buffer.size <= SPLIT_BINDING for p in GU.parts + D.parts)
        assert any(p.row0 % (2 * Fe) for p in GU.parts) and any(p.row0 % E for p in D.parts), \
            "no expert straddles two parts"
    ids = np.stack([rng.choice(NE, k, replace=False) for _ in range(T)]).astype(np.int32)
    X = rng.standard_normal((T, E)).astype(np.float32)
    A = rng.standard_normal((T * k, Fe)).astype(np.float32)
    Lb, Xb, Ab = ctx.upload(onehot_logits(ids, NE)), ctx.upload(X), ctx.upload(A)
    max_b = T + 2                                   # batch grid covers 2 tokens past n_tok
    St = steps(ctx, [T, 1])
    runs = [(T, max_b, 0)] + [(1, 1, t) for t in range(T)]   # (n_tok, max_tok, first token)
    outs = []
    for n, mt, t0 in runs:
        o = dict(ids=ctx.buffer(mt * k * 4), w=ctx.buffer(mt * k * 4),
                 wl=ctx.buffer(moe.worklist_words(NE, k, mt) * 4),
                 gu=sentinel_f32(ctx, mt * k * 2 * Fe), up=sentinel_f32(ctx, mt * k * Fe),
                 dn=sentinel_f32(ctx, mt * k * E), gu1=sentinel_f32(ctx, mt * k * 2 * Fe))
        outs.append(o)

    def build(pb):
        for (n, mt, t0), o in zip(runs, outs):
            st = Act(St, 0 if n == T else STEP_WORDS)
            kw = dict(n_expert=NE, k=k, max_tok=mt)
            wl = Act(o["wl"])
            moe.route(pb, st, Act(Lb, t0 * NE), Act(o["ids"]), Act(o["w"]), wl, **kw)
            moe.expert_matvec(pb, GU, Act(Xb, t0 * E), Act(o["gu"]), wl, rows_per_expert=2 * Fe, **kw)
            moe.expert_matvec(pb, GU, Act(Xb, t0 * E), Act(o["up"]), wl, rows_per_expert=Fe, row_offset=Fe,
                              expert_row_stride=2 * Fe, **kw)
            moe.expert_matvec(pb, D, Act(Ab, t0 * k * Fe), Act(o["dn"]), wl, rows_per_expert=E,
                              x_per_slot=True, **kw)
            if n == T:      # one workgroup group looping over every slot: same numbers
                moe.expert_matvec(pb, GU, Act(Xb), Act(o["gu1"]), wl, rows_per_expert=2 * Fe, slot_groups=1, **kw)
    run(ctx, build)
    got = [{name: read_f32(ctx, o[name], mt * k * w).reshape(mt * k, w)
            for name, w in (("gu", 2 * Fe), ("up", Fe), ("dn", E))} for (n, mt, t0), o in zip(runs, outs)]
    b = got[0]
    for name in ("gu", "up", "dn"):
        assert np.all(b[name][T * k:].view(np.uint32) == SENT), f"{qt.name} {name}: wrote past n_tok*k"
    want = dict(gu=rm.expert_matvec(GUd, ids, X, 2 * Fe), dn=rm.expert_matvec(Dd, ids, A, E, x_per_slot=True))
    what = f"{qt.name}{' split' if split else ''}"
    for name, W3, x, xps in (("gu", GUd, X, False), ("dn", Dd, A, True)):
        bound = np.stack([tol.matvec_tol(W3[ids[t, j]], (x[t * k + j] if xps else x[t])[None], qt.name)[0]
                          for t in range(T) for j in range(k)])
        check_close(b[name][:T * k], want[name], bound, f"expert_matvec {what} {name}")
    assert np.array_equal(b["up"][:T * k], b["gu"][:T * k, Fe:]), f"{what}: up rows alone differ from gate_up"
    gu1 = read_f32(ctx, outs[0]["gu1"], T * k * 2 * Fe).reshape(T * k, 2 * Fe)
    assert np.array_equal(gu1, b["gu"][:T * k]), f"{what}: slot_groups=1 differs"
    for t in range(T):          # batch invariance: each token's pairs equal its single-token run
        for name in ("gu", "up", "dn"):
            assert np.array_equal(b[name][t * k:(t + 1) * k], got[1 + t][name]), \
                f"expert_matvec {what} {name}: token {t} of the batch differs from its n_tok=1 run"


@pytest.mark.parametrize("qt", list(MV_SHAPES), ids=lambda q: q.name)
def test_expert_matvec(ctx, qt):
    check_expert_matvecs(ctx, qt, seed=int(qt) + 10)


@pytest.mark.parametrize("qt", [QT.F32, QT.Q8_0], ids=lambda q: q.name)
def test_expert_matvec_split(ctx, qt):
    ctx = open_context(ctx.desc.index, subgroups=ctx.subgroups, f16=ctx.f16, max_binding=SPLIT_BINDING)
    check_expert_matvecs(ctx, qt, seed=int(qt) + 20, split=True)


# ---- swiglu, combine -----------------------------------------------------------------------------

@pytest.mark.parametrize("shape", ["none", "vec", "col"])
def test_swiglu_combine(ctx, shape):
    rng = np.random.default_rng(len(shape))
    E, k, Fe, n, max_tok = 300, 3, 37, 5, 6
    gu = (rng.standard_normal((max_tok * k, 2 * Fe)) * 3).astype(np.float32)
    down = rng.standard_normal((max_tok * k, E)).astype(np.float32)
    w = rng.random((max_tok, k)).astype(np.float32)
    h = rng.standard_normal((max_tok, E)).astype(np.float32)
    sh = rng.standard_normal((max_tok, E)).astype(np.float32)
    g_inp = (rng.standard_normal(E) * 0.1).astype(np.float32)
    Gb, Db, Wb, Hb, SHb = (ctx.upload(a) for a in (gu, down, w, h, sh))
    Ob = sentinel_f32(ctx, max_tok * k * Fe)
    Yb = sentinel_f32(ctx, max_tok * E)
    St = steps(ctx, [n])
    shexp = None
    if shape != "none":
        gt = upload_array(ctx, "gate_inp_shexp", g_inp if shape == "vec" else g_inp[None, :])
        assert gt.rows == 1 and gt.cols == E
        shexp = (gt, Act(Hb), Act(SHb))
    run(ctx, lambda pb: (elementwise.swiglu(pb, Act(Gb), Act(Gb, Fe), Act(Ob), Act(St), width=Fe, k=k, max_tok=max_tok,
                                            g_stride=2 * Fe, u_stride=2 * Fe),
                         moe.combine(pb, Act(Db), Act(Wb), Act(Yb), Act(St), n_embd=E, k=k, max_tok=max_tok,
                                     shexp=shexp)))
    act = read_f32(ctx, Ob, max_tok * k * Fe).reshape(max_tok * k, Fe)
    y = read_f32(ctx, Yb, max_tok * E).reshape(max_tok, E)
    want = rm.swiglu(gu[:n * k], Fe)
    check_close(act[:n * k], want, tol.swiglu_tol(gu[:n * k, :Fe], want), "moe swiglu")
    sx = None if shexp is None else (g_inp, h[:n], sh[:n])
    want = rm.combine(down[:n * k], w[:n], sx)
    check_close(y[:n], want, tol.moe_combine_tol(down[:n * k], w[:n], sx), f"moe combine ({shape})")
    assert np.all(act[n * k:].view(np.uint32) == SENT) and np.all(y[n:].view(np.uint32) == SENT), \
        "swiglu/combine wrote past n_tok"


# ---- the whole FFN -------------------------------------------------------------------------------

def make_layer(ctx, rng, *, E, NE, Fe, Fs, qt_gu, qt_down, qt_sh, fused, g_col):
    """(numpy twin tensors, MoEWeights) of one synthetic MoE layer in the GGUF layout."""
    router = (rng.standard_normal((NE, E)) * (3 / np.sqrt(E))).astype(np.float32)
    if fused:
        GUd, GU = expert_weight(ctx, qt_gu, NE, 2 * Fe, E, rng, "gate_up", scale=1 / np.sqrt(E))
        Gd, Ud = GUd[:, :Fe], GUd[:, Fe:]
    else:
        Gd, Gt = expert_weight(ctx, qt_gu, NE, Fe, E, rng, "gate", scale=1 / np.sqrt(E))
        Ud, Ut = expert_weight(ctx, qt_gu, NE, Fe, E, rng, "up", scale=1 / np.sqrt(E))
    Dd, Dt = expert_weight(ctx, qt_down, NE, E, Fe, rng, "down", scale=1 / np.sqrt(Fe))
    g_inp = (rng.standard_normal(E) / np.sqrt(E)).astype(np.float32)
    Sg, SgT = weight2d(ctx, qt_sh, Fs, E, rng, "sh_gate", 1 / np.sqrt(E))
    Su, SuT = weight2d(ctx, qt_sh, Fs, E, rng, "sh_up", 1 / np.sqrt(E))
    Sd, SdT = weight2d(ctx, qt_sh, E, Fs, rng, "sh_down", 1 / np.sqrt(Fs))
    L = moe.MoEWeights(router=upload_array(ctx, "router", router), down=Dt, shexp_gate_inp=upload_array(
        ctx, "g_inp", g_inp[None, :] if g_col else g_inp), shexp_gate=SgT, shexp_up=SuT, shexp_down=SdT)
    if fused:
        L.gate_up = GU
    else:
        L.gate, L.up = Gt, Ut
    twin = dict(router=router, gate=Gd, up=Ud, down=Dd, shexp=(g_inp, Sg, Su, Sd))
    return twin, L


def ffn_runs(ctx, L, H, k, runs):
    """Run kernels.moe.ffn for each (n_tok, max_tok, first token) in one program; returns
    (y [max_tok, E] per run, scratch words per run)."""
    E, NE, Fe, Fs = L.n_embd, L.n_expert, L.n_ff_exp, L.n_ff_shexp
    Hb = ctx.upload(H)
    St = steps(ctx, [n for n, _, _ in runs])
    bufs = []
    for n, mt, t0 in runs:
        bufs.append((sentinel_f32(ctx, mt * E), ctx.buffer(4 * moe.ffn_scratch_words(E, NE, k, Fe, Fs, mt))))

    def build(pb):
        for i, ((n, mt, t0), (Y, S)) in enumerate(zip(runs, bufs)):
            moe.ffn(pb, L, Act(Hb, t0 * E), Act(Y), Act(St, i * STEP_WORDS), Act(S), k=k, max_tok=mt)
    run(ctx, build)
    return [read_f32(ctx, Y, mt * E).reshape(mt, E) for (n, mt, t0), (Y, S) in zip(runs, bufs)], \
        [(S, moe.ffn_scratch_layout(E, NE, k, Fe, Fs, mt)) for (n, mt, t0), (Y, S) in zip(runs, bufs)]


@pytest.mark.parametrize("n,max_tok", [(13, 16), (33, 33)], ids=["verify", "prefill"])
def test_ffn(ctx, n, max_tok):
    rng = np.random.default_rng(1)
    E, NE, k, Fe, Fs = 256, 16, 4, 64, 32
    tw, L = make_layer(ctx, rng, E=E, NE=NE, Fe=Fe, Fs=Fs, qt_gu=QT.Q4_K, qt_down=QT.Q5_0, qt_sh=QT.Q8_0,
                       fused=False, g_col=False)
    H = rng.standard_normal((max_tok, E)).astype(np.float32)
    (y,), ((S, lay),) = ffn_runs(ctx, L, H, k, [(n, max_tok, 0)])
    want_ids, _ = ops.moe_route(ops.matvec_rows(tw["router"], H[:n]), k)
    ids = read_u32(ctx, S, n * k, lay["ids"]).reshape(n, k)
    assert np.array_equal(ids, want_ids), "the GPU routed to other experts than the twin"
    want = rm.ffn(H[:n], tw["router"], tw["gate"], tw["up"], tw["down"], k, tw["shexp"])
    bound = tol.moe_ffn_tol(H[:n], tw["router"], tw["gate"], tw["up"], tw["down"], k, tw["shexp"],
                            "Q4_K", "Q5_0", "Q8_0")
    check_close(y[:n], want, bound, f"moe ffn n_tok={n}")
    assert np.all(y[n:].view(np.uint32) == SENT), "ffn wrote past n_tok"


def test_ffn_batch_invariance(ctx):
    rng = np.random.default_rng(2)
    E, NE, k, Fe, Fs, T = 96, 6, 2, 64, 32, 16
    tw, L = make_layer(ctx, rng, E=E, NE=NE, Fe=Fe, Fs=Fs, qt_gu=QT.Q8_0, qt_down=QT.Q8_0, qt_sh=QT.F32,
                       fused=True, g_col=True)
    H = rng.standard_normal((T, E)).astype(np.float32)
    runs = [(N, N, 0) for N in range(2, T + 1)] + [(1, 1, t) for t in range(T)]
    ys, scr = ffn_runs(ctx, L, H, k, runs)
    single = np.concatenate(ys[T - 1:])
    S, lay = scr[T - 2]                                                    # the N = 16 run
    ids = read_u32(ctx, S, T * k, lay["ids"]).reshape(T, k)
    assert len(np.unique(ids)) < T * k and np.bincount(ids.ravel()).max() >= 5, "tokens should share experts"
    for i, N in enumerate(range(2, T + 1)):
        for t in range(N):
            assert np.array_equal(ys[i][t], single[t]), f"moe ffn: token {t} of an N={N} batch differs from N=1"
    want = rm.ffn(H, tw["router"], tw["gate"], tw["up"], tw["down"], k, tw["shexp"])
    bound = tol.moe_ffn_tol(H, tw["router"], tw["gate"], tw["up"], tw["down"], k, tw["shexp"], "Q8_0", "Q8_0", "F32")
    check_close(single, want, bound, "moe ffn (fused gate_up)")


def test_sizes_and_errors(ctx):
    assert moe.worklist_slots(256, 8, 1) == 8 and moe.worklist_slots(8, 8, 16) == 8
    assert moe.worklist_words(256, 8, 4) == 4 + 4 * 32 + 32
    buf = ctx.buffer(1024)
    from wgmtp.gpu.program import ProgramBuilder
    pb = ProgramBuilder(ctx, "err")
    with pytest.raises(ValueError, match="experts per token"):
        moe.route(pb, Act(buf), Act(buf), Act(buf), Act(buf), Act(buf), n_expert=8, k=17, max_tok=1)
    with pytest.raises(ValueError, match="experts"):
        moe.route(pb, Act(buf), Act(buf), Act(buf), Act(buf), Act(buf), n_expert=2048, k=8, max_tok=1)
    Wt = upload_array(ctx, "w", np.zeros((12, 8), np.float32))
    with pytest.raises(ValueError, match="do not fit"):
        moe.expert_matvec(pb, Wt, Act(buf), Act(buf), Act(buf), n_expert=4, k=2, max_tok=1,
                          rows_per_expert=4)
