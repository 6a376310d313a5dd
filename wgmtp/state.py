"""Per-sequence state on the GPU: attention KV caches and the recurrent (conv + GDN) state with
its snapshot planes.

Rollback never copies: after a verify batch of n+1 tokens with k accepted drafts, the next batch
simply starts from plane n - k (the `src_slot` of its step record); the KV caches are truncated by
position, since attention only reads rows below each query's position.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .gguf_file import ModelConfig
from .gpu.device import GPUContext
from .kernels import attention as K_attn, gdn as K_gdn


@dataclass
class GPUState:
    ctx: GPUContext
    cfg: ModelConfig
    n_ctx: int
    caches: dict[int, K_attn.KVCache] = field(default_factory=dict)   # trunk attention layers
    mtp_cache: K_attn.KVCache | None = None
    n_slots: int = 0
    conv: dict[int, Any] = field(default_factory=dict)   # [n_slots, conv_dim, Kc-1] f32 per GDN layer
    ssm: dict[int, Any] = field(default_factory=dict)    # [n_slots, Hv, Dv, Dk] f32 per GDN layer

    @classmethod
    def allocate(cls, ctx: GPUContext, cfg: ModelConfig, n_ctx: int) -> "GPUState":
        st = cls(ctx, cfg, n_ctx)
        st.caches = {i: K_attn.kv_cache(ctx, n_ctx, cfg.n_head_kv, cfg.head_dim, label=f"kv{i}")
                     for i in range(cfg.n_layer) if not cfg.is_gdn[i]}
        return st

    def ensure(self, n_slots: int, mtp: bool) -> bool:
        """Recurrent state with `n_slots` planes (n_max + 1 for speculation) and, with `mtp`, the
        MTP layer's cache. True when buffers were (re)made, so programs must be rebuilt."""
        c, ctx = self.cfg, self.ctx
        changed = False
        if n_slots != self.n_slots:
            self.conv, self.ssm = {}, {}
            plane = c.ssm_dt_rank * c.head_v_dim * c.head_k_dim
            for i in range(c.n_layer):
                if c.is_gdn[i]:
                    self.conv[i] = ctx.buffer(n_slots * K_gdn.conv_plane(c.conv_dim, c.conv_kernel) * 4, label=f"conv{i}")
                    self.ssm[i] = ctx.buffer(n_slots * plane * 4, label=f"ssm{i}")
            self.n_slots = n_slots
            changed = True
        if mtp and self.mtp_cache is None:
            self.mtp_cache = K_attn.kv_cache(ctx, self.n_ctx, c.n_head_kv, c.head_dim, label="kv_mtp")
        return changed

    def zero(self) -> None:
        """A fresh sequence: zero the recurrent state (KV rows are only read below the position)."""
        enc = self.ctx.device.create_command_encoder()
        for b in list(self.conv.values()) + list(self.ssm.values()):
            enc.clear_buffer(b)
        self.ctx.queue.submit([enc.finish()])

    def nbytes(self) -> int:
        n = sum(b.size for b in list(self.conv.values()) + list(self.ssm.values()))
        for cache in list(self.caches.values()) + ([self.mtp_cache] if self.mtp_cache else []):
            for p in cache.parts:
                n += p.k.size + (p.v.size if p.v is not p.k else 0)
        return n
