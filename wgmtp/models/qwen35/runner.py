"""The qwen35 runner: the engine's `Backend` on the GPU. It owns the host <-> GPU contract of a
step (step_data.StepLayout: what is written before a submission, what is read back) and runs the
programs of program.py: one submission per decode step or speculative round, reading back only
token ids and counts (or, when sampling, the top-k candidates the host's sampler finishes from).
"""
from __future__ import annotations

import time
from typing import Any, Callable, Protocol

import numpy as np

from ...errors import ContextOverflowError
from ...gpu.device import GPUContext, env_flag, open_context
from ...gpu.program import Program, Readback, Runner
from ...sampling import TOPK_MAX, Sampler
from ...speculative import accept
from .model_file import GGUFModel
from .program import MATVEC_MAX_TOK, Qwen35GPU
from .step_data import N_EOG, Batch

Writes = list[tuple[Any, int, bytes]]
SLOT = 0        # the one sequence slot this runner drives (docs/ARCHITECTURE.md, "Slots")


class Executor(Protocol):
    """Runs a submission's programs; the default submits them at once. check/trace.py supplies
    one that runs them op by op against the twins (WGMTP_CHECK=1, `wgmtp check -m`)."""
    def __call__(self, programs: list[Program], writes: Writes, reads: list[Readback]) -> list[bytes]: ...


