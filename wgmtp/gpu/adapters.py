"""Adapter facts as plain data: what `wgmtp devices` prints and `wgmtp check --json` records."""
from __future__ import annotations

from .device import list_adapters, open_context


def describe(probe: bool = True) -> list[dict]:
    """Adapter facts as plain data (also written into `wgmtp check --json`)."""
    out = []
    for a in list_adapters():
        d = {
            "index": a.index, "backend": a.backend, "type": a.adapter_type, "vendor": a.vendor,
            "device": a.device, "driver": a.driver,
            "features": sorted(f for f in a.features if f in ("shader-f16", "subgroup", "subgroup-barrier",
                                                               "timestamp-query", "timestamp-query-inside-passes",
                                                               "immediates", "shader-i16", "shader-f64")),
            "limits": a.limits,
        }
        if probe:
            try:
                ctx = open_context(a.index)
                d["subgroup_sizes"] = probe_subgroup_sizes(ctx)
                d["in_use"] = {"subgroups": ctx.subgroups, "f16": ctx.f16, "max_binding": ctx.max_binding}
            except Exception as e:  # a broken driver is a finding, not a crash
                d["error"] = str(e).splitlines()[0]
        out.append(d)
    return out


def probe_subgroup_sizes(ctx) -> list[int] | None:
    """The subgroup sizes a 256-thread compute pipeline actually runs with on this device
    (wgpu-py does not expose subgroupMin/MaxSize; the kernels never assume one)."""
    if not ctx.subgroups:
        return None
    import numpy as np

    from .program import ProgramBuilder, Runner
    out = ctx.buffer(256 * 4)
    pb = ProgramBuilder(ctx, "probe")
    pb.add("probe_subgroup", [out], None, (1, 1, 1))
    Runner(ctx).run([pb.build()])
    v = ctx.read_array(out, np.uint32, 256)
    return sorted({int(x) for x in v if x})
