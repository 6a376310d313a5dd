"""bandwidth.wgsl: the streaming-read probe sums every range exactly once."""
from __future__ import annotations

import numpy as np
from gpu_util import ctx, read_f32, run  # noqa: F401

from wgmtp.kernels import Act, bandwidth


def test_stream_sum(ctx):
    n_vec4 = bandwidth.PER_WG * 3 + 17
    x = np.random.default_rng(0).integers(-4, 5, n_vec4 * 4).astype(np.float32)   # small ints: exact sums
    src = ctx.upload(x)
    out = ctx.buffer(4 * 4)
    n_wg = []
    run(ctx, lambda pb: n_wg.append(bandwidth.stream_sum(pb, src, n_vec4, Act(out))))
    got = read_f32(ctx, out, n_wg[0])
    ref = [x[i * 4 * bandwidth.PER_WG:(i + 1) * 4 * bandwidth.PER_WG].sum() for i in range(n_wg[0])]
    assert np.array_equal(got, np.array(ref, np.float32))


def test_measure_reports_bandwidth(ctx):
    r = bandwidth.measure(ctx, n_bytes=1 << 20, reps=2)
    assert r["gb_s"] > 0 and r["bytes"] == 1 << 20
