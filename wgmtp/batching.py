"""Continuous batching: many requests on one model, each in a slot, served by one thread that
drives the GPU while other threads (or an event loop) submit requests and consume their tokens.

Engine step (one submission, `BatchEngine.step`):
  1. Admit waiting requests into free slots, each into the slot with the longest reusable prefix
     (its live state when the prompt extends the slot's history, else its prompt-end checkpoint
     when the prompt extends that, else a fresh start).
  2. Every decoding sequence gets one round (plain: one token; speculative: n drafts verified, from
     an n-gram match on the host when there is one, else from the MTP chain).
  3. Prefill: sequences still feeding their prompt get chunks, oldest first, of at most
     `prefill_budget` tokens in all (default: one chunk). So a long prompt is fed in chunks
     interleaved with the others' rounds, and running sequences never stall for more than one
     chunk per step. A sequence gets only whole chunks (a prompt's chunk boundaries, hence its
     bits, never depend on what else is prefilling); one that does not fit waits a step.
  4. Tokens go to their requests; a request that stops (end of generation, max_tokens, stop
     tokens, context full, cancel) frees its slot at once; the slot keeps its history for reuse.

What a request gets does not depend on the other requests: every row of a batch is computed as if
its sequence ran alone (docs/ARCHITECTURE.md, "Batch invariance"), and each request has its own
sampler, random stream, speculative settings and statistics.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from .drafters import GIVEN_DRAFTERS, MODEL_DRAFTER, AdaptiveN, NgramParams, NgramSimple, NgramTable, StepCosts
from .engine import StepEvent
from .errors import BadRequestError, ContextOverflowError, WgmtpError, raise_ctx_hint
from .models.qwen35.draft_model import DraftModel
from .models.qwen35.slots import Feed, Outcome, Round, SlotRunner
from .sampling import NONFINITE_ID, TOPK_MAX, Sampler, SamplerParams, nonfinite_error
from .speculative import SpecStats, accept


@dataclass
class Request:
    """One generation: prompt ids and its own parameters (llama-server's per-request fields)."""
    prompt: list[int]
    max_tokens: int = 64
    sampler: SamplerParams = SamplerParams()
    spec: bool = False            # draft-mtp for this request (the engine must be loaded with it)
    n_max: int = 3
    p_min: float = 0.0
    draft_vocab: int = 0
    stop_ids: frozenset[int] = frozenset()     # extra stop tokens (besides end of generation)
    # read back at least this many top candidates (ids, logits) for every emitted token, into
    # handle.cands (logprobs); tokens do not change: greedy still emits the first, the argmax
    n_cand: int = 0
    # called on the engine thread after each emitted token and once more after the end (done is
    # set by then), so an event loop can wait for tokens without a thread per request
    notify: Callable[["RequestHandle"], None] | None = None
    # drafters whose drafts come with the round (wgmtp/drafters.py): "ngram-simple", "ngram-mod",
    # "draft-simple" (the engine's draft model); an n-gram match drafts when there is one, else the
    # draft model, else MTP with spec (llama.cpp: the draftless type takes precedence)
    drafters: tuple[str, ...] = ()
    ngram: NgramParams = field(default_factory=NgramParams)
    n_min: int = 0                # --spec-draft-n-min: rounds of fewer drafts run as plain steps
    adaptive: bool = False        # --spec-adaptive: each round's n from this request's acceptance
    # called on the engine thread after each step of this request with what it emitted and how
    # (engine.StepEvent: the round's drafts where the host has them; no GPU timing here); None: no cost
    observe: Callable[[StepEvent], None] | None = None

    @property
    def speculative(self) -> bool:
        return self.spec or bool(self.drafters)


@dataclass
class RequestStats:
    prompt_tokens: int = 0        # tokens fed for the prompt (after reuse)
    reused_tokens: int = 0        # prompt tokens served from a slot's history
    gen_tokens: int = 0
    prompt_s: float = 0.0
    gen_s: float = 0.0
    slot: int = -1
    spec: SpecStats | None = None

    def as_dict(self) -> dict:
        """The keys of engine.Session's stats (what `wgmtp run` prints), plus the slot and reuse."""
        s = self.spec
        return {"prompt_tokens": self.prompt_tokens, "reused_tokens": self.reused_tokens,
                "gen_tokens": self.gen_tokens, "prompt_s": self.prompt_s, "gen_s": self.gen_s,
                "prompt_tps": self.prompt_tokens / self.prompt_s if self.prompt_s > 0 else 0.0,
                "gen_tps": self.gen_tokens / self.gen_s if self.gen_s > 0 else 0.0, "slot": self.slot,
                "drafted": s.drafted if s else 0, "accepted": s.accepted if s else 0,
                "acceptance": s.acceptance if s else 0.0,
                "mean_accepted_len": s.mean_accepted_len if s else 0.0,
                "acceptance_per_pos": s.acceptance_per_pos if s else [],
                "verify_rounds": s.verify_rounds if s else 0}


_DONE = object()


def _n_cand(r: Request) -> int:
    """Candidates each row of `r` reads back: 1 (the GPU's argmax) for greedy unless r.n_cand asks for
    more; a sampled request reads at least its top_k. More candidates than the sampler uses do not
    change its pick (it truncates to its own top_k)."""
    n = 1 if r.sampler.greedy else r.sampler.n_candidates
    return min(max(n, r.n_cand), TOPK_MAX)


class RequestHandle:
    """A submitted request: iterate it for its token ids as they come (from any thread)."""

    def __init__(self, req: Request, rid: int) -> None:
        self.req, self.id = req, rid
        self.stats = RequestStats(spec=SpecStats(n_max=req.n_max) if req.speculative else None)
        self.finish_reason: str | None = None     # "stop" | "length" | "cancelled" | "error"
        self.error: Exception | None = None
        self.tokens: list[int] = []
        self.cands: list[tuple[np.ndarray, np.ndarray]] = []    # with req.n_cand: per token, filled first
        self.trace: list[tuple] = []      # with BatchEngine.trace: (ids, logits) of every row read back
        self._q: queue.Queue = queue.Queue()
        self._cancel = threading.Event()
        self.done = threading.Event()

    def cancel(self) -> None:
        """Stop generating; the slot is freed at the next engine step."""
        self._cancel.set()

    def __iter__(self) -> Iterator[int]:
        while True:
            item = self._q.get()
            if item is _DONE:
                if self.error is not None:
                    raise self.error
                return
            yield item

    def result(self, timeout: float | None = None) -> list[int]:
        """All tokens, once the request is done."""
        if not self.done.wait(timeout):
            raise TimeoutError(f"request {self.id} not done after {timeout} s")
        if self.error is not None:
            raise self.error
        return list(self.tokens)

    # engine side
    def _emit(self, tok: int, cand: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        if self.req.n_cand and cand is not None:
            self.cands.append(cand)
        self.tokens.append(tok)
        self._q.put(tok)
        if self.req.notify is not None:
            self.req.notify(self)

    def _finish(self, reason: str, error: Exception | None = None) -> None:
        self.finish_reason, self.error = reason, error
        self._q.put(_DONE)
        self.done.set()
        if self.req.notify is not None:
            self.req.notify(self)


@dataclass
class _Seq:
    """A request running in a slot."""
    h: RequestHandle
    slot: int
    sampler: Sampler
    to_feed: list[int]
    pending: int | None = None     # sampled, not yet fed
    t0: float = field(default_factory=time.perf_counter)
    t_first: float = 0.0
    ngram: NgramSimple | None = None     # this sequence's history, indexed (ngram-simple)
    hist: list[int] = field(default_factory=list)     # prompt + emitted tokens (ngram-mod)
    adaptive: AdaptiveN | None = None


@dataclass
class _SlotHistory:
    fed: list[int] = field(default_factory=list)    # tokens in the slot's state, in order
    ckpt: int = -1                                  # prompt-end checkpoint position (-1: none)


class BatchEngine:
    """Requests in, tokens out, over a SlotRunner."""

    def __init__(self, runner: SlotRunner, eog: set[int], *, prefill_budget: int | None = None,
                 draft: DraftModel | None = None) -> None:
        self.rn = runner
        self.draft = draft          # draft-simple's model, one sequence per slot (models/qwen35/draft_model.py)
        self._given: dict[int, list[int]] = {}     # this step's drafts that come with the rounds, by slot
        self.eog = frozenset(eog)
        self.budget = prefill_budget or runner.chunk
        self.waiting: queue.Queue[RequestHandle] = queue.Queue()
        self.running: dict[int, _Seq] = {}
        self.hist = [_SlotHistory() for _ in range(runner.n_seq)]
        self._lock = threading.Lock()
        self._next_id = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.steps = 0
        self.trace = False      # keep each request's read-back candidates (ids, logits) in handle.trace
        self._tables: dict[tuple[int, int], NgramTable] = {}
        # measured cost of a round by shape, shared by the requests' adaptive draft lengths
        self.costs = StepCosts()

    @property
    def n_parallel(self) -> int:
        return self.rn.n_seq

    # ---- submitting (any thread)

    def submit(self, req: Request) -> RequestHandle:
        """Queue a request; its tokens come through the returned handle."""
        c = self.rn.cfg
        if not req.prompt:
            raise BadRequestError("empty prompt")
        if any(not 0 <= t < c.n_vocab for t in req.prompt):
            raise BadRequestError(f"prompt token ids must be in 0..{c.n_vocab - 1}")
        if len(req.prompt) >= self.rn.n_ctx:
            raise ContextOverflowError(f"prompt of {len(req.prompt)} tokens does not fit the context of "
                                       f"{self.rn.n_ctx} per sequence; "
                                       f"{raise_ctx_hint(self.rn.n_ctx, c.n_ctx_train)}")
        if req.spec and not self.rn.mtp:
            raise BadRequestError("this engine was loaded without draft-mtp: start it with --spec-type draft-mtp")
        if MODEL_DRAFTER in req.drafters and self.draft is None:
            raise BadRequestError("this engine has no draft model: start it with --spec-type draft-simple "
                                  "-md draft.gguf")
        bad = [d for d in req.drafters if d not in GIVEN_DRAFTERS]
        if bad:
            raise BadRequestError(f"unknown drafter '{bad[0]}' (the engine's drafters: "
                                  f"{', '.join(GIVEN_DRAFTERS)}; draft-mtp is spec=True)")
        if req.drafters:
            req.ngram.check()
            if self.rn.n_max < 1:
                raise BadRequestError("drafting needs snapshot planes: load the engine with "
                                      "--spec-draft-n-max of at least 1")
        if req.speculative and not 0 <= req.n_max <= self.rn.n_max:
            raise BadRequestError(f"n_max {req.n_max} must be in 0..{self.rn.n_max} (the engine's --spec-draft-n-max)")
        if req.speculative and not 0 <= req.n_min <= req.n_max:
            raise BadRequestError(f"n_min {req.n_min} must be in 0..{req.n_max} (--spec-draft-n-min, at most n_max)")
        if req.spec and not 0 <= req.draft_vocab <= c.n_vocab:
            raise BadRequestError(f"draft vocabulary {req.draft_vocab} must be in 0..{c.n_vocab}")
        if req.max_tokens < 1:
            raise BadRequestError("max_tokens must be at least 1")
        with self._lock:
            h = RequestHandle(req, self._next_id)
            self._next_id += 1
        self.waiting.put(h)
        self._wake.set()
        return h

    # ---- the engine thread

    def start(self) -> None:
        """Drive the GPU from a background thread until `stop`."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="wgmtp-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.step()
            except Exception as e:      # the device failed: every request ends with the error, none hangs
                self.fail_all(e)
                busy = False
            if not busy:
                self._wake.wait(0.05)
                self._wake.clear()

    def fail_all(self, error: Exception) -> None:
        """End every running and waiting request with `error` (their slots start over)."""
        for seq in list(self.running.values()):
            self._end(seq, "error", error)
        while True:
            try:
                self.waiting.get_nowait()._finish("error", error)
            except queue.Empty:
                return

    def warm_up(self, n_max: int, *, p_min: float = 0.0, vocab: int = 0) -> None:
        """Build every greedy round program a request may use (plain, and with 1..n_max drafts from
        the MTP chain or the host) on an idle slot, so that timing starts warm: each shape's first
        submission builds its program. The slot starts over afterwards."""
        if self.running:
            raise WgmtpError("warm_up needs an idle engine")
        n_max = min(n_max, self.rn.n_max)
        shapes = [Round(0, 0)] + [Round(0, 0, drafts=[0] * n) for n in range(1, n_max + 1)]
        if self.rn.mtp:
            shapes += [Round(0, 0, n=n, p_min=p_min, vocab=vocab) for n in range(1, n_max + 1)]
        for w in shapes:
            self.rn.start(0)
            self.rn.step([Feed(0, [0])])
            self.rn.step([w])
        self.rn.start(0)
        self.hist[0] = _SlotHistory()

    def run_until_idle(self) -> None:
        """Step until nothing waits or runs (single-threaded use, tests, bench)."""
        while self.step():
            pass

    def step(self) -> bool:
        """One engine step; False when there was nothing to do."""
        self._drop_cancelled()
        self._admit()
        if not self.running:
            return False
        t0 = time.perf_counter()
        self._given = self._given_drafts()
        work: list[Feed | Round] = []
        owners: list[_Seq] = []
        budget = self.budget
        for seq in sorted(self.running.values(), key=lambda s: s.h.id):
            if seq.to_feed:
                # whole chunks only (unless it is the step's first feed): a prompt's chunk boundaries,
                # and so its bits, must not depend on what else is prefilling
                n = min(len(seq.to_feed), self.rn.chunk)
                if n > budget and budget < self.budget:
                    continue
                budget -= n
                last = n == len(seq.to_feed)
                work.append(Feed(seq.slot, seq.to_feed[:n], last, _n_cand(seq.h.req)))
            else:
                work.append(self._round(seq))
            owners.append(seq)
        try:
            outs = self.rn.step(work)
        except WgmtpError as e:         # a failure of this step: its requests end with the error
            for seq in owners:
                self._end(seq, "error", e)
            return True
        self.steps += 1
        for seq, w, out in zip(owners, work, outs):
            if isinstance(w, Feed):
                self._after_feed(seq, w, out)
            else:
                self._after_round(seq, w, out)
        if len(work) == 1 and isinstance(work[0], Round):     # one sequence: the step is its round's cost
            self.costs.observe(work[0].n, work[0].drafts is None, time.perf_counter() - t0)
        return True

    def _n_room(self, seq: _Seq) -> int:
        """Drafts a round of `seq` may have: its n_max, within the context and the runner. Only a
        greedy round of host or MTP drafts may go past the snapshot planes (a long round); sampled
        rounds stop at rn.n_chain here, a draft model's drafts in _given_drafts."""
        r, st = seq.h.req, self.rn.slots[seq.slot]
        cap = self.rn.n_max if r.sampler.greedy else self.rn.n_chain
        return max(0, min(r.n_max, self.rn.n_ctx - st.pos - 2, cap)) if r.speculative else 0

    def _given_drafts(self) -> dict[int, list[int]]:
        """This step's drafts that come with the rounds, by slot: each decoding sequence's n-gram
        match (no GPU time), else for draft-simple the draft model's, for all of them in one
        submission on its adapter."""
        given: dict[int, list[int]] = {}
        asks: list[tuple[int, int]] = []
        for seq in self.running.values():
            n = 0 if seq.to_feed else self._n_room(seq)
            if not n:
                continue
            got = self._host_drafts(seq, n)
            if got:
                given[seq.slot] = got
            elif MODEL_DRAFTER in seq.h.req.drafters:
                asks.append((seq.slot, min(n, self.rn.n_chain)))
        if asks:
            given.update((s, d) for (s, _), d in zip(asks, self.draft.draft(asks)) if d)
        return given

    def _round(self, seq: _Seq) -> Round:
        """This step's round of `seq`: drafts given with it (an n-gram match, else the draft
        model's) when there are some, else MTP (with draft-mtp), else a plain step. Adaptive n
        picks how many, per kind of drafts: of the given ones (up to their length; none: MTP's
        turn), or of MTP's chain (up to the cap)."""
        r = seq.h.req
        n = self._n_room(seq)
        greedy = r.sampler.greedy
        left = r.max_tokens - seq.h.stats.gen_tokens
        drafts = self._given.get(seq.slot) if n else None
        ad = seq.adaptive
        if ad is not None and drafts:
            drafts = drafts[: ad.pick(len(drafts), chain=False)] or None
        if drafts is not None:
            n = len(drafts)
        elif not r.spec:
            n = 0                               # no n-gram match and no MTP: a plain step
        else:                                   # MTP's chain (greedy past rn.n_chain: a long round)
            if ad is not None and n:
                n = ad.pick(n, chain=True)
        if n < max(1, r.n_min):
            n, drafts = 0, None
        return Round(seq.slot, seq.pending, n, _n_cand(r), r.p_min if n and drafts is None else 0.0,
                     r.draft_vocab if n and drafts is None else 0, left if greedy else 0, drafts=drafts)

    def _host_drafts(self, seq: _Seq, n: int) -> list[int] | None:
        """An n-gram match of at most n tokens after the pending one, or None (no GPU time)."""
        r = seq.h.req
        for d in r.drafters:
            if d == "ngram-simple" and seq.ngram is not None:
                got = seq.ngram.draft(n)
            elif d == "ngram-mod":
                got = self.ngram_table(r.ngram).draft(seq.hist, n)
            else:
                continue
            if got:
                return got
        return None

    def ngram_table(self, p: NgramParams) -> NgramTable:
        """ngram-mod's table, shared by every request with the same n-gram size."""
        key = (p.size_n, p.size_m)
        t = self._tables.get(key)
        if t is None:
            t = self._tables[key] = NgramTable(p)
        return t

    def forget_ngrams(self) -> None:
        """Drop ngram-mod's shared tables (a benchmark's runs must not learn from each other)."""
        self._tables.clear()

    # ---- admission and reuse

    def _drop_cancelled(self) -> None:
        for seq in list(self.running.values()):
            if seq.h._cancel.is_set():
                self._end(seq, "cancelled")

    def _reusable(self, slot: int, prompt: list[int]) -> tuple[int, str]:
        """(tokens of `prompt` the slot can serve, how): the live state when the prompt extends the
        slot's whole history, else the prompt-end checkpoint when it extends that; at least one
        prompt token is always left to feed."""
        h = self.hist[slot]
        n = len(h.fed)
        if 0 < n < len(prompt) and prompt[:n] == h.fed:
            return n, "live"
        if 0 < h.ckpt < len(prompt) and prompt[:h.ckpt] == h.fed[:h.ckpt]:
            return h.ckpt, "checkpoint"
        return 0, "fresh"

    def _admit(self) -> None:
        while True:
            free = [s for s in range(self.rn.n_seq) if s not in self.running]
            if not free:
                return
            try:
                h = self.waiting.get_nowait()
            except queue.Empty:
                return
            if h._cancel.is_set():
                h._finish("cancelled")
                continue
            p = h.req.prompt
            best = max(free, key=lambda s: (self._reusable(s, p)[0], -len(self.hist[s].fed)))
            n, how = self._reusable(best, p)
            hist = self.hist[best]
            if how == "fresh":
                self.rn.start(best)
                hist.fed, hist.ckpt = [], -1
            elif how == "checkpoint":
                self.rn.restore(best)
                hist.fed = hist.fed[:n]
            h.stats.slot, h.stats.reused_tokens = best, n
            seq = _Seq(h, best, Sampler(h.req.sampler), list(p[n:]))
            r = h.req
            if "ngram-simple" in r.drafters:
                seq.ngram = NgramSimple(r.ngram)
                seq.ngram.extend(p)
            if "ngram-mod" in r.drafters:
                seq.hist = list(p)
                self.ngram_table(r.ngram).add(seq.hist, 0)
            if MODEL_DRAFTER in r.drafters:         # the draft model holds the whole prompt (no reuse)
                self.draft.start(best)
                self.draft.feed(best, list(p))
            if r.adaptive and r.speculative:
                seq.adaptive = AdaptiveN(n_min=r.n_min, n_max=r.n_max, costs=self.costs)
            h.stats.prompt_tokens = len(seq.to_feed)
            self.running[best] = seq

    # ---- outcomes

    def _after_feed(self, seq: _Seq, w: Feed, out: Outcome) -> None:
        if self.trace:
            seq.h.trace += out.cands
        self.hist[seq.slot].fed += w.tokens
        seq.to_feed = seq.to_feed[len(w.tokens):]
        if not w.last:
            return
        # the prompt is in: remember the recurrent state here for the next turn's reuse
        self.rn.checkpoint(seq.slot)
        self.hist[seq.slot].ckpt = self.rn.slots[seq.slot].ckpt_pos
        ids, lg = out.cands[0]
        tok = seq.sampler.pick(ids, lg)
        seq.t_first = time.perf_counter()
        seq.h.stats.prompt_s = seq.t_first - seq.t0
        self._emit(seq, [tok], out.cands[:1])
        if seq.h.req.observe is not None and seq.h.stats.gen_tokens:
            seq.h.req.observe(StepEvent([tok], first=True, t=seq.t_first, slot=seq.slot))

    def _after_round(self, seq: _Seq, w: Round, out: Outcome) -> None:
        r = seq.h.req
        if self.trace:
            seq.h.trace += out.cands if out.cands else [(tuple(out.tokens), out.k)]
        cands = None
        if w.n_cand > 1:        # sampled (or candidates asked for): the host accepts with this request's sampler
            max_emit = r.max_tokens - seq.h.stats.gen_tokens
            toks = accept(out.drafts[: out.n_valid], lambda i: seq.sampler.pick(*out.cands[i]),
                          self._is_stop(r), max_emit)
            self.rn.accepted(out, len(toks) - 1)
            cands = out.cands[: len(toks)]      # token i was picked from verify row i
        else:
            toks = out.tokens
        k = len(toks) - 1
        self.hist[seq.slot].fed += [w.id_last] + toks[:k]
        n_drafted = (out.n_valid if w.n_cand > 1 else min(out.n_valid, w.n)) if w.n else 0
        if seq.h.stats.spec is not None and w.n:
            seq.h.stats.spec.record(n_drafted, k)
        if seq.adaptive is not None and w.n:
            seq.adaptive.update(min(out.n_valid, w.n), k)
        before = seq.h.stats.gen_tokens
        self._emit(seq, toks, cands)
        if r.observe is not None:
            drafts = w.drafts if w.drafts is not None else (out.drafts[:n_drafted] if out.drafts else None)
            r.observe(StepEvent(toks[: seq.h.stats.gen_tokens - before], n_drafted, k, drafts=drafts,
                                t=time.perf_counter(), slot=seq.slot))

    def _is_stop(self, r: Request):
        stops = self.eog | r.stop_ids
        return stops.__contains__

    def _emit(self, seq: _Seq, toks: list[int], cands: list | None = None) -> None:
        r, st = seq.h.req, seq.h.stats
        is_stop = self._is_stop(r)
        if seq.ngram is not None:
            seq.ngram.extend(toks)
        if MODEL_DRAFTER in r.drafters:
            self.draft.feed(seq.slot, [t for t in toks if not t & NONFINITE_ID])
        if "ngram-mod" in r.drafters:
            start = len(seq.hist)
            seq.hist += toks
            self.ngram_table(r.ngram).add(seq.hist, start)
        for i, t in enumerate(toks):
            if t & NONFINITE_ID:        # no finite logit: this request ends with the error, the engine serves on
                return self._end(seq, "error", nonfinite_error(st.gen_tokens + 1))
            seq.h._emit(t, cands[i] if cands else None)
            st.gen_tokens += 1
            st.gen_s = time.perf_counter() - seq.t_first
            if is_stop(t):
                return self._end(seq, "stop")
            if st.gen_tokens >= r.max_tokens:
                return self._end(seq, "length")
        seq.pending = toks[-1]
        if self.rn.n_ctx - self.rn.slots[seq.slot].pos - 1 <= 0:
            self._end(seq, "length")

    def _end(self, seq: _Seq, reason: str, error: Exception | None = None) -> None:
        self.running.pop(seq.slot, None)
        if reason == "error":
            self.hist[seq.slot] = _SlotHistory()     # the state may be anything: start over
            try:
                self.rn.start(seq.slot)
            except Exception:       # a lost device: the slot is reset again at its next admission
                pass
        seq.h._finish(reason, error)
