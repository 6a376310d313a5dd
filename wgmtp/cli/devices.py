"""`wgmtp devices`: every adapter wgpu finds, what it offers, and which kill switches are set."""
from __future__ import annotations

import argparse
import json

from ..gpu.adapters import describe
from ..gpu.device import kill_switches


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
            ("max-compute-workgroup-storage-size", "wg storage"),
            ("max-compute-invocations-per-workgroup", "invocations"),
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
            t.add_row("subgroup sizes seen",
                      ", ".join(map(str, d["subgroup_sizes"])) if d["subgroup_sizes"] else "n/a (no subgroups)")
        if "in_use" in d:
            u = d["in_use"]
            t.add_row("wgmtp uses", f"subgroups {'on' if u['subgroups'] else 'off'}, "
                                    f"f16 KV {'on' if u['f16'] else 'off'}, "
                                    f"bindings split above {u['max_binding']:,} bytes")
        if "error" in d:
            t.add_row("[red]error[/]", d["error"])
        con.print(t)
    con.print("kill switches: " + (", ".join(f"{k}={v}" for k, v in ks.items()) if ks else "none set"))
    if not info:
        con.print("no adapter found")
        return 1
    return 0
