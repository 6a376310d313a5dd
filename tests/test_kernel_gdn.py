"""ssm_conv.wgsl, gdn.wgsl and gdn_chunked.wgsl against their twins (reference.ops.ssm_conv,
reference.gdn), plus the exact properties speculative decoding relies on: batch invariance
(an N-token step equals N one-token steps bit for bit, outputs and every snapshot plane), snapshot
planes, and rollback (a step from plane r equals re-running the kept tokens). gdn.wgsl and
gdn_chunked.wgsl share gdn_common.wgsl (bindings, gates, lane tree, state load/store)."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from gpu_util import ctx  # noqa: F401
from wgmtp import tolerances as tol
from wgmtp.gpu.program import ProgramBuilder, Readback, Runner
from wgmtp.gpu.weights import upload_array
from wgmtp.kernels import Act
from wgmtp.kernels import gdn as K
from wgmtp.reference import gdn as ref
from wgmtp.reference import ops

f32 = np.float32
U = tol.U
EPS = 1e-6
KC = 4
CHUNK = 16


def split_weights(ctx, monkeypatch):
    """A 512-byte binding limit while the test uploads its weights: the conv weight (16 bytes a
    row) is split into 32-row parts, so the conv runs its multi-part path (the same device: a
    second device per variant is slow, and wgpu's GL backend has aborted with several)."""
    monkeypatch.setattr(ctx, "max_binding", 512)


def step_words(*records) -> bytes:
    """Step records (n_tok, pos0, src_slot) packed at word offsets 0, 4, 8, ..."""
    return b"".join(struct.pack("<4I", n, 0, src, 0) for n, src in records)


class Layer:
    """Random weights and inputs of one GDN layer, uploaded once."""

    def __init__(self, ctx, hk, hv, dk, dv, T, seed):
        self.ctx = ctx
        self.d = d = K.GDNDims(hk, hv, dk, dv)
        rng = np.random.default_rng(seed)
        self.rng = rng
        self.T = T
        cd = d.conv_dim
        self.w = (rng.standard_normal((cd, KC)) * 0.6).astype(f32)
        self.a = (-np.exp(rng.uniform(-1.5, 0.5, hv))).astype(f32)     # ssm_a = -exp(A_log) < 0
        self.dtb = rng.uniform(-1, 1, hv).astype(f32)
        self.x = rng.standard_normal((T, cd)).astype(f32)                # mixed (attn_qkv output)
        self.c = rng.standard_normal((T, cd)).astype(f32)                # a conv output for gdn-only tests
        # decays exp(g) mostly in 0.2 .. 1, so the state carries over many tokens
        self.alpha = (rng.standard_normal((T, hv)) * 1.5 - 2).astype(f32)
        self.beta = (rng.standard_normal((T, hv)) * 2).astype(f32)
        self.W = upload_array(ctx, "ssm_conv1d.weight", self.w)
        self.A = upload_array(ctx, "ssm_a", self.a)
        self.DTB = upload_array(ctx, "ssm_dt.bias", self.dtb)
        self.X = ctx.upload(self.x)
        self.C = ctx.upload(self.c)
        self.AL = ctx.upload(self.alpha)
        self.BE = ctx.upload(self.beta)

    def rand_conv(self, n):
        return self.rng.standard_normal((n, self.d.conv_dim, KC - 1)).astype(f32)

    def rand_ssm(self, n):
        d = self.d
        return (self.rng.standard_normal((n, d.hv, d.dv, d.dk)) * 0.5).astype(f32)

    def conv(self, pb, step, t0, cstate, cout, n_slots, cout_row0=None):
        """ssm_conv of tokens from input row t0, output rows from cout_row0 (default t0)."""
        cd = self.d.conv_dim
        r0 = t0 if cout_row0 is None else cout_row0
        K.ssm_conv(pb, step, Act(self.X, t0 * cd), self.W, cstate, Act(cout.buffer, cout.offset + r0 * cd),
                   n_slots=n_slots)

    def gdn(self, pb, step, t0, c, sstate, out, n_slots, chunked=False, c_row0=None, out_row0=None):
        d = self.d
        cr = t0 if c_row0 is None else c_row0
        orow = t0 if out_row0 is None else out_row0
        args = (pb, step, c.at(cr * d.conv_dim), Act(self.AL, t0 * d.hv), Act(self.BE, t0 * d.hv), self.A,
                self.DTB, sstate, out.at(orow * d.value_dim), d)
        if chunked:
            K.gdn_chunked(*args, n_slots=n_slots, eps=EPS, chunk=CHUNK)
        else:
            K.gdn(*args, n_slots=n_slots, eps=EPS)


def run(ctx, build, steps: bytes, step_buf, reads):
    """One submission: the step records, the program, and every readback (buffer, shape) -> f32
    arrays. A single map per test on purpose: on wgpu's GL backend a submission that follows a
    readback too closely can race wgpu-py's poll thread and abort the process (see the report)."""
    pb = ProgramBuilder(ctx, "test")
    build(pb)
    rb = [Readback(buf, 0, int(np.prod(shape)) * 4) for buf, shape in reads]
    blobs = Runner(ctx).run([pb.build()], writes=[(step_buf, 0, steps)], reads=rb)
    return [np.frombuffer(b, f32).reshape(shape).copy() for b, (_, shape) in zip(blobs, reads)]


# ---- bounds -----------------------------------------------------------------------------------

def head_scale(v, M0):
    """tolerances.gdn_tol's scale per head: max|v| + max|M0| (v [T, hv, dv], M0 [hv, dv, dk])."""
    return np.abs(v).max(axis=(0, 2)) + np.abs(M0).max(axis=(1, 2))


def input_errs(L: Layer):
    """Per-head worst gate errors (absolute on g, relative on beta) over the tokens."""
    g, b = ops.gdn_gates(L.alpha, L.beta, L.a, L.dtb)
    x = (L.alpha + L.dtb).astype(f32)
    ge = tol.gdn_gates_tol(np.broadcast_to(L.a, x.shape), x, g).max(axis=0)
    be = tol.sigmoid_rel(L.beta).max(axis=0)
    return ge, be


# ---- ssm_conv ---------------------------------------------------------------------------------

@pytest.mark.parametrize("T", [1, 3, 6])
def test_ssm_conv(ctx, T, monkeypatch):
    """Outputs within conv_tol of ops.ssm_conv; planes (raw input windows) exact, including the
    clamp to the pre-batch window for planes >= T; 80 channels in three weight parts."""
    split_weights(ctx, monkeypatch)
    L = Layer(ctx, 1, 3, 16, 16, T, seed=10 + T)          # conv_dim 80: not a multiple of 64
    assert len(L.W.parts) == 3
    n_slots, src = 4, 2
    init = L.rand_conv(n_slots)
    S = ctx.upload(init)
    OUT = ctx.buffer(T * L.d.conv_dim * 4)
    STEP = ctx.upload(np.zeros(4, np.uint32))
    y, planes = run(ctx, lambda pb: L.conv(pb, Act(STEP), 0, Act(S), Act(OUT), n_slots), step_words((T, src)),
                    STEP, [(OUT, (T, L.d.conv_dim)), (S, init.shape)])
    ry, rplanes = ops.ssm_conv(L.x, init[src], L.w, n_slots, init)
    assert np.array_equal(planes, rplanes)
    win = np.concatenate([init[src].astype(np.float64), L.x.T.astype(np.float64)], axis=1)
    pre = np.stack([(win[:, t:t + KC] * L.w).sum(1) for t in range(T)])
    absdot = np.stack([np.abs(win[:, t:t + KC] * L.w).sum(1) for t in range(T)])
    assert np.all(np.abs(y - ry) <= tol.conv_tol(absdot, KC, pre, ry))


# ---- gates ------------------------------------------------------------------------------------

def test_gdn_gates(ctx):
    """The gate functions gdn fuses, written out by the `gates` entry, within gdn_gates_tol of
    ops.gdn_gates (softplus through its x > 20 shortcut and far into the tail, beta via sigmoid)."""
    L = Layer(ctx, 1, 7, 16, 16, 6, seed=3)
    L.alpha[0] = [-40, -18, -1e-3, 0, 19.5, 20.5, 45]
    L.alpha[1] = 25 - L.dtb                    # softplus argument 25 (the shortcut)
    L.beta[0] = [-40, -9, -1, 0, 1, 9, 40]
    L.AL = ctx.upload(L.alpha)
    L.BE = ctx.upload(L.beta)
    OUT = ctx.buffer(L.T * L.d.hv * 2 * 4)
    STEP = ctx.upload(np.zeros(4, np.uint32))
    out, = run(ctx, lambda pb: K.gdn_gates(pb, Act(STEP), Act(L.AL), Act(L.BE), L.A, L.DTB, Act(OUT), L.d),
               step_words((L.T, 0)), STEP, [(OUT, (L.T, L.d.hv, 2))])
    g, b = ref.gdn_gates(L.alpha, L.beta, L.a, L.dtb)
    x = (L.alpha + L.dtb).astype(f32)
    assert np.all(np.abs(out[..., 0] - g) <= tol.gdn_gates_tol(np.broadcast_to(L.a, x.shape), x, g))
    assert np.all(np.abs(out[..., 1] - b) <= tol.sigmoid_rel(L.beta) * np.abs(b) + 1e-45)


# ---- gdn against the twin ---------------------------------------------------------------------

# (Hk, Hv, Dk, Dv): the tiled head maps of the brief, and Dk = 24 / Dv = 20 -- a head size that
# is not a multiple of the 8 lanes of a value row, and value rows that leave a workgroup part-empty
SHAPES = [(1, 1, 16, 16), (2, 4, 16, 16), (4, 4, 32, 32), (1, 3, 32, 32), (1, 2, 24, 20)]


@pytest.mark.parametrize("hk,hv,dk,dv", SHAPES)
def test_gdn(ctx, hk, hv, dk, dv):
    """Outputs and planes 0..T-1 within the fused bound of reference.gdn.gdn, starting from plane
    src_slot = 2; planes the batch does not reach (T <= s < n_slots) untouched, exactly."""
    T, n_slots, src = 6, 8, 2
    L = Layer(ctx, hk, hv, dk, dv, T, seed=hk * 100 + hv * 10 + dk)
    d = L.d
    init = L.rand_ssm(n_slots)
    S = ctx.upload(init)
    OUT = ctx.buffer(T * d.value_dim * 4)
    STEP = ctx.upload(np.zeros(4, np.uint32))
    o, planes = run(ctx, lambda pb: L.gdn(pb, Act(STEP), 0, Act(L.C), Act(S), Act(OUT), n_slots),
                    step_words((T, src)), STEP, [(OUT, (T, hv, dv)), (S, init.shape)])
    ro, rplanes = ref.gdn(L.c, L.alpha, L.beta, L.a, L.dtb, init[src], hk=hk, hv=hv, dk=dk, dv=dv, eps=EPS,
                          n_slots=n_slots, slots=init)
    _, _, v = ref.split_qkv(L.c, hk, hv, dk, dv, EPS)
    scale = head_scale(v, init[src])
    ge, be = input_errs(L)
    t = np.arange(1, T + 1)[:, None, None]
    assert np.all(np.abs(o - ro) <= tol.fused_gdn_tol(t, dk, scale[:, None], ge[:, None], be[:, None]))
    for s in range(T):
        b = tol.fused_gdn_tol(T - s, dk, scale, ge, be)[:, None, None]
        assert np.all(np.abs(planes[s] - rplanes[s]) <= b), s
    assert np.array_equal(planes[T:], init[T:])


# ---- exact properties of the conv + gdn pair --------------------------------------------------

NMAX = 16


@pytest.mark.parametrize("hk,hv,dk", [(2, 4, 16), (1, 3, 32)])
def test_batch_invariance_snapshots_rollback(ctx, hk, hv, dk, monkeypatch):
    """ssm_conv + gdn as a layer runs them, all exact (np.array_equal):
    * batch invariance: an N-token step (N = 2..16) gives the conv outputs, gdn outputs and conv
      and ssm planes of N chained one-token steps (each from the previous step's plane 0);
    * snapshots: plane s of the N-token step = the state after the first N-s tokens; planes the
      batch does not reach: conv = the pre-batch window, ssm untouched; with n_slots < N only
      n_slots planes are written;
    * rollback: after N tokens, a one-token step from plane r equals running the first N-r tokens
      and then that token.
    The chain writes the state after token t into region NMAX-1-t of a NMAX+1-plane buffer (each
    one-token step reads its plane 1 = the previous region): the layout of an NMAX-token step."""
    split_weights(ctx, monkeypatch)
    L = Layer(ctx, hk, hv, dk, dk, NMAX, seed=7 * dk + hv)
    d = L.d
    cp, sp = K.conv_plane(d.conv_dim, KC), d.ssm_plane
    conv0, ssm0 = L.rand_conv(1)[0], L.rand_ssm(1)[0]
    Ns = list(range(2, NMAX + 1))
    slots = {N: (N + 1 if N <= 5 else 6) for N in Ns}
    rollbacks = [(5, 1), (5, 4), (9, 3), (16, 5)]
    # region offsets (planes) in one conv and one ssm state buffer
    regions, n_planes = {}, 0
    def region(key, n):
        nonlocal n_planes
        regions[key] = (n_planes, n)
        n_planes += n
    region("chain", NMAX + 1)
    for N in Ns:
        region(("batch", N), slots[N])
    for N, r in rollbacks:
        region(("rb", N, r), slots[N])
        region(("re", N, r), 1)
    conv_init = L.rand_conv(n_planes)
    ssm_init = L.rand_ssm(n_planes)
    for key, (p0, n) in regions.items():                      # start state: chain's last plane, others' plane 0
        first = p0 + NMAX if key == "chain" else p0
        conv_init[first], ssm_init[first] = conv0, ssm0
    CS, SS = ctx.upload(conv_init), ctx.upload(ssm_init)
    n_runs = 1 + len(Ns) + 2 * len(rollbacks)
    RR = NMAX + 1                                             # rows per run (a rollback's extra token)
    CB = ctx.buffer(n_runs * RR * d.conv_dim * 4)             # conv outputs
    OB = ctx.buffer(n_runs * RR * d.value_dim * 4)            # gdn outputs
    recs = [(1, 1)] + [(N, 0) for N in Ns] + [(1, 0)] + [(N - r, 0) for N, r in rollbacks] \
        + [(1, r) for _, r in rollbacks]
    rec = {k: i * 4 for i, k in enumerate(["one"] + Ns + ["one0"] + [("re", x) for x in rollbacks]
                                          + [("rb", x) for x in rollbacks])}
    STEP = ctx.upload(np.zeros(len(recs) * 4, np.uint32))
    X_ROW = NMAX - 1                                          # the token stepped after a rollback

    def run_of(i):
        return Act(CB, i * RR * d.conv_dim), Act(OB, i * RR * d.value_dim)

    def build(pb):
        c, o = run_of(0)
        for t in range(NMAX):                                   # the chain of one-token steps
            p0 = regions["chain"][0] + NMAX - 1 - t
            L.conv(pb, Act(STEP, rec["one"]), t, Act(CS, p0 * cp), c, 2)
            L.gdn(pb, Act(STEP, rec["one"]), t, c, Act(SS, p0 * sp), o, 2)
        for i, N in enumerate(Ns):
            c, o = run_of(1 + i)
            p0 = regions[("batch", N)][0]
            L.conv(pb, Act(STEP, rec[N]), 0, Act(CS, p0 * cp), c, slots[N])
            L.gdn(pb, Act(STEP, rec[N]), 0, c, Act(SS, p0 * sp), o, slots[N])
        for i, (N, r) in enumerate(rollbacks):
            c, o = run_of(1 + len(Ns) + 2 * i)
            p0 = regions[("rb", N, r)][0]                       # N tokens, then 1 from plane r
            L.conv(pb, Act(STEP, rec[N]), 0, Act(CS, p0 * cp), c, slots[N])
            L.gdn(pb, Act(STEP, rec[N]), 0, c, Act(SS, p0 * sp), o, slots[N])
            L.conv(pb, Act(STEP, rec[("rb", (N, r))]), X_ROW, Act(CS, p0 * cp), c, slots[N], cout_row0=N)
            L.gdn(pb, Act(STEP, rec[("rb", (N, r))]), X_ROW, c, Act(SS, p0 * sp), o, slots[N],
                  c_row0=N, out_row0=N)
            c, o = run_of(2 + len(Ns) + 2 * i)
            p0 = regions[("re", N, r)][0]                       # N - r tokens, then the same one
            L.conv(pb, Act(STEP, rec[("re", (N, r))]), 0, Act(CS, p0 * cp), c, 1)
            L.gdn(pb, Act(STEP, rec[("re", (N, r))]), 0, c, Act(SS, p0 * sp), o, 1)
            L.conv(pb, Act(STEP, rec["one0"]), X_ROW, Act(CS, p0 * cp), c, 1, cout_row0=N - r)
            L.gdn(pb, Act(STEP, rec["one0"]), X_ROW, c, Act(SS, p0 * sp), o, 1, c_row0=N - r, out_row0=N - r)

    conv, ssm, cc, oo = run(ctx, build, step_words(*recs), STEP,
                            [(CS, conv_init.shape), (SS, ssm_init.shape), (CB, (n_runs, RR, d.conv_dim)),
                             (OB, (n_runs, RR, hv, dk))])
    ch = regions["chain"][0]
    # the chain itself is right (to the twin's bound) so the exact checks below mean something
    ro, _ = ref.gdn(cc[0, :NMAX], L.alpha, L.beta, L.a, L.dtb, ssm0, hk=hk, hv=hv, dk=dk, dv=dk, eps=EPS)
    _, _, v = ref.split_qkv(cc[0, :NMAX], hk, hv, dk, dk, EPS)
    ge, be = input_errs(L)
    t = np.arange(1, NMAX + 1)[:, None, None]
    assert np.all(np.abs(oo[0, :NMAX] - ro) <= tol.fused_gdn_tol(t, dk, head_scale(v, ssm0)[:, None], ge[:, None],
                                                       be[:, None]))
    for i, N in enumerate(Ns):
        p0, K_ = regions[("batch", N)]
        assert np.array_equal(cc[1 + i, :N], cc[0, :N]), N
        assert np.array_equal(oo[1 + i, :N], oo[0, :N]), N
        for s in range(min(N, K_)):                             # plane s = state after token N-1-s
            assert np.array_equal(conv[p0 + s], conv[ch + NMAX - N + s]), (N, s)
            assert np.array_equal(ssm[p0 + s], ssm[ch + NMAX - N + s]), (N, s)
        for s in range(N, K_):                                  # beyond the batch
            assert np.array_equal(conv[p0 + s], conv0), (N, s)
            assert np.array_equal(ssm[p0 + s], ssm_init[p0 + s]), (N, s)
    for i, (N, r) in enumerate(rollbacks):
        rb, re = 1 + len(Ns) + 2 * i, 2 + len(Ns) + 2 * i
        assert np.array_equal(cc[rb, N], cc[re, N - r]), (N, r)
        assert np.array_equal(oo[rb, N], oo[re, N - r]), (N, r)
        assert np.array_equal(conv[regions[("rb", N, r)][0]], conv[regions[("re", N, r)][0]]), (N, r)
        assert np.array_equal(ssm[regions[("rb", N, r)][0]], ssm[regions[("re", N, r)][0]]), (N, r)


# ---- chunked ----------------------------------------------------------------------------------

@pytest.mark.parametrize("hk,hv,dk,dv", [(2, 4, 16, 16), (1, 3, 32, 32), (1, 2, 24, 20)])
def test_gdn_chunked(ctx, hk, hv, dk, dv):
    """37 tokens (two full 16-token chunks and a padded tail) from plane src_slot = 1: outputs and
    plane 0 within chunked_tol of the recurrence twin and of the chunked twin; other planes
    untouched."""
    T, n_slots, src = 37, 3, 1
    L = Layer(ctx, hk, hv, dk, dv, T, seed=5 * dk + hv)
    d = L.d
    init = L.rand_ssm(n_slots)
    S = ctx.upload(init)
    OUT = ctx.buffer(T * d.value_dim * 4)
    STEP = ctx.upload(np.zeros(4, np.uint32))
    o, planes = run(ctx, lambda pb: L.gdn(pb, Act(STEP), 0, Act(L.C), Act(S), Act(OUT), n_slots, chunked=True),
                    step_words((T, src)), STEP, [(OUT, (T, hv, dv)), (S, init.shape)])
    assert np.array_equal(planes[1:], init[1:])
    kw = dict(hk=hk, hv=hv, dk=dk, dv=dv, eps=EPS)
    ro, rM = ref.gdn(L.c, L.alpha, L.beta, L.a, L.dtb, init[src], **kw)
    co, cM = ref.gdn_chunked(L.c, L.alpha, L.beta, L.a, L.dtb, init[src], chunk=CHUNK, **kw)
    g, _ = ops.gdn_gates(L.alpha, L.beta, L.a, L.dtb)
    gmax = max(float(np.abs(g[c0:c0 + CHUNK].astype(np.float64).sum(0)).max()) for c0 in range(0, T, CHUNK))
    _, _, v = ref.split_qkv(L.c, hk, hv, dk, dv, EPS)
    scale = head_scale(v, init[src])
    ge, be = input_errs(L)
    t = np.arange(1, T + 1)[:, None, None]
    bo = tol.chunked_gdn_tol(t, dk, CHUNK, scale[:, None], gmax, ge[:, None], be[:, None])
    bM = tol.chunked_gdn_tol(T, dk, CHUNK, scale, gmax, ge, be)[:, None, None]
    for name, x, y in (("recurrence", ro, rM[0]), ("chunked", co, cM)):
        assert np.all(np.abs(o - x) <= bo), name
        assert np.all(np.abs(planes[0] - y) <= bM), name


# ---- real head size ---------------------------------------------------------------------------

def test_gdn_dk128(ctx):
    """Dk = Dv = 128 (the real models' head size), recurrence and chunked, 3 tokens, 2 value heads
    on 1 key head: outputs and final state against the twin. Both Vulkan variants (subgroup and
    workgroup-memory paths); the GL variant compiles the same source as the second, slowly."""
    if ctx.desc.backend == "OpenGL":
        pytest.skip("same shader source as vulkan-nosg-nof16; a 12 s compile on llvmpipe GL")
    hk, hv, dk, T = 1, 2, 128, 3
    L = Layer(ctx, hk, hv, dk, dk, T, seed=128)
    init = L.rand_ssm(2)
    ro, rM = ref.gdn(L.c, L.alpha, L.beta, L.a, L.dtb, init[0], hk=hk, hv=hv, dk=dk, dv=dk, eps=EPS)
    _, _, v = ref.split_qkv(L.c, hk, hv, dk, dk, EPS)
    scale = head_scale(v, init[0])
    ge, be = input_errs(L)
    for chunked in (False, True):
        S = ctx.upload(init)
        OUT = ctx.buffer(T * L.d.value_dim * 4)
        STEP = ctx.upload(np.zeros(4, np.uint32))
        o, M = run(ctx, lambda pb: L.gdn(pb, Act(STEP), 0, Act(L.C), Act(S), Act(OUT), 2, chunked=chunked),
                   step_words((T, 0)), STEP, [(OUT, (T, hv, dk)), (S, init.shape)])
        M = M[0]
        g, _ = ops.gdn_gates(L.alpha, L.beta, L.a, L.dtb)
        gmax = float(np.abs(g.astype(np.float64).sum(0)).max())
        t = np.arange(1, T + 1)[:, None, None]
        if chunked:
            bo = tol.chunked_gdn_tol(t, dk, CHUNK, scale[:, None], gmax, ge[:, None], be[:, None])
            bM = tol.chunked_gdn_tol(T, dk, CHUNK, scale, gmax, ge, be)[:, None, None]
        else:
            bo = tol.fused_gdn_tol(t, dk, scale[:, None], ge[:, None], be[:, None])
            bM = tol.fused_gdn_tol(T, dk, scale, ge, be)[:, None, None]
        assert np.all(np.abs(o - ro) <= bo), chunked
        assert np.all(np.abs(M - rM[0]) <= bM), chunked