class Qwen35Runner:
    """One sequence of a qwen35 model on one adapter (engine.Backend)."""

    def __init__(self, gm: GGUFModel, device: str | int = "auto", n_ctx: int = 4096, *,
                 prefill_chunk: int = 64, eog: set[int] | None = None, progress: bool = True,
                 ctx: GPUContext | None = None) -> None:
        self.gm = gm
        self.cfg = gm.config
        self.has_mtp = gm.has_mtp
        self.ctx = ctx if ctx is not None else open_context(None if device in (None, "auto") else device)
        self.device_name = self.ctx.name
        self.model = Qwen35GPU(self.ctx, gm, n_ctx=n_ctx, t_max=prefill_chunk, progress=progress)
        self.lay = self.model.lay
        self.runner = Runner(self.ctx)
        self.n_ctx = n_ctx
        self.eog = sorted(eog or [])[:N_EOG]
        self.model.n_eog = len(self.eog)
        self._n_past = 0
        self.src_plane = 0          # the recurrent plane the next batch starts from (rollback)
        self.n_max = 0
        self.mtp = False
        self.pending_commit = False      # a sampled round's k must reach the GPU before the next program
        self.timing = {"draft_s": 0.0, "verify_s": 0.0}
        self.executor: Executor | None = None      # None: submit whole programs (the fast path)
        self.run_ahead = not env_flag("WGMTP_NO_RUN_AHEAD")
        self._inflight = None                   # a queued decode step (greedy run-ahead)
        self.last_round: dict = {}

    # ---- engine protocol

    @property
    def n_past(self) -> int:
        return self._n_past

    @property
    def pending_fed(self) -> bool:
        """True when a queued run-ahead step already fed the engine's pending token."""
        return self._inflight is not None

    @property
    def profile(self) -> bool:
        """GPU time of draft vs verify per round (timestamp queries), off while op-checking."""
        return self.runner.can_time and self.executor is None

    def reset(self, n_ctx: int, n_max: int, mtp: bool, eog: set[int] | None = None) -> None:
        self._retire()
        if n_ctx > self.n_ctx:
            raise ContextOverflowError(f"context {n_ctx} exceeds the {self.n_ctx} this model was loaded with")
        self.model.ensure_state(n_max + 1, mtp)
        self.model.state.zero()
        self.n_max, self.mtp = n_max, mtp
        self._n_past = 0
        self.src_plane = 0
        self.pending_commit = False
        self.timing = {"draft_s": 0.0, "verify_s": 0.0}
        if eog is not None:
            self.eog = sorted(eog)
            self.model.n_eog = len(self.eog)
        self.ctx.queue.write_buffer(self.model.step_buf.buffer, self.lay.eog * 4, self.lay.eog_words(self.eog))

    def _batch(self, n_tok: int, max_emit: int = 0) -> Batch:
        return Batch.of_sequence(SLOT, self._n_past, n_tok, self.src_plane, max_emit)

    def _head(self, batch: Batch, ids: list[int], n_drafts: int = 0, n_valid: int | None = None) -> tuple:
        return (self.model.step_buf.buffer, 0, self.lay.head(batch, ids, n_drafts, n_valid))

    def _pre(self) -> list[Program]:
        """Programs that must run first in the next submission (a sampled round's commit)."""
        if self.pending_commit:
            self.pending_commit = False
            return [self.model.commit()]
        return []

    def _candidates(self, blobs: list[bytes], n_cand: int) -> tuple[np.ndarray, np.ndarray]:
        if n_cand <= 1:
            tok = np.frombuffer(blobs[0], np.uint32)[:1].astype(np.int64)
            return tok, np.zeros(1, np.float32)
        ids = np.frombuffer(blobs[0], np.uint32).astype(np.int32)
        vals = np.frombuffer(blobs[1], np.float32).copy()
        return ids, vals

    def _cand_reads(self, n_cand: int, rows: int = 1) -> list[Readback]:
        b = self.model.buf
        if n_cand <= 1:
            return [Readback(self.model.step_buf.buffer, self.lay.input_ids * 4, 4)]
        return [Readback(b.top_ids.buffer, 0, rows * n_cand * 4), Readback(b.top_vals.buffer, 0, rows * n_cand * 4)]

    def _feed(self, tokens: list[int], n_cand: int) -> tuple[np.ndarray, np.ndarray]:
        """Prefill chunks (or one decode token); candidates of the last token."""
        m = self.model
        if self._n_past + len(tokens) > self.n_ctx:
            raise ContextOverflowError(f"{self._n_past + len(tokens)} tokens exceed the context {self.n_ctx}")
        n_cand = min(n_cand, TOPK_MAX)
        out = None
        i = 0
        while i < len(tokens):
            chunk = tokens[i: i + m.t_max]
            T = 1 if len(chunk) == 1 else (MATVEC_MAX_TOK if len(chunk) <= MATVEC_MAX_TOK else m.t_max)
            last = i + len(chunk) >= len(tokens)
            reads = self._cand_reads(n_cand) if last else []
            blobs = self._run(self._pre() + [m.feed(T, self.mtp, n_cand)],
                              writes=[self._head(self._batch(len(chunk)), chunk)], reads=reads)
            self._n_past += len(chunk)
            self.src_plane = 0
            i += len(chunk)
            if last:
                out = self._candidates(blobs, n_cand)
        return out

    def prefill(self, tokens: list[int], n_cand: int) -> tuple[np.ndarray, np.ndarray]:
        self._retire()
        return self._feed(list(tokens), n_cand)

    def decode(self, token: int, n_cand: int) -> tuple[np.ndarray, np.ndarray]:
        """One token. Greedy plain decoding runs one step ahead: the step that feeds the next
        token (which the GPU's argmax wrote where the embedding reads it) is queued before this
        step's token is read back, so the GPU never waits for Python. That queued step feeds the
        token this call returns, so afterwards `pending_fed` is True: the engine's pending token
        is already in the state."""
        if n_cand > 1 or self.mtp or not self.run_ahead or self.executor is not None:
            self._retire()
            return self._feed([int(token)], n_cand)
        prog = self.model.feed(1, False, 1)
        rb = self._cand_reads(1)
        if self._inflight is None:          # the first step after a prefill: token comes from the host
            if self._n_past + 2 > self.n_ctx:
                return self._feed([int(token)], n_cand)
            h1 = self.runner.submit([prog], writes=[self._head(self._batch(1), [token])], reads=rb)
            self._n_past += 1
            self.src_plane = 0
        else:
            h1 = self._inflight
        self._inflight = None
        if self._n_past + 1 < self.n_ctx:   # queue the next step: only the step records are written
            recs = self.lay.records(self._batch(1))
            self._inflight = self.runner.submit([prog], writes=[(self.model.step_buf.buffer, 0, recs.tobytes())],
                                                reads=rb)
            self._n_past += 1
        return self._candidates(self.runner.collect(h1), 1)

    def _retire(self) -> None:
        """Wait for a queued run-ahead step (its token stays in the state: pending_fed)."""
        if self._inflight is not None:
            self.runner.collect(self._inflight)
            self._inflight = None

    def spec_round(self, id_last: int, n_max: int, p_min: float, sampler: Sampler,
                   is_eog: Callable[[int], bool], max_emit: int, *, draft_vocab: int = 0) -> tuple[list[int], int]:
        """One submission: n greedy MTP drafts, verify of n+1 rows, MTP KV fill, acceptance (on the
        GPU for greedy; on the host from top-k candidates when sampling), rollback by plane choice.
        draft_vocab > 0: the drafts' LM head and argmax cover token ids < draft_vocab only."""
        self._retire()
        m, lay = self.model, self.lay
        n = max(0, min(n_max, self.n_max))
        if n == 0:
            ids, lg = self.decode(id_last, 1 if sampler.params.greedy else sampler.params.n_candidates)
            return [sampler.pick(ids, lg)], 0
        greedy = sampler.params.greedy
        n_cand = 1 if greedy else sampler.params.n_candidates
        dv = int(draft_vocab) if 0 < draft_vocab < self.cfg.n_vocab else self.cfg.n_vocab
        progs = [m.draft(n, p_min, dv), m.verify(n, n_cand)]
        T = n + 1
        batch = self._batch(T, max_emit if greedy else 0)
        step = m.step_buf.buffer
        if greedy:
            reads = [Readback(step, lay.result * 4, (2 + T) * 4), Readback(step, lay.n_valid * 4, 4)]
        else:
            b = m.buf
            reads = [Readback(b.top_ids.buffer, 0, T * n_cand * 4), Readback(b.top_vals.buffer, 0, T * n_cand * 4),
                     Readback(step, lay.input_ids * 4, T * 4), Readback(step, lay.n_valid * 4, 4)]
        pre = self._pre()
        # all drafts valid unless the p-min gate says less
        blobs = self._run(pre + progs, writes=[self._head(batch, [id_last], n_drafts=n, n_valid=n)], reads=reads,
                          timed=self.profile)
        if self.profile and self.runner.last_gpu_s:
            g = self.runner.last_gpu_s[len(pre):]
            self.timing["draft_s"] += g[0]
            self.timing["verify_s"] += g[1]
        if greedy:
            r = lay.round_result(blobs[0])
            n_valid = lay.word(blobs[1])
            k, out = self._greedy_outcome(r.k, r.tokens, n_valid)
        else:
            cid = np.frombuffer(blobs[0], np.uint32).astype(np.int32).reshape(T, n_cand)
            cval = np.frombuffer(blobs[1], np.float32).reshape(T, n_cand)
            drafts = [int(x) for x in np.frombuffer(blobs[2], np.uint32)[1:T]]
            n_valid = lay.word(blobs[3])
            out = accept(drafts[:n_valid], lambda i: sampler.pick(cid[i], cval[i]), is_eog, max_emit)
            k = len(out) - 1
            self.set_accepted(k)
        self._n_past += k + 1
        self.src_plane = n - k
        self.last_round = {"n": n, "n_valid": n_valid, "k": k}
        return out, n_valid

    def _greedy_outcome(self, k: int, out: list[int], n_valid: int) -> tuple[int, list[int]]:
        """What a greedy round keeps: what the GPU's acceptance decided (a bench subclass may
        force another count through set_accepted)."""
        return k, out

    def set_accepted(self, k: int) -> None:
        """The GPU learns the round's accepted count k (and so the pending hidden) at the start of
        the next submission: a host-decided acceptance."""
        self.ctx.queue.write_buffer(self.model.step_buf.buffer, self.lay.result * 4, np.array([k], np.uint32).tobytes())
        self.pending_commit = True

    def _run(self, progs: list[Program], *, writes: Writes = (), reads: list[Readback] = (),
             timed: bool = False) -> list[bytes]:
        if self.executor is not None:
            return self.executor(list(progs), list(writes), list(reads))
        return self.runner.run(progs, writes=writes, reads=reads, timed=timed)

    def time_programs(self, n: int, reps: int = 5) -> dict:
        """GPU time of one plain decode step (the trunk and LM head of one token, no MTP head: what
        a token costs without speculation) and of one verify batch of n + 1 tokens (timestamp
        queries, else wall time of submit + a 4-byte readback), at the current position. Clobbers
        the sequence state: call it after the measured generation."""
        self._retire()
        m = self.model
        pos = min(self._n_past, self.n_ctx - n - 2)
        rb = [Readback(m.step_buf.buffer, 0, 4)]

        def t(progs: list[Program], n_tok: int) -> float:
            best = float("inf")
            for i in range(reps + 1):
                batch = Batch.of_sequence(SLOT, pos, n_tok)
                t0 = time.perf_counter()
                self.runner.run(progs, writes=[self._head(batch, [0] * n_tok, n_drafts=n)], reads=rb, timed=True)
                dt = sum(self.runner.last_gpu_s) if self.runner.last_gpu_s else time.perf_counter() - t0
                if i:
                    best = min(best, dt)
            return best
        dec = t([m.feed(1, False, 1)], 1)
        ver = t([m.verify(n, 1)], n + 1) if n else 0.0
        return {"decode_s": dec, "verify_s": ver, "ratio": ver / dec if dec and n else 0.0,
                "timing": "timestamps" if self.runner.can_time else "wall"}

    def logits(self, tokens: list[int]) -> np.ndarray:
        """float32 [T, V] for a fresh sequence (chunks of 16 through the verify-shaped program)."""
        self.reset(self.n_ctx, self.n_max, self.mtp, None)
        m, V = self.model, self.cfg.n_vocab
        out = []
        for i in range(0, len(tokens), MATVEC_MAX_TOK):
            chunk = [int(t) for t in tokens[i: i + MATVEC_MAX_TOK]]
            blobs = self._run([m.logits_only(MATVEC_MAX_TOK)], writes=[self._head(self._batch(len(chunk)), chunk)],
                              reads=[Readback(m.buf.logits.buffer, 0, len(chunk) * V * 4)])
            out.append(np.frombuffer(blobs[0], np.float32).reshape(len(chunk), V).copy())
            self._n_past += len(chunk)
            self.src_plane = 0
        return np.concatenate(out, axis=0)

    def memory_bytes(self) -> int:
        return self.model.weight_bytes() + self.model.state_bytes()
