"""GGUF (llama.cpp converter layout) -> HF transformers `Qwen3_5ForCausalLM`, for parity tests.

Written independently of `wgmtp/reference`: it reads the GGUF through `GGUFModel` +
`quants.dequantize` and UNDOES the converter's transforms (reference/qwen35-mtp.md section 2):

* every RMSNorm weight has +1 baked in (HF `Qwen3_5RMSNorm` computes `x * (1 + w)`), so
  HF w = gguf - 1 -- except `ssm_norm` (HF `Qwen3_5RMSNormGated` computes `x * w`, stored as is);
* `ssm_a = -exp(A_log)`, so `A_log = log(-ssm_a)`; `ssm_dt.bias` is `dt_bias`;
* `ssm_conv1d.weight [conv_dim, Kc]` is `conv1d.weight [conv_dim, 1, Kc]`;
* GDN value heads are in the converter's tiled order (GGUF value head `j*Hk + g` holds HF head
  `g*r + j`, r = Hv/Hk): inverted for the v rows of `in_proj_qkv`, `in_proj_z` rows,
  `in_proj_a`/`in_proj_b` rows, `A_log`, `dt_bias`, the v channels of `conv1d` and the input
  columns of `out_proj`. `ssm_norm` is per-Dv and shared by all heads (unaffected); `attn_q`
  (query and gate interleaved per head) is HF's own layout and is not permuted.

MTP tensors (`blk.{NL}.*`) are ignored: `Qwen3_5ForCausalLM` has no MTP head.
Needs torch and transformers (import this module only after `pytest.importorskip`).
"""
from __future__ import annotations

import numpy as np
import torch

from wgmtp import quants
from wgmtp.models.qwen35 import GGUFModel


def tensor(gm: GGUFModel, name: str) -> np.ndarray:
    """A GGUF tensor dequantized to float32, numpy order ([out, in] for matrices)."""
    info = gm.tensors[name]
    return np.ascontiguousarray(quants.dequantize(gm.raw(name), info.qtype, info.np_shape), np.float32)


def _tiled_to_hf(rows: np.ndarray, Hk: int, r: int, d: int) -> np.ndarray:
    """Undo the converter's value-head permutation along axis 0 (Hv*d entries).

    GGUF index (j, g, :) with h' = j*Hk + g  ->  HF index (g, j, :) with h = g*r + j.
    """
    x = rows.reshape(r, Hk, d, *rows.shape[1:])
    return np.ascontiguousarray(x.swapaxes(0, 1).reshape(Hk * r * d, *rows.shape[1:]))


tiled_to_hf = _tiled_to_hf


def hf_config(gm: GGUFModel):
    """A `Qwen3_5TextConfig` equal to the GGUF's hyper-parameters (trunk only)."""
    from transformers import Qwen3_5TextConfig

    c = gm.config
    if c.n_rot % 2 or c.head_dim * (c.n_rot / c.head_dim) != c.n_rot:
        raise ValueError(f"rope dims {c.n_rot} / head_dim {c.head_dim} not representable")
    layer_types = ["linear_attention" if c.is_gdn[i] else "full_attention" for i in range(c.n_layer)]
    cfg = Qwen3_5TextConfig(
        vocab_size=c.n_vocab,
        hidden_size=c.n_embd,
        intermediate_size=c.n_ff,
        num_hidden_layers=c.n_layer,
        num_attention_heads=c.n_head,
        num_key_value_heads=c.n_head_kv,
        head_dim=c.head_dim,
        hidden_act="silu",
        max_position_embeddings=c.n_ctx_train,
        rms_norm_eps=c.eps,
        tie_word_embeddings=c.tied_embeddings,
        # For text every M-RoPE section sees the same position, so this is plain NeoX rope on
        # the first n_rot dims of each head (checked by the caller through `inv_freq`).
        rope_parameters={"rope_type": "default", "rope_theta": float(c.rope_base),
                         "partial_rotary_factor": c.n_rot / c.head_dim},
        attention_bias=False,
        linear_conv_kernel_dim=c.conv_kernel,
        linear_key_head_dim=c.head_k_dim,
        linear_value_head_dim=c.head_v_dim,
        linear_num_key_heads=c.ssm_n_group,
        linear_num_value_heads=c.ssm_dt_rank,
        layer_types=layer_types,
        use_cache=False,
    )
    return cfg


