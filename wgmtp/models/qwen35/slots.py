"""Several sequences of a qwen35 model on one adapter: the batched steps of docs/ARCHITECTURE.md,
"Slots". Each sequence lives in a slot of the state; one `step` is one submission that serves all
the work it is given: prefill chunks of joining sequences and decode rounds of running ones, with
one small readback.

A round of sequence j with n drafts is one segment of n + 1 rows of a verify batch (n = 0: plain
decoding, one row). Rounds with the same shape (n, candidates, draft vocabulary, p-min) share one
program: their draft chains step together (draft step i is one row per sequence) and their verify
rows form one batch of segments. Where the rows would exceed the multi-column mat-vec's width
(MATVEC_MAX_TOK), the sequences are split into column groups, one program each, in the same
submission. Each program has its own region of the slot step buffer, so every program's host
data is written before the submission and every result survives until the readback.

Per slot the host keeps: the position (tokens fed), the recurrent plane the next batch starts from
(rollback: n - k after a round that accepted k of n drafts), and the row of `cand_hidden` that
holds the MTP head's pending hidden (cand_base + k). Nothing per sequence depends on which other
sequences share the batch: every kernel runs per segment exactly as for one sequence, and the
row-wise kernels are batch-invariant per column (ARCHITECTURE.md, "Batch invariance").
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...errors import ContextOverflowError, WgmtpError, raise_ctx_hint
from ...gpu.device import GPUContext, open_context
from ...gpu.program import Program, Readback, Runner
from ...sampling import TOPK_MAX
from .memory import long_keep_bytes, state_bytes
from .model_file import GGUFModel
from .program import LONG_SUB, MATVEC_MAX_TOK, Qwen35GPU
from .step_data import N_EOG, SEG_MAX, Seg

N_DRAFT_MAX = 15      # drafts of a round whose rollback is by snapshot planes (every drafter)
N_LONG_MAX = 48       # drafts of a long round (greedy, host or MTP drafts: program.slot_long_round)


def planes_for(n_max: int) -> int:
    """Snapshot planes per slot: one per row of the longest plane-rolled round."""
    return min(n_max, N_DRAFT_MAX) + 1


@dataclass
class Feed:
    """Prefill `tokens` (at most the chunk size) into `slot`; with `last`, read back the last
    row's candidates (n_cand = 1: the greedy token)."""
    slot: int
    tokens: list[int]
    last: bool = True
    n_cand: int = 1


@dataclass
class Round:
    """One decode step of `slot` from its pending token `id_last`: n drafts (0: plain decoding)
    verified in one segment, drafted by the MTP chain or given in `drafts`. max_emit bounds a
    greedy round's tokens (0: none)."""
    slot: int
    id_last: int
    n: int = 0
    n_cand: int = 1
    p_min: float = 0.0
    vocab: int = 0
    max_emit: int = 0
    drafts: list[int] | None = None     # drafts from the host (an n-gram lookup): no MTP chain runs

    def __post_init__(self) -> None:
        if self.drafts is not None:
            self.n = len(self.drafts)


@dataclass
class Outcome:
    """What a step read back for one piece of work.
    Greedy: `tokens` (a greedy round's emitted tokens, the last is the new pending one; a feed's
    token) and k (accepted drafts). Sampled: `cands` per verify row (ids, logits) and `drafts`;
    the caller accepts and reports k with `SlotRunner.accepted`. n_valid: drafts the p-min gate
    let through."""
    slot: int
    tokens: list[int] = field(default_factory=list)
    k: int = 0
    n: int = 0
    n_valid: int = 0
    cands: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    drafts: list[int] = field(default_factory=list)


@dataclass
class SlotState:
    pos: int = 0            # tokens fed
    src_plane: int = 0
    p_row: int = 0          # cand_hidden row of the pending hidden
    ckpt_pos: int = -1      # position of the recurrent checkpoint (-1: none)


