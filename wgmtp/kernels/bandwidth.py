"""The adapter's streaming-read bandwidth, measured with a kernel that reads a buffer once
(shaders/bandwidth.wgsl): the roofline `wgmtp bench` compares decode against."""
from __future__ import annotations

import time

from ..gpu.device import GPUContext
from ..gpu.program import ProgramBuilder, Runner, pack, records
from . import Act

PER_WG = 4096      # vec4 words per workgroup (64 KiB)


@records("stream_sum")
def stream_sum(pb: ProgramBuilder, src, n_vec4: int, out: Act) -> int:
    """Partial sums of src (one per workgroup of PER_WG vec4s) into out; returns the workgroup
    count (twin: a numpy sum over the same ranges)."""
    n_wg = -(-n_vec4 // PER_WG)
    pb.add("bandwidth", [src, out.buffer], pack(n_vec4, PER_WG), n_wg, label="bandwidth")
    return n_wg


def measure(ctx: GPUContext, n_bytes: int = 256 << 20, reps: int = 5) -> dict:
    """GB/s of the best of `reps` timed reads of an n_bytes buffer (GPU timestamps when the
    adapter has them, else wall time of a submission + 4-byte readback)."""
    n_bytes = min(n_bytes, ctx.binding_limit, ctx.limits.get("max-buffer-size", n_bytes)) // 16 * 16
    src = ctx.buffer(n_bytes, label="bw_src")
    n_vec4 = n_bytes // 16
    out = Act(ctx.buffer(4 * (-(-n_vec4 // PER_WG)), label="bw_out"))
    pb = ProgramBuilder(ctx, "bandwidth")
    stream_sum(pb, src, n_vec4, out)
    prog = pb.build()
    run = Runner(ctx)
    from ..gpu.program import Readback
    best, how = float("inf"), "wall"
    for i in range(reps + 1):
        t0 = time.perf_counter()
        run.run([prog], reads=[Readback(out.buffer, 0, 4)], timed=run.can_time)
        dt = time.perf_counter() - t0
        if run.can_time and run.last_gpu_s and run.last_gpu_s[0] > 0:
            dt, how = run.last_gpu_s[0], "timestamps"
        if i:                      # the first run warms caches and compiles
            best = min(best, dt)
    return {"bytes": n_bytes, "seconds": best, "gb_s": n_bytes / best / 1e9, "timing": how}
