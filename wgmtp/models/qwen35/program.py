"""The qwen35 model on the GPU as recorded programs: one kernel call per op, built once per shape.

One token's path: step ids -> embed -> per layer [norm -> GDN or gated attention -> residual add ->
norm -> SwiGLU (or MoE) FFN -> residual add] -> output_norm (the final hidden, also what the MTP
head reads) -> LM head -> argmax (greedy) or top-k candidates (sampling) -> step ids, where the next
step's embedding reads it.

Each kernel wrapper records its call in the program (gpu.program.records); `pb.at(where, layer)`
names the place of the ops that follow, so every op is checkable by its twin with no second line
here (check/trace.py).

The residual stream is a value (`Residual`) threaded through the block builders: a block reads
norm(stream) through its first projection and adds its output into the stream through its last
one. Where a product can fuse neither (prefill's mat-mul, the MoE FFN) its output waits in
`block_out` as the residual's pending add, and the next norm runs as one add_rmsnorm dispatch.

Programs (typed methods, each cached by its arguments):
  feed(T, mtp, n_cand)   a batch of up to T tokens (prefill chunk or decode step) and the last
                         row's argmax / candidates; with mtp the MTP head's KV fill and pending hidden
  logits_only(T)         logits of every row of a batch (Model.logits, check)
  draft(n, p_min, vocab) n chained MTP rows, each argmax feeding the next row's embedding
  verify(n, n_cand)      verify [id_last, d1..dn] in one batch, MTP KV refill, greedy acceptance
  commit()               after a host-accepted (sampled) round: the pending hidden for k
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial

import numpy as np
from gguf import GGMLQuantizationType as QT

from ... import quants
from ...gpu.device import GPUContext
from ...gpu.program import Program, ProgramBuilder
from ...gpu.weights import GPUTensor, UploadJob, stack_job, upload_all
from ...kernels import STEP_WORDS, Act, attention, elementwise, gdn, linear, moe, norm, rope, sample, spec
from ...sampling import TOPK_MAX
from .config import ModelConfig
from .model_file import GGUFModel
from .state import GPUState
from .step_data import N_EOG, SEG_MAX, SlotLayout, StepLayout
from .tensors import stacked_groups

MATVEC_MAX_TOK = linear.MATVEC_MAX_TOK   # batches up to this many tokens take the mat-vec (decode, verify)
LONG_SUB = MATVEC_MAX_TOK                # rows per verify sub-batch of a long round
F32_TENSORS = ("ssm_conv1d.weight", "ffn_gate_inp.weight", "ffn_gate_inp_shexp.weight")


def reads_f32(name: str, shape: tuple[int, ...]) -> bool:
    """Tensors the kernels read as f32 words whatever the file stores: every 1-D tensor (norm
    weights, ssm_a, dt bias), the conv taps and the MoE routers."""
    return len(shape) == 1 or name.endswith(F32_TENSORS)



@dataclass(frozen=True)
class Segs:
    """The segment records of a batch of several sequences (docs/ARCHITECTURE.md, "Slots"): `n`
    consecutive step records from `at`, read by the kernels that index state by slot."""
    at: Act
    n: int

    def kw(self) -> dict:
        return {"segs": self.at, "n_seg": self.n}


def seg_kw(segs: Segs | None) -> dict:
    """Keyword arguments of a segmented kernel call (none: the batch is one sequence)."""
    return segs.kw() if segs is not None else {}


@dataclass(frozen=True)
class Residual:
    """The residual stream and, when the last block could not add its output in place, that
    output (in `block_out`) still to be added by the next norm."""
    stream: Act
    pending: Act | None = None


@dataclass
class Buffers:
    """Every activation buffer of the model, sized for the largest batch (made once)."""
    resid: Act            # [T, E] the residual stream
    normed: Act           # [T, E] norm(stream) when a norm runs as its own dispatch
    hidden: Act           # [T+1, E] row 0: the MTP's pending hidden; rows 1..: final hiddens
    draft_hidden: Act     # [n_draft_max+2, E] the MTP chain's hiddens (batched: [n+1, m, E])
    last_hidden: Act      # [E] the last row's final hidden (plain decoding)
    mtp_hprev: Act        # [T, E] batched: the hidden that predicted each row (the MTP head's input)
    block_out: Act        # [T, E] a block output waiting to be added into the stream
    q_gate: Act           # [T, H, 2, D] attention q interleaved with its gate
    k: Act
    v: Act
    attn_out: Act
    stacked_out: Act      # [T, rows] outputs of a stacked projection
    ffn_act: Act          # [T, F] silu(gate) * up (also the unstacked gate)
    ffn_up: Act
    mtp_concat: Act       # [T, 2E] MTP's [enorm(embed); hnorm(hidden)]
    logits: Act
    top_vals: Act
    top_ids: Act
    p_top: Act
    sample_scratch: Act
    attn_workspace: Act
    moe_scratch: Act | None = None
    qkv_mixed: Act | None = None   # GDN in-projection outputs
    conv_out: Act | None = None
    z_gate: Act | None = None
    alpha: Act | None = None
    beta: Act | None = None
    gdn_out: Act | None = None


def _as_f32(raw: np.ndarray, qt: QT, shape: tuple[int, ...]) -> np.ndarray:
    """A small weight decoded to f32, in numpy order."""
    return quants.dequantize(raw, qt).reshape(tuple(reversed(shape)))


class Qwen35GPU:
    """Weights, state and programs of one model on one device."""

    def __init__(self, ctx: GPUContext, gm: GGUFModel, *, n_ctx: int, t_max: int = 64,
                 n_draft_max: int = 15, progress: bool = True, n_seq: int = 1, checkpoints: bool = False) -> None:
        self.ctx = ctx
        self.gm = gm
        self.cfg: ModelConfig = gm.config
        self.n_ctx = n_ctx
        self.t_max = max(t_max, MATVEC_MAX_TOK)
        self.lay = StepLayout(self.t_max, n_draft_max)
        self.w: dict[str, GPUTensor] = {}
        self._progress = progress
        self.load_stats = (0, 0.0)          # (bytes, seconds) of weight uploads so far
        self.upload(mtp=False)
        c = self.cfg
        self.rope = rope.rope_table(ctx, n_ctx, c.n_rot, c.rope_base)
        self.dims = gdn.GDNDims.from_config(c) if any(c.is_gdn) else None
        self.state = GPUState.allocate(ctx, c, n_ctx, n_seq, cand_rows=n_draft_max + 1, checkpoints=checkpoints)
        self.n_seq = n_seq
        # batched programs of several sequences: one step-buffer region (and one top-k candidates
        # area) per program of a submission
        self.n_regions = 2 * n_seq + 2
        self.buf = self._alloc_buffers()
        probe = SlotLayout(0, self.t_max, n_draft_max)
        self.slot_lays = [SlotLayout(r * probe.end, self.t_max, n_draft_max) for r in range(self.n_regions)]
        self.slot_eog = self.n_regions * probe.end
        self.slot_step = Act(ctx.buffer((self.slot_eog + N_EOG) * 4, label="slot_step"))
        self.fuse = linear.fusions(ctx)
        self.n_eog = 0                  # end-of-generation ids the runner wrote at lay.eog
        self._programs: dict[tuple, Program] = {}
        self._chain_ids = None          # a draft model's chain ids (chain_ids), made on first use
        self._keep: dict[int, Act] | None = None     # long rounds' in-projections (long_keep)

    # ---------------------------------------------------------------------------------------
    # weights and buffers

    def upload(self, *, mtp: bool) -> None:
        """Upload the trunk (and with `mtp`, the MTP block); MTP tensors stay on the host until
        speculative decoding is asked for (docs/ARCHITECTURE.md, "Weights stay quantized").
        Projections that read one input are uploaded stacked (tensors.stacked_groups), and then
        not also on their own."""
        want = [n for n in self.gm.used_tensors if n not in self.w and (mtp or not self.gm.is_mtp_tensor(n))]
        groups = {}
        for i in range(self.cfg.block_count if mtp else self.cfg.n_layer):
            for g, members in stacked_groups(self.cfg, i).items():
                if g not in self.w and all(m in want for m in members) and \
                        len({self.gm.tensors[m].qtype for m in members}) == 1:
                    groups[g] = members
        in_group = {m for ms in groups.values() for m in ms}
        names = [n for n in want if n not in in_group]
        total = sum(self.gm.tensors[n].n_bytes for n in want)
        bar = None
        if self._progress and total > 64 << 20:
            from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
            bar = Progress("uploading weights", BarColumn(), DownloadColumn(), TransferSpeedColumn(), transient=True)
            bar.start()
            task = bar.add_task("up", total=total)
        prog = (lambda b: bar.update(task, advance=b)) if bar else None
        jobs = []
        for g, members in groups.items():
            job = stack_job(g, [(self.gm.raw(m), self.gm.tensors[m].qtype, self.gm.tensors[m].shape)
                                for m in members], names=members)
            if job is None:             # widths differ: each on its own
                names += members
            else:
                jobs.append(job)
        for n in names:
            info = self.gm.tensors[n]
            raw, qt = self.gm.raw(n), info.qtype
            if qt != QT.F32 and reads_f32(n, info.shape):
                # a small tensor the kernels read as f32 (norms, gates, conv taps, routers) stored
                # in another type (F16, BF16, ...): decoded once, to the values the twins use
                raw, qt = partial(_as_f32, self.gm.raw(n), info.qtype, info.shape), QT.F32
            jobs.append(UploadJob(n, raw, qt, info.shape))
        t0 = time.perf_counter()
        try:
            got = upload_all(self.ctx, jobs, prog)
            self.w.update(got)
            for t in list(got.values())[-1:]:     # the queue's writes land before the clock stops
                self.ctx.read(t.parts[-1].buffer, 0, 4)
            n_bytes, dt = sum(t.nbytes for t in got.values()), time.perf_counter() - t0
            self.load_stats = (self.load_stats[0] + n_bytes, self.load_stats[1] + dt)
        finally:
            if bar:
                bar.stop()

    def _alloc_buffers(self) -> Buffers:
        c, T, ctx = self.cfg, self.t_max, self.ctx
        E, H, Hkv, D, F = c.n_embd, c.n_head, c.n_head_kv, c.head_dim, c.n_ff
        buf = lambda n, lab: Act(ctx.buffer(max(n, 4) * 4, label=lab))  # noqa: E731
        n_stacked = max([2 * H * D + 2 * Hkv * D, 2 * F]
                        + ([c.conv_dim + c.value_dim + 2 * c.ssm_dt_rank] if any(c.is_gdn) else []))
        rows = MATVEC_MAX_TOK              # logits rows: the largest mat-vec batch
        cache_shape = attention.KVCache(self.n_ctx, c.n_head_kv, c.head_dim, ctx.f16)   # dims only, no buffers
        b = Buffers(
            resid=buf(T * E, "resid"), normed=buf(T * E, "normed"), hidden=buf((T + 1) * E, "hidden"),
            draft_hidden=buf((self.lay.n_draft_max + 2 + 2 * SEG_MAX) * E, "draft_hidden"),
            last_hidden=buf(E, "last_hidden"), mtp_hprev=buf(T * E, "mtp_hprev"),
            block_out=buf(T * E, "block_out"), q_gate=buf(T * 2 * H * D, "q_gate"), k=buf(T * Hkv * D, "k"),
            v=buf(T * Hkv * D, "v"), attn_out=buf(T * H * D, "attn_out"), stacked_out=buf(T * n_stacked, "stacked_out"),
            ffn_act=buf(T * F, "ffn_act"), ffn_up=buf(T * F, "ffn_up"), mtp_concat=buf(T * 2 * E, "mtp_concat"),
            logits=buf(rows * c.n_vocab, "logits"), top_vals=buf(rows * TOPK_MAX * (self.n_regions + 1), "top_vals"),
            top_ids=Act(ctx.buffer(rows * TOPK_MAX * (self.n_regions + 1) * 4, label="top_ids")),
            p_top=buf(max(self.lay.n_draft_max + 1 + 2 * SEG_MAX, T), "p_top"),   # a long round's chain: < T drafts
            sample_scratch=Act(ctx.buffer(max(sample.argmax_scratch_words(c.n_vocab, rows),
                                              sample.topk_scratch_words(c.n_vocab, rows, TOPK_MAX)) * 4,
                                          label="sample_scratch")),
            attn_workspace=Act(ctx.buffer(attention.workspace_floats(cache_shape, c.n_head, T) * 4,
                                          label="attn_workspace")))
        if c.is_moe:
            b.moe_scratch = buf(moe.ffn_scratch_words(E, c.n_expert, c.n_expert_used, c.n_ff_exp, c.n_ff_shexp, T),
                                "moe_scratch")
        if any(c.is_gdn):
            b.qkv_mixed, b.conv_out = buf(T * c.conv_dim, "qkv_mixed"), buf(T * c.conv_dim, "conv_out")
            b.z_gate, b.gdn_out = buf(T * c.value_dim, "z_gate"), buf(T * c.value_dim, "gdn_out")
            b.alpha, b.beta = buf(T * c.ssm_dt_rank, "alpha"), buf(T * c.ssm_dt_rank, "beta")
        self.step_buf = Act(ctx.buffer(self.lay.words * 4, label="step_data"))
        return b

    def ensure_state(self, n_planes: int, mtp: bool) -> None:
        """State with `n_planes` snapshot planes (n_max + 1 for speculation); MTP weights and cache
        on first use. Programs bind the state's buffers, so new buffers mean new programs."""
        if mtp and self.state.mtp_cache is None:
            self.upload(mtp=True)
        if self.state.ensure(n_planes, mtp):
            self._programs = {}

    def state_bytes(self) -> int:
        return self.state.nbytes()

    def weight_bytes(self) -> int:
        return sum(t.nbytes for t in self.w.values())

    def step_at(self, at: int) -> Act:
        """A field of the step buffer (a step record, or u32 ids) at word offset `at`."""
        return self.step_buf.at(at)

    # ---------------------------------------------------------------------------------------
    # building blocks: each emits its kernels, one call per op; the residual is passed through

    def _norm(self, pb: ProgramBuilder, name: str, res: Residual, out: Act, step: Act, T: int) -> Residual:
        """out = rmsnorm(stream) * w[name], first adding a pending block output."""
        c = self.cfg
        if res.pending is not None:
            norm.add_rmsnorm(pb, step, res.stream, res.pending, self.w[name], res.stream, out, c.n_embd, c.eps, T)
        else:
            norm.rmsnorm(pb, step, res.stream, self.w[name], out, c.n_embd, c.eps, T)
        return Residual(res.stream)

    def _norm_for_product(self, pb: ProgramBuilder, name: str, res: Residual, step: Act,
                          T: int) -> tuple[Act, str | None, Residual]:
        """(input, norm left to fuse, residual) of a product reading rmsnorm(stream) * w[name]: the
        stream itself with the norm fused into a mat-vec, or `normed` after a norm dispatch (prefill,
        a pending add, or the norm fusion off)."""
        if T <= MATVEC_MAX_TOK and "norm" in self.fuse and res.pending is None:
            return res.stream, name, res
        res = self._norm(pb, name, res, self.buf.normed, step, T)
        return self.buf.normed, None, res

    def _norm_arg(self, name: str | None) -> tuple[GPUTensor, float] | None:
        return (self.w[name], self.cfg.eps) if name else None

    def _project_add(self, pb: ProgramBuilder, name: str, x: Act, res: Residual, step: Act, T: int) -> Residual:
        """stream += W x: fused into the mat-vec, or left pending in block_out."""
        if T <= MATVEC_MAX_TOK and "add" in self.fuse:
            linear.linear(pb, self.w[name], x, res.stream, step, max_tok=T, add=True)
            return res
        linear.linear(pb, self.w[name], x, self.buf.block_out, step, max_tok=T)
        return Residual(res.stream, pending=self.buf.block_out)

    def _project_group(self, pb: ProgramBuilder, group: str, res: Residual, step: Act, T: int,
                       outs: list[tuple[str, Act]], norm_name: str,
                       into: tuple[Act, int] | None = None) -> tuple[list[Act], list[int], Residual]:
        """Projections of norm(stream): one mat-vec over the stacked weight into `stacked_out` when
        the group was stacked at upload, else one per member into its own buffer. `into` (base,
        row stride = the members' rows together): every member's rows at its offset of one row
        there, stacked or not. Returns each member's output, its row stride, and the residual."""
        x, fused_norm, res = self._norm_for_product(pb, norm_name, res, step, T)
        W = self.w.get(group)
        if into is not None:
            base, stride = into
            offs = np.cumsum([0] + [int(np.prod(self.gm.tensors[n].shape[1:])) for n, _ in outs])
            if W is not None:
                linear.linear(pb, W, x, base, step, max_tok=T, y_stride=stride, norm=self._norm_arg(fused_norm))
            else:
                for (name, _), off in zip(outs, offs):
                    linear.linear(pb, self.w[name], x, base.at(int(off)), step, max_tok=T, y_stride=stride,
                                  norm=self._norm_arg(fused_norm))
            return [base.at(int(o)) for o in offs[:-1]], [stride] * len(outs), res
        if W is None:
            for name, y in outs:
                linear.linear(pb, self.w[name], x, y, step, max_tok=T, norm=self._norm_arg(fused_norm))
            return [y for _, y in outs], [self.w[n].rows for n, _ in outs], res
        linear.linear(pb, W, x, self.buf.stacked_out, step, max_tok=T, norm=self._norm_arg(fused_norm))
        acts, off = [], 0
        for n, _ in outs:
            acts.append(self.buf.stacked_out.at(off))
            off += int(np.prod(self.gm.tensors[n].shape[1:]))
        return acts, [W.rows] * len(outs), res

    def _attn_block(self, pb: ProgramBuilder, i: int, cache: attention.KVCache, res: Residual, step: Act,
                    T: int, segs: Segs | None = None) -> Residual:
        """Gated attention on norm(stream): q+gate, k, v projections; q/k norm + rope in place; KV
        append; attention with the sigmoid gate; output projection added into the stream."""
        c, w, b = self.cfg, self.w, self.buf
        H, Hkv, D = c.n_head, c.n_head_kv, c.head_dim
        p = f"blk.{i}."
        (qg, k, v), (sq, sk, sv), res = self._project_group(pb, p + "attn_in", res, step, T, [
            (p + "attn_q.weight", b.q_gate), (p + "attn_k.weight", b.k), (p + "attn_v.weight", b.v)],
            norm_name=p + "attn_norm.weight")
        rope.rmsnorm_rope(pb, step, qg, w[p + "attn_q_norm.weight"], self.rope, qg, H, D, c.eps, T,
                            x_stride=sq, x_head_stride=2 * D, out_stride=sq, out_head_stride=2 * D,
                            op_name="q_norm_rope", **seg_kw(segs))
        rope.rmsnorm_rope(pb, step, k, w[p + "attn_k_norm.weight"], self.rope, k, Hkv, D, c.eps, T,
                            x_stride=sk, out_stride=sk, op_name="k_norm_rope", **seg_kw(segs))
        attention.kv_store(pb, cache, k, v, step, max_tok=T, k_ts=sk, v_ts=sv, **seg_kw(segs))
        attention.attention(pb, cache, qg, b.attn_out, b.attn_workspace, step, n_head=H, max_tok=T,
                            q_ts=sq, q_hs=2 * D, gate=qg.at(D), g_ts=sq, g_hs=2 * D, **seg_kw(segs))
        return self._project_add(pb, p + "attn_output.weight", b.attn_out, res, step, T)

    def _gdn_block(self, pb: ProgramBuilder, i: int, res: Residual, step: Act, T: int, chunked: bool,
                   segs: Segs | None = None, keep_row: int | None = None) -> Residual:
        """Gated DeltaNet on norm(stream): in-projections, conv, delta rule, gated norm, ssm_out
        added into the stream. keep_row: the in-projections go to rows keep_row.. of the layer's
        long-round buffer (long_keep), where the round's rerun reads them again."""
        c, w, st, b = self.cfg, self.w, self.state, self.buf
        p = f"blk.{i}."
        into = None if keep_row is None else (self.long_keep()[i].at(keep_row * self.keep_width), self.keep_width)
        (mix, z, al, be), (s_mix, s_z, s_al, s_be), res = self._project_group(pb, p + "gdn_in", res, step, T, [
            (p + "attn_qkv.weight", b.qkv_mixed), (p + "attn_gate.weight", b.z_gate),
            (p + "ssm_alpha.weight", b.alpha), (p + "ssm_beta.weight", b.beta)], norm_name=p + "attn_norm.weight",
            into=into)
        gdn.ssm_conv(pb, step, mix, w[p + "ssm_conv1d.weight"], st.conv_at(i, 0), b.conv_out,
                       n_slots=st.n_planes, x_stride=s_mix, **seg_kw(segs))
        rule = gdn.gdn_chunked if chunked else gdn.gdn
        rule(pb, step, b.conv_out, al, be, w[p + "ssm_a"], w[p + "ssm_dt.bias"], st.ssm_at(i, 0), b.gdn_out,
             self.dims, n_slots=st.n_planes, eps=c.eps, a_stride=s_al, b_stride=s_be, **seg_kw(segs))
        norm.gated_rmsnorm(pb, step, b.gdn_out, w[p + "ssm_norm.weight"], z, b.gdn_out,
                             c.ssm_dt_rank, c.head_v_dim, c.eps, T, z_stride=s_z)
        return self._project_add(pb, p + "ssm_out.weight", b.gdn_out, res, step, T)

    def _ffn(self, pb: ProgramBuilder, i: int, res: Residual, step: Act, T: int) -> Residual:
        """The FFN on norm(stream) (post_attention_norm), its output added into the stream."""
        c, w, b = self.cfg, self.w, self.buf
        p = f"blk.{i}."
        norm_name = p + "post_attention_norm.weight"
        if c.is_moe:
            res = self._norm(pb, norm_name, res, b.normed, step, T)
            L = moe.MoEWeights(
                router=w[p + "ffn_gate_inp.weight"], down=w[p + "ffn_down_exps.weight"],
                gate=w.get(p + "ffn_gate_exps.weight"), up=w.get(p + "ffn_up_exps.weight"),
                gate_up=w.get(p + "ffn_gate_up_exps.weight"), shexp_gate_inp=w.get(p + "ffn_gate_inp_shexp.weight"),
                shexp_gate=w.get(p + "ffn_gate_shexp.weight"), shexp_up=w.get(p + "ffn_up_shexp.weight"),
                shexp_down=w.get(p + "ffn_down_shexp.weight"))
            moe.ffn(pb, L, b.normed, b.block_out, step, b.moe_scratch, k=c.n_expert_used, max_tok=T)
            return Residual(res.stream, pending=b.block_out)
        F = c.n_ff
        W = w.get(p + "ffn_gate_up")
        if W is not None and T <= MATVEC_MAX_TOK and "glu" in self.fuse and linear.glu_fusable(W):
            # gate, up and SwiGLU in one mat-vec (stacked weight in one binding)
            x, fused_norm, res = self._norm_for_product(pb, norm_name, res, step, T)
            linear.matvec(pb, W, x, b.ffn_act, step, norm=self._norm_arg(fused_norm), glu=True)
        else:
            (g, u), (sg, su), res = self._project_group(pb, p + "ffn_gate_up", res, step, T, [
                (p + "ffn_gate.weight", b.ffn_act), (p + "ffn_up.weight", b.ffn_up)], norm_name=norm_name)
            # silu(gate) * up over rows that may be strided (a stacked gate/up output)
            elementwise.swiglu(pb, g, u, b.ffn_act, step, width=F, max_tok=T, g_stride=sg, u_stride=su)
        return self._project_add(pb, p + "ffn_down.weight", b.ffn_act, res, step, T)

    def _layer(self, pb: ProgramBuilder, i: int, cache: attention.KVCache | None, res: Residual, step: Act,
               T: int, chunked: bool, segs: Segs | None = None, keep_row: int | None = None) -> Residual:
        """Decoder block i: mixer (GDN, or gated attention on `cache`), then the FFN."""
        if i < self.cfg.n_layer and self.cfg.is_gdn[i]:
            res = self._gdn_block(pb, i, res, step, T, chunked, segs, keep_row)
        else:
            res = self._attn_block(pb, i, cache, res, step, T, segs)
        return self._ffn(pb, i, res, step, T)

    def _trunk(self, pb: ProgramBuilder, step: Act, T: int, *, chunked: bool = False, segs: Segs | None = None,
               ids: Act | None = None, keep_row: int | None = None) -> None:
        """embed ids[0..n_tok) (default: input_ids) -> layers -> output_norm into hidden rows 1..n_tok
        (keep_row: see _gdn_block)."""
        c, E = self.cfg, self.cfg.n_embd
        pb.at("trunk", -1)
        ids = self.step_at(self.lay.input_ids) if ids is None else ids
        linear.embed(pb, self.w["token_embd.weight"], ids, self.buf.resid, step, max_tok=T)
        res = Residual(self.buf.resid)
        for i in range(c.n_layer):
            pb.at("trunk", i)
            res = self._layer(pb, i, self.state.caches.get(i), res, step, T, chunked, segs, keep_row)
        self._norm(pb, "output_norm.weight", res, self.buf.hidden.at(E), step, T)

    def _draft_step(self, pb: ProgramBuilder, st: Act, m: int, i: int, ids: Act, ids_next: Act, h_in: Act,
                    h_out: Act, vocab: int, gate: bool, *, segs: Segs | None = None, ids_stride: int = 1) -> None:
        """Step i of an MTP draft chain over m sequences: the MTP head from ids and h_in into h_out,
        the LM head over the first `vocab` rows, its argmax into ids_next (the next step's input)
        and, with `gate`, the top probability into p_top[i * m] (draft_gate's input)."""
        b = self.buf
        self._mtp_rows(pb, st, m, ids, h_in, self.cfg.n_embd, h_out, where=f"draft{i + 1}", segs=segs,
                       ids_stride=ids_stride)
        self._logits(pb, st, h_out, m, mtp=True, vocab=vocab)
        sample.argmax(pb, st, b.logits, ids_next, vocab, m, scratch=b.sample_scratch, ids_stride=ids_stride)
        if gate:
            sample.topk(pb, st, b.logits, b.top_ids, b.top_vals, 10, vocab, m, scratch=b.sample_scratch,
                        p_top=b.p_top.at(i * m), op_name="p_top")

    def _mtp_rows(self, pb: ProgramBuilder, step: Act, T: int, ids: Act, hprev: Act, hprev_stride: int,
                  h_out: Act, *, where: str = "mtp", segs: Segs | None = None, ids_stride: int = 1) -> None:
        """MTP head over n_tok rows: token ids[t] at position pos0 + t, with hprev row t the hidden
        that predicted it; writes the MTP KV cache and h_out (post shared_head_norm) rows."""
        c, w, b, E = self.cfg, self.w, self.buf, self.cfg.n_embd
        m = c.mtp_layer
        p = f"blk.{m}."
        pb.at(where, m)
        emb = p + "nextn.embed_tokens.weight" if p + "nextn.embed_tokens.weight" in w else "token_embd.weight"
        linear.embed(pb, w[emb], ids, b.resid, step, max_tok=T, ids_stride=ids_stride)
        norm.rmsnorm(pb, step, b.resid, w[p + "nextn.enorm.weight"], b.mtp_concat, E, c.eps, T, out_stride=2 * E)
        norm.rmsnorm(pb, step, hprev, w[p + "nextn.hnorm.weight"], b.mtp_concat.at(E), E, c.eps, T,
                       x_stride=hprev_stride, out_stride=2 * E)
        linear.linear(pb, w[p + "nextn.eh_proj.weight"], b.mtp_concat, b.resid, step, max_tok=T)
        res = self._layer(pb, m, self.state.mtp_cache, Residual(b.resid), step, T, False, segs)
        head_norm = (p + "nextn.shared_head_norm.weight" if p + "nextn.shared_head_norm.weight" in w
                     else "output_norm.weight")
        self._norm(pb, head_norm, res, h_out, step, T)

    def _lm_head_name(self, mtp: bool) -> str:
        p = f"blk.{self.cfg.mtp_layer}.nextn.shared_head_head.weight"
        if mtp and p in self.w:
            return p
        return "token_embd.weight" if self.cfg.tied_embeddings else "output.weight"

    def _logits(self, pb: ProgramBuilder, step: Act, h: Act, T: int, *, mtp: bool = False,
                vocab: int | None = None) -> None:
        """logits rows of h through the LM head; `vocab`: only its first rows (draft vocabulary)."""
        if not mtp:
            pb.at("head", self.cfg.n_layer)
        W = self.w[self._lm_head_name(mtp)]
        V = W.rows if vocab is None else vocab
        if V == W.rows:
            linear.linear(pb, W, h, self.buf.logits, step, max_tok=T, op_name="lm_head")
        else:   # draft rows: T = 1
            linear.matvec(pb, W, h, self.buf.logits, step, y_stride=V, rows=V, op_name=f"lm_head[:{V}]")

    def cand_at(self, region: int | None) -> int:
        """Element offset of a program's top-k candidates in top_ids/top_vals (batched programs:
        one area per region, so every program of a submission keeps its own for the readback)."""
        return 0 if region is None else (region + 1) * MATVEC_MAX_TOK * TOPK_MAX

    def _pick(self, pb: ProgramBuilder, step: Act, T: int, ids_out: Act, n_cand: int,
              region: int | None = None) -> None:
        """argmax into ids_out (greedy), or top-k candidates into top_ids/top_vals (sampling)."""
        b, V, o = self.buf, self.cfg.n_vocab, self.cand_at(region)
        if n_cand <= 1:
            sample.argmax(pb, step, b.logits, ids_out, V, T, scratch=b.sample_scratch)
        else:
            sample.topk(pb, step, b.logits, b.top_ids.at(o), b.top_vals.at(o), n_cand, V, T, scratch=b.sample_scratch)

    def _copy_row(self, pb: ProgramBuilder, idx_at: int, add: int, src: Act, dst: Act) -> None:
        """dst = row (ids[idx_at] + add) of src: the pending hidden, chosen on the GPU."""
        E = self.cfg.n_embd
        spec.copy_row(pb, self.step_buf.buffer, idx_at, add, src, E, dst, E)

    # ---------------------------------------------------------------------------------------
    # programs

    def _cached(self, key: tuple, build) -> Program:
        p = self._programs.get(key)
        if p is None:
            p = self._programs[key] = build()
        return p

    def feed(self, T: int, mtp: bool, n_cand: int) -> Program:
        """A batch of up to T tokens (prefill chunk or decode): trunk, [MTP fill + pending hidden],
        then the last row's logits -> argmax into input_ids[0] (or top-k candidates)."""
        return self._cached(("feed", T, mtp, n_cand), lambda: self._build_feed(T, mtp, n_cand))

    def _build_feed(self, T: int, mtp: bool, n_cand: int) -> Program:
        pb = ProgramBuilder(self.ctx, f"feed{T}")
        lay, E, b = self.lay, self.cfg.n_embd, self.buf
        batch = self.step_at(lay.batch)
        self._trunk(pb, batch, T, chunked=T > MATVEC_MAX_TOK and self.dims is not None)
        if mtp:
            self._mtp_rows(pb, batch, T, self.step_at(lay.input_ids), b.hidden, E, b.normed)
            pb.at("head")
            # pending hidden = final hidden of the last token: hidden row n_tok (row 0 is the old pending)
            self._copy_row(pb, lay.batch, 0, b.hidden, b.hidden)
            last = b.hidden
        else:
            pb.at("head")
            self._copy_row(pb, lay.batch, -1, b.hidden.at(E), b.last_hidden)
            last = b.last_hidden
        one = self.step_at(lay.last)
        self._logits(pb, one, last, 1)
        self._pick(pb, one, 1, self.step_at(lay.input_ids), n_cand)
        return pb.build()

    def logits_only(self, T: int) -> Program:
        """Trunk over up to T <= 16 tokens with logits for every row (Model.logits, check)."""
        return self._cached(("logits_only", T), lambda: self._build_logits_only(T))

    def _build_logits_only(self, T: int) -> Program:
        pb = ProgramBuilder(self.ctx, f"logits{T}")
        batch = self.step_at(self.lay.batch)
        self._trunk(pb, batch, T)
        self._logits(pb, batch, self.buf.hidden.at(self.cfg.n_embd), T)
        return pb.build()

    def draft(self, n: int, p_min: float, vocab: int) -> Program:
        """The draft chain of a round: n MTP rows, each argmax feeding the next row's embedding
        (and with p_min > 0 the gate that counts the confident leading drafts). `vocab` < n_vocab:
        the LM head and argmax of each row cover token ids < vocab only (a cheaper draft; the
        verify batch still reads the whole head, so the output is unchanged)."""
        return self._cached(("draft", n, float(p_min), vocab), lambda: self._build_draft(n, float(p_min), vocab))

    def _build_draft(self, n: int, p_min: float, vocab: int) -> Program:
        pb = ProgramBuilder(self.ctx, f"draft{n}")
        lay, E, b = self.lay, self.cfg.n_embd, self.buf
        gate = p_min > 0
        # row i reads input_ids[i] and a hidden (i == 0: the pending hidden[0], else draft_hidden[i])
        for i in range(n):
            st = self.step_at(lay.draft(i))
            hp = b.hidden if i == 0 else b.draft_hidden.at(i * E)
            self._draft_step(pb, st, 1, i, self.step_at(lay.input_ids + i), self.step_at(lay.input_ids + i + 1), hp,
                             b.draft_hidden.at((i + 1) * E), vocab, gate)
        if gate:
            pb.at("draft")
            spec.draft_gate(pb, self.step_buf.buffer, b.p_top, n, lay.n_valid, p_min)
        return pb.build()

    def verify(self, n: int, n_cand: int) -> Program:
        """The rest of a round: verify [id_last, d1..dn] in one batch, refill the MTP KV from the
        target's hiddens, then greedy acceptance and the pending-hidden update on the GPU
        (n_cand = 1), or top-k candidates of all n+1 rows for the host's sampler."""
        return self._cached(("verify", n, n_cand, self.n_eog), lambda: self._build_verify(n, n_cand))

    def _build_verify(self, n: int, n_cand: int) -> Program:
        pb = ProgramBuilder(self.ctx, f"verify{n}")
        lay, E, c, b = self.lay, self.cfg.n_embd, self.cfg, self.buf
        batch = self.step_at(lay.batch)
        T = n + 1
        self._trunk(pb, batch, T)
        self._logits(pb, batch, b.hidden.at(E), T)
        # MTP KV rows pos0..pos0+n from the target's hiddens (overwrites the draft-time rows)
        self._mtp_rows(pb, batch, T, self.step_at(lay.input_ids), b.hidden, E, b.normed)
        pb.at("head")
        if n_cand <= 1:
            sample.argmax(pb, batch, b.logits, self.step_at(lay.argmax), c.n_vocab, T, scratch=b.sample_scratch)
            spec.accept(pb, self.step_buf.buffer, n=n, tgt_off=lay.argmax, draft_off=lay.input_ids + 1,
                          nvalid_off=lay.n_valid, eog_off=lay.eog, n_eog=self.n_eog, res_off=lay.result,
                          next_off=lay.input_ids, step_off=lay.batch)
            self._copy_row(pb, lay.result, 1, b.hidden, b.hidden)
        else:
            sample.topk(pb, batch, b.logits, b.top_ids, b.top_vals, n_cand, c.n_vocab, T, scratch=b.sample_scratch)
        return pb.build()

    def commit(self) -> Program:
        """After a host-accepted (sampled) round: pending hidden = hidden row k + 1 (k in result[0])."""
        return self._cached(("commit",), self._build_commit)

    def _build_commit(self) -> Program:
        pb = ProgramBuilder(self.ctx, "commit").at("head")
        self._copy_row(pb, self.lay.result, 1, self.buf.hidden, self.buf.hidden)
        return pb.build()


    # ---------------------------------------------------------------------------------------
    # batched programs: several sequences in one batch, each a segment (docs/ARCHITECTURE.md, "Slots")

    def slot_at(self, at: int) -> Act:
        return self.slot_step.at(at)

    def _gather_hprev(self, pb: ProgramBuilder, L: SlotLayout, T: int, m: int, R: int) -> None:
        """mtp_hprev row r = the hidden that predicted row r's token: the trunk's row r - 1 (hidden
        row r), except a sequence's first row, whose is its pending hidden (cand_hidden row p_row
        of its segment record)."""
        E, b, sb = self.cfg.n_embd, self.buf, self.slot_step.buffer
        spec.copy_row(pb, sb, L.zero, 0, b.hidden, T * E, b.mtp_hprev, T * E)
        for j in range(m):
            spec.copy_row(pb, sb, L.seg(j) + 6, 0, Act(self.state.cand_hidden), E, b.mtp_hprev.at(j * R * E), E)

    def slot_feed(self, T: int, n_cand: int, mtp: bool, region: int) -> Program:
        """A prefill chunk (or one token) of one sequence in its slot: trunk, [MTP fill], its last
        final hidden into its cand_hidden row (the pending hidden), the last row's argmax (into
        `argmax`) or top-k candidates."""
        return self._cached(("slot_feed", T, n_cand, mtp, region),
                            lambda: self._build_slot_feed(T, n_cand, mtp, region))

    def _build_slot_feed(self, T: int, n_cand: int, mtp: bool, region: int) -> Program:
        pb = ProgramBuilder(self.ctx, f"slot_feed{T}")
        L, E, b, sb = self.slot_lays[region], self.cfg.n_embd, self.buf, self.slot_step.buffer
        step, segs = self.slot_at(L.batch), Segs(self.slot_at(L.segs), 1)
        self._trunk(pb, step, T, chunked=T > MATVEC_MAX_TOK and self.dims is not None, segs=segs,
                    ids=self.slot_at(L.input_ids))
        if mtp:
            self._gather_hprev(pb, L, T, 1, T)
            self._mtp_rows(pb, step, T, self.slot_at(L.input_ids), b.mtp_hprev, E, b.normed, segs=segs)
        pb.at("head")
        spec.copy_row(pb, sb, L.batch, 0, b.hidden, E, b.last_hidden, E)
        if mtp:
            spec.copy_row(pb, sb, L.batch, 0, b.hidden, E, Act(self.state.cand_hidden), E, dst_idx_off=L.seg(0) + 7)
        one = self.slot_at(L.last)
        self._logits(pb, one, b.last_hidden, 1)
        self._pick(pb, one, 1, self.slot_at(L.argmax), n_cand, region)
        return pb.build()

    def slot_round(self, m: int, n: int, n_cand: int, vocab: int, p_min: float, mtp: bool, region: int,
                   host_drafts: bool = False) -> Program:
        """One round of m sequences with n drafts each, in one batch (n = 0: plain decoding): the
        draft chains stepped together (draft step i is one m-row batch, one row per sequence), one
        verify batch of m segments of n + 1 rows, the MTP KV refill, then per sequence the greedy
        acceptance (into result(j)) or the top-k candidates of every row. With host_drafts the
        drafts come with the step data (an n-gram lookup on the host) and no chain runs."""
        key = ("slot_round", m, n, n_cand, vocab, float(p_min), mtp, self.n_eog, region, host_drafts)
        return self._cached(key, lambda: self._build_slot_round(m, n, n_cand, vocab, float(p_min), mtp, region,
                                                                host_drafts))

    def _build_slot_round(self, m: int, n: int, n_cand: int, vocab: int, p_min: float, mtp: bool,
                          region: int, host_drafts: bool) -> Program:
        pb = ProgramBuilder(self.ctx, f"slot_round{m}x{n}")
        L, E, b, sb = self.slot_lays[region], self.cfg.n_embd, self.buf, self.slot_step.buffer
        R, T = n + 1, m * (n + 1)
        cand = Act(self.state.cand_hidden)
        chain = 0 if host_drafts else n     # draft steps run on the GPU
        gate = chain > 0 and p_min > 0
        for j in range(m if chain else 0):  # each chain starts from its sequence's pending hidden
            spec.copy_row(pb, sb, L.draft_seg(0, j) + 6, 0, cand, E, b.draft_hidden.at(j * E), E)
        for i in range(chain):
            st, dsegs = self.slot_at(L.draft(i)), Segs(self.slot_at(L.draft_seg(i, 0)), m)
            h_in, h_out = b.draft_hidden.at(i * m * E), b.draft_hidden.at((i + 1) * m * E)
            self._draft_step(pb, st, m, i, self.slot_at(L.input_ids + i), self.slot_at(L.input_ids + i + 1), h_in,
                             h_out, vocab, gate, segs=dsegs, ids_stride=R)
        if gate:
            pb.at("draft")
            for j in range(m):
                spec.draft_gate(pb, sb, b.p_top.at(j), n, L.n_valid + j, p_min, p_stride=m)
        step, segs = self.slot_at(L.batch), Segs(self.slot_at(L.segs), m)
        self._trunk(pb, step, T, segs=segs, ids=self.slot_at(L.input_ids))
        self._logits(pb, step, b.hidden.at(E), T)
        if mtp:
            self._gather_hprev(pb, L, T, m, R)
            self._mtp_rows(pb, step, T, self.slot_at(L.input_ids), b.mtp_hprev, E, b.normed, segs=segs)
        pb.at("head")
        if mtp:     # each sequence's final hiddens -> its cand_hidden rows (one is its next pending hidden)
            for j in range(m):
                spec.copy_row(pb, sb, L.zero, 1 + j * R, b.hidden, E, cand, R * E, dst_idx_off=L.seg(j) + 7)
        self._pick(pb, step, T, self.slot_at(L.argmax), n_cand, region)
        if n_cand <= 1:
            for j in range(m if n else 0):
                spec.accept(pb, sb, n=n, tgt_off=L.argmax + j * R, draft_off=L.input_ids + j * R + 1,
                            nvalid_off=L.n_valid + j, eog_off=self.slot_eog, n_eog=self.n_eog,
                            res_off=L.result(j), next_off=L.junk + j, step_off=L.seg(j))
        return pb.build()

    # ---------------------------------------------------------------------------------------
    # a long round (docs/ARCHITECTURE.md, "Long drafts"): more drafts than the snapshot planes hold

    @property
    def keep_width(self) -> int:
        """Floats of one row of a GDN layer's in-projections: qkv | z | alpha | beta."""
        c = self.cfg
        return c.conv_dim + c.value_dim + 2 * c.ssm_dt_rank

    def long_keep(self) -> dict[int, Act]:
        """Per GDN layer, the in-projections of every row of a long round ([t_max, keep_width]),
        the inputs its rerun reads again: one buffer each (a layer's is far below a binding), made
        on first use. Memory: long_keep_bytes."""
        if self._keep is None:
            c = self.cfg
            self._keep = {i: Act(self.ctx.buffer(self.t_max * self.keep_width * 4, label=f"long_keep{i}"))
                          for i in range(c.n_layer) if c.is_gdn[i]}
        return self._keep

    def slot_long_round(self, n: int, mtp: bool, region: int, *, chain: bool = False, vocab: int = 0,
                        p_min: float = 0.0) -> Program:
        """A greedy round of one sequence with n drafts, n + 1 rows in sub-batches of LONG_SUB rows
        (each bit-identical to plain decoding's rows: the mat-vec's width), whose rollback needs
        no plane per row. The drafts come from the host, or with `chain` from the MTP chain in the
        same submission (as slot_round's, one row per step; `vocab` and the p_min gate as there).
        Sub-batch c runs the trunk from plane P_c and stores only its final state, into P_(c+1);
        its GDN in-projections stay in long_keep. After the acceptance, rerun_record names the
        sub-batch c holding the last kept row k, and ssm_conv + gdn run again over that
        sub-batch's kept rows from P_c (no weights read), the final state into plane 0: the state
        after row k, bit for bit a plain decode's. With mtp, the MTP KV refill per sub-batch and
        the pending hidden (row k + 1's final hidden) into the slot's first cand_hidden row."""
        if chain and not mtp:
            raise ValueError("a long round's MTP chain needs the MTP block")
        vocab, p_min = (vocab or self.cfg.n_vocab, float(p_min)) if chain else (0, 0.0)   # host drafts: unused
        return self._cached(("slot_long_round", n, mtp, self.n_eog, region, chain, vocab, p_min),
                            lambda: self._build_slot_long_round(n, mtp, region, chain, vocab, p_min))

    def _build_slot_long_round(self, n: int, mtp: bool, region: int, chain: bool, vocab: int,
                               p_min: float) -> Program:
        pb = ProgramBuilder(self.ctx, f"slot_long_round{n}")
        L, E, c, b, sb = self.slot_lays[region], self.cfg.n_embd, self.cfg, self.buf, self.slot_step.buffer
        R = n + 1
        if R > self.t_max:
            raise ValueError(f"a long round of {R} rows exceeds the step's {self.t_max} rows")
        subs = [(r0, min(LONG_SUB, R - r0)) for r0 in range(0, R, LONG_SUB)]
        cand = Act(self.state.cand_hidden)
        if chain:   # the MTP chain from the pending hidden, its hiddens alternating in two draft_hidden rows
            gate = p_min > 0
            spec.copy_row(pb, sb, L.seg(0) + 6, 0, cand, E, b.draft_hidden, E)
            for i in range(n):
                st, dseg = self.slot_at(L.long_chain(i)), Segs(self.slot_at(L.long_chain(i) + STEP_WORDS), 1)
                h_in, h_out = b.draft_hidden.at((i % 2) * E), b.draft_hidden.at((1 - i % 2) * E)
                self._draft_step(pb, st, 1, i, self.slot_at(L.input_ids + i), self.slot_at(L.input_ids + i + 1),
                                 h_in, h_out, vocab, gate, segs=dseg)
            if gate:
                pb.at("draft")
                spec.draft_gate(pb, sb, b.p_top, n, L.n_valid, p_min)
        if mtp:     # mtp_hprev row r: the hidden that predicted row r (row 0: the pending hidden)
            spec.copy_row(pb, sb, L.seg(0) + 6, 0, cand, E, b.mtp_hprev, E)
        for ci, (r0, rows) in enumerate(subs):
            st, seg = self.slot_at(L.long_sub(ci)), Segs(self.slot_at(L.long_sub(ci) + STEP_WORDS), 1)
            self._trunk(pb, st, rows, segs=seg, ids=self.slot_at(L.input_ids + r0), keep_row=r0)
            self._logits(pb, st, b.hidden.at(E), rows)
            pb.at("head")
            sample.argmax(pb, st, b.logits, self.slot_at(L.argmax + r0), c.n_vocab, rows, scratch=b.sample_scratch)
            if mtp:
                spec.copy_row(pb, sb, L.zero, 1, b.hidden, E, b.mtp_hprev.at((r0 + 1) * E), rows * E)
        if mtp:
            for ci, (r0, rows) in enumerate(subs):
                st, seg = self.slot_at(L.long_sub(ci)), Segs(self.slot_at(L.long_sub(ci) + STEP_WORDS), 1)
                self._mtp_rows(pb, st, rows, self.slot_at(L.input_ids + r0), b.mtp_hprev.at(r0 * E), E, b.normed,
                               segs=seg)
        pb.at("head")
        spec.accept(pb, sb, n=n, tgt_off=L.argmax, draft_off=L.input_ids + 1, nvalid_off=L.n_valid,
                    eog_off=self.slot_eog, n_eog=self.n_eog, res_off=L.result(0), next_off=L.junk, step_off=L.seg(0))
        spec.rerun_record(pb, sb, res_off=L.result(0), tmpl_off=L.long_tmpl, table_off=L.long_table,
                          rec_off=L.long_rerun, sub=LONG_SUB)
        rerun, keep, K = self.slot_at(L.long_rerun), self.long_keep(), self.keep_width
        for i in keep:
            pb.at("rerun", i)
            p = f"blk.{i}."
            gdn.ssm_conv(pb, rerun, keep[i], self.w[p + "ssm_conv1d.weight"], self.state.conv_at(i, 0), b.conv_out,
                         n_slots=self.state.n_planes, x_stride=K)
            al = keep[i].at(c.conv_dim + c.value_dim)
            gdn.gdn(pb, rerun, b.conv_out, al, al.at(c.ssm_dt_rank), self.w[p + "ssm_a"], self.w[p + "ssm_dt.bias"],
                    self.state.ssm_at(i, 0), b.gdn_out, self.dims, n_slots=self.state.n_planes, eps=c.eps,
                    a_stride=K, b_stride=K)
        if mtp:
            pb.at("head")
            spec.copy_row(pb, sb, L.result(0), 1, b.mtp_hprev, E, cand, E, dst_idx_off=L.seg(0) + 7)
        return pb.build()

    # ---------------------------------------------------------------------------------------
    # a separate draft model's round (models/qwen35/draft_model.py): catch-up batches, then one
    # chain of all their sequences, the drafts staying on the GPU between steps

    def chain_ids(self, region: int) -> Act:
        """The draft ids of a chain program (u32, step-major: d_{i+1} of sequence j at word i*m + j),
        written by each step's argmax and read by the next step's embedding; their own buffer (the
        slot step regions hold too few id words for 16 sequences x 15 drafts), made on first use."""
        words = self.lay.n_draft_max * SEG_MAX
        if self._chain_ids is None:
            self._chain_ids = self.ctx.buffer(self.n_regions * words * 4, label="chain_ids")
        return Act(self._chain_ids, region * words)

    def slot_catchup(self, m: int, region: int) -> Program:
        """A draft model's catch-up of m sequences in one batch (segments of any lengths, at most
        MATVEC_MAX_TOK rows in all, so its rows are bit-identical to plain decoding's): the trunk
        over the tokens each sequence was fed since its last round, then each one's last final
        hidden copied into the draft_hidden row its segment names (step_data.gather_words), where
        slot_chain takes its logits."""
        return self._cached(("slot_catchup", m, region), lambda: self._build_slot_catchup(m, region))

    def _build_slot_catchup(self, m: int, region: int) -> Program:
        pb = ProgramBuilder(self.ctx, f"slot_catchup{m}")
        L, E, b, sb = self.slot_lays[region], self.cfg.n_embd, self.buf, self.slot_step.buffer
        step, segs = self.slot_at(L.batch), Segs(self.slot_at(L.segs), m)
        self._trunk(pb, step, MATVEC_MAX_TOK, segs=segs, ids=self.slot_at(L.input_ids))
        pb.at("head")
        for s in range(m):
            src, dst = L.gather_words(s)
            spec.copy_row(pb, sb, src, 0, b.hidden, E, b.draft_hidden, E, dst_idx_off=dst)
        return pb.build()

    def slot_chain(self, m: int, n: int, region: int) -> Program:
        """A draft model's chain of n drafts for m sequences: d1 = argmax of each gathered last
        hidden (draft_hidden rows 0..m-1), then n - 1 steps, step i one m-row batch (one row per
        sequence, each its own segment, as _build_slot_round's MTP chain) feeding d_{i+1} and
        taking its argmax as d_{i+2}, into chain_ids(region): no host hop between steps."""
        return self._cached(("slot_chain", m, n, region), lambda: self._build_slot_chain(m, n, region))

    def _build_slot_chain(self, m: int, n: int, region: int) -> Program:
        pb = ProgramBuilder(self.ctx, f"slot_chain{m}x{n}")
        L, E, b = self.slot_lays[region], self.cfg.n_embd, self.buf
        ids = self.chain_ids(region)
        first = self.slot_at(L.batch)
        self._logits(pb, first, b.draft_hidden, m)
        self._pick(pb, first, m, ids, 1)
        for i in range(n - 1):
            st, segs = self.slot_at(L.draft(i)), Segs(self.slot_at(L.draft_seg(i, 0)), m)
            self._trunk(pb, st, m, segs=segs, ids=ids.at(i * m))
            self._logits(pb, st, b.hidden.at(E), m)
            self._pick(pb, st, m, ids.at((i + 1) * m), 1)
        return pb.build()
