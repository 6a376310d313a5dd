"""The host <-> GPU contract of one step: what the runner writes before a submission (step records
and the batch's token ids) and what it reads back (acceptance results, argmax ids), as named
fields of one u32 buffer, so that a whole step is one contiguous write and one small read.

Every kernel reads its step record (kernels/__init__.py: n_tok, pos0, src_slot, max_emit) at a
word offset of this buffer; a program binds the record it runs under by name (`batch`, `last`,
`draft(i)`). The host builds a step from `Row`s, each carrying its sequence slot and position;
with one sequence the rows of a batch are one slot's consecutive positions, which is what the
records express today (docs/ARCHITECTURE.md, "Slots").
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import WgmtpError
from ...kernels import STEP_WORDS, STORE_FINAL, STORE_NONE, store_word

N_EOG = 16      # end-of-generation ids the GPU's acceptance compares against


@dataclass(frozen=True)
class Row:
    """One token row of a batch: the sequence slot it belongs to and its position there."""
    slot: int
    pos: int


@dataclass(frozen=True)
class Batch:
    """The rows of one submission's main batch, and what the step records derive from them."""
    rows: tuple[Row, ...]
    src_plane: int = 0       # the recurrent snapshot plane the batch starts from (rollback)
    max_emit: int = 0        # a greedy round's token budget (0: none)

    @classmethod
    def of_sequence(cls, slot: int, pos0: int, n_tok: int, src_plane: int = 0, max_emit: int = 0) -> "Batch":
        return cls(tuple(Row(slot, pos0 + t) for t in range(n_tok)), src_plane, max_emit)

    @property
    def n_tok(self) -> int:
        return len(self.rows)

    @property
    def pos0(self) -> int:
        return self.rows[0].pos

    def check_one_sequence(self) -> None:
        """Today's records describe one slot's consecutive positions; anything else needs the
        per-row step data of the many-sequences issue."""
        slots = {r.slot for r in self.rows}
        if len(slots) != 1 or any(r.pos != self.pos0 + t for t, r in enumerate(self.rows)):
            raise WgmtpError("a batch of several sequences or non-consecutive positions is not supported yet")


@dataclass(frozen=True)
class RoundResult:
    """What a greedy round's acceptance wrote: k drafts accepted, the tokens it emits."""
    k: int
    tokens: list[int]


class StepLayout:
    """Word offsets of the named fields of the step buffer. Records first, then the batch's input
    ids, so the host's per-step data (records + ids) is one contiguous write."""

    def __init__(self, t_max: int, n_draft_max: int) -> None:
        self.t_max = t_max
        self.n_draft_max = n_draft_max
        self.batch = 0                                            # record of the main batch
        self.last = STEP_WORDS                                    # 1 token at the batch's last position
        self.input_ids = STEP_WORDS * (3 + n_draft_max)           # [t_max] ids of the batch (row t)
        self.argmax = self.input_ids + t_max                      # [t_max] the verify's argmax per row
        self.n_valid = self.argmax + t_max                        # drafts the p-min gate let through
        self.eog = self.n_valid + 1                               # [N_EOG]
        self.result = self.eog + N_EOG                            # [k, n_out, out...]
        self.words = self.result + 2 + t_max + 4

    def draft(self, i: int) -> int:
        """Record of draft step i: 1 token at pos0 + i."""
        return STEP_WORDS * (2 + i)

    # ---- encoding

    def records(self, batch: Batch, n_drafts: int = 0) -> np.ndarray:
        """The step records of a submission: the batch, its last row, one per draft step."""
        batch.check_one_sequence()
        w = np.zeros(self.input_ids, np.uint32)
        w[self.batch: self.batch + 4] = (batch.n_tok, batch.pos0, batch.src_plane, batch.max_emit)
        w[self.last: self.last + 4] = (1, batch.pos0 + batch.n_tok - 1, batch.src_plane, 0)
        for i in range(n_drafts):
            o = self.draft(i)
            w[o: o + 4] = (1, batch.pos0 + i, 0, 0)
        return w

    def head(self, batch: Batch, ids: list[int], n_drafts: int = 0, n_valid: int | None = None) -> bytes:
        """Records + input ids (+ with n_valid, the drafts-valid word): one write at word 0."""
        recs = self.records(batch, n_drafts)
        tail = np.asarray(ids, np.uint32)
        if n_valid is not None:
            tail = np.zeros(self.n_valid + 1 - self.input_ids, np.uint32)
            tail[: len(ids)] = ids
            tail[self.n_valid - self.input_ids] = n_valid
        return np.concatenate([recs, tail]).astype(np.uint32).tobytes()

    def eog_words(self, eog: list[int]) -> bytes:
        if len(eog) > N_EOG:
            raise ValueError(f"at most {N_EOG} end-of-generation ids are supported on the GPU")
        w = np.zeros(N_EOG, np.uint32)
        w[: len(eog)] = eog
        return w.tobytes()

    # ---- decoding

    def round_result(self, blob: bytes) -> RoundResult:
        """Decode the `result` field (read as 2 + t words)."""
        res = np.frombuffer(blob, np.uint32)
        k, n_out = int(res[0]), int(res[1])
        return RoundResult(k, [int(x) for x in res[2: 2 + n_out]])

    @staticmethod
    def word(blob: bytes) -> int:
        return int(np.frombuffer(blob, np.uint32)[0])


