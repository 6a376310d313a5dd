"""elementwise.wgsl (add, swiglu, sigmoid_mul) against reference.ops."""
from __future__ import annotations

import numpy as np
import pytest

from gpu_util import ctx, read_f32, run, upload_f32  # noqa: F401
from wgmtp import tolerances as tol
from wgmtp.kernels import Act, elementwise
from wgmtp.reference import ops


@pytest.mark.parametrize("n", [1, 255, 257, 70001])
def test_elementwise(ctx, n):
    rng = np.random.default_rng(n)
    a = (rng.standard_normal(n) * 4).astype(np.float32)
    b = (rng.standard_normal(n) * 4).astype(np.float32)
    A, B = upload_f32(ctx, a), upload_f32(ctx, b)
    O = ctx.buffer(3 * n * 4 + 64)
    # n elements as n_tok = 1 row of n, or as rows of 1 (n_tok = n): the count comes from the step record
    S = ctx.upload(np.array([1, 0, 0, 0, n, 0, 0, 0], np.uint32))
    run(ctx, lambda pb: (elementwise.add(pb, Act(A), Act(B), Act(O, 0), n, Act(S, 0)),
                         elementwise.swiglu(pb, Act(A), Act(B), Act(O, n), 1, Act(S, 4), n),
                         elementwise.sigmoid_mul(pb, Act(A), Act(B), Act(O, 2 * n), n, Act(S, 0))))
    out = read_f32(ctx, O, 3 * n)
    assert np.array_equal(out[:n], ops.add(a, b))                      # correctly rounded on both sides
    ref = ops.swiglu(a, b)
    assert np.all(np.abs(out[n:2 * n] - ref) <= tol.swiglu_tol(a, ref) + 1e-45)
    ref = a * ops.sigmoid(b)
    assert np.all(np.abs(out[2 * n:] - ref) <= tol.sigmoid_mul_tol(b, ref) + 1e-45)
