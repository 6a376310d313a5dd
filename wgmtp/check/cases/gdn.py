"""The Gated DeltaNet cases (kernels/gdn.py): ssm_conv, gdn, gdn_chunked, batch invariance,
snapshot rollback and segments (several sequences in one batch); the random layer they run on
(Layer)."""
from __future__ import annotations

import struct
from functools import partial

import numpy as np

from ... import tolerances as tol
from ...gpu.program import Readback
from ...gpu.weights import upload_array
from ...kernels import STEP_WORDS, STORE_FINAL, STORE_NONE, STORE_PLANES, Act, store_word
from ...kernels import gdn as gdn_kernels
from ...reference import gdn as gdn_twins
from ...reference import ops
from .common import (
    EPS,
    SENTINEL,
    Case,
    Check,
    Skip,
    binding_limit,
    require,  # noqa: F401  (tests/test_kernel_gdn.py runs the cases with it)
    run,
    software_gl,
)

f32 = np.float32


KC = 4
GDN_CHUNK = 16
NMAX = 16


def step_words(*records) -> bytes:
    """Step records (n_tok, src_slot[, slot[, row0[, pos0]]]) of STEP_WORDS words each, at word
    offsets 0, 8, 16, ... (slot, row0, pos0 default 0)."""
    out = b""
    for r in records:
        n, src, slot, row0, pos0 = tuple(r) + (0,) * (5 - len(r))
        out += struct.pack(f"<{STEP_WORDS}I", n, pos0, src, 0, slot, row0, *([0] * (STEP_WORDS - 6)))
    return out


class Layer:
    """Random weights and inputs of one GDN layer, uploaded once (as tests/test_kernel_gdn.py)."""

    def __init__(self, ctx, hk, hv, dk, dv, T, seed):
        self.ctx = ctx
        self.d = d = gdn_kernels.GDNDims(hk, hv, dk, dv)
        rng = np.random.default_rng(seed)
        self.rng = rng
        self.T = T
        cd = d.conv_dim
        self.w = (rng.standard_normal((cd, KC)) * 0.6).astype(f32)
        self.a = (-np.exp(rng.uniform(-1.5, 0.5, hv))).astype(f32)
        self.dtb = rng.uniform(-1, 1, hv).astype(f32)
        self.x = rng.standard_normal((T, cd)).astype(f32)
        self.c = rng.standard_normal((T, cd)).astype(f32)
        self.alpha = (rng.standard_normal((T, hv)) * 1.5 - 2).astype(f32)
        self.beta = (rng.standard_normal((T, hv)) * 2).astype(f32)
        with binding_limit(ctx, 512):          # the conv weight (16 bytes a row) in 32-row parts
            self.W = upload_array(ctx, "ssm_conv1d.weight", self.w)
        self.A = upload_array(ctx, "ssm_a", self.a)
        self.DTB = upload_array(ctx, "ssm_dt.bias", self.dtb)
        self.X = ctx.upload(self.x)
        self.C = ctx.upload(self.c)
        self.AL = ctx.upload(self.alpha)
        self.BE = ctx.upload(self.beta)

    def upload_gates(self) -> None:
        self.AL = self.ctx.upload(self.alpha)
        self.BE = self.ctx.upload(self.beta)

    def rand_conv(self, n):
        return self.rng.standard_normal((n, self.d.conv_dim, KC - 1)).astype(f32)

    def rand_ssm(self, n):
        d = self.d
        return (self.rng.standard_normal((n, d.hv, d.dv, d.dk)) * 0.5).astype(f32)

    def conv(self, pb, step, t0, cstate, cout, n_slots, cout_row0=None):
        cd = self.d.conv_dim
        r0 = t0 if cout_row0 is None else cout_row0
        gdn_kernels.ssm_conv(pb, step, Act(self.X, t0 * cd), self.W, cstate, Act(cout.buffer, cout.offset + r0 * cd),
                    n_slots=n_slots)

    def gdn(self, pb, step, t0, c, sstate, out, n_slots, chunked=False, c_row0=None, out_row0=None):
        d = self.d
        cr = t0 if c_row0 is None else c_row0
        orow = t0 if out_row0 is None else out_row0
        args = (pb, step, c.at(cr * d.conv_dim), Act(self.AL, t0 * d.hv), Act(self.BE, t0 * d.hv), self.A,
                self.DTB, sstate, out.at(orow * d.value_dim), d)
        if chunked:
            gdn_kernels.gdn_chunked(*args, n_slots=n_slots, eps=EPS, chunk=GDN_CHUNK)
        else:
            gdn_kernels.gdn(*args, n_slots=n_slots, eps=EPS)

    def head_scale(self, v, M0):
        return np.abs(v).max(axis=(0, 2)) + np.abs(M0).max(axis=(1, 2))

    def input_errs(self):
        g, _ = ops.gdn_gates(self.alpha, self.beta, self.a, self.dtb)
        x = (self.alpha + self.dtb).astype(f32)
        ge = tol.gdn_gates_tol(np.broadcast_to(self.a, x.shape), x, g).max(axis=0)
        be = tol.sigmoid_rel(self.beta).max(axis=0)
        return ge, be


