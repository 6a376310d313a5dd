"""The whole qwen35 model and its MTP head in numpy, from the twins in `ops.py`.

Slow, exact, and the control every GPU result is compared with. A batch of T tokens runs the
same per-row code as T single-token steps, so prefill, decode and verification agree bit for
bit here; the GPU must reproduce that property (ARCHITECTURE.md, "Batch invariance").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

from .. import quants
from . import ops

if TYPE_CHECKING:     # the file's type only: the reference never imports the GPU side
    from ..models.qwen35 import GGUFModel, ModelConfig

f32 = np.float32
Trace = Callable[[str, int, str, np.ndarray], None]   # (where, layer, op, value)


class RefWeights:
    """Dequantized f32 views of the model's tensors, made on first use and cached."""

    def __init__(self, gm: GGUFModel) -> None:
        self.gm = gm
        self._cache: dict[str, np.ndarray] = {}

    def has(self, name: str) -> bool:
        return name in self.gm.tensors

    def __getitem__(self, name: str) -> np.ndarray:
        w = self._cache.get(name)
        if w is None:
            info = self.gm.tensors[name]
            w = quants.dequantize(self.gm.raw(name), info.qtype, info.np_shape)
            w = np.ascontiguousarray(w, f32)
            if w.ndim == 2 and w.shape[0] == 1 and len(info.shape) == 2 and info.shape[1] == 1:
                w = w[0]
            self._cache[name] = w
        return w

    def rows(self, name: str, ids: np.ndarray) -> np.ndarray:
        """Dequantize only the given rows (the embedding lookup of a big vocabulary)."""
        if name in self._cache:
            return self._cache[name][np.asarray(ids)]
        info = self.gm.tensors[name]
        return quants.dequantize_rows(self.gm.raw(name), info.qtype, np.asarray(ids)).astype(f32)


@dataclass
class KV:
    """One attention layer's cache: K (post q/k-norm, post-rope) and V, f32 [n_ctx, Hkv, D]."""
    k: np.ndarray
    v: np.ndarray


@dataclass
class RefState:
    """Per-sequence state: attention KV caches, GDN conv/delta states with snapshot slots.

    `conv[i]`/`ssm[i]` hold `n_slots` planes; plane s is the state s tokens before the end of
    the last batch (plane 0 = current). `rollback(r)` selects plane r as the current state.
    """
    n_ctx: int
    n_slots: int
    kv: dict[int, KV] = field(default_factory=dict)
    conv: dict[int, np.ndarray] = field(default_factory=dict)
    ssm: dict[int, np.ndarray] = field(default_factory=dict)
    mtp_kv: KV | None = None
    n_past: int = 0            # tokens in the target's cache/state
    cur_slot: int = 0          # which plane the next batch starts from

    def clone(self) -> "RefState":
        c = RefState(self.n_ctx, self.n_slots, n_past=self.n_past, cur_slot=self.cur_slot)
        c.kv = {i: KV(v.k.copy(), v.v.copy()) for i, v in self.kv.items()}
        c.conv = {i: a.copy() for i, a in self.conv.items()}
        c.ssm = {i: a.copy() for i, a in self.ssm.items()}
        c.mtp_kv = None if self.mtp_kv is None else KV(self.mtp_kv.k.copy(), self.mtp_kv.v.copy())
        return c

    def rollback(self, n_back: int) -> None:
        """Undo the last `n_back` tokens (n_back < n_slots): select snapshot plane n_back."""
        if not 0 <= n_back < self.n_slots:
            raise ValueError(f"cannot roll back {n_back} tokens with {self.n_slots} snapshot planes")
        self.cur_slot = n_back
        self.n_past -= n_back


