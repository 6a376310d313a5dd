"""Per-sequence state on the GPU: attention KV caches and the recurrent (conv + GDN) state with
its snapshot planes, plus the host's bookkeeping of where the sequence stands.

Rollback never copies: after a verify batch of n+1 tokens with k accepted drafts, the next batch
simply starts from plane n - k (the `src_slot` of its step record); the KV caches are truncated by
position (n_past), since attention only reads rows below each query's position.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ContextOverflowError, DeviceError
from .gguf_file import ModelConfig
from .gpu.device import GPUContext


@dataclass
class LayerKV:
    k: Any
    v: Any


@dataclass
class GPUState:
    ctx: GPUContext
    cfg: ModelConfig
    n_ctx: int
    n_slots: int
    mtp: bool
    kv_f16: bool
    kv: dict[int, LayerKV] = field(default_factory=dict)
    conv: dict[int, Any] = field(default_factory=dict)
    ssm: dict[int, Any] = field(default_factory=dict)
    mtp_kv: LayerKV | None = None
    n_past: int = 0          # tokens in the trunk's caches/state
    src_slot: int = 0        # plane the next batch starts from

    @classmethod
    def allocate(cls, ctx: GPUContext, cfg: ModelConfig, n_ctx: int, n_slots: int, mtp: bool) -> "GPUState":
        st = cls(ctx, cfg, n_ctx, n_slots, mtp, ctx.f16)
        kv_bytes = n_ctx * cfg.n_head_kv * cfg.head_dim * (2 if ctx.f16 else 4)
        if kv_bytes > ctx.max_binding:
            raise ContextOverflowError(
                f"context {n_ctx} needs {kv_bytes} bytes per KV cache, more than the adapter's binding "
                f"limit {ctx.max_binding}; lower -c to at most {ctx.max_binding * n_ctx // kv_bytes}")
        for i in range(cfg.n_layer):
            if cfg.is_gdn[i]:
                st.conv[i] = ctx.buffer(n_slots * cfg.conv_dim * (cfg.conv_kernel - 1) * 4, label=f"conv{i}")
                ssm_bytes = n_slots * cfg.ssm_dt_rank * cfg.head_v_dim * cfg.head_k_dim * 4
                if ssm_bytes > ctx.max_binding:
                    raise DeviceError(f"GDN state of layer {i} ({ssm_bytes} bytes with {n_slots} snapshot planes) "
                                      f"exceeds the binding limit {ctx.max_binding}; lower --spec-draft-n-max")
                st.ssm[i] = ctx.buffer(ssm_bytes, label=f"ssm{i}")
            else:
                st.kv[i] = LayerKV(ctx.buffer(kv_bytes, label=f"k{i}"), ctx.buffer(kv_bytes, label=f"v{i}"))
        if mtp:
            st.mtp_kv = LayerKV(ctx.buffer(kv_bytes, label="k_mtp"), ctx.buffer(kv_bytes, label="v_mtp"))
        return st

    def buffers(self) -> list[Any]:
        out = [b for kv in self.kv.values() for b in (kv.k, kv.v)]
        out += list(self.conv.values()) + list(self.ssm.values())
        if self.mtp_kv:
            out += [self.mtp_kv.k, self.mtp_kv.v]
        return out

    def reset(self) -> None:
        """A fresh sequence: zero the recurrent state (KV rows are only read below n_past)."""
        enc = self.ctx.device.create_command_encoder()
        for b in list(self.conv.values()) + list(self.ssm.values()):
            enc.clear_buffer(b)
        self.ctx.queue.submit([enc.finish()])
        self.n_past = 0
        self.src_slot = 0

    def nbytes(self) -> int:
        return sum(b.size for b in self.buffers())

    def read_plane(self, layer: int, which: str, plane: int) -> np.ndarray:
        """A snapshot plane of a GDN layer's state, for tests and `wgmtp check`."""
        c = self.cfg
        if which == "ssm":
            n = c.ssm_dt_rank * c.head_v_dim * c.head_k_dim
            a = self.ctx.read_array(self.ssm[layer], np.float32, n, plane * n)
            return a.reshape(c.ssm_dt_rank, c.head_v_dim, c.head_k_dim)
        n = c.conv_dim * (c.conv_kernel - 1)
        return self.ctx.read_array(self.conv[layer], np.float32, n, plane * n).reshape(c.conv_dim, c.conv_kernel - 1)

    def read_kv(self, layer: int | None, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The first n cache rows of an attention layer (None = the MTP layer) as f32."""
        kv = self.mtp_kv if layer is None else self.kv[layer]
        c = self.cfg
        cnt = n * c.n_head_kv * c.head_dim
        dt = np.float16 if self.kv_f16 else np.float32
        k = self.ctx.read_array(kv.k, dt, cnt).astype(np.float32)
        v = self.ctx.read_array(kv.v, dt, cnt).astype(np.float32)
        return k.reshape(n, c.n_head_kv, c.head_dim), v.reshape(n, c.n_head_kv, c.head_dim)
