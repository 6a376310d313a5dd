"""The bandwidth case (kernels/bandwidth.py): the streaming-read probe of `wgmtp bench`."""
from __future__ import annotations

import numpy as np

from ...kernels import Act
from .common import Case, Check, read_f32, run

f32 = np.float32


def bandwidth_case(ctx, chk: Check) -> None:
    """The streaming-read probe of `wgmtp bench` sums every range exactly (small integers)."""
    from ...kernels import bandwidth as KB
    n_vec4 = KB.PER_WG * 3 + 17
    x = np.random.default_rng(0).integers(-4, 5, n_vec4 * 4).astype(f32)
    src, out = ctx.upload(x), ctx.buffer(16)
    run(ctx, lambda pb: KB.stream_sum(pb, src, n_vec4, Act(out)))
    want = np.array([x[i * 4 * KB.PER_WG:(i + 1) * 4 * KB.PER_WG].sum() for i in range(4)], f32)
    chk.equal("bandwidth", read_f32(ctx, out, 4), want)


def cases() -> list[Case]:
    """The bandwidth case."""
    return [Case("bandwidth", "stream sum", bandwidth_case, op="bandwidth")]
