"""spec.wgsl (greedy accept) and copy_row.wgsl against their twins in reference/spec.py."""
from __future__ import annotations

import numpy as np
import pytest

from gpu_util import ctx, read_f32, run, upload_f32  # noqa: F401
from wgmtp.kernels import Act, spec
from wgmtp.reference import spec as ref


@pytest.mark.parametrize("case", range(40))
def test_accept(ctx, case):
    rng = np.random.default_rng(case)
    n = int(rng.integers(0, 8))
    tgt = rng.integers(0, 5, n + 1).astype(np.uint32)
    drafts = np.where(rng.random(n) < 0.7, tgt[:n], rng.integers(0, 5, n)).astype(np.uint32)
    n_valid = int(rng.integers(0, n + 1))
    eog = {4} if case % 3 == 0 else set()
    max_emit = int(rng.integers(0, 4)) if case % 4 == 0 else 0
    # layout: [step(4)] [tgt n+1] [id_last + drafts] [nvalid] [eog] [res 2+n+1]
    words = np.zeros(64, np.uint32)
    words[3] = max_emit
    words[4:4 + n + 1] = tgt
    words[20] = 99
    words[21:21 + n] = drafts
    words[30] = n_valid
    words[31] = 4
    buf = ctx.upload(words)
    run(ctx, lambda pb: spec.accept(pb, buf, n=n, tgt_off=4, draft_off=21, nvalid_off=30, eog_off=31,
                                    n_eog=len(eog), res_off=40, next_off=20, step_off=0))
    out = ctx.read_array(buf, np.uint32, 64)
    expect = ref.accept_greedy(tgt, drafts, n_valid, eog, max_emit)
    assert out[40] == len(expect) - 1 and out[41] == len(expect)
    assert list(out[42:42 + len(expect)]) == expect
    assert out[20] == expect[-1]


def test_copy_row(ctx):
    src = np.random.default_rng(0).standard_normal((5, 300)).astype(np.float32)
    ids = ctx.upload(np.array([0, 3, 0, 0], np.uint32))
    S = upload_f32(ctx, src)
    D = ctx.buffer(301 * 4)
    run(ctx, lambda pb: spec.copy_row(pb, ids, 1, -1, Act(S), 300, Act(D, 1), 300))
    assert np.array_equal(read_f32(ctx, D, 300, 1), ref.copy_row(src, 2))


@pytest.mark.parametrize("p_min", [0.0, 0.3, 0.9])
def test_draft_gate(ctx, p_min):
    p = np.array([0.95, 0.5, 0.31, 0.2, 0.99], np.float32)
    ids = ctx.upload(np.zeros(8, np.uint32))
    P = upload_f32(ctx, np.concatenate([[7.0], p]))
    run(ctx, lambda pb: spec.draft_gate(pb, ids, Act(P, 1), 5, 3, p_min))
    assert int(ctx.read_array(ids, np.uint32, 8)[3]) == ref.draft_gate(p, p_min)
