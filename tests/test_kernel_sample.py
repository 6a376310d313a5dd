"""argmax.wgsl and topk.wgsl against reference.ops.argmax / ops.topk (exact equality: ids and the
logits' bits), ties, -inf/+inf/huge/NaN/-0 values, the softmax_top p-min gate, and exact batch
invariance. Both include sortkey.wgsl (order-preserving keys, the workgroup best pair). The logit
rows (logit_rows), the p_top bound (ptop_bound, derived there) and the cases live in
wgmtp/check/cases/sample.py; `wgmtp check` runs them too."""
from __future__ import annotations

import numpy as np
import pytest
from gpu_util import ctx, upload_f32  # noqa: F401

from wgmtp.check.cases import sample as S
from wgmtp.gpu.program import ProgramBuilder
from wgmtp.kernels import Act, sample
from wgmtp.reference import ops


@pytest.mark.parametrize("V", [1, 3, 257, 5000, 248320])
def test_argmax(ctx, V):
    """Rows of logit_rows(V, V) at a logits offset of 5 words, ids at offset 3, a grid of T + 2
    rows: ids exactly ops.argmax's."""
    S.require(S.argmax_case, ctx, V=V)


@pytest.mark.parametrize("V,k", [(1, 1), (3, 3), (257, 64), (5000, 10), (5000, 64), (248320, 64), (248320, 1)])
def test_topk(ctx, V, k):
    """ids and the logits' exact bits as ops.topk on every row of logit_rows; p_top (n_soft =
    min(k, 10)) within ptop_bound of sampling.softmax_top on the finite rows."""
    S.require(S.topk_case, ctx, V=V, k=k)


def test_topk_without_ptop_and_errors(ctx):
    L = S.logit_rows(300, 1)[:2]
    T, V, k = L.shape[0], L.shape[1], 5
    LB = upload_f32(ctx, L)
    ids = ctx.buffer(4 * (2 + T * k))
    vals = ctx.buffer(4 * (1 + T * k))
    S.run_step(ctx, lambda pb, st: sample.topk(pb, st, Act(LB), Act(ids, 2), Act(vals, 1), k, V, T, n_soft=0), T)
    gi = ctx.read_array(ids, np.uint32, T * k, 2).reshape(T, k)
    for t, row in enumerate(L):
        assert np.array_equal(gi[t], ops.topk(row, 5)[0].astype(np.uint32))
    pb = ProgramBuilder(ctx)
    with pytest.raises(ValueError):
        sample.topk(pb, Act(None), Act(None), Act(None), Act(None), 65, 1000, 1)
    with pytest.raises(ValueError):
        sample.topk(pb, Act(None), Act(None), Act(None), Act(None), 4, 3, 1)


def test_batch_invariance_sample(ctx):
    """argmax and topk (with p_top) in one program on 16 rows of logit_rows: exact batch invariance."""
    M, V, k = 16, 5000, 12
    rows = np.concatenate([S.logit_rows(V, 11), S.logit_rows(V, 12)])[:M]
    b = S.Batch(ctx, M)
    L = b.input(rows)
    ids = b.output(1, off=3, dtype=np.uint32)
    tids = b.output(k, dtype=np.uint32)
    tvals = b.output(k)
    pt = b.output(1)

    def build(pb, st):
        sample.argmax(pb, st, Act(L), Act(ids, 3), V, M)
        sample.topk(pb, st, Act(L), Act(tids), Act(tvals), k, V, M, p_top=Act(pt))
    chk = S.Check()
    b.check(chk, build, ["argmax", "topk ids", "topk logits", "p_top"])
    chk.require()