def gdn_run(ctx, build, step_bytes: bytes, step_buf, reads) -> list[np.ndarray]:
    """One submission: step records, the program and every readback (one map per case)."""
    rb = [Readback(buf, 0, int(np.prod(shape)) * 4) for buf, shape in reads]
    blobs = run(ctx, build, writes=[(step_buf, 0, step_bytes)], reads=rb)
    return [np.frombuffer(b, f32).reshape(shape).copy() for b, (_, shape) in zip(blobs, reads)]


def ssm_conv_case(ctx, chk: Check, T: int) -> None:
    """Outputs within conv_tol of ops.ssm_conv; planes (raw input windows) exact, including the
    clamp to the pre-batch window for planes >= T; 80 channels in three weight parts."""
    L = Layer(ctx, 1, 3, 16, 16, T, seed=10 + T)
    chk.expect("conv weight in 3 parts", len(L.W.parts) == 3, f"{len(L.W.parts)} parts")
    n_slots, src = 4, 2
    init = L.rand_conv(n_slots)
    S = ctx.upload(init)
    OUT = ctx.buffer(T * L.d.conv_dim * 4)
    STEP = ctx.upload(np.zeros(STEP_WORDS, np.uint32))
    y, planes = gdn_run(ctx, lambda pb: L.conv(pb, Act(STEP), 0, Act(S), Act(OUT), n_slots), step_words((T, src)),
                        STEP, [(OUT, (T, L.d.conv_dim)), (S, init.shape)])
    ry, rplanes = ops.ssm_conv(L.x, init[src], L.w, n_slots, init)
    chk.equal("conv planes", planes, rplanes)
    win = np.concatenate([init[src].astype(np.float64), L.x.T.astype(np.float64)], axis=1)
    pre = np.stack([(win[:, t:t + KC] * L.w).sum(1) for t in range(T)])
    absdot = np.stack([np.abs(win[:, t:t + KC] * L.w).sum(1) for t in range(T)])
    chk.close("ssm_conv", y, ry, tol.conv_tol(absdot, KC, pre, ry))


def gdn_gates_case(ctx, chk: Check) -> None:
    """The gate functions gdn fuses (softplus through its x > 20 shortcut and far into the tail,
    beta via sigmoid) against ops.gdn_gates."""
    L = Layer(ctx, 1, 7, 16, 16, 6, seed=3)
    L.alpha[0] = [-40, -18, -1e-3, 0, 19.5, 20.5, 45]
    L.alpha[1] = 25 - L.dtb
    L.beta[0] = [-40, -9, -1, 0, 1, 9, 40]
    L.upload_gates()
    OUT = ctx.buffer(L.T * L.d.hv * 2 * 4)
    STEP = ctx.upload(np.zeros(STEP_WORDS, np.uint32))
    out, = gdn_run(ctx, lambda pb: gdn_kernels.gdn_gates(pb, Act(STEP), Act(L.AL), Act(L.BE), L.A, L.DTB, Act(OUT),
                                                         L.d),
                   step_words((L.T, 0)), STEP, [(OUT, (L.T, L.d.hv, 2))])
    g, b = gdn_twins.gdn_gates(L.alpha, L.beta, L.a, L.dtb)
    x = (L.alpha + L.dtb).astype(f32)
    chk.close("g", out[..., 0], g, tol.gdn_gates_tol(np.broadcast_to(L.a, x.shape), x, g))
    chk.close("beta", out[..., 1], b, tol.sigmoid_rel(L.beta) * np.abs(b))


