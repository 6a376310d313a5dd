"""spec.wgsl (greedy accept, draft_gate, rerun_record) and copy_row.wgsl against their twins in reference/spec.py.
The rounds and cases live in wgmtp/check/cases/spec.py (`wgmtp check` runs them too)."""
from __future__ import annotations

import numpy as np
import pytest
from gpu_util import ctx, run  # noqa: F401

from wgmtp.check.cases import spec as S


@pytest.mark.parametrize("case", range(40))
def test_accept(ctx, case):
    """One verify round (random drafts matching 70 %, EOG ids, token budgets), alone in its program:
    accepted count, emitted count, emitted ids and the next id as reference.spec.accept_greedy."""
    words, layout = S.accept_round(case)
    buf = ctx.upload(words)
    run(ctx, lambda pb: S.accept_dispatch(pb, buf, layout))
    got, want = S.accept_result(ctx.read_array(buf, np.uint32, 64), layout)
    assert got == want


def test_copy_row(ctx):
    S.require(S.copy_row_case, ctx)


@pytest.mark.parametrize("p_min", [0.0, 0.3, 0.9])
def test_draft_gate(ctx, p_min):
    S.require(S.draft_gate_case, ctx, mins=(p_min,))


def test_rerun_record(ctx):
    """The long round's rerun record for every accepted count of a 48-draft round."""
    S.require(S.rerun_record_case, ctx)
