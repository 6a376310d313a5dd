"""GPU test helpers: every adapter wgpu finds, with the fallback variants (subgroups and f16 off)
where the adapter has those features, so both paths run on every CI machine."""
from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest

os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="xdg-"))

from wgmtp.gpu.device import list_adapters, open_context  # noqa: E402
from wgmtp.gpu.program import ProgramBuilder, Runner  # noqa: E402


def _compute_capable(index: int) -> str | None:
    """None if the adapter opens a device and builds a compute pipeline, else why not (e.g. the
    OpenGL 3.3 adapter NVIDIA's driver exposes to wgpu has no compute shaders)."""
    try:
        from wgmtp.gpu.shaders import pipelines
        ctx = open_context(index)
        pipelines(ctx).get("copy_row")
        return None
    except Exception as e:
        return str(e).splitlines()[0] if str(e) else type(e).__name__


def _variants() -> tuple[list[tuple[str, int, dict]], list[str]]:
    out, unusable = [], []
    try:
        adapters = list_adapters()
    except Exception as e:
        return out, [f"no adapters: {e}"]
    for a in adapters:
        why = _compute_capable(a.index)
        if why:
            unusable.append(f"{a.name}: cannot run compute shaders ({why})")
            continue
        tag = a.backend.lower()
        # both mat-vec layouts everywhere: the adapter's default, and the other one on a variant
        other = "tiled" if a.adapter_type == "CPU" else "rowwise"
        out.append((tag, a.index, {}))
        if "subgroup" in a.features or "shader-f16" in a.features:
            out.append((tag + "-nosg-nof16", a.index, {"subgroups": False, "f16": False, "matvec": other}))
            if "subgroup" in a.features:
                out.append((tag + "-" + other, a.index, {"matvec": other}))
    return out, unusable


VARIANTS, UNUSABLE = _variants()


def ctx_params():
    params = [pytest.param(v, id=v[0]) for v in VARIANTS]
    for why in UNUSABLE:   # reported, not silently dropped
        params.append(pytest.param(None, id="unusable", marks=pytest.mark.skip(reason=why)))
    if not params:
        params = [pytest.param(None, marks=pytest.mark.skip(reason="no WebGPU adapter on this machine"))]
    return params


@pytest.fixture(params=ctx_params())
def ctx(request):
    """A GPUContext per adapter variant (cached across tests)."""
    tag, index, opts = request.param
    return open_context(index, **opts)


def upload_f32(ctx, a) -> object:
    return ctx.upload(np.ascontiguousarray(a, np.float32))


def read_f32(ctx, buf, n, off=0) -> np.ndarray:
    return ctx.read_array(buf, np.float32, n, off)


def run(ctx, build) -> None:
    """build(pb) adds dispatches; the program is built and submitted once."""
    pb = ProgramBuilder(ctx, "test")
    build(pb)
    Runner(ctx).run([pb.build()])