def gdn_case(ctx, chk: Check, hk: int, hv: int, dk: int, dv: int) -> None:
    """Outputs and planes 0..T-1 within fused_gdn_tol of reference.gdn.gdn, from plane src_slot = 2;
    planes the batch does not reach untouched."""
    if dk >= 128 and software_gl(ctx):
        raise Skip("software OpenGL: same shader source as the Vulkan fallback variant, a 12 s compile")
    T, n_slots, src = (6, 8, 2) if dk < 128 else (3, 4, 1)
    L = Layer(ctx, hk, hv, dk, dv, T, seed=hk * 100 + hv * 10 + dk)
    d = L.d
    init = L.rand_ssm(n_slots)
    S = ctx.upload(init)
    OUT = ctx.buffer(T * d.value_dim * 4)
    STEP = ctx.upload(np.zeros(STEP_WORDS, np.uint32))
    o, planes = gdn_run(ctx, lambda pb: L.gdn(pb, Act(STEP), 0, Act(L.C), Act(S), Act(OUT), n_slots),
                        step_words((T, src)), STEP, [(OUT, (T, hv, dv)), (S, init.shape)])
    ro, rplanes = gdn_twins.gdn(L.c, L.alpha, L.beta, L.a, L.dtb, init[src], hk=hk, hv=hv, dk=dk, dv=dv, eps=EPS,
                         n_slots=n_slots, slots=init)
    _, _, v = gdn_twins.split_qkv(L.c, hk, hv, dk, dv, EPS)
    scale = L.head_scale(v, init[src])
    ge, be = L.input_errs()
    t = np.arange(1, T + 1)[:, None, None]
    chk.close("gdn outputs", o, ro, tol.fused_gdn_tol(t, dk, scale[:, None], ge[:, None], be[:, None]))
    for s in range(T):
        chk.close(f"ssm plane {s}", planes[s], rplanes[s], tol.fused_gdn_tol(T - s, dk, scale, ge, be)[:, None, None])
    chk.equal("planes past the batch untouched", planes[T:], init[T:], bits=True)


def gdn_chunked_case(ctx, chk: Check, hk: int, hv: int, dk: int, dv: int) -> None:
    """37 tokens (two full 16-token chunks and a padded tail) from plane src_slot = 1: outputs and
    plane 0 within chunked_gdn_tol of the recurrence twin and of the chunked twin."""
    if dk >= 128 and software_gl(ctx):
        raise Skip("software OpenGL: same shader source as the Vulkan fallback variant, a 12 s compile")
    T, n_slots, src = (37, 3, 1) if dk < 128 else (3, 2, 0)
    L = Layer(ctx, hk, hv, dk, dv, T, seed=5 * dk + hv)
    d = L.d
    init = L.rand_ssm(n_slots)
    S = ctx.upload(init)
    OUT = ctx.buffer(T * d.value_dim * 4)
    STEP = ctx.upload(np.zeros(STEP_WORDS, np.uint32))
    o, planes = gdn_run(ctx, lambda pb: L.gdn(pb, Act(STEP), 0, Act(L.C), Act(S), Act(OUT), n_slots, chunked=True),
                        step_words((T, src)), STEP, [(OUT, (T, hv, dv)), (S, init.shape)])
    chk.equal("other planes untouched", planes[1:], init[1:], bits=True)
    kw = dict(hk=hk, hv=hv, dk=dk, dv=dv, eps=EPS)
    ro, rM = gdn_twins.gdn(L.c, L.alpha, L.beta, L.a, L.dtb, init[src], **kw)
    co, cM = gdn_twins.gdn_chunked(L.c, L.alpha, L.beta, L.a, L.dtb, init[src], chunk=GDN_CHUNK, **kw)
    g, _ = ops.gdn_gates(L.alpha, L.beta, L.a, L.dtb)
    gmax = max(float(np.abs(g[c0:c0 + GDN_CHUNK].astype(np.float64).sum(0)).max()) for c0 in range(0, T, GDN_CHUNK))
    _, _, v = gdn_twins.split_qkv(L.c, hk, hv, dk, dv, EPS)
    scale = L.head_scale(v, init[src])
    ge, be = L.input_errs()
    t = np.arange(1, T + 1)[:, None, None]
    bo = tol.chunked_gdn_tol(t, dk, GDN_CHUNK, scale[:, None], gmax, ge[:, None], be[:, None])
    bM = tol.chunked_gdn_tol(T, dk, GDN_CHUNK, scale, gmax, ge, be)[:, None, None]
    for name, x, y in (("recurrence twin", ro, rM[0]), ("chunked twin", co, cM)):
        chk.close(f"outputs vs {name}", o, x, bo)
        chk.close(f"final state vs {name}", planes[0], y, bM)


