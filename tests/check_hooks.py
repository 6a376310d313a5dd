"""Test-only cases for `wgmtp check` (tests/test_check.py), injected through the runner's Python
API (`run_suite(extra_cases=...)`, or `extra_cases` set on the check command's Namespace): never
an option of the shipped CLI. Each joins an op family and runs first in it, so the family's own
cases after it show whether the run went on.

* elementwise/hook: abort              kills its worker (os.abort, as a driver's assert would)
* spec/hook: hang                      never returns (a driver that never signals its fence)
* spec/hook: validation error          a dispatch beyond max-compute-workgroups-per-dimension
* matvec/hook: make matvec wrong (Q8_0) swaps kernels.linear.matvec, in its worker, for a wrapper
                                       whose output is perturbed on the GPU: the matvec cases
                                       after it must fail
"""
from __future__ import annotations

import os
import time

import numpy as np

from wgmtp.check.cases import common as S
from wgmtp.kernels import Act
from wgmtp.kernels import linear as KL
from wgmtp.kernels import norm as KN

PERTURB = 1.0


def abort_case(ctx, chk) -> None:
    os.abort()


def hang_case(ctx, chk) -> None:
    time.sleep(3600)


def validation_case(ctx, chk) -> None:
    buf = ctx.buffer(64)
    n = ctx.limits.get("max-compute-workgroups-per-dimension", 65535) + 1
    S.run(ctx, lambda pb: pb.add("copy_row", [buf, buf, buf], b"\0" * 32, (n, 1, 1)))
    ctx.read_array(buf, np.float32, 4)
    chk.expect("an over-sized dispatch was accepted", True)


_real_matvec = KL.matvec


def perturbed_matvec(pb, W, x, y, step, *, x_stride=None, y_stride=None, label="", **fuse):
    """The real matvec, then +PERTURB on output 0 of every token row (a GPU-side wrong answer)."""
    _real_matvec(pb, W, x, y, step, x_stride=x_stride, y_stride=y_stride, label=label, **fuse)
    ys = W.rows if y_stride is None else int(y_stride)
    d = np.zeros(16 * ys, np.float32)
    d[::ys] = PERTURB
    delta = pb.ctx.upload(d)
    # y += delta, exactly: the residual half of add_rmsnorm (its normed half lands in scratch)
    scratch = pb.ctx.buffer(16 * ys * 4)
    ones = pb.ctx.upload(np.ones(ys, np.float32))
    KN.add_rmsnorm(pb, step, y, Act(delta), ones, y, Act(scratch), ys, 1e-6, 16)


def make_matvec_wrong(ctx, chk) -> None:
    KL.matvec = perturbed_matvec
    chk.expect("matvec replaced by a perturbed wrapper", KL.matvec is perturbed_matvec)


CASES = [
    S.Case("elementwise", "hook: abort", abort_case, op="abort"),
    S.Case("spec", "hook: hang", hang_case, op="sleep"),
    S.Case("spec", "hook: validation error", validation_case, op="elementwise"),
    S.Case("matvec", "hook: make matvec wrong (Q8_0)", make_matvec_wrong, op="matvec"),
]
