"""The GPU as an engine backend: runs the recorded programs of models/qwen35.py, one submission
per decode step or speculative round, reading back only token ids and counts (or, when
sampling, the top-k candidates the host's sampler finishes from).
"""
from __future__ import annotations

import time

import numpy as np

from ..errors import ContextOverflowError
from ..gguf_file import GGUFModel
from ..models.qwen35 import MATVEC_MAX, N_EOG, Qwen35GPU
from ..sampling import Sampler, TOPK_MAX
from ..speculative import accept
from .device import env_flag, open_context
from .program import Readback, Runner


class GPUBackend:
    def __init__(self, gm: GGUFModel, device: str | int = "auto", n_ctx: int = 4096, *,
                 prefill_chunk: int = 64, eog: set[int] | None = None, progress: bool = True,
                 ctx=None) -> None:
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
        self.src_slot = 0
        self.n_max = 0
        self.mtp = False
        self.pending_commit = False      # a sampled round's k must reach the GPU before the next program
        self.timing = {"draft_s": 0.0, "verify_s": 0.0}
        self.configured: tuple[int, bool] | None = None
        self.capture: list | None = None   # tests: when a list, logits rows of each step/round land here
        self.profile = self.runner.can_time   # GPU time of draft vs verify per round (timestamp queries)
        self.synthetic_p: float | None = None   # bench only: force each draft accepted with this probability
        self.run_ahead = not env_flag("WGMTP_NO_RUN_AHEAD")
        self._inflight = None                   # a queued decode step (greedy run-ahead)
        # WGMTP_CHECK=1: every op is checked against its numpy twin as it runs; the first divergence
        # stops the run with a message naming layer, op, shape and error (check/trace.py)
        self.check_results: list = []
        self.stop_on_divergence = True
        if env_flag("WGMTP_CHECK"):
            self.set_tracing(True)
        self._syn_rng = np.random.default_rng(0)

    # ---- engine protocol

    @property
    def n_past(self) -> int:
        return self._n_past

    def reset(self, n_ctx: int, n_max: int, mtp: bool, eog: set[int] | None = None) -> None:
        self._retire()
        if n_ctx > self.n_ctx:
            raise ContextOverflowError(f"context {n_ctx} exceeds the {self.n_ctx} this model was loaded with")
        self.model.ensure_state(n_max + 1, mtp)
        self.model.zero_state()
        self.n_max, self.mtp = n_max, mtp
        self._n_past = 0
        self.src_slot = 0
        self.pending_commit = False
        self.timing = {"draft_s": 0.0, "verify_s": 0.0}
        self.configured = (n_max, mtp)
        if eog is not None:
            if len(eog) > N_EOG:
                raise ValueError(f"at most {N_EOG} end-of-generation ids are supported on the GPU")
            self.eog = sorted(eog)
            if len(self.eog) != self.model.n_eog:
                self.model.n_eog = len(self.eog)
                self.model.programs = {k: v for k, v in self.model.programs.items() if k[0] != "verify"}
        eog = np.zeros(N_EOG, np.uint32)
        eog[: len(self.eog)] = self.eog
        self.ctx.queue.write_buffer(self.model.IDS.buffer, self.lay.EOG * 4, eog.tobytes())

    def _records(self, n_tok: int, pos0: int, src: int, max_emit: int = 0, drafts: int = 0) -> np.ndarray:
        """Step records: batch, last-row, and one per draft step (kernels/__init__.py)."""
        lay = self.lay
        w = np.zeros(lay.IN, np.uint32)
        w[lay.R_BATCH: lay.R_BATCH + 4] = (n_tok, pos0, src, max_emit)
        w[lay.R_ONE: lay.R_ONE + 4] = (1, pos0 + n_tok - 1, src, 0)
        for i in range(drafts):
            o = lay.R_DRAFT(i)
            w[o: o + 4] = (1, pos0 + i, 0, 0)
        return w

    def _write_head(self, recs: np.ndarray, ids: list[int]) -> tuple:
        blob = np.concatenate([recs, np.asarray(ids, np.uint32)]).astype(np.uint32)
        return (self.model.IDS.buffer, 0, blob.tobytes())

    def _pre(self) -> list:
        """Programs that must run first in the next submission (a sampled round's commit)."""
        if self.pending_commit:
            self.pending_commit = False
            return [self.model.program("commit")]
        return []

    def _candidates(self, blobs: list[bytes], n_cand: int) -> tuple[np.ndarray, np.ndarray]:
        if n_cand <= 1:
            tok = np.frombuffer(blobs[0], np.uint32)[:1].astype(np.int32)
            return tok, np.zeros(1, np.float32)
        ids = np.frombuffer(blobs[0], np.uint32).astype(np.int32)
        vals = np.frombuffer(blobs[1], np.float32).copy()
        return ids, vals

    def _cand_reads(self, n_cand: int, rows: int = 1) -> list[Readback]:
        m = self.model
        if n_cand <= 1:
            return [Readback(m.IDS.buffer, self.lay.IN * 4, 4)]
        return [Readback(m.TOPI.buffer, 0, rows * n_cand * 4), Readback(m.TOPV.buffer, 0, rows * n_cand * 4)]

    def _feed(self, tokens: list[int], n_cand: int):
        """Prefill chunks (or one decode token); candidates of the last token."""
        m, lay = self.model, self.lay
        if self._n_past + len(tokens) > self.n_ctx:
            raise ContextOverflowError(f"{self._n_past + len(tokens)} tokens exceed the context {self.n_ctx}")
        n_cand = min(n_cand, TOPK_MAX)
        out = None
        i = 0
        while i < len(tokens):
            chunk = tokens[i: i + m.t_max]
            T = 1 if len(chunk) == 1 else (MATVEC_MAX if len(chunk) <= MATVEC_MAX else m.t_max)
            prog = m.program("feed", T, self.mtp, n_cand)
            last = i + len(chunk) >= len(tokens)
            recs = self._records(len(chunk), self._n_past, self.src_slot)
            reads = self._cand_reads(n_cand) if last else []
            if last and self.capture is not None:
                reads = reads + [Readback(m.LOGITS.buffer, 0, self.cfg.n_vocab * 4)]
            blobs = self._run(self._pre() + [prog], writes=[self._write_head(recs, chunk)], reads=reads)
            if last and self.capture is not None:
                self.capture.append(np.frombuffer(blobs[-1], np.float32).reshape(1, -1).copy())
            self._n_past += len(chunk)
            self.src_slot = 0
            i += len(chunk)
            if last:
                out = self._candidates(blobs, n_cand)
        return out

    def prefill(self, tokens: list[int], n_cand: int):
        self._retire()
        return self._feed(list(tokens), n_cand)

    def decode(self, token: int, n_cand: int):
        """One token. Greedy plain decoding runs one step ahead: the step that feeds the next
        token (which the GPU's argmax wrote where the embedding reads it) is queued before this
        step's token is read back, so the GPU never waits for Python. That queued step feeds the
        token this call returns, so afterwards `pending_fed` is True: the engine's pending token
        is already in the state."""
        if n_cand > 1 or self.mtp or not self.run_ahead or self.model.tracing or self.capture is not None:
            self._retire()
            return self._feed([int(token)], n_cand)
        m = self.model
        prog = m.program("feed", 1, False, 1)
        rb = self._cand_reads(1)
        if self._inflight is None:          # the first step after a prefill: token comes from the host
            if self._n_past + 2 > self.n_ctx:
                return self._feed([int(token)], n_cand)
            h1 = self.runner.submit([prog], writes=[self._write_head(self._records(1, self._n_past, self.src_slot), [token])],
                                    reads=rb)
            self._n_past += 1
            self.src_slot = 0
        else:
            h1 = self._inflight
        self._inflight = None
        if self._n_past + 1 < self.n_ctx:   # queue the next step: only the step records are written
            recs = self._records(1, self._n_past, 0)
            self._inflight = self.runner.submit([prog], writes=[(m.IDS.buffer, 0, recs.tobytes())], reads=rb)
            self._n_past += 1
        return self._candidates(self.runner.collect(h1), 1)

    @property
    def pending_fed(self) -> bool:
        return self._inflight is not None

    def _retire(self) -> None:
        """Wait for a queued run-ahead step (its token stays in the state: pending_fed)."""
        if self._inflight is not None:
            self.runner.collect(self._inflight)
            self._inflight = None

    def spec_round(self, id_last: int, n_max: int, p_min: float, sampler: Sampler, is_eog, max_emit: int, *,
                   draft_vocab: int = 0):
        self._retire()
        return self._spec_round(id_last, n_max, p_min, sampler, is_eog, max_emit, draft_vocab)

    def _spec_round(self, id_last: int, n_max: int, p_min: float, sampler: Sampler, is_eog, max_emit: int,
                    draft_vocab: int = 0):
        """One submission: n greedy MTP drafts, verify of n+1 rows, MTP KV fill, acceptance (on the
        GPU for greedy; on the host from top-k candidates when sampling), rollback by slot choice.
        draft_vocab > 0: the drafts' LM head and argmax cover token ids < draft_vocab only."""
        m, lay = self.model, self.lay
        n = max(0, min(n_max, self.n_max))
        if n == 0:
            ids, lg = self.decode(id_last, 1 if sampler.params.greedy else sampler.params.n_candidates)
            return [sampler.pick(ids, lg)], 0
        greedy = sampler.params.greedy
        n_cand = 1 if greedy else sampler.params.n_candidates
        dv = int(draft_vocab) if 0 < draft_vocab < self.cfg.n_vocab else self.cfg.n_vocab
        progs = [m.program("draft", n, float(p_min), dv), m.program("verify", n, n_cand)]
        recs = self._records(n + 1, self._n_past, self.src_slot, max_emit if greedy else 0, drafts=n)
        head = np.zeros(lay.NVALID + 1 - lay.IN, np.uint32)
        head[0] = id_last
        head[lay.NVALID - lay.IN] = n                        # all drafts valid unless the p-min gate says less
        T = n + 1
        if greedy:
            reads = [Readback(m.IDS.buffer, lay.RES * 4, (2 + T) * 4), Readback(m.IDS.buffer, lay.NVALID * 4, 4)]
        else:
            reads = [Readback(m.TOPI.buffer, 0, T * n_cand * 4), Readback(m.TOPV.buffer, 0, T * n_cand * 4),
                     Readback(m.IDS.buffer, lay.IN * 4, T * 4), Readback(m.IDS.buffer, lay.NVALID * 4, 4)]
        if self.capture is not None:
            reads = reads + [Readback(m.LOGITS.buffer, 0, T * self.cfg.n_vocab * 4)]
        pre = self._pre()
        blobs = self._run(pre + progs, writes=[self._write_head(recs, list(head))], reads=reads,
                          timed=self.profile)
        if self.profile and self.runner.last_gpu_s:
            g = self.runner.last_gpu_s[len(pre):]
            self.timing["draft_s"] += g[0]
            self.timing["verify_s"] += g[1]
        if greedy:
            res = np.frombuffer(blobs[0], np.uint32)
            n_valid = int(np.frombuffer(blobs[1], np.uint32)[0])
            k, n_out = int(res[0]), int(res[1])
            out = [int(x) for x in res[2: 2 + n_out]]
            if self.synthetic_p is not None:
                k, out = self._synthetic(k, out, n_valid)
        else:
            cid = np.frombuffer(blobs[0], np.uint32).astype(np.int32).reshape(T, n_cand)
            cval = np.frombuffer(blobs[1], np.float32).reshape(T, n_cand)
            drafts = [int(x) for x in np.frombuffer(blobs[2], np.uint32)[1:T]]
            n_valid = int(np.frombuffer(blobs[3], np.uint32)[0])
            out = accept(drafts[:n_valid], lambda i: sampler.pick(cid[i], cval[i]), is_eog, max_emit)
            k = len(out) - 1
            # the GPU learns k and the new pending token at the start of the next submission
            fix = np.array([k], np.uint32).tobytes()
            self.ctx.queue.write_buffer(m.IDS.buffer, lay.RES * 4, fix)
            self.pending_commit = True
        if self.capture is not None:
            self.capture.append(np.frombuffer(blobs[-1], np.float32).reshape(T, -1)[: k + 1].copy())
        self._n_past += k + 1
        self.src_slot = n - k
        self.last_round = {"n": n, "n_valid": n_valid, "k": k}
        return out, n_valid

    def set_tracing(self, on: bool) -> None:
        self.model.tracing = on
        self.profile = self.runner.can_time and not on

    def _run(self, progs: list, *, writes=(), reads=(), timed: bool = False) -> list[bytes]:
        if not self.model.tracing:
            return self.runner.run(progs, writes=writes, reads=reads, timed=timed)
        from ..check import trace as TR
        io = TR.IO(self.ctx)
        for buf, off, data in writes:
            self.ctx.queue.write_buffer(buf, off, data)
        for p in progs:
            start = 0
            for idx, chk in p.marks:
                inputs = TR.read_inputs(io, chk)
                self.runner.run_range(p, start, idx)
                res = TR.run_check(io, chk, inputs)
                self.check_results.append(res)
                if not res.ok and self.stop_on_divergence:
                    raise TR.CheckDivergence("WGMTP_CHECK: " + res.message())
                start = idx
            self.runner.run_range(p, start, len(p.dispatches))
        return self.runner.run([], reads=reads)

    def _synthetic(self, k: int, out: list[int], n_valid: int) -> tuple[int, list[int]]:
        """`wgmtp bench --synthetic-acceptance P`: pretend the first drafts were accepted with
        probability P each (like llama.cpp's server option; the text is then meaningless). The
        state follows the forced count: next batch from plane n - k, pending hidden row k + 1."""
        ks = 0
        while ks < n_valid and self._syn_rng.random() < self.synthetic_p:
            ks += 1
        if ks != k:
            self.ctx.queue.write_buffer(self.model.IDS.buffer, self.lay.RES * 4, np.array([ks], np.uint32).tobytes())
            self.pending_commit = True
        return ks, (out + [out[-1]] * (ks + 1))[: ks + 1]

    def time_programs(self, n: int, reps: int = 5) -> dict:
        """GPU time of one plain decode step (the trunk and LM head of one token, no MTP head: what
        a token costs without speculation) and of one verify batch of n + 1 tokens (timestamp
        queries, else wall time of submit + a 4-byte readback), at the current position. Clobbers
        the sequence state: call it after the measured generation."""
        self._retire()
        m, lay = self.model, self.lay
        pos = min(self._n_past, self.n_ctx - n - 2)
        rb = [Readback(m.IDS.buffer, 0, 4)]

        def t(progs, n_tok) -> float:
            best = float("inf")
            for i in range(reps + 1):
                recs = self._records(n_tok, pos, 0, 0, drafts=n)
                t0 = time.perf_counter()
                self.runner.run(progs, writes=[self._write_head(recs, [0] * n_tok)], reads=rb, timed=True)
                dt = sum(self.runner.last_gpu_s) if self.runner.last_gpu_s else time.perf_counter() - t0
                if i:
                    best = min(best, dt)
            return best
        dec = t([m.program("feed", 1, False, 1)], 1)
        ver = t([m.program("verify", n, 1)], n + 1) if n else 0.0
        return {"decode_s": dec, "verify_s": ver, "ratio": ver / dec if dec and n else 0.0,
                "timing": "timestamps" if self.runner.can_time else "wall"}

    def logits(self, tokens: list[int]) -> np.ndarray:
        """float32 [T, V] for a fresh sequence (chunks of 16 through the verify-shaped program)."""
        self.reset(self.n_ctx, self.n_max, self.mtp, None)
        m, V = self.model, self.cfg.n_vocab
        out = []
        for i in range(0, len(tokens), MATVEC_MAX):
            chunk = [int(t) for t in tokens[i: i + MATVEC_MAX]]
            recs = self._records(len(chunk), self._n_past, self.src_slot)
            blobs = self._run([m.program("logits_only", MATVEC_MAX)], writes=[self._write_head(recs, chunk)],
                              reads=[Readback(m.LOGITS.buffer, 0, len(chunk) * V * 4)])
            out.append(np.frombuffer(blobs[0], np.float32).reshape(len(chunk), V).copy())
            self._n_past += len(chunk)
            self.src_slot = 0
        self.configured = None
        return np.concatenate(out, axis=0)

    def memory_bytes(self) -> int:
        return self.model.weight_bytes() + self.model.state_bytes()
