"""ssm_conv.wgsl, gdn.wgsl and gdn_chunked.wgsl against their twins (reference.ops.ssm_conv,
reference.gdn), plus the exact properties speculative decoding relies on: batch invariance
(an N-token step equals N one-token steps bit for bit, outputs and every snapshot plane), snapshot
planes, and rollback (a step from plane r equals re-running the kept tokens). gdn.wgsl and
gdn_chunked.wgsl share gdn_common.wgsl (bindings, gates, lane tree, state load/store)."""
from __future__ import annotations

import numpy as np
import pytest
from gpu_util import ctx  # noqa: F401

from wgmtp import tolerances as tol
from wgmtp.check.cases import gdn as S
from wgmtp.kernels import Act
from wgmtp.reference import gdn as ref
from wgmtp.reference import ops

# The cases, their GDN `Layer` (random weights and inputs, the conv weight in 512-byte row parts)
# and the bounds live in wgmtp/check/cases/gdn.py; `wgmtp check` runs them too.
EPS, CHUNK = S.EPS, S.GDN_CHUNK


# ---- ssm_conv ---------------------------------------------------------------------------------

@pytest.mark.parametrize("T", [1, 3, 6])
def test_ssm_conv(ctx, T):
    """Outputs within conv_tol of ops.ssm_conv; planes (raw input windows) exact, including the
    clamp to the pre-batch window for planes >= T; 80 channels (not a multiple of 64) in three
    weight parts."""
    S.require(S.ssm_conv_case, ctx, T=T)


# ---- gates ------------------------------------------------------------------------------------

def test_gdn_gates(ctx):
    """The gate functions gdn fuses, written out by the `gates` entry, within gdn_gates_tol of
    ops.gdn_gates (softplus through its x > 20 shortcut and far into the tail, beta via sigmoid)."""
    S.require(S.gdn_gates_case, ctx)


# ---- gdn against the twin ---------------------------------------------------------------------

# (Hk, Hv, Dk, Dv): the tiled head maps of the brief, and Dk = 24 / Dv = 20 -- a head size that
# is not a multiple of the 8 lanes of a value row, and value rows that leave a workgroup part-empty
SHAPES = [(1, 1, 16, 16), (2, 4, 16, 16), (4, 4, 32, 32), (1, 3, 32, 32), (1, 2, 24, 20)]


@pytest.mark.parametrize("hk,hv,dk,dv", SHAPES)
def test_gdn(ctx, hk, hv, dk, dv):
    """Outputs and planes 0..T-1 (T = 6) within the fused bound of reference.gdn.gdn, starting from
    plane src_slot = 2 of 8; planes the batch does not reach (T <= s < n_slots) untouched, exactly."""
    S.require(S.gdn_case, ctx, hk=hk, hv=hv, dk=dk, dv=dv)


# ---- exact properties of the conv + gdn pair --------------------------------------------------

@pytest.mark.parametrize("hk,hv,dk", [(2, 4, 16), (1, 3, 32)])
def test_batch_invariance_snapshots_rollback(ctx, hk, hv, dk):
    """ssm_conv + gdn as a layer runs them, all exact (bit for bit):
    * batch invariance: an N-token step (N = 2..16) gives the conv outputs, gdn outputs and conv
      and ssm planes of N chained one-token steps (each from the previous step's plane 0);
    * snapshots: plane s of the N-token step = the state after the first N-s tokens; planes the
      batch does not reach: conv = the pre-batch window, ssm untouched; with n_slots < N only
      n_slots planes are written;
    * rollback: after N tokens, a one-token step from plane r equals running the first N-r tokens
      and then that token.
    The one-token chain itself is compared with the twin first (exact_only=False), so the exact
    checks mean something; the op suite runs the batch and rollback halves as separate cases."""
    S.require(S.conv_gdn_exact_case, ctx, hk=hk, hv=hv, dk=dk, use_conv=True, use_gdn=True, batch=True,
              rollback=True, exact_only=False)


