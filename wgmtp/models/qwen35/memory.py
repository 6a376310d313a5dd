"""What a qwen35 model costs in memory, from its config alone: known before anything is allocated,
so `wgmtp inspect` can say it and a load can refuse what cannot fit."""
from __future__ import annotations

from .config import ModelConfig


def state_bytes(c: ModelConfig, n_ctx: int, *, mtp: bool, n_max: int = 3, kv_bytes: int = 2, n_seq: int = 1) -> int:
    """KV caches + recurrent state of `n_seq` sequences (n_max + 1 snapshot planes with MTP)."""
    n_attn = sum(1 for i in range(c.n_layer) if not c.is_gdn[i]) + (1 if mtp else 0)
    kv = n_attn * 2 * n_ctx * c.n_head_kv * c.head_dim * kv_bytes
    planes = (n_max + 1) if mtp else 1
    n_gdn = sum(1 for i in range(c.n_layer) if c.is_gdn[i])
    gdn = n_gdn * planes * 4 * (c.ssm_dt_rank * c.head_v_dim * c.head_k_dim + (c.conv_kernel - 1) * c.conv_dim)
    return n_seq * (kv + gdn)