def conv_gdn_exact_case(ctx, chk: Check, hk: int, hv: int, dk: int, *, use_conv: bool, use_gdn: bool,
                        batch: bool, rollback: bool, exact_only: bool = True) -> None:
    """The exact properties speculative decoding relies on (as tests/test_kernel_gdn.py):
    * batch: an N-token step (N = 2..16) gives the outputs and every snapshot plane of N chained
      one-token steps (plane s = the state after the first N-s tokens; planes the batch does not
      reach: conv = the pre-batch window, ssm untouched; with n_slots < N only n_slots planes);
    * rollback: after N tokens, a one-token step from plane r equals running the first N-r tokens
      and then that token (outputs, conv and ssm planes).
    The gdn consumes the conv's output when both run, else fixed conv outputs. With exact_only=False
    the one-token chain is also compared with the twin (the tolerance cases do that already)."""
    L = Layer(ctx, hk, hv, dk, dk, NMAX, seed=7 * dk + hv)
    d = L.d
    cp, sp = gdn_kernels.conv_plane(d.conv_dim, KC), d.ssm_plane
    conv0, ssm0 = L.rand_conv(1)[0], L.rand_ssm(1)[0]
    Ns = list(range(2, NMAX + 1)) if batch else []
    slots = {N: (N + 1 if N <= 5 else 6) for N in range(2, NMAX + 1)}
    rollbacks = [(5, 1), (5, 4), (9, 3), (16, 5)] if rollback else []
    regions: dict = {}
    n_planes = 0

    def region(key, n):
        nonlocal n_planes
        regions[key] = (n_planes, n)
        n_planes += n
    if batch:
        region("chain", NMAX + 1)
    for N in Ns:
        region(("batch", N), slots[N])
    for N, r in rollbacks:
        region(("rb", N, r), slots[N])
        region(("re", N, r), 1)
    conv_init = L.rand_conv(n_planes)
    ssm_init = L.rand_ssm(n_planes)
    for key, (p0, n) in regions.items():
        first = p0 + NMAX if key == "chain" else p0
        conv_init[first], ssm_init[first] = conv0, ssm0
    CS, SS = ctx.upload(conv_init), ctx.upload(ssm_init)
    n_runs = (1 if batch else 0) + len(Ns) + 2 * len(rollbacks)
    RR = NMAX + 1
    CB = ctx.buffer(n_runs * RR * d.conv_dim * 4)
    OB = ctx.buffer(n_runs * RR * d.value_dim * 4)
    recs = ([(1, 1)] + [(N, 0) for N in Ns] + [(1, 0)] + [(N - r, 0) for N, r in rollbacks]
            + [(1, r) for _, r in rollbacks])
    rec = {k: i * STEP_WORDS for i, k in enumerate(["one"] + Ns + ["one0"] + [("re", x) for x in rollbacks]
                                          + [("rb", x) for x in rollbacks])}
    # rollbacks need n_tok = N records even when the batch part is off
    rec_n = {N: rec[N] for N in Ns}
    more = sorted({N for N, _ in rollbacks} - set(Ns))
    for j, N in enumerate(more):
        rec_n[N] = (len(recs) + j) * STEP_WORDS
    recs += [(N, 0) for N in more]
    STEP = ctx.upload(np.zeros(len(recs) * STEP_WORDS, np.uint32))
    X_ROW = NMAX - 1
    base = 1 if batch else 0

    def run_of(i):
        return Act(CB, i * RR * d.conv_dim), Act(OB, i * RR * d.value_dim)

    def layer(pb, st, t0, p0, c, o, n_slots, row0=None):
        """conv (into c) and/or gdn (from c, or from the fixed L.C rows) of one step."""
        if use_conv:
            L.conv(pb, st, t0, Act(CS, p0 * cp), c, n_slots, cout_row0=row0)
        if use_gdn:
            cin = c if use_conv else Act(L.C)
            L.gdn(pb, st, t0, cin, Act(SS, p0 * sp), o, n_slots, c_row0=(row0 if use_conv else None), out_row0=row0)

    def build(pb):
        if batch:
            c, o = run_of(0)
            for t in range(NMAX):
                layer(pb, Act(STEP, rec["one"]), t, regions["chain"][0] + NMAX - 1 - t, c, o, 2)
        for i, N in enumerate(Ns):
            c, o = run_of(base + i)
            layer(pb, Act(STEP, rec[N]), 0, regions[("batch", N)][0], c, o, slots[N])
        for i, (N, r) in enumerate(rollbacks):
            c, o = run_of(base + len(Ns) + 2 * i)
            p0 = regions[("rb", N, r)][0]
            # N tokens (a step record with n_tok = N), then one token from plane r
            layer(pb, Act(STEP, rec_n[N]), 0, p0, c, o, slots[N])
            layer(pb, Act(STEP, rec[("rb", (N, r))]), X_ROW, p0, c, o, slots[N], row0=N)
            c, o = run_of(base + len(Ns) + 2 * i + 1)
            p0 = regions[("re", N, r)][0]
            layer(pb, Act(STEP, rec[("re", (N, r))]), 0, p0, c, o, 1)
            layer(pb, Act(STEP, rec["one0"]), X_ROW, p0, c, o, 1, row0=N - r)

    conv, ssm, cc, oo = gdn_run(ctx, build, step_words(*recs), STEP,
                                [(CS, conv_init.shape), (SS, ssm_init.shape), (CB, (n_runs, RR, d.conv_dim)),
                                 (OB, (n_runs, RR, hv, dk))])
    if batch:
        ch = regions["chain"][0]
        if use_gdn and not exact_only:   # the chain is right (to the twin's bound): the exact checks mean something
            cin = cc[0, :NMAX] if use_conv else L.c
            ro, _ = gdn_twins.gdn(cin, L.alpha, L.beta, L.a, L.dtb, ssm0, hk=hk, hv=hv, dk=dk, dv=dk, eps=EPS)
            _, _, v = gdn_twins.split_qkv(cin, hk, hv, dk, dk, EPS)
            ge, be = L.input_errs()
            t = np.arange(1, NMAX + 1)[:, None, None]
            chk.close("one-token chain vs twin", oo[0, :NMAX], ro,
                      tol.fused_gdn_tol(t, dk, L.head_scale(v, ssm0)[:, None], ge[:, None], be[:, None]))
        for i, N in enumerate(Ns):
            p0, K_ = regions[("batch", N)]
            if use_conv:
                chk.equal(f"conv out N={N}", cc[base + i, :N], cc[0, :N], bits=True)
            if use_gdn:
                chk.equal(f"gdn out N={N}", oo[base + i, :N], oo[0, :N], bits=True)
            for s in range(min(N, K_)):
                if use_conv:
                    chk.equal(f"conv plane {s} N={N}", conv[p0 + s], conv[ch + NMAX - N + s], bits=True)
                if use_gdn:
                    chk.equal(f"ssm plane {s} N={N}", ssm[p0 + s], ssm[ch + NMAX - N + s], bits=True)
            for s in range(N, K_):
                if use_conv:
                    chk.equal(f"conv plane {s} N={N} (past the batch)", conv[p0 + s], conv0, bits=True)
                if use_gdn:
                    chk.equal(f"ssm plane {s} N={N} (past the batch)", ssm[p0 + s], ssm_init[p0 + s], bits=True)
    for i, (N, r) in enumerate(rollbacks):
        rb, re = base + len(Ns) + 2 * i, base + len(Ns) + 2 * i + 1
        what = f"N={N} rollback to plane {r}"
        chk.equal(f"{what}: conv out", cc[rb, N], cc[re, N - r], bits=True)
        chk.equal(f"{what}: gdn out", oo[rb, N], oo[re, N - r], bits=True)
        chk.equal(f"{what}: conv plane", conv[regions[("rb", N, r)][0]], conv[regions[("re", N, r)][0]], bits=True)
        chk.equal(f"{what}: ssm plane", ssm[regions[("rb", N, r)][0]], ssm[regions[("re", N, r)][0]], bits=True)


