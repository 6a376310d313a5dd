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
from ..gpu.weights import GPUTensor, upload_tensor
from ..state import GPUState
from ..kernels import STEP_WORDS, Act, attention as K_attn, elementwise as K_ew, gdn as K_gdn
from ..kernels import linear as K_lin, norm as K_norm, rope as K_rope, sample as K_smp, spec as K_spec
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
        self.programs: dict[tuple, Program] = {}

    # ---------------------------------------------------------------------------------------
    # weights and buffers

    def upload(self, *, mtp: bool) -> None:
        """Upload the trunk (and with `mtp`, the MTP block); MTP tensors stay on the host
        until speculative decoding is asked for (DESIGN invariant 7)."""
        names = [n for n in self.gm.used_tensors if n not in self.w and (mtp or not self.gm.is_mtp_tensor(n))]
        total = sum(self.gm.tensors[n].n_bytes for n in names)
        bar = None
        if self._progress and total > 64 << 20:
            from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
            bar = Progress("uploading weights", BarColumn(), DownloadColumn(), TransferSpeedColumn(), transient=True)
            bar.start()
            task = bar.add_task("up", total=total)
        try:
            for n in names:
                info = self.gm.tensors[n]
                self.w[n] = upload_tensor(self.ctx, n, self.gm.raw(n), info.qtype, info.shape,
                                          (lambda b: bar.update(task, advance=b)) if bar else None)
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
        self.FG = buf(T * F, "ffn_gate")
        self.FU = buf(T * F, "ffn_up")
        self.MU = buf(T * 2 * E, "mtp_concat")
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

    def _attn_block(self, pb: ProgramBuilder, pre: str, cache: K_attn.KVCache, x: Act, out: Act,
                    step: Act, T: int) -> None:
        """Gated attention: q+gate, k, v projections; q/k norm + rope; KV append; attention with
        the sigmoid gate; output projection into `out`."""
        c, w = self.cfg, self.w
        H, Hkv, D = c.n_head, c.n_head_kv, c.head_dim
        K_lin.linear(pb, w[pre + "attn_q.weight"], x, self.QG, step, max_tok=T)
        K_lin.linear(pb, w[pre + "attn_k.weight"], x, self.KB, step, max_tok=T)
        K_lin.linear(pb, w[pre + "attn_v.weight"], x, self.VB, step, max_tok=T)
        K_rope.rmsnorm_rope(pb, step, self.QG, w[pre + "attn_q_norm.weight"], self.rope, self.QG, H, D, c.eps, T,
                            x_stride=2 * H * D, x_head_stride=2 * D, out_stride=2 * H * D, out_head_stride=2 * D)
        K_rope.rmsnorm_rope(pb, step, self.KB, w[pre + "attn_k_norm.weight"], self.rope, self.KB, Hkv, D, c.eps, T)
        K_attn.kv_store(pb, cache, self.KB, self.VB, step, max_tok=T)
        K_attn.attention(pb, cache, self.QG, self.ATT, self.WS, step, n_head=H, max_tok=T,
                         q_ts=2 * H * D, q_hs=2 * D, gate=self.QG.at(D), g_ts=2 * H * D, g_hs=2 * D)
        K_lin.linear(pb, w[pre + "attn_output.weight"], self.ATT, out, step, max_tok=T)

    def _gdn_block(self, pb: ProgramBuilder, i: int, x: Act, out: Act, step: Act, T: int, chunked: bool) -> None:
        c, w = self.cfg, self.w
        pre = f"blk.{i}."
        K_lin.linear(pb, w[pre + "attn_qkv.weight"], x, self.MIX, step, max_tok=T)
        K_lin.linear(pb, w[pre + "attn_gate.weight"], x, self.Z, step, max_tok=T)
        K_lin.linear(pb, w[pre + "ssm_alpha.weight"], x, self.AL, step, max_tok=T)
        K_lin.linear(pb, w[pre + "ssm_beta.weight"], x, self.BE, step, max_tok=T)
        K_gdn.ssm_conv(pb, step, self.MIX, w[pre + "ssm_conv1d.weight"], Act(self.state.conv[i]), self.CC,
                       n_slots=self.state.n_slots)
        fn = K_gdn.gdn_chunked if chunked else K_gdn.gdn
        fn(pb, step, self.CC, self.AL, self.BE, w[pre + "ssm_a"], w[pre + "ssm_dt.bias"], Act(self.state.ssm[i]),
           self.O, self.dims, n_slots=self.state.n_slots, eps=c.eps)
        K_norm.gated_rmsnorm(pb, step, self.O, w[pre + "ssm_norm.weight"], self.Z, self.O,
                             c.ssm_dt_rank, c.head_v_dim, c.eps, T)
        K_lin.linear(pb, w[pre + "ssm_out.weight"], self.O, out, step, max_tok=T)

    def _ffn(self, pb: ProgramBuilder, pre: str, x: Act, out: Act, step: Act, T: int) -> None:
        w, F = self.w, self.cfg.n_ff
        K_lin.linear(pb, w[pre + "ffn_gate.weight"], x, self.FG, step, max_tok=T)
        K_lin.linear(pb, w[pre + "ffn_up.weight"], x, self.FU, step, max_tok=T)
        K_ew.swiglu(pb, self.FG, self.FU, self.FG, F, step, T)
        K_lin.linear(pb, w[pre + "ffn_down.weight"], self.FG, out, step, max_tok=T)

    def _trunk(self, pb: ProgramBuilder, step: Act, T: int, *, chunked: bool = False) -> None:
        """embed IN[0..n_tok) -> layers -> output_norm into HPREV rows 1..n_tok."""
        c, w, E = self.cfg, self.w, self.cfg.n_embd
        K_lin.embed(pb, w["token_embd.weight"], self.IDS.at(self.lay.IN), self.X, step, max_tok=T)
        for i in range(c.n_layer):
            pre = f"blk.{i}."
            if i == 0:
                K_norm.rmsnorm(pb, step, self.X, w[pre + "attn_norm.weight"], self.H, E, c.eps, T)
            if c.is_gdn[i]:
                self._gdn_block(pb, i, self.H, self.MO, step, T, chunked)
            else:
                self._attn_block(pb, pre, self.state.caches[i], self.H, self.MO, step, T)
            K_norm.add_rmsnorm(pb, step, self.X, self.MO, w[pre + "post_attention_norm.weight"], self.X, self.H,
                               E, c.eps, T)
            self._ffn(pb, pre, self.H, self.MO, step, T)
            nxt = f"blk.{i + 1}.attn_norm.weight" if i + 1 < c.n_layer else "output_norm.weight"
            dst = self.H if i + 1 < c.n_layer else self.HPREV.at(E)
            K_norm.add_rmsnorm(pb, step, self.X, self.MO, w[nxt], self.X, dst, E, c.eps, T)

    def _mtp_rows(self, pb: ProgramBuilder, step: Act, T: int, ids: Act, hprev: Act, hprev_stride: int,
                  h_out: Act, *, pos_add: int = 0) -> None:
        """MTP head over n_tok rows: token ids[t] at position pos0 + t, with hprev row t the hidden
        that predicted it; writes the MTP KV cache and h_out (post shared_head_norm) rows."""
        c, w, E = self.cfg, self.w, self.cfg.n_embd
        m = c.mtp_layer
        pre = f"blk.{m}."
        emb = pre + "nextn.embed_tokens.weight" if pre + "nextn.embed_tokens.weight" in w else "token_embd.weight"
        K_lin.embed(pb, w[emb], ids, self.X, step, max_tok=T)
        K_norm.rmsnorm(pb, step, self.X, w[pre + "nextn.enorm.weight"], self.MU, E, c.eps, T, out_stride=2 * E)
        K_norm.rmsnorm(pb, step, hprev, w[pre + "nextn.hnorm.weight"], self.MU.at(E), E, c.eps, T,
                       x_stride=hprev_stride, out_stride=2 * E)
        K_lin.linear(pb, w[pre + "nextn.eh_proj.weight"], self.MU, self.X, step, max_tok=T)
        K_norm.rmsnorm(pb, step, self.X, w[pre + "attn_norm.weight"], self.H, E, c.eps, T)
        self._attn_block(pb, pre, self.state.mtp_cache, self.H, self.MO, step, T)
        K_norm.add_rmsnorm(pb, step, self.X, self.MO, w[pre + "post_attention_norm.weight"], self.X, self.H, E, c.eps, T)
        self._ffn(pb, pre, self.H, self.MO, step, T)
        norm = pre + "nextn.shared_head_norm.weight" if pre + "nextn.shared_head_norm.weight" in w else "output_norm.weight"
        K_norm.add_rmsnorm(pb, step, self.X, self.MO, w[norm], self.X, h_out, E, c.eps, T)

    def _logits(self, pb: ProgramBuilder, step: Act, h: Act, T: int, *, mtp: bool = False) -> None:
        K_lin.linear(pb, self.w[self._lm_head_name(mtp)], h, self.LOGITS, step, max_tok=T)

    def _pick(self, pb: ProgramBuilder, step: Act, T: int, ids_out: Act, n_cand: int) -> None:
        """argmax into ids_out (greedy), or top-k candidates into TOPI/TOPV (sampling)."""
        V = self.cfg.n_vocab
        if n_cand <= 1:
            K_smp.argmax(pb, step, self.LOGITS, ids_out, V, T, scratch=self.SCR)
        else:
            K_smp.topk(pb, step, self.LOGITS, self.TOPI, self.TOPV, n_cand, V, T, scratch=self.SCR)

    def step_act(self, rec: int) -> Act:
        return self.IDS.at(rec)

    # ---------------------------------------------------------------------------------------
    # programs

    def program(self, kind: str, *args) -> Program:
        key = (kind,) + args
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
            K_spec.copy_row(pb, self.IDS.buffer, lay.R_BATCH, 0, self.HPREV, E, self.HPREV, E)
            last = self.HPREV
        else:
            K_spec.copy_row(pb, self.IDS.buffer, lay.R_BATCH, -1, self.HPREV.at(E), E, self.LASTH, E)
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

    def _build_draft(self, n: int, p_min: float) -> Program:
        """The draft chain of a round: n MTP rows, each argmax feeding the next row's embedding
        (and with p_min > 0 the gate that counts the confident leading drafts)."""
        pb = ProgramBuilder(self.ctx, f"draft{n}")
        lay, E, c = self.lay, self.cfg.n_embd, self.cfg
        gate = p_min > 0
        # draft chain: row i reads IN[i] and hidden (i == 0: pending HPREV[0], else HC[i])
        for i in range(n):
            st = self.step_act(lay.R_DRAFT(i))
            hp = self.HPREV if i == 0 else self.HC.at(i * E)
            self._mtp_rows(pb, st, 1, self.IDS.at(lay.IN + i), hp, E, self.HC.at((i + 1) * E))
            self._logits(pb, st, self.HC.at((i + 1) * E), 1, mtp=True)
            K_smp.argmax(pb, st, self.LOGITS, self.IDS.at(lay.IN + i + 1), c.n_vocab, 1, scratch=self.SCR)
            if gate:
                K_smp.topk(pb, st, self.LOGITS, self.TOPI, self.TOPV, 10, c.n_vocab, 1, scratch=self.SCR,
                           p_top=self.PTOP.at(i))
        if gate:
            K_spec.draft_gate(pb, self.IDS.buffer, self.PTOP, n, lay.NVALID, p_min)
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
            K_smp.argmax(pb, sb, self.LOGITS, self.IDS.at(lay.ARG), c.n_vocab, T, scratch=self.SCR)
            K_spec.accept(pb, self.IDS.buffer, n=n, tgt_off=lay.ARG, draft_off=lay.IN + 1, nvalid_off=lay.NVALID,
                          eog_off=lay.EOG, n_eog=self.n_eog, res_off=lay.RES, next_off=lay.IN, step_off=lay.R_BATCH)
            K_spec.copy_row(pb, self.IDS.buffer, lay.RES, 1, self.HPREV, E, self.HPREV, E)
        else:
            K_smp.topk(pb, sb, self.LOGITS, self.TOPI, self.TOPV, n_cand, c.n_vocab, T, scratch=self.SCR)
        return pb.build()

    def _build_commit(self) -> Program:
        """After a host-accepted (sampled) round: pending hidden = HPREV row k + 1 (k in RES[0])."""
        pb = ProgramBuilder(self.ctx, "commit")
        E = self.cfg.n_embd
        K_spec.copy_row(pb, self.IDS.buffer, self.lay.RES, 1, self.HPREV, E, self.HPREV, E)
        return pb.build()

    n_eog: int = 0          # end-of-generation ids the backend wrote at lay.EOG