def hf_state_dict(gm: GGUFModel, *, untile: bool = True, unshift: bool = True) -> dict[str, torch.Tensor]:
    """The `Qwen3_5ForCausalLM` state dict equivalent to the GGUF's trunk.

    `untile=False` / `unshift=False` skip undoing the value-head permutation / the norms' +1:
    deliberately wrong mappings, for negative controls only.
    """
    c = gm.config
    Hk, Hv, Dv = c.ssm_n_group, c.ssm_dt_rank, c.head_v_dim
    r = Hv // Hk
    kd = c.key_dim
    sd: dict[str, np.ndarray] = {}

    def norm(name: str) -> np.ndarray:              # undo the converter's +1 (exact in f32)
        return tensor(gm, name) - np.float32(1.0 if unshift else 0.0)

    def tiled_to_hf(rows: np.ndarray, Hk: int, r: int, d: int) -> np.ndarray:
        return _tiled_to_hf(rows, Hk, r, d) if untile else rows

    sd["model.embed_tokens.weight"] = tensor(gm, "token_embd.weight")
    sd["model.norm.weight"] = norm("output_norm.weight")
    sd["lm_head.weight"] = tensor(gm, "token_embd.weight" if c.tied_embeddings else "output.weight")

    for i in range(c.n_layer):
        g, m = f"blk.{i}.", f"model.layers.{i}."
        sd[m + "input_layernorm.weight"] = norm(g + "attn_norm.weight")
        sd[m + "post_attention_layernorm.weight"] = norm(g + "post_attention_norm.weight")
        sd[m + "mlp.gate_proj.weight"] = tensor(gm, g + "ffn_gate.weight")
        sd[m + "mlp.up_proj.weight"] = tensor(gm, g + "ffn_up.weight")
        sd[m + "mlp.down_proj.weight"] = tensor(gm, g + "ffn_down.weight")
        if c.is_gdn[i]:
            la = m + "linear_attn."
            qkv = tensor(gm, g + "attn_qkv.weight")                      # [conv_dim, E]
            sd[la + "in_proj_qkv.weight"] = np.concatenate(
                [qkv[:2 * kd], tiled_to_hf(qkv[2 * kd:], Hk, r, Dv)], axis=0)
            sd[la + "in_proj_z.weight"] = tiled_to_hf(tensor(gm, g + "attn_gate.weight"), Hk, r, Dv)
            sd[la + "in_proj_a.weight"] = tiled_to_hf(tensor(gm, g + "ssm_alpha.weight"), Hk, r, 1)
            sd[la + "in_proj_b.weight"] = tiled_to_hf(tensor(gm, g + "ssm_beta.weight"), Hk, r, 1)
            ssm_a = tensor(gm, g + "ssm_a").astype(np.float64)
            if not np.all(ssm_a < 0):
                raise ValueError(f"{g}ssm_a must be negative (= -exp(A_log))")
            # exp(log(-a)) after rounding A_log to f32 differs from ssm_a by ~1 ulp (the only
            # inexact step of this mapping; it is far below float32 forward noise)
            sd[la + "A_log"] = tiled_to_hf(np.log(-ssm_a).astype(np.float32), Hk, r, 1)
            sd[la + "dt_bias"] = tiled_to_hf(tensor(gm, g + "ssm_dt.bias"), Hk, r, 1)
            conv = tensor(gm, g + "ssm_conv1d.weight")                   # [conv_dim, Kc]
            conv = np.concatenate([conv[:2 * kd], tiled_to_hf(conv[2 * kd:], Hk, r, Dv)], axis=0)
            sd[la + "conv1d.weight"] = conv[:, None, :]
            sd[la + "norm.weight"] = tensor(gm, g + "ssm_norm.weight")   # no +1 here
            out = tensor(gm, g + "ssm_out.weight")                       # [E, value_dim]
            sd[la + "out_proj.weight"] = np.ascontiguousarray(tiled_to_hf(out.T, Hk, r, Dv).T)
        else:
            sa = m + "self_attn."
            sd[sa + "q_proj.weight"] = tensor(gm, g + "attn_q.weight")
            sd[sa + "k_proj.weight"] = tensor(gm, g + "attn_k.weight")
            sd[sa + "v_proj.weight"] = tensor(gm, g + "attn_v.weight")
            sd[sa + "o_proj.weight"] = tensor(gm, g + "attn_output.weight")
            sd[sa + "q_norm.weight"] = norm(g + "attn_q_norm.weight")
            sd[sa + "k_norm.weight"] = norm(g + "attn_k_norm.weight")
    return {k: torch.from_numpy(np.ascontiguousarray(v, np.float32)) for k, v in sd.items()}


def build_hf_model(gm: GGUFModel, **mapping):
    """`Qwen3_5ForCausalLM` (float32, eager attention, eval mode) holding the GGUF's trunk.

    Every parameter is first set to NaN, then loaded with `strict=True`; any parameter the
    mapping missed would stay NaN, and this raises if one does.
    """
    from transformers import Qwen3_5ForCausalLM

    cfg = hf_config(gm)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    model = Qwen3_5ForCausalLM(cfg).to(torch.float32).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    sd = hf_state_dict(gm, **mapping)
    res = model.load_state_dict(sd, strict=True)
    if res.missing_keys or res.unexpected_keys:
        raise AssertionError(f"state dict mismatch: {res}")
    unset = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
    if unset:
        raise AssertionError(f"parameters left unset by the mapping: {unset}")
    return model