class RefModel:
    """qwen35 forward passes on numpy; state lives in a `RefState` the caller owns."""

    def __init__(self, gm: GGUFModel, *, kv_f16: bool = False) -> None:
        self.gm = gm
        self.cfg: ModelConfig = gm.config
        self.w = RefWeights(gm)
        self.trace: Trace | None = None
        self.kv_f16 = kv_f16      # store K/V rounded to f16, as a GPU with shader-f16 does

    # ---- state

    def new_state(self, n_ctx: int, n_slots: int = 1) -> RefState:
        c = self.cfg
        st = RefState(n_ctx=n_ctx, n_slots=n_slots)
        for i in range(c.n_layer):
            if c.is_gdn[i]:
                st.conv[i] = np.zeros((n_slots, c.conv_dim, c.conv_kernel - 1), f32)
                st.ssm[i] = np.zeros((n_slots, c.ssm_dt_rank, c.head_v_dim, c.head_k_dim), f32)
            else:
                st.kv[i] = KV(np.zeros((n_ctx, c.n_head_kv, c.head_dim), f32),
                              np.zeros((n_ctx, c.n_head_kv, c.head_dim), f32))
        if self.gm.has_mtp:
            st.mtp_kv = KV(np.zeros((n_ctx, c.n_head_kv, c.head_dim), f32),
                           np.zeros((n_ctx, c.n_head_kv, c.head_dim), f32))
        return st

    def _t(self, layer: int, op: str, x: np.ndarray, where: str = "trunk") -> None:
        if self.trace is not None:
            self.trace(where, layer, op, x)

    # ---- blocks

    def attn_block(self, X: np.ndarray, p: str, kv: KV, pos0: int, layer: int, where: str) -> np.ndarray:
        c, w = self.cfg, self.w
        T, H, Hkv, D = X.shape[0], c.n_head, c.n_head_kv, c.head_dim
        qg = ops.matvec_rows(w[p + "attn_q.weight"], X).reshape(T, H, 2, D)
        q = ops.rmsnorm(qg[:, :, 0], w[p + "attn_q_norm.weight"], c.eps)
        gate = qg[:, :, 1]
        k = ops.rmsnorm(ops.matvec_rows(w[p + "attn_k.weight"], X).reshape(T, Hkv, D), w[p + "attn_k_norm.weight"],
                        c.eps)
        v = ops.matvec_rows(w[p + "attn_v.weight"], X).reshape(T, Hkv, D)
        pos = np.arange(pos0, pos0 + T)
        q = ops.rope_neox(q, pos, c.n_rot, c.rope_base)
        k = ops.rope_neox(k, pos, c.n_rot, c.rope_base)
        if pos0 + T > kv.k.shape[0]:
            raise ValueError(f"context overflow: position {pos0 + T - 1} >= n_ctx {kv.k.shape[0]}")
        if self.kv_f16:
            k, v = k.astype(np.float16).astype(f32), v.astype(np.float16).astype(f32)
        kv.k[pos0:pos0 + T] = k
        kv.v[pos0:pos0 + T] = v
        self._t(layer, "attn_q", q, where)
        self._t(layer, "attn_k", k, where)
        self._t(layer, "attn_v", v, where)
        o = ops.attention(q, kv.k, kv.v, pos + 1, gate, 1.0 / np.sqrt(D))
        self._t(layer, "attn_out", o, where)
        return ops.matvec_rows(w[p + "attn_output.weight"], o.reshape(T, H * D))

    def gdn_block(self, X: np.ndarray, p: str, st: RefState, layer: int) -> np.ndarray:
        c, w = self.cfg, self.w
        T = X.shape[0]
        Hk, Hv, Dk, Dv = c.ssm_n_group, c.ssm_dt_rank, c.head_k_dim, c.head_v_dim
        mixed = ops.matvec_rows(w[p + "attn_qkv.weight"], X)
        z = ops.matvec_rows(w[p + "attn_gate.weight"], X).reshape(T, Hv, Dv)
        g, beta = ops.gdn_gates(ops.matvec_rows(w[p + "ssm_alpha.weight"], X),
                                ops.matvec_rows(w[p + "ssm_beta.weight"], X),
                                w[p + "ssm_a"], w[p + "ssm_dt.bias"])
        conv_in = st.conv[layer][st.cur_slot]
        cc, st.conv[layer] = ops.ssm_conv(mixed, conv_in, w[p + "ssm_conv1d.weight"], st.n_slots, st.conv[layer])
        self._t(layer, "ssm_conv", cc)
        kd = c.key_dim
        q = ops.l2norm(cc[:, :kd].reshape(T, Hk, Dk), c.eps) * f32(1.0 / np.sqrt(Dk))
        k = ops.l2norm(cc[:, kd:2 * kd].reshape(T, Hk, Dk), c.eps)
        v = cc[:, 2 * kd:].reshape(T, Hv, Dv)
        M_in = st.ssm[layer][st.cur_slot]
        o, st.ssm[layer] = ops.gdn_recurrence(q.astype(f32), k, v, g, beta, M_in, st.n_slots, st.ssm[layer])
        self._t(layer, "gdn", o)
        y = ops.gated_rmsnorm(o, w[p + "ssm_norm.weight"], z, c.eps)
        return ops.matvec_rows(w[p + "ssm_out.weight"], y.reshape(T, Hv * Dv))

    def ffn(self, X: np.ndarray, p: str) -> np.ndarray:
        w, c = self.w, self.cfg
        if c.is_moe:
            if w.has(p + "ffn_gate_up_exps.weight"):
                gu = w[p + "ffn_gate_up_exps.weight"]
                gate, up = gu[:, :c.n_ff_exp], gu[:, c.n_ff_exp:]
            else:
                gate, up = w[p + "ffn_gate_exps.weight"], w[p + "ffn_up_exps.weight"]
            sh = None
            if c.n_ff_shexp:
                sh = (w[p + "ffn_gate_inp_shexp.weight"].reshape(-1), w[p + "ffn_gate_shexp.weight"],
                      w[p + "ffn_up_shexp.weight"], w[p + "ffn_down_shexp.weight"])
            return ops.ffn_moe(X, w[p + "ffn_gate_inp.weight"], gate, up, w[p + "ffn_down_exps.weight"],
                               c.n_expert_used, sh)
        return ops.matvec_rows(w[p + "ffn_down.weight"],
                               ops.swiglu(ops.matvec_rows(w[p + "ffn_gate.weight"], X),
                                          ops.matvec_rows(w[p + "ffn_up.weight"], X)))

    def lm_head(self, Hf: np.ndarray, name: str | None = None) -> np.ndarray:
        w = self.w
        if name is None:
            name = "token_embd.weight" if self.cfg.tied_embeddings else "output.weight"
        return ops.matvec_rows(w[name], Hf)

    # ---- trunk

    @np.errstate(invalid="ignore", over="ignore", divide="ignore")   # NaN/inf are values here, reported as such
    def forward(self, st: RefState, tokens: list[int] | np.ndarray, *,
                logits: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
        """Run `tokens` at positions n_past.. through the trunk; update `st`.

        Returns (logits [T, V] or None, h_final [T, E]) where h_final is the post-output_norm
        hidden state the MTP head consumes.
        """
        c, w = self.cfg, self.w
        tokens = np.asarray(tokens, np.int64)
        T = len(tokens)
        pos0 = st.n_past
        if pos0 + T > st.n_ctx:
            raise ValueError(f"context overflow: {pos0 + T} tokens > n_ctx {st.n_ctx}")
        x = ops.embed(w.rows("token_embd.weight", tokens))
        self._t(-1, "embed", x)
        for i in range(c.n_layer):
            p = f"blk.{i}."
            h = ops.rmsnorm(x, w[p + "attn_norm.weight"], c.eps)
            a = self.gdn_block(h, p, st, i) if c.is_gdn[i] else self.attn_block(h, p, st.kv[i], pos0, i, "trunk")
            self._t(i, "mixer", a)
            x, h = ops.add_rmsnorm(x, a, w[p + "post_attention_norm.weight"], c.eps)
            f = self.ffn(h, p)
            self._t(i, "ffn", f)
            x = ops.add(x, f)
            self._t(i, "out", x)
        st.cur_slot = 0
        st.n_past = pos0 + T
        hf = ops.rmsnorm(x, w["output_norm.weight"], c.eps)
        self._t(c.n_layer, "output_norm", hf)
        lg = self.lm_head(hf) if logits else None
        if lg is not None:
            self._t(c.n_layer, "logits", lg)
        return lg, hf

    # ---- MTP head

    @np.errstate(invalid="ignore", over="ignore", divide="ignore")
    def mtp_forward(self, st: RefState, tokens: list[int] | np.ndarray, h_prev: np.ndarray, pos0: int,
                    *, logits: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
        """MTP rows: row t pairs token tokens[t] (at position pos0+t) with h_prev[t], the hidden
        that predicted it. Writes the MTP KV cache at pos0..; returns (logits, h_out)."""
        c, w = self.cfg, self.w
        m = c.mtp_layer
        p = f"blk.{m}."
        tokens = np.asarray(tokens, np.int64)
        emb_name = p + "nextn.embed_tokens.weight" if w.has(p + "nextn.embed_tokens.weight") else "token_embd.weight"
        e = ops.embed(w.rows(emb_name, tokens))
        u = np.concatenate([ops.rmsnorm(e, w[p + "nextn.enorm.weight"], c.eps),
                            ops.rmsnorm(np.asarray(h_prev, f32), w[p + "nextn.hnorm.weight"], c.eps)], axis=1)
        x = ops.matvec_rows(w[p + "nextn.eh_proj.weight"], u)
        self._t(m, "eh_proj", x, "mtp")
        h = ops.rmsnorm(x, w[p + "attn_norm.weight"], c.eps)
        a = self.attn_block(h, p, st.mtp_kv, pos0, m, "mtp")
        x, h = ops.add_rmsnorm(x, a, w[p + "post_attention_norm.weight"], c.eps)
        x = ops.add(x, self.ffn(h, p))
        norm = (p + "nextn.shared_head_norm.weight" if w.has(p + "nextn.shared_head_norm.weight")
                else "output_norm.weight")
        h_out = ops.rmsnorm(x, w[norm], c.eps)
        self._t(m, "h_out", h_out, "mtp")
        if not logits:
            return None, h_out
        head = p + "nextn.shared_head_head.weight" if w.has(p + "nextn.shared_head_head.weight") else None
        lg = self.lm_head(h_out, head)
        return lg, h_out
