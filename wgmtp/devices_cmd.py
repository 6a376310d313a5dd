"""`wgmtp devices`: every adapter wgpu finds, what it offers, and which kill switches are set."""
from __future__ import annotations

import argparse
import json
import os

from .gpu.device import kill_switches, list_adapters, open_context


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
    from .gpu.program import ProgramBuilder, Runner
    import numpy as np
    out = ctx.buffer(256 * 4)
    pb = ProgramBuilder(ctx, "probe")
    pb.add("probe_subgroup", [out], None, (1, 1, 1))
    Runner(ctx).run([pb.build()])
    v = ctx.read_array(out, np.uint32, 256)
    return sorted({int(x) for x in v if x})


def add_parser(sub) -> None:
    p = sub.add_parser("devices", help="list WebGPU adapters, their limits and features")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--no-probe", action="store_true", help="do not open a device on each adapter")
    p.set_defaults(fn=cmd_devices)


def cmd_devices(a: argparse.Namespace) -> int:
    info = describe(probe=not a.no_probe)
    ks = kill_switches()
    if a.json:
        print(json.dumps({"adapters": info, "kill_switches": ks}, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table
    con = Console()
    keys = [("max-storage-buffer-binding-size", "max binding"), ("max-buffer-size", "max buffer"),
            ("max-compute-workgroup-storage-size", "wg storage"), ("max-compute-invocations-per-workgroup", "invocations"),
            ("max-storage-buffers-per-shader-stage", "storage bufs/stage")]
    for d in info:
        t = Table(title=f"[{d['index']}] {d['device']}", show_header=False, title_justify="left")
        t.add_row("backend", f"{d['backend']} ({d['type']})")
        t.add_row("vendor / driver", f"{d['vendor'] or '-'} / {d['driver'] or '-'}")
        for k, label in keys:
            if k in d["limits"]:
                t.add_row(label, f"{d['limits'][k]:,}")
        t.add_row("features", ", ".join(d["features"]) or "-")
        if "subgroup_sizes" in d:
            t.add_row("subgroup sizes seen", ", ".join(map(str, d["subgroup_sizes"])) if d["subgroup_sizes"] else "n/a (no subgroups)")
        if "in_use" in d:
            u = d["in_use"]
            t.add_row("wgmtp uses", f"subgroups {'on' if u['subgroups'] else 'off'}, f16 KV {'on' if u['f16'] else 'off'}, "
                                    f"bindings split above {u['max_binding']:,} bytes")
        if "error" in d:
            t.add_row("[red]error[/]", d["error"])
        con.print(t)
    con.print("kill switches: " + (", ".join(f"{k}={v}" for k, v in ks.items()) if ks else "none set"))
    if not info:
        con.print("no adapter found")
        return 1
    return 0
