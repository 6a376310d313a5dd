"""Adapter choice and the kill switches (README, "Run"): each switch changes what a context uses.
`wgmtp devices` probes subgroup sizes with shaders/probe_subgroup.wgsl (test_devices_lists_adapters)."""
from __future__ import annotations

import numpy as np
import pytest
from gpu_util import VARIANTS

from wgmtp.errors import DeviceError
from wgmtp.gpu import device as D

pytestmark = pytest.mark.skipif(not VARIANTS, reason="no WebGPU adapter on this machine")


def test_auto_picks_a_listed_adapter_and_indices_are_stable():
    ads = D.list_adapters()
    assert [a.index for a in ads] == list(range(len(ads)))
    assert D.select_adapter().index == ads[0].index
    assert D.select_adapter(ads[-1].index).index == ads[-1].index


def test_backend_and_device_switches(monkeypatch):
    backends = {a.backend for a in D.list_adapters()}
    for name, b in (("vulkan", "Vulkan"), ("gl", "OpenGL")):
        if b in backends:
            monkeypatch.setenv("WGMTP_BACKEND", name)
            assert D.select_adapter().backend == b
    monkeypatch.setenv("WGMTP_BACKEND", "dx11")
    with pytest.raises(DeviceError, match="WGMTP_BACKEND"):
        D.select_adapter()
    monkeypatch.delenv("WGMTP_BACKEND")
    last = D.list_adapters()[-1]
    monkeypatch.setenv("WGMTP_DEVICE", str(last.index))
    assert D.select_adapter().index == last.index
    monkeypatch.setenv("WGMTP_DEVICE", last.backend.lower())
    assert D.select_adapter().backend == last.backend


def test_device_selection_errors():
    with pytest.raises(DeviceError, match="no adapter with that index"):
        D.select_adapter(99)
    with pytest.raises(DeviceError, match="matches no adapter"):
        D.select_adapter("no-such-gpu")


def test_disable_switches_and_binding_limit(monkeypatch):
    a = next((x for x in D.list_adapters() if "subgroup" in x.features and "shader-f16" in x.features), None)
    if a is None:
        pytest.skip("no adapter here has both subgroup and shader-f16 to switch off")
    assert D.open_context(a.index).subgroups and D.open_context(a.index).f16
    monkeypatch.setenv("WGMTP_DISABLE_SUBGROUPS", "1")
    monkeypatch.setenv("WGMTP_DISABLE_F16", "1")
    monkeypatch.setenv("WGMTP_MAX_BINDING_BYTES", "4096")
    ctx = D.open_context(a.index)
    assert not ctx.subgroups and not ctx.f16 and ctx.max_binding == 4096
    assert "subgroup" not in ctx.features and "shader-f16" not in ctx.features
    assert D.kill_switches() == {"WGMTP_DISABLE_SUBGROUPS": "1", "WGMTP_DISABLE_F16": "1",
                                 "WGMTP_MAX_BINDING_BYTES": "4096"}
    for bad in ("lots", "0", "-1", "100"):     # none may be ignored silently
        monkeypatch.setenv("WGMTP_MAX_BINDING_BYTES", bad)
        with pytest.raises(DeviceError, match=f"WGMTP_MAX_BINDING_BYTES='{bad}'"):
            D.open_context(a.index)


def test_model_with_every_weight_split(synth, monkeypatch):
    """WGMTP_MAX_BINDING_BYTES forces every weight (and KV cache) into many bindings: the model
    still matches the reference."""
    from wgmtp import tolerances as tol
    from wgmtp.api import load
    from wgmtp.models.qwen35 import GGUFModel
    from wgmtp.reference.backend import RefBackend
    monkeypatch.setenv("WGMTP_MAX_BINDING_BYTES", "2048")
    path = synth(wtype="Q8_0", seed=21)
    m = load(path, n_ctx=256)
    assert m.backend.ctx.max_binding == 2048
    assert max(len(t.parts) for t in m.backend.model.w.values()) > 4
    toks = list(np.random.default_rng(0).integers(0, m.config.n_vocab, 20))
    lg = m.logits(toks)
    lr = RefBackend(GGUFModel(path), kv_f16=m.backend.ctx.f16).logits(toks)
    assert np.abs(lg - lr).max() <= tol.model_logits_tol(m.config, lr)


@pytest.mark.parametrize("fuse", ["all", "none", "add,glu"])
def test_fuse_switch(synth, monkeypatch, fuse):
    """WGMTP_FUSE picks the mat-vec fusions: each one removes its dispatches from a decode step
    (norm: the norm before a projection; add: the residual add, else folded into the next norm as
    add_rmsnorm; glu: the SwiGLU dispatch), and every choice matches the reference. A bad value
    is a one-line error."""
    from collections import Counter

    from wgmtp import tolerances as tol
    from wgmtp.api import load
    from wgmtp.kernels import linear
    from wgmtp.models.qwen35 import GGUFModel
    from wgmtp.reference.backend import RefBackend
    monkeypatch.setenv("WGMTP_FUSE", fuse)
    path = synth(wtype="Q8_0", seed=22)
    m = load(path, n_ctx=256)
    gpu, L = m.backend.model, m.config.n_layer
    on = set() if fuse == "none" else set(linear.FUSIONS) if fuse == "all" else set(fuse.split(","))
    assert gpu.fuse == on
    toks = list(np.random.default_rng(0).integers(0, m.config.n_vocab, 12))
    lg = m.logits(toks)
    n = Counter(d.label for d in gpu.logits_only(1).dispatches)
    norms = 1 if "norm" in on else 2 * L + 1            # output_norm is always a dispatch
    assert n["rmsnorm"] + n["add_rmsnorm"] == norms, n
    assert n["add_rmsnorm"] == (0 if "add" in on else norms - 1), n
    assert sum(v for k, v in n.items() if "swiglu" in k) == (0 if "glu" in on else L), n
    lr = RefBackend(GGUFModel(path), kv_f16=m.backend.ctx.f16).logits(toks)
    assert np.abs(lg - lr).max() <= tol.model_logits_tol(m.config, lr)
    monkeypatch.setenv("WGMTP_FUSE", "norm,fast")
    with pytest.raises(DeviceError, match="WGMTP_FUSE"):
        linear.fusions(m.backend.ctx)