SEG_SHAPES = [(2, 4, 16, 16), (1, 2, 24, 20)]   # (Hk, Hv, Dk, Dv) of the gdn segment cases
SEG_PLANES = 4        # snapshot planes per sequence slot in the segment cases
SEG_SLOTS = 5         # slots of the state buffer (slot 3: the empty segment's, slot 4: nobody's)


def segments_case(ctx, chk: Check, kernel: str, hk: int = 1, hv: int = 3, dk: int = 16, dv: int = 16) -> None:
    """Several sequences in one batch (docs/ARCHITECTURE.md, "Slots"): one dispatch of `kernel`
    (ssm_conv, gdn or gdn_chunked) over four segment records (at a non-zero word offset, not in row
    order), each in its own slot of a SEG_SLOTS-slot state of SEG_PLANES planes per slot, starting
    from a different plane (rollbacks): one of several rows (more than SEG_PLANES), one of one row,
    one of three, one empty. For gdn_chunked: 37 rows (two chunks and a partial one), exactly one
    chunk, and 5 rows (a partial chunk). Per segment: outputs and the slot's planes against the twin
    on the slot's region, and bit for bit against the same segment run alone (one segment, row0 0,
    slot 0, the same initial planes); rows outside every segment, the empty segment's slot and the
    slot of no segment untouched, bit for bit. Runs the subgroup and workgroup-memory lane sums
    alike (the variants of the adapter)."""
    if kernel == "gdn_chunked":
        # (n_tok, src plane, slot, row0, pos0); rows 0, 1, 39, 56, 62, 63 in no segment
        segs = [(37, 1, 2, 2, 40), (0, 2, 3, 60, 0), (5, 3, 0, 57, 7), (16, 2, 1, 40, 16)]
        R = 64
    else:
        # rows 0, 10, 12 in no segment; the empty segment names row 10
        segs = [(6, 1, 2, 1, 30), (0, 2, 3, 10, 0), (1, 3, 0, 11, 5), (3, 2, 1, 7, 12)]
        R = 13
    conv = kernel == "ssm_conv"
    if conv:
        hk, hv, dk, dv = 1, 3, 16, 16         # 80 channels: three weight parts
    L = Layer(ctx, hk, hv, dk, dv, R, seed=31 * dk + hv + R)
    d = L.d
    NP, n_seg = SEG_PLANES, len(segs)
    width = d.conv_dim if conv else d.value_dim
    plane = gdn_kernels.conv_plane(d.conv_dim, KC) if conv else d.ssm_plane
    init = (L.rand_conv(SEG_SLOTS * NP) if conv else L.rand_ssm(SEG_SLOTS * NP))
    init = init.reshape((SEG_SLOTS, NP) + init.shape[1:])
    alone = [k for k, g in enumerate(segs) if g[0] > 0]
    S_ = ctx.upload(init)
    A_ = ctx.upload(np.stack([init[segs[k][2]] for k in alone]))           # each segment's slot, as slot 0
    OUT = ctx.upload(np.full((R, width), SENTINEL, f32))
    AOUT = ctx.upload(np.full((len(alone), R, width), SENTINEL, f32))
    # word 0: the batch record (step), words 8..: the segments, then one record per lone run
    recs = [(R, 0)] + [(n, src, slot, row0, pos0) for n, src, slot, row0, pos0 in segs]
    recs += [(segs[k][0], segs[k][1], 0, 0, segs[k][4]) for k in alone]
    STEP = ctx.upload(np.zeros(len(recs) * STEP_WORDS, np.uint32))

    def call(pb, step, row, state, out, **kw):
        if conv:
            gdn_kernels.ssm_conv(pb, step, Act(L.X, row * d.conv_dim), L.W, state, out, n_slots=NP, **kw)
            return
        fn = gdn_kernels.gdn_chunked if kernel == "gdn_chunked" else gdn_kernels.gdn
        extra = dict(chunk=GDN_CHUNK) if kernel == "gdn_chunked" else {}
        fn(pb, step, Act(L.C, row * d.conv_dim), Act(L.AL, row * hv), Act(L.BE, row * hv), L.A, L.DTB, state, out,
           d, n_slots=NP, eps=EPS, **extra, **kw)

    def build(pb):
        call(pb, Act(STEP), 0, Act(S_), Act(OUT), segs=Act(STEP, STEP_WORDS), n_seg=n_seg)
        for i, k in enumerate(alone):
            call(pb, Act(STEP, (1 + n_seg + i) * STEP_WORDS), segs[k][3], Act(A_, i * NP * plane),
                 Act(AOUT, i * R * width))

    out, st, aout, ast = gdn_run(ctx, build, step_words(*recs), STEP,
                                 [(OUT, (R, width)), (S_, init.shape), (AOUT, (len(alone), R, width)),
                                  (A_, (len(alone),) + init.shape[1:])])
    covered = np.zeros(R, bool)
    ge, be = (None, None) if conv else L.input_errs()
    for i, k in enumerate(alone):
        n, src, slot, row0, _ = segs[k]
        covered[row0:row0 + n] = True
        what = f"segment {k} ({n} rows, slot {slot}, plane {src})"
        got, M0 = out[row0:row0 + n], init[slot, src]
        chk.equal(f"{what}: outputs = alone", got, aout[i, :n], bits=True)
        chk.equal(f"{what}: planes = alone", st[slot], ast[i], bits=True)
        chk.equal(f"{what}: alone rows past the segment untouched", aout[i, n:], np.full((R - n, width), SENTINEL),
                  bits=True)
        if conv:
            x = L.x[row0:row0 + n]
            ry, rplanes = ops.ssm_conv(x, M0, L.w, NP, init[slot])
            win = np.concatenate([M0.astype(np.float64), x.T.astype(np.float64)], axis=1)
            pre = np.stack([(win[:, t:t + KC] * L.w).sum(1) for t in range(n)])
            absdot = np.stack([np.abs(win[:, t:t + KC] * L.w).sum(1) for t in range(n)])
            chk.close(f"{what}: ssm_conv", got, ry, tol.conv_tol(absdot, KC, pre, ry))
            chk.equal(f"{what}: conv planes", st[slot], rplanes)
            continue
        c, al, bt = L.c[row0:row0 + n], L.alpha[row0:row0 + n], L.beta[row0:row0 + n]
        kw = dict(hk=hk, hv=hv, dk=dk, dv=dv, eps=EPS)
        ro, rplanes = gdn_twins.gdn(c, al, bt, L.a, L.dtb, M0, n_slots=NP, slots=init[slot], **kw)
        _, _, v = gdn_twins.split_qkv(c, hk, hv, dk, dv, EPS)
        scale = L.head_scale(v, M0)
        t = np.arange(1, n + 1)[:, None, None]
        got = got.reshape(n, hv, dv)
        if kernel == "gdn":
            chk.close(f"{what}: gdn outputs", got, ro, tol.fused_gdn_tol(t, dk, scale[:, None], ge[:, None],
                                                                         be[:, None]))
            for q in range(min(n, NP)):
                chk.close(f"{what}: ssm plane {q}", st[slot, q], rplanes[q],
                          tol.fused_gdn_tol(n - q, dk, scale, ge, be)[:, None, None])
            chk.equal(f"{what}: planes past the segment untouched", st[slot, n:], init[slot, n:], bits=True)
            continue
        co, cM = gdn_twins.gdn_chunked(c, al, bt, L.a, L.dtb, M0, chunk=GDN_CHUNK, **kw)
        g, _ = ops.gdn_gates(al, bt, L.a, L.dtb)
        gmax = max(float(np.abs(g[c0:c0 + GDN_CHUNK].astype(np.float64).sum(0)).max()) for c0 in range(0, n, GDN_CHUNK))
        bo = tol.chunked_gdn_tol(t, dk, GDN_CHUNK, scale[:, None], gmax, ge[:, None], be[:, None])
        bM = tol.chunked_gdn_tol(n, dk, GDN_CHUNK, scale, gmax, ge, be)[:, None, None]
        for name, x, y in (("recurrence twin", ro, rplanes[0]), ("chunked twin", co, cM)):
            chk.close(f"{what}: outputs vs {name}", got, x, bo)
            chk.close(f"{what}: final state vs {name}", st[slot, 0], y, bM)
        chk.equal(f"{what}: planes 1.. untouched", st[slot, 1:], init[slot, 1:], bits=True)
    chk.equal("rows outside every segment untouched", out[~covered], np.full(((~covered).sum(), width), SENTINEL),
              bits=True)
    busy = {segs[k][2] for k in alone}
    for slot in range(SEG_SLOTS):
        if slot not in busy:
            chk.equal(f"slot {slot} (no rows) untouched", st[slot], init[slot], bits=True)


