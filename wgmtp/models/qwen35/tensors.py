"""The tensors a qwen35 file must hold, with their GGUF-order shapes, and which of them the GPU
stacks into one weight (projections that read the same input: one mat-vec dispatch)."""
from __future__ import annotations

from .config import ModelConfig


def _attn_tensors(c: ModelConfig, i: int) -> dict[str, tuple[int, ...]]:
    E, H, Hkv, D = c.n_embd, c.n_head, c.n_head_kv, c.head_dim
    return {
        f"blk.{i}.attn_norm.weight": (E,),
        f"blk.{i}.attn_q.weight": (E, 2 * H * D),
        f"blk.{i}.attn_k.weight": (E, Hkv * D),
        f"blk.{i}.attn_v.weight": (E, Hkv * D),
        f"blk.{i}.attn_q_norm.weight": (D,),
        f"blk.{i}.attn_k_norm.weight": (D,),
        f"blk.{i}.attn_output.weight": (H * D, E),
        f"blk.{i}.post_attention_norm.weight": (E,),
    }


def _gdn_tensors(c: ModelConfig, i: int) -> dict[str, tuple[int, ...]]:
    E, Hv = c.n_embd, c.ssm_dt_rank
    return {
        f"blk.{i}.attn_norm.weight": (E,),
        f"blk.{i}.attn_qkv.weight": (E, c.conv_dim),
        f"blk.{i}.attn_gate.weight": (E, c.value_dim),
        f"blk.{i}.ssm_conv1d.weight": (c.conv_kernel, c.conv_dim),
        f"blk.{i}.ssm_dt.bias": (Hv,),
        f"blk.{i}.ssm_a": (Hv,),
        f"blk.{i}.ssm_beta.weight": (E, Hv),
        f"blk.{i}.ssm_alpha.weight": (E, Hv),
        f"blk.{i}.ssm_norm.weight": (c.head_v_dim,),
        f"blk.{i}.ssm_out.weight": (c.value_dim, E),
        f"blk.{i}.post_attention_norm.weight": (E,),
    }


def _ffn_tensors(c: ModelConfig, i: int, present: set[str] | None = None) -> dict[str, tuple[int, ...]]:
    """Dense FFN, or the MoE FFN (router, experts -- separate gate/up or fused gate_up -- and the
    shared expert with its scalar gate, stored {E} or {E, 1})."""
    E, F = c.n_embd, c.n_ff
    p = f"blk.{i}."
    if not c.is_moe:
        return {p + "ffn_gate.weight": (E, F), p + "ffn_up.weight": (E, F), p + "ffn_down.weight": (F, E)}
    NE, Fe, Fs = c.n_expert, c.n_ff_exp, c.n_ff_shexp
    out = {p + "ffn_gate_inp.weight": (E, NE), p + "ffn_down_exps.weight": (Fe, E, NE)}
    if present is not None and p + "ffn_gate_up_exps.weight" in present:
        out[p + "ffn_gate_up_exps.weight"] = (E, 2 * Fe, NE)
    else:
        out[p + "ffn_gate_exps.weight"] = (E, Fe, NE)
        out[p + "ffn_up_exps.weight"] = (E, Fe, NE)
    if Fs:
        out.update({p + "ffn_gate_inp_shexp.weight": (E,), p + "ffn_gate_shexp.weight": (E, Fs),
                    p + "ffn_up_shexp.weight": (E, Fs), p + "ffn_down_shexp.weight": (Fs, E)})
    return out


def trunk_tensor_shapes(c: ModelConfig, present: set[str] | None = None) -> dict[str, tuple[int, ...]]:
    """Every tensor the trunk needs, with its GGUF-order shape."""
    E, V = c.n_embd, c.n_vocab
    out: dict[str, tuple[int, ...]] = {"token_embd.weight": (E, V), "output_norm.weight": (E,)}
    if not c.tied_embeddings:
        out["output.weight"] = (E, V)
    for i in range(c.n_layer):
        out.update(_gdn_tensors(c, i) if c.is_gdn[i] else _attn_tensors(c, i))
        out.update(_ffn_tensors(c, i, present))
    return out


def mtp_tensor_shapes(c: ModelConfig, present: set[str] | None = None
                      ) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    """(required, optional) tensors of the MTP block at index NL."""
    i, E, V = c.mtp_layer, c.n_embd, c.n_vocab
    req = {f"blk.{i}.nextn.eh_proj.weight": (2 * E, E), f"blk.{i}.nextn.enorm.weight": (E,),
           f"blk.{i}.nextn.hnorm.weight": (E,)}
    req.update(_attn_tensors(c, i))
    req.update(_ffn_tensors(c, i, present))
    opt = {f"blk.{i}.nextn.shared_head_norm.weight": (E,), f"blk.{i}.nextn.embed_tokens.weight": (E, V),
           f"blk.{i}.nextn.shared_head_head.weight": (E, V)}
    return req, opt


def stacked_groups(c: ModelConfig, i: int) -> dict[str, list[str]]:
    """Projections of block i that read the same input, stacked into one GPU weight: the GDN
    in-projections, attention's q/k/v, and the dense FFN's gate and up. A group is stacked only
    when its members share a type (a Q4_K_M file keeps a Q6_K attn_v apart)."""
    p = f"blk.{i}."
    groups = {}
    if i < c.n_layer and c.is_gdn[i]:
        groups[p + "gdn_in"] = [p + n for n in ("attn_qkv.weight", "attn_gate.weight", "ssm_alpha.weight",
                                                 "ssm_beta.weight")]
    else:
        groups[p + "attn_in"] = [p + n for n in ("attn_q.weight", "attn_k.weight", "attn_v.weight")]
    if not c.is_moe:
        groups[p + "ffn_gate_up"] = [p + "ffn_gate.weight", p + "ffn_up.weight"]
    return groups
