"""A separate draft model (`--spec-type draft-simple`, `-md draft.gguf`): a second qwen35 or
qwen35moe GGUF with the target's vocabulary drafts greedy tokens that the target verifies as it
verifies host drafts (slots.Round(drafts=...)), so the output never changes.

The draft model keeps one sequence per target slot in its own SlotRunner (one recurrent plane per
slot: it never rolls back by planes). Its state always holds exactly the tokens fed: the prompt
and every token the target emitted, the pending last one included. A draft round of m sequences
is one submission:

  1. catch-up: the tokens fed since each sequence's last round (after a round that accepted k
     drafts: those k and the correction or bonus token) as segments of batches of at most
     MATVEC_MAX_TOK rows (program.slot_catchup); each sequence's last final hidden is gathered
     into one row per sequence;
  2. the committed recurrent state (plane 0 of every GDN layer) of each chaining slot is copied
     to the slot's checkpoint buffers (state.copy_planes; the draft runner's checkpoints are this
     scratch, never a prompt-end checkpoint);
  3. the chain (program.slot_chain): d1 = argmax of the gathered rows, then n - 1 steps, each one
     m-row batch feeding the previous drafts and writing the next ones where the following step's
     embedding reads them: no host hop between draft steps;
  4. the checkpoint is copied back, and the drafts are read back (the only readback).

Rollback of the KV caches is free: the chain wrote rows at positions >= each sequence's committed
length, which attention reads only from queries at those positions or later, and every batch
writes its own rows (kv_store) before its attention reads them, so the next catch-up overwrites
them first. A catch-up longer than MATVEC_MAX_TOK tokens (a prompt) feeds all but its last
MATVEC_MAX_TOK tokens first as prefill chunks (SlotRunner.step, no readback).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...errors import BadRequestError, ContextOverflowError, WgmtpError, raise_ctx_hint
from ...gpu.device import GPUContext, open_context
from ...gpu.program import Encode, Readback
from .memory import state_bytes
from .model_file import GGUFModel
from .program import MATVEC_MAX_TOK
from .slots import N_DRAFT_MAX, Feed, SlotRunner, memory_budget
from .step_data import SEG_MAX, Seg


def split_catchup(n_tok: int) -> int:
    """Tokens of a catch-up of n_tok that go ahead as prefill chunks: all but the last
    MATVEC_MAX_TOK (the rest is one segment of a catch-up batch, bit-identical to plain decoding)."""
    return max(0, n_tok - MATVEC_MAX_TOK)


def _tokens(gm: GGUFModel) -> list[str]:
    f = gm.reader.fields.get("tokenizer.ggml.tokens")
    try:
        return list(f.strings("replace")) if f is not None else []
    except TypeError:       # not a string array: the tokenizer says so when it is built
        return []


def check_vocab(draft: GGUFModel, target: GGUFModel) -> None:
    """The draft model must speak the target's token ids: the same number of tokens (embedding
    rows) and the same token strings (`tokenizer.ggml.tokens`), else one line naming the first
    difference."""
    a, b = _tokens(draft), _tokens(target)
    nd, nt = draft.config.n_vocab, target.config.n_vocab
    at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
    if at is None and len(a) != len(b) and a and b:
        at = min(len(a), len(b))
    if nd == nt and at is None:
        return
    where = ""
    if at is not None:
        word = lambda t, i: repr(t[i][:40]) if i < len(t) else "none"  # noqa: E731
        where = f" at token id {at} ({word(a, at)} vs {word(b, at)})"
    raise WgmtpError(f"draft model {draft.path}: its vocabulary ({nd} tokens) differs from the target's "
                     f"({nt} tokens){where}; draft-simple needs the same tokenizer")


def check_memory(ctx: GPUContext, gm: GGUFModel, n_ctx: int, n_seq: int, reserved: int) -> None:
    """Refuse, before any allocation, a draft model that does not fit beside `reserved` bytes (the
    target's, when both share the adapter), in one line naming what to lower."""
    budget = memory_budget(ctx)
    need = gm.weight_bytes(mtp=False) + state_bytes(gm.config, n_ctx, mtp=False, n_seq=n_seq, planes=1,
                                                    kv_bytes=2 if ctx.f16 else 4, checkpoints=True)
    if budget and need + reserved > budget:
        beside = f" beside the target's {reserved / 2**30:.2f} GiB" if reserved else ""
        raise WgmtpError(f"draft model {gm.path}: {need / 2**30:.2f} GiB needed for {n_seq} sequences of {n_ctx} "
                         f"tokens{beside}, the adapter has {budget / 2**30:.2f} GiB; lower -c or -np, use a smaller "
                         f"draft model, or put it on another adapter (--device-draft)")


@dataclass
class _Seq:
    """Host bookkeeping of one draft sequence beyond the SlotRunner's: tokens fed but not yet in
    its state, and the drafts of its last round while nothing was fed since."""
    queued: list[int] = field(default_factory=list)
    drafts: list[int] = field(default_factory=list)
    asked: int = 0


class DraftModel:
    """A draft model's sequences, one slot per target slot, drafting greedy tokens (argmax only)."""

    def __init__(self, gm: GGUFModel, *, target: GGUFModel | None, n_seq: int, n_ctx: int, n_max: int,
                 prefill_chunk: int = 64, ctx: GPUContext | None = None, device: str | int = "auto",
                 progress: bool = False, reserved: int = 0) -> None:
        if target is not None:
            check_vocab(gm, target)
        if not 1 <= n_max <= N_DRAFT_MAX:
            raise WgmtpError(f"--spec-draft-n-max {n_max}: a draft model drafts 1..{N_DRAFT_MAX} tokens a round")
        ctx = ctx if ctx is not None else open_context(None if device in (None, "auto") else device)
        check_memory(ctx, gm, n_ctx, n_seq, reserved)
        # one plane per slot: the chain's rollback is the checkpoint copy, not snapshot planes
        self.rn = SlotRunner(gm, n_ctx=n_ctx, n_seq=n_seq, n_max=0, mtp=False, prefill_chunk=prefill_chunk,
                             progress=progress, ctx=ctx)
        self.gm, self.ctx, self.n_max, self.n_ctx = gm, ctx, n_max, n_ctx
        self.seqs = [_Seq() for _ in range(n_seq)]

    @property
    def submissions(self) -> int:
        """Queue submissions made so far (a draft round is one, plus prefill chunks of long catch-ups)."""
        return self.rn.runner.submissions

    def memory_bytes(self) -> int:
        return self.rn.memory_bytes()

    # ---- sequences

    def _seq(self, slot: int) -> _Seq:
        if not 0 <= slot < len(self.seqs):
            raise BadRequestError(f"draft model slot {slot}: the draft model holds {len(self.seqs)} sequences (-np)")
        return self.seqs[slot]

    def start(self, slot: int) -> None:
        """A fresh sequence in `slot`."""
        self._seq(slot)
        self.rn.start(slot)
        self.seqs[slot] = _Seq()

    def feed(self, slot: int, tokens: list[int]) -> None:
        """Tokens the target accepted or emitted (the prompt, then each round's output), queued and
        fed by the next draft round of the slot."""
        q, V = self._seq(slot), self.rn.cfg.n_vocab
        bad = next((t for t in tokens if not 0 <= t < V), None)
        if bad is not None:
            raise BadRequestError(f"token id {bad} fed to the draft model is outside its vocabulary of {V}")
        pos = self.rn.slots[slot].pos + len(q.queued) + len(tokens)
        if pos > self.n_ctx:
            raise ContextOverflowError(f"{pos} tokens exceed the draft model's context {self.n_ctx} of slot {slot}; "
                                       f"{raise_ctx_hint(self.n_ctx, self.rn.cfg.n_ctx_train)}")
        q.queued += [int(t) for t in tokens]
        q.drafts, q.asked = [], 0

    # ---- a draft round

    def draft(self, asks: list[tuple[int, int]]) -> list[list[int]]:
        """[(slot, n)] -> n greedy draft tokens per slot, continuing after everything fed (fewer where
        the draft model's context ends); all slots that have new tokens draft in one submission."""
        if len({s for s, _ in asks}) != len(asks):
            raise WgmtpError("a draft round names a slot twice")
        live: list[tuple[int, int]] = []
        for slot, n in asks:
            if not 0 <= n <= self.n_max:
                raise WgmtpError(f"a draft of {n} tokens: the draft model drafts 0..{self.n_max} (--spec-draft-n-max)")
            q = self._seq(slot)
            if n and not q.queued and n > q.asked:
                raise WgmtpError(f"slot {slot}: nothing was fed to the draft model since its last draft; feed the "
                                 "prompt or the target's tokens first")
            if n and q.queued:
                live.append((slot, n))
        if live:
            self._prefill(live)
            for (slot, n), d in zip(live, self._round(live)):
                self.seqs[slot].drafts, self.seqs[slot].asked = d, n
        return [self.seqs[slot].drafts[:n] if n else [] for slot, n in asks]

    def _prefill(self, live: list[tuple[int, int]]) -> None:
        """Feed the heads of long catch-ups (split_catchup) as prefill chunks, as few steps as the
        runner's regions allow; they read nothing back, so the host does not wait."""
        feeds = []
        for slot, _ in live:
            q = self.seqs[slot]
            lead = split_catchup(len(q.queued))
            feeds += [Feed(slot, q.queued[i: min(i + self.rn.chunk, lead)], last=False)
                      for i in range(0, lead, self.rn.chunk)]
            q.queued = q.queued[lead:]
        per = self.rn.model.n_regions
        for i in range(0, len(feeds), per):
            self.rn.step(feeds[i: i + per])

    def _round(self, live: list[tuple[int, int]]) -> list[list[int]]:
        """Catch-up, checkpoint, chain, restore and the drafts' readback, in one submission."""
        m = self.rn.model
        writes: list[tuple[int, np.ndarray]] = []
        catchups = [m.slot_catchup(len(g), r) for r, g in enumerate(self._catchup_groups(live, writes), start=1)]
        after = [Seg(slot, self.rn.slots[slot].pos, 0) for slot, _ in live]
        steps = [min(n, self.n_ctx - s.pos0 + 1) - 1 for s, (_, n) in zip(after, live)]
        n = 1 + max(steps)
        writes += m.slot_lays[0].chain_words(after, steps, n)
        chained = [s.slot for s, k in zip(after, steps) if k > 0]
        ids = m.chain_ids(0)
        read = Readback(ids.buffer, ids.offset * 4, n * len(live) * 4)
        blob, = self.rn.runner.run([*catchups, self._copies(chained, False), m.slot_chain(len(live), n, 0),
                                    self._copies(chained, True)], writes=[self.rn.one_write(writes)], reads=[read])
        got = np.frombuffer(blob, np.uint32).reshape(n, len(live))
        return [self._valid(got[: k + 1, j]) for j, k in enumerate(steps)]

    def _catchup_groups(self, live: list[tuple[int, int]], writes: list) -> list[list[int]]:
        """Pack the sequences' queued tokens into catch-up batches (at most MATVEC_MAX_TOK rows and
        SEG_MAX segments each; regions 1.. of the step buffer, the chain's is 0), write their step
        data, and advance the slots' positions; returns each batch's sequences."""
        groups: list[list[int]] = []
        rows = 0
        for j, (slot, _) in enumerate(live):
            L = len(self.seqs[slot].queued)
            if not groups or rows + L > MATVEC_MAX_TOK or len(groups[-1]) >= SEG_MAX:
                groups.append([])
                rows = 0
            groups[-1].append(j)
            rows += L
        for r, g in enumerate(groups, start=1):
            segs, ids, row = [], [], 0
            for j in g:
                slot = live[j][0]
                s, toks = self.rn.slots[slot], self.seqs[slot].queued
                segs.append(Seg(slot, s.pos, len(toks), row, s.src_plane, 0, s.p_row, self.rn.cand_base(slot)))
                ids += toks
                row += len(toks)
                s.pos += len(toks)
                self.seqs[slot].queued = []
            writes += self.rn.model.slot_lays[r].catchup_words(segs, ids, g)
        return groups

    def _copies(self, slots: list[int], restore: bool) -> Encode:
        """The stage that saves (restore: puts back) the committed recurrent state of `slots`."""
        def encode(enc: Any) -> None:
            for s in slots:
                self.rn.model.state.copy_planes(enc, s, restore=restore)
        return encode

    def _valid(self, ids: np.ndarray) -> list[int]:
        """Drafts up to the first that is no token (an argmax flagged non-finite: the draft model's
        logits had no finite winner; the target would reject it anyway)."""
        out = []
        for t in ids.tolist():
            if t >= self.rn.cfg.n_vocab:
                break
            out.append(int(t))
        return out