def store_modes_case(ctx, chk: Check, hk: int, hv: int, dk: int, N: int = 6) -> None:
    """The rollback of a long draft without a plane per position: a verify of N rows that stores
    no state (STORE_NONE) leaves every plane as it was and gives the outputs of one that stores
    them all; rerunning the first k + 1 rows with STORE_FINAL from the round's start puts into
    plane dst exactly the snapshot plane N-1-k of the storing verify (the state after row k) and
    touches no other plane, dst being the start plane itself (in place, even k) or another one
    (odd k); gdn_chunked with STORE_NONE leaves plane 0 alone. All bit-exact, ssm_conv feeding gdn
    as in a layer."""
    L = Layer(ctx, hk, hv, dk, dk, N, seed=11 * dk + hv)
    d = L.d
    cp, sp = gdn_kernels.conv_plane(d.conv_dim, KC), d.ssm_plane
    runs = ["planes", "none"] + [f"final{k}" for k in range(N)] + ["chunked"]
    dst = lambda k: 0 if k % 2 == 0 else N - 1    # noqa: E731  (the start plane, or another)
    conv_init, ssm_init = L.rand_conv(len(runs) * N), L.rand_ssm(len(runs) * N)
    conv_init[::N], ssm_init[::N] = conv_init[0], ssm_init[0]        # one start state, plane 0 of each run
    CS, SS = ctx.upload(conv_init), ctx.upload(ssm_init)
    CB, OB = ctx.buffer(len(runs) * N * d.conv_dim * 4), ctx.buffer(len(runs) * N * d.value_dim * 4)
    recs = ([(N, store_word(0, STORE_PLANES)), (N, store_word(0, STORE_NONE))]
            + [(k + 1, store_word(0, STORE_FINAL, dst(k))) for k in range(N)] + [(N, store_word(0, STORE_NONE))])
    STEP = ctx.upload(np.zeros(len(recs) * STEP_WORDS, np.uint32))

    def build(pb):
        for i, name in enumerate(runs):
            st, c, o = Act(STEP, i * STEP_WORDS), Act(CB, i * N * d.conv_dim), Act(OB, i * N * d.value_dim)
            L.conv(pb, st, 0, Act(CS, i * N * cp), c, N)
            L.gdn(pb, st, 0, c, Act(SS, i * N * sp), o, N, chunked=name == "chunked")

    conv, ssm, cc, oo = gdn_run(ctx, build, step_words(*recs), STEP,
                                [(CS, conv_init.shape), (SS, ssm_init.shape), (CB, (len(runs), N, d.conv_dim)),
                                 (OB, (len(runs), N, hv, dk))])
    chk.equal("store none: conv planes kept", conv[N:2 * N], conv_init[N:2 * N], bits=True)
    chk.equal("store none: ssm planes kept", ssm[N:2 * N], ssm_init[N:2 * N], bits=True)
    chk.equal("store none: conv outputs as storing", cc[1], cc[0], bits=True)
    chk.equal("store none: gdn outputs as storing", oo[1], oo[0], bits=True)
    for k in range(N):
        i, q = 2 + k, dst(k)
        at = [i * N + s for s in range(N) if s != q]
        chk.equal(f"store final k={k}: conv plane {q} = plane {N - 1 - k}", conv[i * N + q], conv[N - 1 - k],
                  bits=True)
        chk.equal(f"store final k={k}: ssm plane {q} = plane {N - 1 - k}", ssm[i * N + q], ssm[N - 1 - k], bits=True)
        chk.equal(f"store final k={k}: other planes kept", ssm[at], ssm_init[at], bits=True)
        chk.equal(f"store final k={k}: other conv planes kept", conv[at], conv_init[at], bits=True)
        chk.equal(f"store final k={k}: outputs", oo[i, :k + 1], oo[0, :k + 1], bits=True)
        chk.equal(f"store final k={k}: conv outputs", cc[i, :k + 1], cc[0, :k + 1], bits=True)
    last = (len(runs) - 1) * N
    chk.equal("gdn_chunked store none: plane 0 kept", ssm[last], ssm_init[last], bits=True)


