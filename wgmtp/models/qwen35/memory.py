"""What a qwen35 model costs in memory, from its config alone: known before anything is allocated,
so `wgmtp inspect` can say it and a load can refuse what cannot fit."""
from __future__ import annotations

from ...kernels.attention import SPLIT
from .config import ModelConfig


def state_bytes(c: ModelConfig, n_ctx: int, *, mtp: bool, n_max: int = 3, kv_bytes: int = 2, n_seq: int = 1,
                checkpoints: bool = False, planes: int | None = None) -> int:
    """KV caches + recurrent state of `n_seq` sequences (n_max + 1 snapshot planes with MTP; with
    several sequences, whole attention splits per slot), with `checkpoints` one recurrent
    checkpoint per sequence (prefix reuse). `planes` overrides the snapshot planes (a host drafter
    rolls back too, MTP or not)."""
    rows = n_ctx if n_seq <= 1 else -(-n_ctx // SPLIT) * SPLIT
    n_attn = sum(1 for i in range(c.n_layer) if not c.is_gdn[i]) + (1 if mtp else 0)
    kv = n_attn * 2 * rows * c.n_head_kv * c.head_dim * kv_bytes
    planes = (planes or ((n_max + 1) if mtp else 1)) + (1 if checkpoints else 0)
    n_gdn = sum(1 for i in range(c.n_layer) if c.is_gdn[i])
    gdn = n_gdn * planes * 4 * (c.ssm_dt_rank * c.head_v_dim * c.head_k_dim + (c.conv_kernel - 1) * c.conv_dim)
    return n_seq * (kv + gdn)


def long_keep_bytes(c: ModelConfig, t_max: int) -> int:
    """A long round's kept GDN in-projections (program.long_keep): t_max rows of every GDN layer,
    one set for the model (each long round of a submission reruns before the next one starts)."""
    n_gdn = sum(1 for i in range(c.n_layer) if c.is_gdn[i])
    return n_gdn * t_max * 4 * (c.conv_dim + c.value_dim + 2 * c.ssm_dt_rank)
