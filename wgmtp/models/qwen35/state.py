"""The state of qwen35 sequences on the GPU, indexed by sequence slot: attention KV caches and
the recurrent (conv + GDN) state with its snapshot planes.

Its size is known before anything is allocated (memory.state_bytes).

Slots: every buffer holds `n_seq` slots (one here; issue "many sequences" raises it). Slot s owns
KV rows s * n_ctx .. (s + 1) * n_ctx - 1 of every cache and the planes s * n_planes .. of every
recurrent buffer, so a sequence's state is a fixed region that never moves.

Rollback never copies: after a verify batch of n+1 tokens with k accepted drafts, the next batch
simply starts from plane n - k (the `src_slot` word of its step record); the KV caches are
truncated by position, since attention only reads rows below each query's position.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...gpu.device import GPUContext
from ...kernels import Act
from ...kernels import attention as attention_kernels
from ...kernels import gdn as gdn_kernels
from .config import ModelConfig


@dataclass
class GPUState:
    ctx: GPUContext
    cfg: ModelConfig
    n_ctx: int                                                        # positions per slot
    n_seq: int = 1                                                    # sequence slots
    caches: dict[int, attention_kernels.KVCache] = field(default_factory=dict)   # trunk attention layers
    mtp_cache: attention_kernels.KVCache | None = None
    n_planes: int = 0                                                 # snapshot planes per slot
    conv: dict[int, Any] = field(default_factory=dict)   # [n_seq, n_planes, conv_dim, Kc-1] f32 per GDN layer
    ssm: dict[int, Any] = field(default_factory=dict)    # [n_seq, n_planes, Hv, Dv, Dk] f32 per GDN layer

    @classmethod
    def allocate(cls, ctx: GPUContext, cfg: ModelConfig, n_ctx: int, n_seq: int = 1) -> "GPUState":
        st = cls(ctx, cfg, n_ctx, n_seq)
        st.caches = {i: attention_kernels.kv_cache(ctx, n_seq * n_ctx, cfg.n_head_kv, cfg.head_dim, label=f"kv{i}")
                     for i in range(cfg.n_layer) if not cfg.is_gdn[i]}
        return st

    @property
    def conv_plane(self) -> int:
        return gdn_kernels.conv_plane(self.cfg.conv_dim, self.cfg.conv_kernel)

    @property
    def ssm_plane(self) -> int:
        c = self.cfg
        return c.ssm_dt_rank * c.head_v_dim * c.head_k_dim

    def conv_at(self, layer: int, slot: int) -> Act:
        """Plane 0 of `slot`'s conv state in GDN layer `layer`."""
        return Act(self.conv[layer], slot * self.n_planes * self.conv_plane)

    def ssm_at(self, layer: int, slot: int) -> Act:
        """Plane 0 of `slot`'s delta-rule state in GDN layer `layer`."""
        return Act(self.ssm[layer], slot * self.n_planes * self.ssm_plane)

    def kv_row0(self, slot: int) -> int:
        """The first KV row of `slot` in every cache."""
        return slot * self.n_ctx

    def ensure(self, n_planes: int, mtp: bool) -> bool:
        """Recurrent state with `n_planes` planes per slot (n_max + 1 for speculation) and, with
        `mtp`, the MTP layer's cache. True when buffers were (re)made, so programs must be rebuilt."""
        c, ctx = self.cfg, self.ctx
        changed = False
        if n_planes != self.n_planes:
            self.conv, self.ssm = {}, {}
            for i in range(c.n_layer):
                if c.is_gdn[i]:
                    self.conv[i] = ctx.buffer(self.n_seq * n_planes * self.conv_plane * 4, label=f"conv{i}")
                    self.ssm[i] = ctx.buffer(self.n_seq * n_planes * self.ssm_plane * 4, label=f"ssm{i}")
            self.n_planes = n_planes
            changed = True
        if mtp and self.mtp_cache is None:
            self.mtp_cache = attention_kernels.kv_cache(ctx, self.n_seq * self.n_ctx, c.n_head_kv, c.head_dim,
                                                        label="kv_mtp")
        return changed

    def zero(self) -> None:
        """Fresh sequences: zero the recurrent state (KV rows are only read below the position)."""
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