SEG_MAX = 16    # segments of one batched program at most (the mat-vec's widest batch of one-row segments)


@dataclass(frozen=True)
class Seg:
    """One sequence's rows in a batched program (a segment record, shaders/include/segments.wgsl):
    n_tok rows from batch row row0, at positions pos0.. of `slot`, recurrent plane src_plane;
    p_row: the row of cand_hidden holding its pending hidden; cand_base: its first cand_hidden row."""
    slot: int
    pos0: int
    n_tok: int
    row0: int = 0
    src_plane: int = 0
    max_emit: int = 0
    p_row: int = 0
    cand_base: int = 0

    def words(self) -> tuple[int, ...]:
        return (self.n_tok, self.pos0, self.src_plane, self.max_emit, self.slot, self.row0, self.p_row,
                self.cand_base)


class SlotLayout:
    """Word offsets of one region of the slot step buffer: what a batched program of several
    sequences reads and writes (records, segments, ids, acceptance results). Each program of a
    submission has its own region, so all of a step's host data is written before it runs."""

    def __init__(self, base: int, t_max: int, n_draft_max: int) -> None:
        W = STEP_WORDS
        self.base, self.t_max, self.n_draft_max = base, t_max, n_draft_max
        self.batch = base                                   # n_tok = rows of the batch
        self.last = base + W                                # 1 row: a prefill chunk's last row
        self.segs = base + 2 * W                            # SEG_MAX segment records
        self._draft0 = self.segs + SEG_MAX * W              # per draft step: record + SEG_MAX segments
        self.input_ids = self._draft0 + n_draft_max * (1 + SEG_MAX) * W
        self.argmax = self.input_ids + t_max
        self.n_valid = self.argmax + t_max                  # [SEG_MAX]
        self.junk = self.n_valid + SEG_MAX                  # [SEG_MAX] the accept kernel's next-id words
        self.zero = self.junk + SEG_MAX                     # always 0
        self.res_words = 2 + n_draft_max + 1
        self._result0 = self.zero + 1
        self.end = self._result0 + SEG_MAX * self.res_words

    def seg(self, j: int) -> int:
        return self.segs + j * STEP_WORDS

    def draft(self, i: int) -> int:
        """Record of draft step i (n_tok = the sequences of the round); its segments follow it."""
        return self._draft0 + i * (1 + SEG_MAX) * STEP_WORDS

    def draft_seg(self, i: int, j: int) -> int:
        return self.draft(i) + (1 + j) * STEP_WORDS

    def result(self, j: int) -> int:
        """[k, n_out, out...] of sequence j's greedy round."""
        return self._result0 + j * self.res_words

    # ---- encoding: (word offset, words) pieces, joined into one write by the runner

    @staticmethod
    def record(n_tok: int, seg: Seg | None = None) -> np.ndarray:
        w = np.zeros(STEP_WORDS, np.uint32)
        w[0] = n_tok
        if seg is not None:
            w[1:] = seg.words()[1:]
        return w

    def feed_words(self, seg: Seg, ids: list[int]) -> list[tuple[int, np.ndarray]]:
        """A prefill chunk of one sequence: batch and last-row records, its segment, its ids."""
        last = Seg(seg.slot, seg.pos0 + seg.n_tok - 1, 1)
        return [(self.batch, np.concatenate([self.record(seg.n_tok, seg), self.record(1, last),
                                             np.asarray(seg.words(), np.uint32)])),
                (self.input_ids, np.asarray(ids, np.uint32))]

    def round_words(self, segs: list[Seg], n: int, ids: list[int], n_valid: int,
                    drafts: list[list[int]] | None = None) -> list[tuple[int, np.ndarray]]:
        """A round of len(segs) sequences, n drafts each (n = 0: plain decoding): the batch record,
        the verify segments, each draft step's record and one-row segments (none when the host
        gives the `drafts`), the verify rows' ids (id_last of each sequence at row j*(n+1), then
        the host's drafts if any), and the drafts-valid words."""
        m, R = len(segs), n + 1
        out = [(self.batch, np.concatenate([self.record(m * R)] + [self.record(0)]
                                           + [np.asarray(s.words(), np.uint32) for s in segs]))]
        for i in range(0 if drafts is not None else n):
            rows = [Seg(s.slot, s.pos0 + i, 1, j, 0, 0, s.p_row, s.cand_base) for j, s in enumerate(segs)]
            out.append((self.draft(i), np.concatenate([self.record(m)] + [np.asarray(r.words(), np.uint32)
                                                                          for r in rows])))
        col = np.zeros(m * R, np.uint32)
        col[::R] = ids
        for j, d in enumerate(drafts or []):
            col[j * R + 1: j * R + R] = d
        out.append((self.input_ids, col))
        out.append((self.n_valid, np.full(m, n_valid, np.uint32)))
        return out

    # ---- a long round (program.slot_long_round): one sequence, its verify in sub-batches, so
    # every record is one record and one segment; they sit packed where a long round has no
    # draft-step records (the draft-step blocks): the sub-batches', the rerun's template, table
    # and record, then the MTP chain's steps (a greedy MTP round past the snapshot planes)

    @property
    def long_subs_max(self) -> int:
        """Sub-batches a long round's records have room for."""
        return max(0, self.n_draft_max - 2)

    def long_sub(self, c: int) -> int:
        """Record of sub-batch c (n_tok = its rows); its one segment record follows it."""
        if not 0 <= c < self.long_subs_max:
            raise WgmtpError(f"a long round holds at most {self.long_subs_max} sub-batches")
        return self._draft0 + 2 * c * STEP_WORDS

    @property
    def long_tmpl(self) -> int:
        """The rerun record's template (slot, position; rerun_record sets n_tok, word 2, row0)."""
        return self._draft0 + 2 * self.long_subs_max * STEP_WORDS

    @property
    def long_table(self) -> int:
        """Per sub-batch c, the rerun's record word 2: from P_c, the final state into plane 0."""
        return self.long_tmpl + STEP_WORDS

    @property
    def long_rerun(self) -> int:
        return self.long_table + -(-self.long_subs_max // STEP_WORDS) * STEP_WORDS

    @property
    def long_chain_max(self) -> int:
        """MTP chain steps a long round's records have room for (the rest of the draft blocks)."""
        end = self._draft0 + self.n_draft_max * (1 + SEG_MAX) * STEP_WORDS
        return max(0, (end - self.long_rerun - STEP_WORDS) // (2 * STEP_WORDS))

    def long_chain(self, i: int) -> int:
        """Record of a long round's MTP chain step i (one row at pos0 + i); its segment follows it."""
        if not 0 <= i < self.long_chain_max:
            raise WgmtpError(f"a long round's MTP chain holds at most {self.long_chain_max} drafts")
        return self.long_rerun + STEP_WORDS + 2 * i * STEP_WORDS

    def long_round_words(self, seg: Seg, ids: list[int], planes: list[int], sub: int,
                         chain: int = 0) -> list[tuple[int, np.ndarray]]:
        """A long round of one sequence (`seg`: its n + 1 rows from position pos0, max_emit, pending
        hidden rows) with ids [id_last, d1..dn] (an MTP chain's: [id_last], the chain writes the
        rest): the round's segment (the acceptance's max_emit and the MTP rows), per sub-batch of
        `sub` rows its record and segment (from planes[c]; the final state into planes[c + 1], the
        last sub-batch none), the rerun's template and table, with `chain` the records of the MTP
        chain's steps (one row each at pos0 + i), the ids and the drafts-valid word."""
        R = seg.n_tok
        subs = [(r0, min(sub, R - r0)) for r0 in range(0, R, sub)]
        if len(planes) < len(subs):
            raise WgmtpError(f"a long round of {R} rows needs {len(subs)} planes, the slot has {len(planes)}")
        out = [(self.seg(0), np.asarray(seg.words(), np.uint32))]
        for c, (r0, rows) in enumerate(subs):
            last = c == len(subs) - 1
            word = store_word(planes[c], STORE_NONE) if last else store_word(planes[c], STORE_FINAL, planes[c + 1])
            sg = Seg(seg.slot, seg.pos0 + r0, rows, 0, word, 0, seg.p_row, seg.cand_base)
            out.append((self.long_sub(c), np.concatenate([self.record(rows), np.asarray(sg.words(), np.uint32)])))
        tmpl = np.asarray(Seg(seg.slot, seg.pos0, 0, 0, 0, 0, seg.p_row, seg.cand_base).words(), np.uint32)
        table = np.array([store_word(planes[c], STORE_FINAL, 0) for c in range(len(subs))], np.uint32)
        out.append((self.long_tmpl, np.concatenate([tmpl, table])))
        for i in range(chain):
            row = Seg(seg.slot, seg.pos0 + i, 1, 0, 0, 0, seg.p_row, seg.cand_base)
            out.append((self.long_chain(i), np.concatenate([self.record(1), np.asarray(row.words(), np.uint32)])))
        out.append((self.input_ids, np.asarray(ids, np.uint32)))
        out.append((self.n_valid, np.array([R - 1], np.uint32)))
        return out

    # ---- a separate draft model's round (models/qwen35/draft_model.py): catch-up batches, then
    # one chain over all their sequences

    def gather_words(self, s: int) -> tuple[int, int]:
        """Words naming, for segment s of a draft model's catch-up batch, the hidden row of its last
        token and the draft_hidden row it is gathered into: the accept kernel's `junk` and the
        gate's `n_valid` words, which a draft model's programs do not otherwise use."""
        return self.junk + s, self.n_valid + s

    def catchup_words(self, segs: list[Seg], ids: list[int], rows: list[int]) -> list[tuple[int, np.ndarray]]:
        """A catch-up batch of len(segs) sequences (segments of any lengths, rows back to back): the
        batch record, the segments, their ids, and per segment its last hidden row (hidden row t + 1
        holds batch row t) and `rows[s]`, the draft_hidden row the chain reads it from."""
        recs = [self.record(sum(s.n_tok for s in segs)), self.record(0)]
        src, dst = self.gather_words(0)
        return [(self.batch, np.concatenate(recs + [np.asarray(s.words(), np.uint32) for s in segs])),
                (self.input_ids, np.asarray(ids, np.uint32)),
                (src, np.asarray([s.row0 + s.n_tok for s in segs], np.uint32)),
                (dst, np.asarray(rows, np.uint32))]

    def chain_words(self, segs: list[Seg], steps: list[int], n: int) -> list[tuple[int, np.ndarray]]:
        """The chain of n drafts of len(segs) sequences (segs[j]: sequence j's slot and its position
        after the catch-up): the batch record (one row per sequence, the rows whose argmax is d1),
        then per draft step i < n - 1 a record of one-row segments at positions pos0 + i, empty for
        a sequence past its own `steps[j]` (fewer drafts asked, or its context ends)."""
        m = len(segs)
        out = [(self.batch, self.record(m))]
        for i in range(n - 1):
            rows = [Seg(s.slot, s.pos0 + i if i < k else s.pos0, int(i < k), j, s.src_plane)
                    for j, (s, k) in enumerate(zip(segs, steps))]
            out.append((self.draft(i), np.concatenate([self.record(m)] + [np.asarray(r.words(), np.uint32)
                                                                          for r in rows])))
        return out
