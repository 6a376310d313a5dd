"""swiglu.wgsl (kernels/elementwise.py, the one SwiGLU kernel) against reference.ops.swiglu: dense
rows, rows of one element, and gate/up interleaved in one buffer (the op suite's cases)."""
from __future__ import annotations

import pytest
from gpu_util import ctx  # noqa: F401

from wgmtp.check.cases import elementwise as S


@pytest.mark.parametrize("n", [1, 255, 257, 70001])
def test_swiglu(ctx, n):
    S.require(S.swiglu_case, ctx, n=n)
