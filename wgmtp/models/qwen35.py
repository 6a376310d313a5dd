"""The qwen35 model on the GPU as recorded programs: lists of kernel calls built once per shape.

One token's path: ids buffer -> embed -> per layer [rmsnorm -> GDN or gated attention -> residual
add + rmsnorm -> SwiGLU FFN -> residual add] -> output_norm (h_final, also what the MTP head
reads) -> LM head -> argmax (greedy) or top-k candidates (sampling) -> ids buffer, where the next
step's embedding reads it.

Buffers (made once): weights (quantized, row parts), the KV caches and recurrent state
(state.py), one f32 buffer per activation role sized for the largest batch, a u32 `ids` buffer
(token ids in and out, acceptance results) and a u32 `step` buffer of step records (kernels/
__init__.py) that the host writes once per submission.

Programs:
  trunk(T)   embed + layers + output_norm over a batch of up to T tokens (decode T=1, verify
             T=n_max+1, prefill chunks); h_final rows land in HPREV rows 1..T, where row 0 is
             the MTP's pending hidden (the target hidden that predicted the batch's first token).
  mtp_fill   the MTP head over the same rows (keeps its KV cache in step with the target).
  draft(n)   n chained MTP rows, each argmax feeding the next row's embedding on the GPU.
  round(n)   draft(n) + verify(n+1) + mtp_fill + greedy accept + pending-hidden update: one
             submission and one small readback per speculative round.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..gguf_file import GGUFModel, ModelConfig
from ..gpu.device import GPUContext
from ..gpu.program import Program, ProgramBuilder
from ..check import trace as TR
from ..gpu.weights import GPUTensor, upload_concat, upload_tensor
from ..state import GPUState
from ..kernels import STEP_WORDS, Act, attention as K_attn, elementwise as K_ew, gdn as K_gdn
from ..kernels import linear as K_lin, moe as K_moe, norm as K_norm, rope as K_rope, sample as K_smp, spec as K_spec
from ..sampling import TOPK_MAX

MATVEC_MAX = 16          # batches up to this many tokens use the multi-column mat-vec (verify path)
N_EOG = 16


@dataclass
class Layout:
    """Word offsets inside the u32 `ids` buffer: step records first, then the batch's input ids,
    so the host's per-step data (records + input ids) is one contiguous write."""
    t_max: int
    n_draft_max: int

    # step records
    R_BATCH = 0
    R_ONE = STEP_WORDS                                               # 1 token at the batch's last position

    def R_DRAFT(self, i: int) -> int:                                # draft step i: 1 token at pos0 + i
        return STEP_WORDS * (2 + i)

    @property
    def IN(self) -> int: return STEP_WORDS * (3 + self.n_draft_max)  # batch input ids [t_max]
    @property
    def ARG(self) -> int: return self.IN + self.t_max                # argmax per row [t_max]
    @property
    def NVALID(self) -> int: return self.ARG + self.t_max
    @property
    def EOG(self) -> int: return self.NVALID + 1                     # [N_EOG]
    @property
    def RES(self) -> int: return self.EOG + N_EOG                    # [k, n_out, out...]
    @property
    def ids_words(self) -> int: return self.RES + 2 + self.t_max + 4