def cases() -> list[Case]:
    """The ssm_conv, gdn and gdn_chunked cases, in the order they run."""
    out: list[Case] = []
    for T in (1, 3, 6):
        out.append(Case("ssm_conv", f"ssm_conv T={T} 80 channels, 3 parts", partial(ssm_conv_case, T=T)))
    out.append(Case("ssm_conv", "batch ssm_conv N=1..16 (outputs, planes)",
                    partial(conv_gdn_exact_case, hk=2, hv=4, dk=16, use_conv=True, use_gdn=False, batch=True,
                            rollback=False), tags=("batch",)))
    out.append(Case("gdn", "gdn_gates", gdn_gates_case, op="gdn_gates"))
    for hk, hv, dk, dv in ((1, 1, 16, 16), (2, 4, 16, 16), (4, 4, 32, 32), (1, 3, 32, 32), (1, 2, 24, 20),
                           (1, 2, 128, 128)):
        out.append(Case("gdn", f"gdn Hk={hk} Hv={hv} Dk={dk} Dv={dv}", partial(gdn_case, hk=hk, hv=hv, dk=dk, dv=dv)))
    for hk, hv, dk in ((2, 4, 16), (1, 3, 32)):
        out.append(Case("gdn", f"batch gdn Hk={hk} Hv={hv} Dk={dk} N=1..16 (outputs, planes)",
                        partial(conv_gdn_exact_case, hk=hk, hv=hv, dk=dk, use_conv=False, use_gdn=True, batch=True,
                                rollback=False), tags=("batch",)))
    for hk, hv, dk in ((2, 4, 16), (1, 3, 32)):
        out.append(Case("gdn", f"rollback ssm_conv+gdn Hk={hk} Hv={hv} Dk={dk}",
                        partial(conv_gdn_exact_case, hk=hk, hv=hv, dk=dk, use_conv=True, use_gdn=True, batch=False,
                                rollback=True), op="ssm_conv+gdn", tags=("rollback",)))
    for hk, hv, dk in ((2, 4, 16), (1, 3, 32)):
        out.append(Case("gdn", f"store modes ssm_conv+gdn Hk={hk} Hv={hv} Dk={dk} (long-draft rollback)",
                        partial(store_modes_case, hk=hk, hv=hv, dk=dk), op="ssm_conv+gdn", tags=("rollback",)))
    for hk, hv, dk, dv in ((2, 4, 16, 16), (1, 3, 32, 32), (1, 2, 24, 20), (1, 2, 128, 128)):
        out.append(Case("gdn_chunked", f"gdn_chunked Hk={hk} Hv={hv} Dk={dk} Dv={dv}",
                        partial(gdn_chunked_case, hk=hk, hv=hv, dk=dk, dv=dv)))
    out.append(Case("ssm_conv", "segments ssm_conv: 4 segments in 4 slots, 80 channels",
                    partial(segments_case, kernel="ssm_conv"), tags=("segments",)))
    for hk, hv, dk, dv in SEG_SHAPES:
        out.append(Case("gdn", f"segments gdn Hk={hk} Hv={hv} Dk={dk} Dv={dv}: 4 segments in 4 slots",
                        partial(segments_case, kernel="gdn", hk=hk, hv=hv, dk=dk, dv=dv), tags=("segments",)))
        out.append(Case("gdn_chunked", f"segments gdn_chunked Hk={hk} Hv={hv} Dk={dk} Dv={dv}: 37/16/5 rows",
                        partial(segments_case, kernel="gdn_chunked", hk=hk, hv=hv, dk=dk, dv=dv),
                        tags=("segments",)))
    return out