@pytest.mark.parametrize("hk,hv,dk", [(2, 4, 16), (1, 3, 32)])
def test_store_modes_roll_back_without_planes(ctx, hk, hv, dk):
    """Long-draft rollback with one plane: a verify that stores no state keeps every plane and
    gives the storing verify's outputs; rerunning the first k + 1 rows with STORE_FINAL from the
    round's start writes exactly the storing verify's snapshot plane N-1-k into plane 0 and no
    other plane (bit for bit, every k); gdn_chunked with STORE_NONE keeps plane 0."""
    S.require(S.store_modes_case, ctx, hk=hk, hv=hv, dk=dk)


# ---- chunked ----------------------------------------------------------------------------------

@pytest.mark.parametrize("hk,hv,dk,dv", [(2, 4, 16, 16), (1, 3, 32, 32), (1, 2, 24, 20)])
def test_gdn_chunked(ctx, hk, hv, dk, dv):
    """37 tokens (two full 16-token chunks and a padded tail) from plane src_slot = 1: outputs and
    plane 0 within chunked_tol of the recurrence twin and of the chunked twin; other planes
    untouched."""
    S.require(S.gdn_chunked_case, ctx, hk=hk, hv=hv, dk=dk, dv=dv)


# ---- real head size ---------------------------------------------------------------------------

def test_gdn_dk128(ctx):
    """Dk = Dv = 128 (the real models' head size), recurrence and chunked, 3 tokens, 2 value heads
    on 1 key head: outputs and final state against the twin. Both Vulkan variants (subgroup and
    workgroup-memory paths); the GL variant compiles the same source as the second, slowly."""
    if ctx.desc.backend == "OpenGL":
        pytest.skip("same shader source as vulkan-nosg-nof16; a 12 s compile on llvmpipe GL")
    hk, hv, dk, T = 1, 2, 128, 3
    L = S.Layer(ctx, hk, hv, dk, dk, T, seed=128)
    init = L.rand_ssm(2)
    ro, rM = ref.gdn(L.c, L.alpha, L.beta, L.a, L.dtb, init[0], hk=hk, hv=hv, dk=dk, dv=dk, eps=EPS)
    _, _, v = ref.split_qkv(L.c, hk, hv, dk, dk, EPS)
    scale = L.head_scale(v, init[0])
    ge, be = L.input_errs()
    for chunked in (False, True):
        SB = ctx.upload(init)
        OUT = ctx.buffer(T * L.d.value_dim * 4)
        STEP = ctx.upload(np.zeros(S.STEP_WORDS, np.uint32))
        o, M = S.gdn_run(ctx, lambda pb: L.gdn(pb, Act(STEP), 0, Act(L.C), Act(SB), Act(OUT), 2, chunked=chunked),
                         S.step_words((T, 0)), STEP, [(OUT, (T, hv, dk)), (SB, init.shape)])
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


# ---- several sequences in one batch (segments) ------------------------------------------------

def test_ssm_conv_segments(ctx):
    """Four segment records (several rows -- more than the 4 planes of a slot --, one row, three
    rows, empty) in four slots of a five-slot conv state, each from a different plane: outputs and
    the slot's planes against ops.ssm_conv on the slot's region, and bit for bit against each
    segment run alone (one segment, row0 0, slot 0); rows outside every segment, the empty
    segment's slot and the unused slot untouched."""
    S.require(S.segments_case, ctx, kernel="ssm_conv")


@pytest.mark.parametrize("hk,hv,dk,dv", S.SEG_SHAPES)
@pytest.mark.parametrize("kernel", ["gdn", "gdn_chunked"])
def test_gdn_segments(ctx, kernel, hk, hv, dk, dv):
    """As test_ssm_conv_segments for the delta rule (planes 0..min(n, 4)-1 of each slot written)
    and its chunked form (segments of 37 rows -- two chunks and a partial one --, one full chunk and
    a 5-row partial chunk; plane 0 of each slot written): outputs and planes within the twins'
    bounds per segment, bit-identical to each segment run alone, on the subgroup and the
    workgroup-memory lane-sum paths (the adapter variants)."""
    S.require(S.segments_case, ctx, kernel=kernel, hk=hk, hv=hv, dk=dk, dv=dv)