class Qwen35GPU:
    """Weights, state and programs of one model on one device."""

    def __init__(self, ctx: GPUContext, gm: GGUFModel, *, n_ctx: int, t_max: int = 64,
                 n_draft_max: int = 15, progress: bool = True) -> None:
        self.ctx = ctx
        self.gm = gm
        self.cfg: ModelConfig = gm.config
        self.n_ctx = n_ctx
        self.t_max = max(t_max, MATVEC_MAX)
        self.lay = Layout(self.t_max, n_draft_max)
        self.w: dict[str, GPUTensor] = {}
        self._progress = progress
        self.upload(mtp=False)
        c = self.cfg
        self.rope = K_rope.rope_table(ctx, n_ctx, c.n_rot, c.rope_base)
        self.dims = K_gdn.GDNDims.from_config(c) if any(c.is_gdn) else None
        self._alloc_activations()
        self.state = GPUState.allocate(ctx, c, n_ctx)
        shape = K_attn.KVCache(n_ctx, c.n_head_kv, c.head_dim, ctx.f16)   # dims only, no buffers
        self.WS = Act(ctx.buffer(K_attn.workspace_floats(shape, c.n_head, self.t_max) * 4, label="attn_ws"))
        self.fuse = K_lin.fusions(ctx)
        self.programs: dict[tuple, Program] = {}
        self.tracing = False          # build programs with op checks (WGMTP_CHECK=1, wgmtp check -m)
        self._tw = None
        self._where = "trunk"

    # ---------------------------------------------------------------------------------------
    # weights and buffers

    def fusions(self, i: int) -> dict[str, list[str]]:
        """Projections of layer i that read the same input, stacked into one weight (one mat-vec
        dispatch): the GDN in-projections, attention's q/k/v, and the FFN's gate and up. A group
        is fused only when its members share a type (a Q4_K_M file keeps a Q6_K attn_v apart)."""
        p = f"blk.{i}."
        groups = {}
        if i < self.cfg.n_layer and self.cfg.is_gdn[i]:
            groups[p + "gdn_in"] = [p + n for n in ("attn_qkv.weight", "attn_gate.weight", "ssm_alpha.weight",
                                                     "ssm_beta.weight")]
        else:
            groups[p + "attn_in"] = [p + n for n in ("attn_q.weight", "attn_k.weight", "attn_v.weight")]
        if not self.cfg.is_moe:
            groups[p + "ffn_gate_up"] = [p + "ffn_gate.weight", p + "ffn_up.weight"]
        return groups

    def upload(self, *, mtp: bool) -> None:
        """Upload the trunk (and with `mtp`, the MTP block); MTP tensors stay on the host
        until speculative decoding is asked for (DESIGN invariant 7). Fusable projections are
        uploaded stacked (`fusions`), and then not also on their own."""
        want = [n for n in self.gm.used_tensors if n not in self.w and (mtp or not self.gm.is_mtp_tensor(n))]
        groups = {}
        for i in range(self.cfg.block_count if mtp else self.cfg.n_layer):
            for g, members in self.fusions(i).items():
                if g not in self.w and all(m in want for m in members) and \
                        len({self.gm.tensors[m].qtype for m in members}) == 1:
                    groups[g] = members
        in_group = {m for ms in groups.values() for m in ms}
        names = [n for n in want if n not in in_group]
        total = sum(self.gm.tensors[n].n_bytes for n in names)
        bar = None
        if self._progress and total > 64 << 20:
            from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
            bar = Progress("uploading weights", BarColumn(), DownloadColumn(), TransferSpeedColumn(), transient=True)
            bar.start()
            task = bar.add_task("up", total=total)
        prog = (lambda b: bar.update(task, advance=b)) if bar else None
        try:
            for g, members in groups.items():
                self.w[g] = upload_concat(self.ctx, g, [(self.gm.raw(m), self.gm.tensors[m].qtype,
                                                         self.gm.tensors[m].shape) for m in members], prog)
            for n in names:
                info = self.gm.tensors[n]
                self.w[n] = upload_tensor(self.ctx, n, self.gm.raw(n), info.qtype, info.shape, prog)
        finally:
            if bar:
                bar.stop()

    def _alloc_activations(self) -> None:
        c, T, ctx = self.cfg, self.t_max, self.ctx
        E, H, Hkv, D, F = c.n_embd, c.n_head, c.n_head_kv, c.head_dim, c.n_ff
        buf = lambda n, lab: Act(ctx.buffer(max(n, 4) * 4, label=lab))  # noqa: E731
        self.X = buf(T * E, "x")
        self.H = buf(T * E, "h")
        self.HPREV = buf((T + 1) * E, "hprev")       # row 0: pending hidden; rows 1..: h_final
        self.HC = buf((self.lay.n_draft_max + 2) * E, "hchain")
        self.LASTH = buf(E, "lasth")
        self.MO = buf(T * E, "mixer_out")
        self.QG = buf(T * 2 * H * D, "qg")
        self.KB = buf(T * Hkv * D, "k")
        self.VB = buf(T * Hkv * D, "v")
        self.ATT = buf(T * H * D, "attn")
        n_fused = max([2 * H * D + 2 * Hkv * D, 2 * F] + ([c.conv_dim + c.value_dim + 2 * c.ssm_dt_rank] if any(c.is_gdn) else []))
        self.FUSED = buf(T * n_fused, "fused_proj")     # outputs of a stacked projection, [T, rows]
        self.FG = buf(T * F, "ffn_gate")
        self.FU = buf(T * F, "ffn_up")
        self.MU = buf(T * 2 * E, "mtp_concat")
        if c.is_moe:
            self.MOE = buf(K_moe.ffn_scratch_words(E, c.n_expert, c.n_expert_used, c.n_ff_exp, c.n_ff_shexp, T), "moe")
        if any(c.is_gdn):
            self.MIX = buf(T * c.conv_dim, "mixed")
            self.CC = buf(T * c.conv_dim, "conv_out")
            self.Z = buf(T * c.value_dim, "z")
            self.AL = buf(T * c.ssm_dt_rank, "alpha")
            self.BE = buf(T * c.ssm_dt_rank, "beta")
            self.O = buf(T * c.value_dim, "gdn_out")
        self.n_logit_rows = MATVEC_MAX
        self.LOGITS = buf(self.n_logit_rows * c.n_vocab, "logits")
        self.TOPV = buf(self.n_logit_rows * TOPK_MAX, "topk_vals")
        self.PTOP = buf(self.lay.n_draft_max + 1, "p_top")
        self.IDS = Act(ctx.buffer(self.lay.ids_words * 4, label="ids"))
        self.TOPI = Act(ctx.buffer(self.n_logit_rows * TOPK_MAX * 4, label="topk_ids"))
        n_v = c.n_vocab
        self.SCR = Act(ctx.buffer(max(K_smp.argmax_scratch_words(n_v, self.n_logit_rows),
                                      K_smp.topk_scratch_words(n_v, self.n_logit_rows, TOPK_MAX)) * 4, label="scratch"))

    def ensure_state(self, n_slots: int, mtp: bool) -> None:
        """State with `n_slots` snapshot planes (n_max + 1 for speculation); MTP weights and
        cache on first use. Programs bind the state's buffers, so new buffers mean new programs."""
        if mtp and self.state.mtp_cache is None:
            self.upload(mtp=True)
        if self.state.ensure(n_slots, mtp):
            self.programs = {}

    def zero_state(self) -> None:
        self.state.zero()

    def state_bytes(self) -> int:
        return self.state.nbytes()

    def weight_bytes(self) -> int:
        return sum(t.nbytes for t in self.w.values())

    # ---------------------------------------------------------------------------------------
    # building blocks

    def _lm_head_name(self, mtp: bool) -> str:
        p = f"blk.{self.cfg.mtp_layer}.nextn.shared_head_head.weight"
        if mtp and p in self.w:
            return p
        return "token_embd.weight" if self.cfg.tied_embeddings else "output.weight"

    # each building block emits its kernels and, in a traced program, marks the op with a check
    # against its numpy twin (check/trace.py; WGMTP_CHECK=1 and `wgmtp check -m`)

    def _mark(self, pb: ProgramBuilder, make) -> None:
        if self.tracing:
            pb.mark(make())

    def _np(self, name: str) -> np.ndarray:
        return self._trace_weights().full(name)

    def _trace_weights(self):
        if self._tw is None:
            from ..check.trace import Weights
            self._tw = Weights(self.gm)
        return self._tw

    # The residual stream lives in X. A block reads rmsnorm(X) through its first projection and
    # adds its output back into X through its last one. In decode/verify programs (mat-vec) both
    # are fused into those mat-vecs (kernels.linear.matvec norm= / add=), so a layer has no norm
    # or add dispatch of its own. Where a product cannot take them (prefill's mat-mul, the MoE
    # FFN), the output goes to MO and the add is left pending: the next norm then runs as one
    # add_rmsnorm dispatch (X += MO; H = rmsnorm(X) * w), which the product reads.
    # The norm is fused by default only into the tiled mat-vec (GPUs; kernels.linear.fusions):
    # every output row of the row-per-thread layout of CPU adapters would redo its work (on
    # lavapipe +3% to +8% decode GPU time, tools/ab_env.py), so there it stays a dispatch.

    def _lin(self, pb: ProgramBuilder, name: str, x: Act, y: Act, step: Act, T: int, layer: int, op: str,
             x_stride: int | None = None, *, norm: str | None = None, add: bool = False) -> None:
        """y = W x; norm: x is the residual stream X and W reads rmsnorm(X) * w[norm]; add: y is X
        and gets W x added (deferred to the next norm when it cannot be fused)."""
        x, norm, x_stride = self._prenorm(pb, norm, step, T, layer, x, x_stride)
        if add and (T > MATVEC_MAX or "add" not in self.fuse):
            y, add = self.MO, False
            self._pending = True
        W, eps = self.w[name], self.cfg.eps
        K_lin.linear(pb, W, x, y, step, max_tok=T, x_stride=x_stride, norm=(self.w[norm], eps) if norm else None,
                     add=add)
        self._mark(pb, lambda: TR.linear(self._where, layer, _fused_op(op, norm, add), step, self._trace_weights(),
                                         name, x, y, W.cols, W.rows, x_stride=x_stride,
                                         norm=self._np(norm) if norm else None, eps=eps, add=add))

    def _prenorm(self, pb: ProgramBuilder, norm: str | None, step: Act, T: int, layer: int, x: Act,
                 x_stride: int | None) -> tuple[Act, str | None, int | None]:
        """(input, norm left to fuse, stride) of a product reading rmsnorm(X) * w[norm]: X itself
        with the norm fused into a mat-vec, or H after a norm dispatch (prefill, or an add pending)."""
        if norm is None or (T <= MATVEC_MAX and "norm" in self.fuse and not self._pending):
            return x, norm, x_stride
        self._norm_to(pb, norm, self.H, step, T, layer)
        return self.H, None, None

    def _norm_to(self, pb: ProgramBuilder, norm: str, out: Act, step: Act, T: int, layer: int) -> None:
        """out = rmsnorm(X) * w[norm], first adding a pending block output (X += MO)."""
        op = _short(norm)
        if self._pending:
            self._add_rms(pb, norm, self.MO, out, step, T, layer, op)
            self._pending = False
        else:
            self._rms(pb, norm, self.X, out, step, T, layer, op)

    def _lin_group(self, pb: ProgramBuilder, group: str, x: Act, step: Act, T: int, layer: int,
                   outs: list[tuple[str, Act]], *, norm: str | None = None) -> tuple[list[Act], list[int]]:
        """Projections sharing input x (through norm): one mat-vec over the stacked weight into
        `self.FUSED` when the group was fused at upload, else one per member into its own buffer.
        Returns each member's output and row stride."""
        x, norm, _ = self._prenorm(pb, norm, step, T, layer, x, None)
        W = self.w.get(group)
        if W is None:
            for name, y in outs:
                self._lin(pb, name, x, y, step, T, layer, name.split(".")[2], norm=norm)
            return [y for _, y in outs], [self.w[n].rows for n, _ in outs]
        eps = self.cfg.eps
        K_lin.linear(pb, W, x, self.FUSED, step, max_tok=T, norm=(self.w[norm], eps) if norm else None)
        names = [n for n, _ in outs]
        self._mark(pb, lambda: TR.linear(self._where, layer, _fused_op(group.split(".")[-1], norm, False), step,
                                         self._trace_weights(), "+".join(names), x, self.FUSED, W.cols, W.rows,
                                         norm=self._np(norm) if norm else None, eps=eps))
        acts, off = [], 0
        for n in names:
            acts.append(self.FUSED.at(off))
            off += int(np.prod(self.gm.tensors[n].shape[1:]))
        return acts, [W.rows] * len(names)

    def _rms(self, pb: ProgramBuilder, name: str, x: Act, out: Act, step: Act, T: int, layer: int, op: str,
             x_stride: int | None = None, out_stride: int | None = None) -> None:
        c = self.cfg
        K_norm.rmsnorm(pb, step, x, self.w[name], out, c.n_embd, c.eps, T, x_stride=x_stride, out_stride=out_stride)
        self._mark(pb, lambda: TR.rmsnorm(self._where, layer, op, step, self._np(name), x, out, c.n_embd, c.eps,
                                          x_stride, out_stride))

    def _add_rms(self, pb: ProgramBuilder, name: str, r: Act, out: Act, step: Act, T: int, layer: int, op: str) -> None:
        """X += r; out = rmsnorm(X) * w."""
        c = self.cfg
        K_norm.add_rmsnorm(pb, step, self.X, r, self.w[name], self.X, out, c.n_embd, c.eps, T)
        self._mark(pb, lambda: TR.add_rmsnorm(self._where, layer, op, step, self._np(name), self.X, r, self.X, out,
                                              c.n_embd, c.eps))

    def _attn_block(self, pb: ProgramBuilder, pre: str, cache: K_attn.KVCache, step: Act, T: int, layer: int) -> None:
        """Gated attention on rmsnorm(X) (attn_norm): q+gate, k, v projections (one stacked mat-vec
        when fused); q/k norm + rope in place; KV append; attention with the sigmoid gate; output
        projection added into X."""
        c, w = self.cfg, self.w
        H, Hkv, D = c.n_head, c.n_head_kv, c.head_dim
        (qg, k, v), (sq, sk, sv) = self._lin_group(pb, pre + "attn_in", self.X, step, T, layer, [
            (pre + "attn_q.weight", self.QG), (pre + "attn_k.weight", self.KB), (pre + "attn_v.weight", self.VB)],
            norm=pre + "attn_norm.weight")
        K_rope.rmsnorm_rope(pb, step, qg, w[pre + "attn_q_norm.weight"], self.rope, qg, H, D, c.eps, T,
                            x_stride=sq, x_head_stride=2 * D, out_stride=sq, out_head_stride=2 * D)
        self._mark(pb, lambda: TR.rmsnorm_rope(self._where, layer, "q_norm_rope", step, self._np(pre + "attn_q_norm.weight"),
                                               qg, H, D, c.eps, c.n_rot, c.rope_base, sq, 2 * D))
        K_rope.rmsnorm_rope(pb, step, k, w[pre + "attn_k_norm.weight"], self.rope, k, Hkv, D, c.eps, T,
                            x_stride=sk, out_stride=sk)
        self._mark(pb, lambda: TR.rmsnorm_rope(self._where, layer, "k_norm_rope", step, self._np(pre + "attn_k_norm.weight"),
                                               k, Hkv, D, c.eps, c.n_rot, c.rope_base, sk, D))
        K_attn.kv_store(pb, cache, k, v, step, max_tok=T, k_ts=sk, v_ts=sv)
        K_attn.attention(pb, cache, qg, self.ATT, self.WS, step, n_head=H, max_tok=T,
                         q_ts=sq, q_hs=2 * D, gate=qg.at(D), g_ts=sq, g_hs=2 * D)
        self._mark(pb, lambda: TR.attention(self._where, layer, "attention", step, cache, k, v, qg,
                                            self.ATT, H, D, q_ts=sq, k_ts=sk, v_ts=sv))
        self._lin(pb, pre + "attn_output.weight", self.ATT, self.X, step, T, layer, "attn_output", add=True)

    def _gdn_block(self, pb: ProgramBuilder, i: int, step: Act, T: int, chunked: bool) -> None:
        """Gated DeltaNet on rmsnorm(X) (attn_norm): in-projections, conv, delta rule, gated norm,
        ssm_out added into X."""
        c, w, st = self.cfg, self.w, self.state
        pre = f"blk.{i}."
        (mix, z, al, be), (s_mix, s_z, s_al, s_be) = self._lin_group(pb, pre + "gdn_in", self.X, step, T, i, [
            (pre + "attn_qkv.weight", self.MIX), (pre + "attn_gate.weight", self.Z),
            (pre + "ssm_alpha.weight", self.AL), (pre + "ssm_beta.weight", self.BE)], norm=pre + "attn_norm.weight")
        K_gdn.ssm_conv(pb, step, mix, w[pre + "ssm_conv1d.weight"], Act(st.conv[i]), self.CC, n_slots=st.n_slots,
                       x_stride=s_mix)
        self._mark(pb, lambda: TR.ssm_conv(self._where, i, step, self._np(pre + "ssm_conv1d.weight"), mix,
                                           st.conv[i], self.CC, c.conv_dim, c.conv_kernel, st.n_slots, x_stride=s_mix))
        fn = K_gdn.gdn_chunked if chunked else K_gdn.gdn
        fn(pb, step, self.CC, al, be, w[pre + "ssm_a"], w[pre + "ssm_dt.bias"], Act(st.ssm[i]),
           self.O, self.dims, n_slots=st.n_slots, eps=c.eps, a_stride=s_al, b_stride=s_be)
        self._mark(pb, lambda: TR.gdn(self._where, i, step, self.dims, self._np(pre + "ssm_a"),
                                      self._np(pre + "ssm_dt.bias"), self.CC, al, be, st.ssm[i], self.O,
                                      st.n_slots, c.eps, chunked, K_gdn.pick_chunk(self.ctx, self.dims.dk),
                                      a_stride=s_al, b_stride=s_be))
        K_norm.gated_rmsnorm(pb, step, self.O, w[pre + "ssm_norm.weight"], z, self.O,
                             c.ssm_dt_rank, c.head_v_dim, c.eps, T, z_stride=s_z)
        self._mark(pb, lambda: TR.gated_rmsnorm(self._where, i, step, self._np(pre + "ssm_norm.weight"), self.O, z,
                                                self.O, c.ssm_dt_rank, c.head_v_dim, c.eps, z_stride=s_z))
        self._lin(pb, pre + "ssm_out.weight", self.O, self.X, step, T, i, "ssm_out", add=True)

    def _ffn(self, pb: ProgramBuilder, pre: str, step: Act, T: int, layer: int) -> None:
        """The FFN on rmsnorm(X) (post_attention_norm), its output added into X."""
        c = self.cfg
        norm = pre + "post_attention_norm.weight"
        if c.is_moe:
            self._norm_to(pb, norm, self.H, step, T, layer)
            x = self.H
            w = self.w
            L = K_moe.MoEWeights(
                router=w[pre + "ffn_gate_inp.weight"], down=w[pre + "ffn_down_exps.weight"],
                gate=w.get(pre + "ffn_gate_exps.weight"), up=w.get(pre + "ffn_up_exps.weight"),
                gate_up=w.get(pre + "ffn_gate_up_exps.weight"), shexp_gate_inp=w.get(pre + "ffn_gate_inp_shexp.weight"),
                shexp_gate=w.get(pre + "ffn_gate_shexp.weight"), shexp_up=w.get(pre + "ffn_up_shexp.weight"),
                shexp_down=w.get(pre + "ffn_down_shexp.weight"))
            K_moe.ffn(pb, L, x, self.MO, step, self.MOE, k=c.n_expert_used, max_tok=T)
            self._mark(pb, lambda: TR.moe_ffn(self._where, layer, step, self._trace_weights(), pre, c, x, self.MO))
            self._pending = True       # X += MO at the next norm
            return
        F = c.n_ff
        W = self.w.get(pre + "ffn_gate_up")
        if W is not None and T <= MATVEC_MAX and "glu" in self.fuse and K_lin.glu_fusable(W):
            # gate, up and SwiGLU in one mat-vec (stacked weight in one binding)
            x, nrm, _ = self._prenorm(pb, norm, step, T, layer, self.X, None)
            K_lin.matvec(pb, W, x, self.FG, step, norm=(self.w[nrm], c.eps) if nrm else None, glu=True)
            self._mark(pb, lambda: TR.linear(self._where, layer, _fused_op("ffn_gate_up+swiglu", nrm, False), step,
                                             self._trace_weights(), f"{pre}ffn_gate.weight+{pre}ffn_up.weight", x,
                                             self.FG, W.cols, W.rows, norm=self._np(nrm) if nrm else None, eps=c.eps,
                                             glu=True))
        else:
            (g, u), (sg, su) = self._lin_group(pb, pre + "ffn_gate_up", self.X, step, T, layer, [
                (pre + "ffn_gate.weight", self.FG), (pre + "ffn_up.weight", self.FU)], norm=norm)
            # silu(gate) * up for rows that may be strided (stacked gate/up output)
            if u.buffer is g.buffer:
                K_moe.swiglu(pb, g, self.FG, step, width=F, k=1, max_tok=T, gu_stride=sg,
                             up_offset=u.offset - g.offset, out_stride=F)
            else:
                K_ew.swiglu(pb, g, u, self.FG, F, step, T)
            self._mark(pb, lambda: TR.swiglu(self._where, layer, step, g, u, self.FG, F, g_stride=sg, u_stride=su))
        self._lin(pb, pre + "ffn_down.weight", self.FG, self.X, step, T, layer, "ffn_down", add=True)

    def _argmax(self, pb: ProgramBuilder, step: Act, ids_out: Act, T: int, vocab: int | None = None) -> None:
        V = vocab or self.cfg.n_vocab
        K_smp.argmax(pb, step, self.LOGITS, ids_out, V, T, scratch=self.SCR)
        self._mark(pb, lambda: TR.argmax(self._where, -1, step, self.LOGITS, ids_out, V))

    def _copy_row(self, pb: ProgramBuilder, step: Act, idx_off: int, add: int, src: Act, dst: Act) -> None:
        """dst = row (ids[idx_off] + add) of src: the pending hidden, chosen on the GPU."""
        E = self.cfg.n_embd
        K_spec.copy_row(pb, self.IDS.buffer, idx_off, add, src, E, dst, E)
        self._mark(pb, lambda: TR.copy_row("head", -1, step, self.IDS.at(idx_off), add, src, E, dst, E))

    def _embed(self, pb: ProgramBuilder, name: str, ids: Act, step: Act, T: int, layer: int) -> None:
        K_lin.embed(pb, self.w[name], ids, self.X, step, max_tok=T)
        self._mark(pb, lambda: TR.embed(self._where, layer, step, self.gm, name, ids, self.X, self.cfg.n_embd))

    def _layer(self, pb: ProgramBuilder, i: int, cache, step: Act, T: int, chunked: bool) -> None:
        """Decoder layer i on the residual stream X: mixer (GDN, or gated attention on `cache`),
        then the FFN, each reading its norm of X and adding its output into X."""
        if i < self.cfg.n_layer and self.cfg.is_gdn[i]:
            self._gdn_block(pb, i, step, T, chunked)
        else:
            self._attn_block(pb, f"blk.{i}.", cache, step, T, i)
        self._ffn(pb, f"blk.{i}.", step, T, i)

    def _trunk(self, pb: ProgramBuilder, step: Act, T: int, *, chunked: bool = False) -> None:
        """embed IN[0..n_tok) -> layers -> output_norm into HPREV rows 1..n_tok."""
        c, E = self.cfg, self.cfg.n_embd
        self._where = "trunk"
        self._pending = False
        self._embed(pb, "token_embd.weight", self.IDS.at(self.lay.IN), step, T, -1)
        for i in range(c.n_layer):
            self._layer(pb, i, self.state.caches.get(i), step, T, chunked)
        self._norm_to(pb, "output_norm.weight", self.HPREV.at(E), step, T, c.n_layer - 1)

    def _mtp_rows(self, pb: ProgramBuilder, step: Act, T: int, ids: Act, hprev: Act, hprev_stride: int,
                  h_out: Act, *, where: str = "mtp") -> None:
        """MTP head over n_tok rows: token ids[t] at position pos0 + t, with hprev row t the hidden
        that predicted it; writes the MTP KV cache and h_out (post shared_head_norm) rows."""
        c, w, E = self.cfg, self.w, self.cfg.n_embd
        m = c.mtp_layer
        pre = f"blk.{m}."
        self._where = where
        self._pending = False
        emb = pre + "nextn.embed_tokens.weight" if pre + "nextn.embed_tokens.weight" in w else "token_embd.weight"
        self._embed(pb, emb, ids, step, T, m)
        self._rms(pb, pre + "nextn.enorm.weight", self.X, self.MU, step, T, m, "enorm", out_stride=2 * E)
        self._rms(pb, pre + "nextn.hnorm.weight", hprev, self.MU.at(E), step, T, m, "hnorm",
                  x_stride=hprev_stride, out_stride=2 * E)
        self._lin(pb, pre + "nextn.eh_proj.weight", self.MU, self.X, step, T, m, "eh_proj")
        self._layer(pb, m, self.state.mtp_cache, step, T, False)
        norm = pre + "nextn.shared_head_norm.weight" if pre + "nextn.shared_head_norm.weight" in w else "output_norm.weight"
        self._norm_to(pb, norm, h_out, step, T, m)

    def _logits(self, pb: ProgramBuilder, step: Act, h: Act, T: int, *, mtp: bool = False,
                vocab: int | None = None) -> None:
        """LOGITS rows of h through the LM head; `vocab`: only its first rows (draft vocabulary)."""
        if not mtp:
            self._where = "head"
        name = self._lm_head_name(mtp)
        W = self.w[name]
        V = W.rows if vocab is None else vocab
        if V == W.rows:
            self._lin(pb, name, h, self.LOGITS, step, T, self.cfg.n_layer, "lm_head")
            return
        K_lin.matvec(pb, W, h, self.LOGITS, step, y_stride=V, rows=V)        # draft rows: T = 1
        self._mark(pb, lambda: TR.linear(self._where, self.cfg.n_layer, f"lm_head[:{V}]", step, self._trace_weights(),
                                         name, h, self.LOGITS, W.cols, W.rows, y_stride=V, n_rows=V))

    def _pick(self, pb: ProgramBuilder, step: Act, T: int, ids_out: Act, n_cand: int) -> None:
        """argmax into ids_out (greedy), or top-k candidates into TOPI/TOPV (sampling)."""
        V = self.cfg.n_vocab
        if n_cand <= 1:
            self._argmax(pb, step, ids_out, T)
        else:
            K_smp.topk(pb, step, self.LOGITS, self.TOPI, self.TOPV, n_cand, V, T, scratch=self.SCR)
            self._mark(pb, lambda: TR.boundary(self._where, -1, "topk", step))

    def step_act(self, rec: int) -> Act:
        return self.IDS.at(rec)

    # ---------------------------------------------------------------------------------------
    # programs

    def program(self, kind: str, *args) -> Program:
        key = (kind, self.tracing) + args
        p = self.programs.get(key)
        if p is None:
            p = getattr(self, "_build_" + kind)(*args)
            self.programs[key] = p
        return p

    def _build_feed(self, T: int, mtp: bool, n_cand: int) -> Program:
        """A batch of up to T tokens (prefill chunk or decode): trunk, [MTP fill + pending hidden],
        then the last row's logits -> argmax into IN[0] (or top-k candidates)."""
        pb = ProgramBuilder(self.ctx, f"feed{T}")
        lay, E = self.lay, self.cfg.n_embd
        sb = self.step_act(lay.R_BATCH)
        self._trunk(pb, sb, T, chunked=T > MATVEC_MAX and self.dims is not None)
        if mtp:
            self._mtp_rows(pb, sb, T, self.IDS.at(lay.IN), self.HPREV, E, self.H)
            # pending hidden = h_final of the last token: HPREV row n_tok (row 0 is the old pending)
            self._copy_row(pb, sb, lay.R_BATCH, 0, self.HPREV, self.HPREV)
            last = self.HPREV
        else:
            self._copy_row(pb, sb, lay.R_BATCH, -1, self.HPREV.at(E), self.LASTH)
            last = self.LASTH
        one = self.step_act(lay.R_ONE)
        self._logits(pb, one, last, 1)
        self._pick(pb, one, 1, self.IDS.at(lay.IN), n_cand)
        return pb.build()

    def _build_logits_only(self, T: int) -> Program:
        """Trunk over up to T <= 16 tokens with logits for every row (Model.logits, check)."""
        pb = ProgramBuilder(self.ctx, f"logits{T}")
        sb = self.step_act(self.lay.R_BATCH)
        self._trunk(pb, sb, T)
        self._logits(pb, sb, self.HPREV.at(self.cfg.n_embd), T)
        return pb.build()

    def _build_draft(self, n: int, p_min: float, vocab: int) -> Program:
        """The draft chain of a round: n MTP rows, each argmax feeding the next row's embedding
        (and with p_min > 0 the gate that counts the confident leading drafts). `vocab` < n_vocab:
        the LM head and argmax of each row cover token ids < vocab only (a cheaper draft; the
        verify batch still reads the whole head, so the output is unchanged)."""
        pb = ProgramBuilder(self.ctx, f"draft{n}")
        lay, E, c = self.lay, self.cfg.n_embd, self.cfg
        gate = p_min > 0
        # draft chain: row i reads IN[i] and hidden (i == 0: pending HPREV[0], else HC[i])
        for i in range(n):
            st = self.step_act(lay.R_DRAFT(i))
            hp = self.HPREV if i == 0 else self.HC.at(i * E)
            self._mtp_rows(pb, st, 1, self.IDS.at(lay.IN + i), hp, E, self.HC.at((i + 1) * E), where=f"draft{i + 1}")
            self._logits(pb, st, self.HC.at((i + 1) * E), 1, mtp=True, vocab=vocab)
            self._argmax(pb, st, self.IDS.at(lay.IN + i + 1), 1, vocab)
            if gate:
                K_smp.topk(pb, st, self.LOGITS, self.TOPI, self.TOPV, 10, vocab, 1, scratch=self.SCR,
                           p_top=self.PTOP.at(i))
                self._mark(pb, lambda: TR.boundary(self._where, -1, "p_top", st))
        if gate:
            K_spec.draft_gate(pb, self.IDS.buffer, self.PTOP, n, lay.NVALID, p_min)
            self._mark(pb, lambda: TR.boundary("draft", -1, "draft_gate", self.step_act(lay.R_BATCH)))
        return pb.build()

    def _build_verify(self, n: int, n_cand: int) -> Program:
        """The rest of a round: verify [id_last, d1..dn] in one batch, refill the MTP KV from the
        target's hiddens, then greedy acceptance and the pending-hidden update on the GPU
        (n_cand = 1), or top-k candidates of all n+1 rows for the host's sampler."""
        pb = ProgramBuilder(self.ctx, f"verify{n}")
        lay, E, c = self.lay, self.cfg.n_embd, self.cfg
        sb = self.step_act(lay.R_BATCH)
        T = n + 1
        self._trunk(pb, sb, T)
        self._logits(pb, sb, self.HPREV.at(E), T)
        # MTP KV rows pos0..pos0+n from the target's hiddens (overwrites the draft-time rows)
        self._mtp_rows(pb, sb, T, self.IDS.at(lay.IN), self.HPREV, E, self.H)
        if n_cand <= 1:
            self._argmax(pb, sb, self.IDS.at(lay.ARG), T)
            K_spec.accept(pb, self.IDS.buffer, n=n, tgt_off=lay.ARG, draft_off=lay.IN + 1, nvalid_off=lay.NVALID,
                          eog_off=lay.EOG, n_eog=self.n_eog, res_off=lay.RES, next_off=lay.IN, step_off=lay.R_BATCH)
            self._mark(pb, lambda: TR.accept(sb, self.IDS, lay, n, self.n_eog))
            self._copy_row(pb, sb, lay.RES, 1, self.HPREV, self.HPREV)
        else:
            K_smp.topk(pb, sb, self.LOGITS, self.TOPI, self.TOPV, n_cand, c.n_vocab, T, scratch=self.SCR)
            self._mark(pb, lambda: TR.boundary("head", -1, "topk", sb))
        return pb.build()

    def _build_commit(self) -> Program:
        """After a host-accepted (sampled) round: pending hidden = HPREV row k + 1 (k in RES[0])."""
        pb = ProgramBuilder(self.ctx, "commit")
        E = self.cfg.n_embd
        self._copy_row(pb, self.step_act(self.lay.R_BATCH), self.lay.RES, 1, self.HPREV, self.HPREV)
        return pb.build()

    n_eog: int = 0          # end-of-generation ids the backend wrote at lay.EOG
    _pending: bool = False  # a block output waits in MO to be added into X by the next norm


def _short(norm: str) -> str:
    """'blk.3.post_attention_norm.weight' -> 'post_attention_norm' (op names in check reports)."""
    parts = norm.split(".")
    return parts[-2]


def _fused_op(op: str, norm: str | None, add: bool) -> str:
    """The op name of a fused mat-vec in check reports: 'attn_norm+gdn_in', 'ssm_out+add'."""
    return (_short(norm) + "+" if norm else "") + op + ("+add" if add else "")