class SlotRunner:
    """n_seq sequences of one model on one adapter."""

    def __init__(self, gm: GGUFModel, device: str | int = "auto", n_ctx: int = 4096, *, n_seq: int = 4,
                 n_max: int = 3, mtp: bool = False, prefill_chunk: int = 64, eog: set[int] | None = None,
                 progress: bool = True, ctx: GPUContext | None = None) -> None:
        if not 1 <= n_seq <= SEG_MAX:
            raise WgmtpError(f"-np {n_seq}: between 1 and {SEG_MAX} parallel sequences are supported")
        if mtp and not gm.has_mtp:
            raise WgmtpError("draft-mtp needs an MTP block: this model has none (give the MTP sidecar with "
                             "-md mtp-*.gguf, or use --spec-type none)")
        if not 0 <= n_max <= N_LONG_MAX:
            raise WgmtpError(f"--spec-draft-n-max {n_max}: must be in 0..{N_LONG_MAX} (draft models and sampled "
                             f"rounds draft at most {N_DRAFT_MAX} a round)")
        if n_max > N_DRAFT_MAX and n_max + 2 > max(prefill_chunk, 16):
            raise WgmtpError(f"--spec-draft-n-max {n_max}: a round's rows must fit the prefill chunk of "
                             f"{prefill_chunk} tokens; use at most {max(prefill_chunk, 16) - 2} or a larger chunk")
        self.gm, self.cfg = gm, gm.config
        self.ctx = ctx if ctx is not None else open_context(None if device in (None, "auto") else device)
        check_memory(self.ctx, gm, n_ctx, n_seq, n_max, mtp, max(prefill_chunk, MATVEC_MAX_TOK))
        self.device_name = self.ctx.name
        self.model = Qwen35GPU(self.ctx, gm, n_ctx=n_ctx, t_max=prefill_chunk, progress=progress, n_seq=n_seq,
                               n_draft_max=N_DRAFT_MAX, checkpoints=True)
        self.model.ensure_state(planes_for(n_max), mtp)     # rollback of any round up to N_DRAFT_MAX drafts
        self.model.state.zero()
        self.runner = Runner(self.ctx)
        self.n_ctx, self.n_seq, self.n_max, self.mtp = n_ctx, n_seq, n_max, mtp
        self.n_chain = min(n_max, N_DRAFT_MAX)      # drafts of a draft-model or sampled round at most
        self.chunk = self.model.t_max
        self.eog = sorted(eog or [])[:N_EOG]
        self.model.n_eog = len(self.eog)
        w = np.zeros(N_EOG, np.uint32)
        w[: len(self.eog)] = self.eog
        self.ctx.queue.write_buffer(self.model.slot_step.buffer, self.model.slot_eog * 4, w.tobytes())
        self.slots = [SlotState(p_row=self.model.state.zero_row) for _ in range(n_seq)]
        self.last_gpu_s = 0.0
        self._rounds: dict[int, tuple[int, int, int]] = {}     # the last step's rounds: slot -> (region, row0, n)

    # ---- per-slot state

    def cand_base(self, slot: int) -> int:
        return slot * self.model.state.cand_rows

    def start(self, slot: int) -> None:
        """A fresh sequence in `slot` (its recurrent planes zeroed; the checkpoint is dropped)."""
        self.model.state.zero_slot(slot)
        self.slots[slot] = SlotState(p_row=self.model.state.zero_row)

    def checkpoint(self, slot: int) -> None:
        """Remember `slot`'s recurrent state (and pending hidden) at its current position."""
        s = self.slots[slot]
        self.model.state.checkpoint(slot, s.p_row)
        s.ckpt_pos = s.pos

    def restore(self, slot: int) -> int:
        """Go back to `slot`'s checkpoint; returns its position (the tokens it holds)."""
        s = self.slots[slot]
        if s.ckpt_pos < 0:
            raise WgmtpError(f"slot {slot} has no checkpoint")
        self.model.state.checkpoint(slot, self.cand_base(slot), restore=True)
        s.pos, s.src_plane, s.p_row = s.ckpt_pos, 0, self.cand_base(slot)
        return s.pos

    def accepted(self, out: Outcome, k: int) -> None:
        """A round's acceptance decided by the host (sampling): k of its n drafts."""
        s = self.slots[out.slot]
        s.pos += k + 1
        s.src_plane = out.n - k
        s.p_row = self.cand_base(out.slot) + k

    # ---- one engine step

    def room(self, slot: int) -> int:
        """Positions left in `slot`'s context."""
        return self.n_ctx - self.slots[slot].pos

    def step(self, work: list[Feed | Round], *, timed: bool = False) -> list[Outcome]:
        """Run all of `work` in one submission; outcomes in the order of `work`. Greedy rounds and
        feeds update the slots' state here; sampled rounds wait for `accepted`."""
        m = self.model
        programs: list[Program] = []
        writes: list[tuple[int, np.ndarray]] = []
        reads: list[Readback] = []
        decoders = []
        region = 0
        self._rounds = {}

        def claim() -> int:
            nonlocal region
            if region >= m.n_regions:
                raise WgmtpError(f"one step holds at most {m.n_regions} programs")
            region += 1
            return region - 1

        order: dict[int, Outcome] = {}
        for w in work:
            if isinstance(w, Feed):
                r = claim()
                programs.append(self._feed_program(w, r, writes))
                decoders.append(self._feed_reads(w, r, reads, order))
        groups: dict[tuple, list[Round]] = {}
        for w in work:
            if isinstance(w, Round):
                host = w.drafts is not None
                if w.n > 0 and not host and not self.mtp:
                    raise WgmtpError("an MTP round needs the engine loaded with draft-mtp")
                if w.n > self.n_max:
                    raise WgmtpError(f"a round of {w.n} drafts exceeds the engine's --spec-draft-n-max {self.n_max}")
                if w.n > N_DRAFT_MAX:      # greedy, host or MTP drafts: a long round
                    if w.n_cand > 1:
                        raise WgmtpError(f"a sampled round drafts at most {N_DRAFT_MAX} tokens (got {w.n})")
                    r = claim()
                    programs.append(m.slot_long_round(w.n, self.mtp, r, chain=not host, vocab=w.vocab, p_min=w.p_min))
                    decoders.append(self._long_io(w, r, writes, reads, order))
                    continue
                groups.setdefault((w.n, w.n_cand, w.vocab, w.p_min, host), []).append(w)
        for (n, n_cand, vocab, p_min, host), rounds in groups.items():
            cap = max(1, min(SEG_MAX, MATVEC_MAX_TOK // (n + 1)))
            for g in range(0, len(rounds), cap):
                part = rounds[g: g + cap]
                r = claim()
                programs.append(m.slot_round(len(part), n, n_cand, vocab or self.cfg.n_vocab, p_min, self.mtp, r,
                                             host_drafts=host))
                decoders.append(self._round_io(part, n, n_cand, r, writes, reads, order))
        blobs = self.runner.run(programs, writes=[self.one_write(writes)], reads=reads, timed=timed)
        self.last_gpu_s = sum(self.runner.last_gpu_s) if timed and self.runner.last_gpu_s else 0.0
        i = 0
        for dec in decoders:
            i = dec(blobs, i)
        return [order[id(w)] for w in work]

    def one_write(self, writes: list[tuple[int, np.ndarray]]) -> tuple:
        """All of a step's host data as one write: the span from the first to the last word written.
        The words in between that no piece sets are zeroed, which is safe: they are outputs the
        step's kernels write before anything reads them (argmax, results), unused records, or the
        `zero` word itself; eog ids lie past every region and are not in the span."""
        lo = min(at for at, _ in writes)
        hi = max(at + len(w) for at, w in writes)
        span = np.zeros(hi - lo, np.uint32)
        for at, w in writes:
            span[at - lo: at - lo + len(w)] = w
        return (self.model.slot_step.buffer, lo * 4, span.tobytes())

    # ---- feeds

    def _feed_program(self, w: Feed, r: int, writes: list) -> Program:
        s = self.slots[w.slot]
        L = len(w.tokens)
        if not 1 <= L <= self.chunk:
            raise WgmtpError(f"a feed holds 1..{self.chunk} tokens, got {L}")
        if s.pos + L > self.n_ctx:
            raise ContextOverflowError(f"{s.pos + L} tokens exceed the context {self.n_ctx} of slot {w.slot}; "
                                       f"{raise_ctx_hint(self.n_ctx, self.cfg.n_ctx_train)}")
        seg = Seg(w.slot, s.pos, L, 0, s.src_plane, 0, s.p_row, self.cand_base(w.slot))
        writes += self.model.slot_lays[r].feed_words(seg, w.tokens)
        T = 1 if L == 1 else (MATVEC_MAX_TOK if L <= MATVEC_MAX_TOK else self.chunk)
        return self.model.slot_feed(T, min(w.n_cand, TOPK_MAX) if w.last else 1, self.mtp, r)

    def _feed_reads(self, w: Feed, r: int, reads: list, order: dict):
        m, L = self.model, self.model.slot_lays[r]
        n_cand = min(w.n_cand, TOPK_MAX)
        first = len(reads)
        if w.last:
            if n_cand <= 1:
                reads.append(Readback(m.slot_step.buffer, L.argmax * 4, 4))
            else:
                o = m.cand_at(r) * 4
                reads += [Readback(m.buf.top_ids.buffer, o, n_cand * 4), Readback(m.buf.top_vals.buffer, o, n_cand * 4)]
        s = self.slots[w.slot]
        s.pos += len(w.tokens)
        s.src_plane = 0
        if self.mtp:
            s.p_row = self.cand_base(w.slot)

        def decode(blobs: list[bytes], i: int) -> int:
            out = Outcome(w.slot)
            if w.last and n_cand <= 1:
                out.tokens = [int(np.frombuffer(blobs[first], np.uint32)[0])]
                out.cands = [(np.array(out.tokens, np.int64), np.zeros(1, np.float32))]
            elif w.last:
                out.cands = [(np.frombuffer(blobs[first], np.uint32).astype(np.int32),
                              np.frombuffer(blobs[first + 1], np.float32).copy())]
            order[id(w)] = out
            return i
        return decode

    # ---- rounds

    def _round_io(self, part: list[Round], n: int, n_cand: int, r: int, writes: list, reads: list, order: dict):
        m, L = self.model, self.model.slot_lays[r]
        R = n + 1
        segs = []
        for j, w in enumerate(part):
            s = self.slots[w.slot]
            if s.pos + R > self.n_ctx:
                raise ContextOverflowError(f"slot {w.slot}: a round of {R} tokens at position {s.pos} exceeds the "
                                           f"context {self.n_ctx}; {raise_ctx_hint(self.n_ctx, self.cfg.n_ctx_train)}")
            segs.append(Seg(w.slot, s.pos, R, j * R, s.src_plane, w.max_emit if n_cand <= 1 else 0, s.p_row,
                            self.cand_base(w.slot)))
        host = part[0].drafts is not None
        self._rounds.update((w.slot, (r, j * R, n)) for j, w in enumerate(part))
        writes += L.round_words(segs, n, [w.id_last for w in part], n,
                                [w.drafts for w in part] if host else None)
        first = len(reads)
        sb = m.slot_step.buffer
        T = len(part) * R
        nc = min(n_cand, TOPK_MAX)
        if n_cand <= 1 and n == 0:
            reads.append(Readback(sb, L.argmax * 4, T * 4))
        elif n_cand <= 1:
            reads += [Readback(sb, L.n_valid * 4, len(part) * 4),
                      Readback(sb, L.result(0) * 4, len(part) * L.res_words * 4)]
        else:
            o = m.cand_at(r) * 4
            reads += [Readback(m.buf.top_ids.buffer, o, T * nc * 4), Readback(m.buf.top_vals.buffer, o, T * nc * 4),
                      Readback(sb, L.input_ids * 4, T * 4), Readback(sb, L.n_valid * 4, len(part) * 4)]

        def decode(blobs: list[bytes], i: int) -> int:
            for j, w in enumerate(part):
                out = Outcome(w.slot, n=n)
                if n_cand <= 1 and n == 0:
                    tok = int(np.frombuffer(blobs[first], np.uint32)[j])
                    out.tokens, out.k = [tok], 0
                    self.accepted(out, 0)
                elif n_cand <= 1:
                    nv = np.frombuffer(blobs[first], np.uint32)
                    res = np.frombuffer(blobs[first + 1], np.uint32).reshape(len(part), L.res_words)[j]
                    out.k, out.n_valid = int(res[0]), int(nv[j])
                    out.tokens = [int(x) for x in res[2: 2 + int(res[1])]]
                    self.accepted(out, out.k)
                else:
                    ids = np.frombuffer(blobs[first], np.uint32).astype(np.int32).reshape(T, nc)
                    vals = np.frombuffer(blobs[first + 1], np.float32).reshape(T, nc)
                    col = np.frombuffer(blobs[first + 2], np.uint32)
                    out.n_valid = int(np.frombuffer(blobs[first + 3], np.uint32)[j])
                    out.cands = [(ids[j * R + t].copy(), vals[j * R + t].copy()) for t in range(R)]
                    out.drafts = [int(x) for x in col[j * R + 1: j * R + R]]
                order[id(w)] = out
            return i
        return decode

    def _long_io(self, w: Round, r: int, writes: list, reads: list, order: dict):
        """A long round's step data and readback (program.slot_long_round): the sub-batches start
        from the slot's plane and then from other planes (and without host drafts, the MTP chain's
        step records); the round ends with the state in plane 0 and, with MTP, the pending hidden
        in the slot's first cand_hidden row. One read from the drafts-valid word (a p-min gate's
        count) through the result."""
        m, L = self.model, self.model.slot_lays[r]
        s, R = self.slots[w.slot], w.n + 1
        if s.pos + R > self.n_ctx:
            raise ContextOverflowError(f"slot {w.slot}: a round of {R} tokens at position {s.pos} exceeds the "
                                       f"context {self.n_ctx}; {raise_ctx_hint(self.n_ctx, self.cfg.n_ctx_train)}")
        planes = [s.src_plane] + [q for q in range(m.state.n_planes) if q != s.src_plane]
        seg = Seg(w.slot, s.pos, R, 0, s.src_plane, w.max_emit, s.p_row, self.cand_base(w.slot))
        host = w.drafts is not None
        writes += L.long_round_words(seg, [w.id_last] + list(w.drafts or []), planes, LONG_SUB,
                                     chain=0 if host else w.n)
        self._rounds[w.slot] = (r, 0, w.n)
        first = len(reads)
        reads.append(Readback(m.slot_step.buffer, L.n_valid * 4, (L.result(0) + 2 + R - L.n_valid) * 4))

        def decode(blobs: list[bytes], i: int) -> int:
            words = np.frombuffer(blobs[first], np.uint32)
            res = words[L.result(0) - L.n_valid:]
            out = Outcome(w.slot, n=w.n, k=int(res[0]), n_valid=int(words[0]))
            out.tokens = [int(x) for x in res[2: 2 + int(res[1])]]
            s.pos += out.k + 1
            s.src_plane = 0
            if self.mtp:
                s.p_row = self.cand_base(w.slot)
            order[id(w)] = out
            return i
        return decode

    def round_drafts(self, slot: int) -> list[int] | None:
        """The n drafts the last step's round of `slot` verified (None: it had no drafted round), read
        from its verify rows' ids in the slot step buffer: a greedy MTP round's drafts otherwise never
        leave the GPU (docs/ARCHITECTURE.md, "GPU-resident hot loop"). One read of n words, made only
        when asked; call it before the next step, which may overwrite the buffer. Beyond a p-min
        gate's n_valid the words are ids the verify did not weigh."""
        r, row0, n = self._rounds.get(slot, (0, 0, 0))
        if not n:
            return None
        at = (self.model.slot_lays[r].input_ids + row0 + 1) * 4
        return [int(x) for x in np.frombuffer(self.ctx.read(self.model.slot_step.buffer, at, n * 4), np.uint32)]

    def memory_bytes(self) -> int:
        return self.model.weight_bytes() + self.model.state_bytes()


def memory_budget(ctx: GPUContext) -> int:
    """Bytes the adapter can hold, where it can be known: WGMTP_MEMORY_BYTES, else for a CPU adapter
    (lavapipe, llvmpipe) the machine's RAM; 0 when unknown (WebGPU reports no memory size)."""
    import os
    env = os.environ.get("WGMTP_MEMORY_BYTES", "")
    if env:
        try:
            return int(float(env))
        except ValueError:
            raise WgmtpError(f"WGMTP_MEMORY_BYTES={env!r} is not a number of bytes") from None
    if getattr(ctx.desc, "adapter_type", "") == "CPU":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return 0
    return 0


def check_memory(ctx: GPUContext, gm: GGUFModel, n_ctx: int, n_seq: int, n_max: int, mtp: bool,
                 t_max: int = 64) -> None:
    """Refuse, before any allocation, a state that cannot fit the adapter, in one line naming what
    to lower: a recurrent buffer (all slots' planes of one layer, bound whole by its kernels) over
    the adapter's binding limit, or weights + state over the adapter's memory (memory_budget)."""
    c = gm.config
    planes = planes_for(n_max)
    biggest = n_seq * planes * c.ssm_dt_rank * c.head_v_dim * c.head_k_dim * 4 if any(c.is_gdn) else 0
    lower = "lower -np" + (" or --spec-draft-n-max" if n_max else "")
    if biggest > ctx.binding_limit:
        raise WgmtpError(f"the recurrent state of one layer for {n_seq} sequences x {planes} planes is "
                         f"{biggest / 2**20:.0f} MiB, over this adapter's binding limit of "
                         f"{ctx.binding_limit / 2**20:.0f} MiB; {lower}")
    budget = memory_budget(ctx)
    need = gm.weight_bytes(mtp=mtp) + state_bytes(c, n_ctx, mtp=mtp, n_max=n_max, n_seq=n_seq, planes=planes,
                                                  kv_bytes=2 if ctx.f16 else 4, checkpoints=True)
    if n_max > N_DRAFT_MAX:
        need += long_keep_bytes(c, t_max)
    if budget and need > budget:
        raise WgmtpError(f"{need / 2**30:.2f} GiB needed for {n_seq} sequences of {n_ctx} tokens"
                         f"{f' with {n_max} drafts' if n_max else ''}, the adapter has {budget / 2**30:.2f} GiB; "
                         f"lower -c, {lower[6:]}")
