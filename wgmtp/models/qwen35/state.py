"""The state of qwen35 sequences on the GPU, indexed by sequence slot: attention KV caches and
the recurrent (conv + GDN) state with its snapshot planes.

Its size is known before anything is allocated (memory.state_bytes).

Slots: every buffer holds `n_seq` slots (`-np`). Slot s owns KV rows s * slot_rows .. of every
cache (slot_rows = n_ctx rounded up to whole attention splits when there are several slots) and
the planes s * n_planes .. of every recurrent buffer, so a sequence's state is a fixed region that
never moves. Each slot also has a recurrent checkpoint (a copy of its plane 0 taken at the end of
a prompt, for prefix reuse) and rows of `cand_hidden`: the final hiddens of its last batch, one of
which is the MTP head's pending hidden (the row the host names in the step record).

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


def slot_rows(n_ctx: int, n_seq: int) -> int:
    """KV rows per slot: n_ctx, rounded up to whole attention splits when there are several slots
    (every slot's splits then sit at the same positions relative to its first row)."""
    split = attention_kernels.SPLIT
    return n_ctx if n_seq <= 1 else -(-n_ctx // split) * split


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
    ckpt_conv: dict[int, Any] = field(default_factory=dict)   # [n_seq, conv plane] checkpoints
    ckpt_ssm: dict[int, Any] = field(default_factory=dict)    # [n_seq, ssm plane]
    cand_hidden: Any = None        # [n_seq * cand_rows + 1, E] f32; the last row stays zero
    cand_rows: int = 0             # rows per slot (n_draft_max + 1)
    ckpt_hidden: Any = None        # [n_seq, E] the pending hidden at each slot's checkpoint

    @classmethod
    def allocate(cls, ctx: GPUContext, cfg: ModelConfig, n_ctx: int, n_seq: int = 1,
                 cand_rows: int = 16, checkpoints: bool = False) -> "GPUState":
        st = cls(ctx, cfg, n_ctx, n_seq)
        rows = slot_rows(n_ctx, n_seq)
        st.caches = {i: attention_kernels.kv_cache(ctx, n_seq * rows, cfg.n_head_kv, cfg.head_dim,
                                                   slot_rows=rows, label=f"kv{i}")
                     for i in range(cfg.n_layer) if not cfg.is_gdn[i]}
        st.cand_rows = cand_rows
        st.cand_hidden = ctx.buffer((n_seq * cand_rows + 1) * cfg.n_embd * 4, label="cand_hidden")
        if checkpoints:
            st.ckpt_hidden = ctx.buffer(n_seq * cfg.n_embd * 4, label="ckpt_hidden")
        for i in range(cfg.n_layer):
            if cfg.is_gdn[i] and checkpoints:
                st.ckpt_conv[i] = ctx.buffer(n_seq * st.conv_plane * 4, label=f"ckpt_conv{i}")
                st.ckpt_ssm[i] = ctx.buffer(n_seq * st.ssm_plane * 4, label=f"ckpt_ssm{i}")
        return st

    @property
    def slot_rows(self) -> int:
        return slot_rows(self.n_ctx, self.n_seq)

    @property
    def zero_row(self) -> int:
        """The row of cand_hidden that is always zero: the pending hidden of a fresh sequence."""
        return self.n_seq * self.cand_rows

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
        return slot * self.slot_rows

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
            rows = self.slot_rows
            self.mtp_cache = attention_kernels.kv_cache(ctx, self.n_seq * rows, c.n_head_kv, c.head_dim,
                                                        slot_rows=rows, label="kv_mtp")
        return changed

    def zero(self) -> None:
        """Fresh sequences: zero the recurrent state (KV rows are only read below the position)."""
        enc = self.ctx.device.create_command_encoder()
        for b in list(self.conv.values()) + list(self.ssm.values()):
            enc.clear_buffer(b)
        self.ctx.queue.submit([enc.finish()])

    def zero_slot(self, slot: int) -> None:
        """A fresh sequence in `slot`: zero its recurrent planes (the other slots keep theirs)."""
        enc = self.ctx.device.create_command_encoder()
        for layer in self.conv:
            for buf, plane in ((self.conv[layer], self.conv_plane), (self.ssm[layer], self.ssm_plane)):
                n = self.n_planes * plane * 4
                enc.clear_buffer(buf, slot * n, n)
        self.ctx.queue.submit([enc.finish()])

    def checkpoint(self, slot: int, hidden_row: int, *, restore: bool = False) -> None:
        """Copy `slot`'s plane 0 and its pending hidden (cand_hidden row `hidden_row`) to its
        checkpoint (restore: back), the state at the end of a prompt that a later request sharing
        that prefix continues from (ARCHITECTURE.md, "Slots")."""
        enc = self.ctx.device.create_command_encoder()
        E = self.cfg.n_embd * 4
        if restore:
            enc.copy_buffer_to_buffer(self.ckpt_hidden, slot * E, self.cand_hidden, hidden_row * E, E)
        else:
            enc.copy_buffer_to_buffer(self.cand_hidden, hidden_row * E, self.ckpt_hidden, slot * E, E)
        self.copy_planes(enc, slot, restore=restore)
        self.ctx.queue.submit([enc.finish()])

    def copy_planes(self, enc: Any, slot: int, *, restore: bool = False) -> None:
        """Encode into `enc` the copies of `slot`'s plane 0 of every recurrent buffer to its
        checkpoint (restore: back), without the pending hidden, so that a caller orders them
        between the compute passes of one submission: a draft model saves its committed state
        before a draft chain and puts it back after (models/qwen35/draft_model.py)."""
        for layer in self.conv:
            for buf, ck, plane in ((self.conv[layer], self.ckpt_conv[layer], self.conv_plane),
                                   (self.ssm[layer], self.ckpt_ssm[layer], self.ssm_plane)):
                live, saved = slot * self.n_planes * plane * 4, slot * plane * 4
                if restore:
                    enc.copy_buffer_to_buffer(ck, saved, buf, live, plane * 4)
                else:
                    enc.copy_buffer_to_buffer(buf, live, ck, saved, plane * 4)

    def nbytes(self) -> int:
        n = sum(b.size for b in list(self.conv.values()) + list(self.ssm.values())
                + list(self.ckpt_conv.values()) + list(self.ckpt_ssm.values()))
        n += sum(b.size for b in (self.cand_hidden, self.ckpt_hidden) if b is not None)
        for cache in list(self.caches.values()) + ([self.mtp_cache] if self.mtp_cache else []):
            for p in cache.parts:
                n += p.k.size + (p.v.size if p.v is not p.k else 0)
        return n
