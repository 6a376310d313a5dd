"""The bandwidth case (kernels/bandwidth.py): the streaming-read probe of `wgmtp bench`."""
from __future__ import annotations

import numpy as np

from ...kernels import Act
from .common import Case, Check, read_f32, run

f32 = np.float32


def bandwidth_case(ctx, chk: Check) -> None:
    """The streaming-read probe of `wgmtp bench` sums every range exactly (small integers)."""
    from ...kernels import bandwidth as bandwidth_kernels
    n_vec4 = bandwidth_kernels.PER_WG * 3 + 17
    x = np.random.default_rng(0).integers(-4, 5, n_vec4 * 4).astype(f32)
    src, out = ctx.upload(x), ctx.buffer(16)
    run(ctx, lambda pb: bandwidth_kernels.stream_sum(pb, src, n_vec4, Act(out)))
    per = 4 * bandwidth_kernels.PER_WG
    want = np.array([x[i * per:(i + 1) * per].sum() for i in range(4)], f32)
    chk.equal("bandwidth", read_f32(ctx, out, 4), want)


def cases() -> list[Case]:
    """The bandwidth case."""
    return [Case("bandwidth", "stream sum", bandwidth_case, op="bandwidth")]
