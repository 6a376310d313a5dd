"""The view's header: which model, on which adapter, with which settings and kill switches. Read
once when the view opens (the same facts `wgmtp run -v` and `wgmtp devices` print)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..gpu.device import kill_switches


@dataclass
class RunInfo:
    model: str          # file name, arch and size
    adapter: str
    settings: str       # the decoding settings: spec types, n_max, temperature
    kill_switches: str
    gpu_timing: str     # where the per-round GPU split comes from, or why there is none

    def lines(self) -> list[str]:
        return [f"model: {self.model}", f"adapter: {self.adapter}", f"decoding: {self.settings}",
                f"kill switches: {self.kill_switches}"]


def run_info(model: Any, settings: str) -> RunInfo:
    """What the header shows for a loaded api.Model or api.EngineModel."""
    gm, c = model.gguf, model.config
    size = os.path.getsize(gm.path) / 2**20 if os.path.exists(gm.path) else 0.0
    desc = (f"{os.path.basename(gm.path)} ({c.arch}, {c.n_layer} layers, {c.n_embd} wide, "
            f"{'MoE, ' if c.is_moe else ''}{size:.1f} MiB{', MTP head' if gm.has_mtp else ''})")
    ks = kill_switches()
    be = model.backend
    if getattr(model, "engine", None) is not None:
        timing = "batching engine: its steps are not GPU-timed, so rounds show wall time only"
    elif not hasattr(be, "runner"):
        timing = "the numpy reference: wall time only"
    elif getattr(be, "profile", False):
        timing = "timestamp queries around the draft and verify programs of each round"
    else:
        timing = "no timestamp queries on this adapter (or WGMTP_CHECK is on): wall time only"
    return RunInfo(desc, model.device_name, settings,
                   ", ".join(f"{k}={v}" for k, v in ks.items()) if ks else "none set", timing)
