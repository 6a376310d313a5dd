"""The generation loop shared by the numpy reference and the GPU: prefill, decode or speculative
rounds, stop conditions and statistics. A backend supplies the model-specific steps.

State invariant kept by every backend: after each call, the backend's state holds exactly the
tokens that were fed to the trunk (`n_past`), and the last emitted token is *pending* (sampled,
not yet fed). Speculative rounds never leave rejected drafts behind (they roll back through the
snapshot slots), and never emit past the token budget.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator, Protocol

import numpy as np

from .errors import BadRequestError, ContextOverflowError, MTPUnavailableError, raise_ctx_hint
from .sampling import NONFINITE_ID, Sampler, SamplerParams, check_token
from .speculative import SpecStats

if TYPE_CHECKING:
    from .models.qwen35.config import ModelConfig

Candidates = tuple[np.ndarray, np.ndarray]   # (ids int32 [k], logits f32 [k]) sorted descending
N_DRAFT_MAX = 15        # drafts per round at most (the GPU programs' draft records)


class Backend(Protocol):
    """What the loop needs of a model on a device (models/qwen35/runner.py on the GPU,
    reference/backend.py in numpy)."""
    cfg: ModelConfig
    has_mtp: bool
    n_past: int           # tokens fed to the trunk
    pending_fed: bool     # the pending token is already in the state (a decode that ran ahead)
    timing: dict          # GPU seconds of the rounds so far by part ("draft_s", "verify_s"), or empty

    def reset(self, n_ctx: int, n_max: int, mtp: bool, eog: set[int]) -> None: ...
    def prefill(self, tokens: list[int], n_cand: int) -> Candidates: ...
    def decode(self, token: int, n_cand: int) -> Candidates: ...
    def spec_round(self, id_last: int, n_max: int, p_min: float, sampler: Sampler,
                   is_eog: Callable[[int], bool], max_emit: int, *, draft_vocab: int = 0) -> tuple[list[int], int]: ...
    def logits(self, tokens: list[int]) -> np.ndarray: ...


@dataclass
class StepEvent:
    """What one generation step emitted and how, for an observer (`GenRequest.observe`, the batching
    engine's `Request.observe`; the live view, wgmtp/view). Built only when an observer is attached,
    so an unobserved run pays nothing and its output never depends on one."""
    tokens: list[int]                 # emitted by the step, in order; the last is the target's own token
    n_drafted: int = 0                # drafts verified (0: a plain step, or the first token after the prompt)
    k: int = 0                        # of them accepted: tokens[:k] were drafts, tokens[k] is the verify's
    drafts: list[int] | None = None   # the drafted ids where the host has them (None: they stayed on the GPU)
    first: bool = False               # the first token of a generation, sampled from the prompt's logits
    t: float = 0.0                    # time.perf_counter() when the step's tokens were known
    gpu_s: dict[str, float] | None = None   # GPU seconds of the generation so far by part (draft_s,
                                            # verify_s; timestamp queries), where the backend measures them
    slot: int = 0                     # the engine slot the step ran in (the batching engine; 0 on one sequence)


@dataclass
class GenStats:
    prompt_tokens: int = 0
    prompt_s: float = 0.0
    gen_tokens: int = 0
    gen_s: float = 0.0
    spec: SpecStats | None = None
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        d = {
            "prompt_tokens": self.prompt_tokens,
            "prompt_tps": self.prompt_tokens / self.prompt_s if self.prompt_s > 0 else 0.0,
            "gen_tokens": self.gen_tokens,
            "gen_tps": self.gen_tokens / self.gen_s if self.gen_s > 0 else 0.0,
            "prompt_s": self.prompt_s, "gen_s": self.gen_s,
        }
        s = self.spec
        d.update({
            "drafted": s.drafted if s else 0, "accepted": s.accepted if s else 0,
            "acceptance": s.acceptance if s else 0.0,
            "mean_accepted_len": s.mean_accepted_len if s else 0.0,
            "acceptance_per_pos": s.acceptance_per_pos if s else [],
            "verify_rounds": s.verify_rounds if s else 0,
        })
        d.update(self.extra)
        return d


@dataclass
class GenRequest:
    max_tokens: int = 64
    sampler: SamplerParams = SamplerParams()
    spec: bool = False
    n_max: int = 3
    p_min: float = 0.0
    draft_vocab: int = 0      # draft over token ids < draft_vocab only (0: the whole vocabulary)
    observe: Callable[[StepEvent], None] | None = None    # called on each step (StepEvent); None: no cost


class Session:
    """One sequence on one backend: keeps the state between `generate` calls (chat turns)."""

    def __init__(self, backend: Backend, n_ctx: int, eog_ids: set[int]) -> None:
        self.be = backend
        self.n_ctx = n_ctx
        self.eog = set(eog_ids)
        self.pending: int | None = None       # sampled, not yet fed
        self.stats = GenStats()
        self._configured: tuple[int, bool] | None = None
        self.in_sync = True     # False when the consumer stopped mid-round: the state then holds
                                # accepted tokens it never saw, so a continuation must start over

    def forget(self) -> None:
        """The backend's state no longer holds this session's sequence (e.g. after Model.logits):
        the next generate starts over."""
        self._configured = None

    def reset(self, req: GenRequest) -> None:
        self.be.reset(self.n_ctx, req.n_max if req.spec else 0, req.spec, self.eog)
        self.pending = None
        self._configured = (req.n_max if req.spec else 0, req.spec)

    def _check(self, tok: int, step: int) -> None:
        """Stop at a token whose logits had no finite winner (sampling.check_token); the state
        then holds a step no one will continue, so the next generate starts over."""
        if tok & NONFINITE_ID:
            self.in_sync = False
            check_token(tok, step)

    def generate(self, prompt: list[int], req: GenRequest, *, cont: bool = False) -> Iterator[int]:
        """Yield generated token ids. With `cont`, `prompt` continues the state (after the
        pending token, which is fed first) instead of starting a fresh sequence."""
        if req.spec and not self.be.has_mtp:
            raise MTPUnavailableError("draft-mtp needs an MTP block: this model has none "
                                      "(give the MTP sidecar with -md mtp-*.gguf, or use --spec-type none)")
        if req.spec and not 1 <= req.n_max <= N_DRAFT_MAX:
            raise BadRequestError(f"n_max {req.n_max} must be in 1..{N_DRAFT_MAX} (--spec-draft-n-max)")
        if req.spec and not 0.0 <= req.p_min <= 1.0:
            raise BadRequestError(f"p_min {req.p_min} must be in 0..1 (--spec-draft-p-min)")
        if req.max_tokens < 1:
            raise BadRequestError(f"max_tokens {req.max_tokens} must be at least 1")
        if req.spec and not 0 <= req.draft_vocab <= self.be.cfg.n_vocab:
            raise BadRequestError(f"draft vocabulary {req.draft_vocab} must be in 0..{self.be.cfg.n_vocab} "
                                  "(0: the whole vocabulary; --spec-draft-vocab)")
        want = (req.n_max if req.spec else 0, req.spec)
        if not cont or self._configured != want or not self.in_sync:
            self.reset(req)
            cont = False
        self.in_sync = True
        # a backend that decodes one step ahead may already have fed the pending token
        fed = self.be.pending_fed
        feed = ([self.pending] if cont and self.pending is not None and not fed else []) + list(prompt)
        if not feed:
            raise BadRequestError("empty prompt: give at least one token")
        V = self.be.cfg.n_vocab
        bad = next((t for t in prompt if not 0 <= int(t) < V), None)
        if bad is not None:
            raise BadRequestError(f"prompt token id {bad} is out of range: ids must be in 0..{V - 1} "
                                  "(this model's vocabulary)")
        if self.be.n_past + len(feed) >= self.n_ctx:
            raise ContextOverflowError(f"prompt of {len(feed)} tokens does not fit the context "
                                       f"({self.be.n_past} used of {self.n_ctx}); "
                                       f"{raise_ctx_hint(self.n_ctx, self.be.cfg.n_ctx_train)}")
        sampler = Sampler(req.sampler)
        n_cand = 1 if req.sampler.greedy else req.sampler.n_candidates
        st = self.stats = GenStats(prompt_tokens=len(feed), spec=SpecStats(n_max=req.n_max) if req.spec else None)
        timing = self.be.timing
        for k in timing:
            timing[k] = 0.0
        t0 = time.perf_counter()
        ids, lg = self.be.prefill(feed, n_cand)
        tok = sampler.pick(ids, lg)
        t1 = time.perf_counter()
        st.prompt_s = t1 - t0
        emitted = 0
        is_eog = self.eog.__contains__
        obs = req.observe
        if obs is not None:
            obs(StepEvent([tok], first=True, t=t1))
        try:
            while True:
                emitted += 1
                self._check(tok, emitted)
                self.pending = tok
                st.gen_tokens = emitted
                st.gen_s = time.perf_counter() - t1
                yield tok
                if tok in self.eog or emitted >= req.max_tokens:
                    return
                room = self.n_ctx - self.be.n_past - 1
                if room <= 0:
                    return
                if req.spec:
                    n_max = min(req.n_max, room - 1)
                    out, n_drafted = self.be.spec_round(tok, max(n_max, 0), req.p_min, sampler, is_eog,
                                                        req.max_tokens - emitted, draft_vocab=req.draft_vocab)
                    st.spec.record(n_drafted, len(out) - 1)
                    if obs is not None:
                        obs(StepEvent(list(out), n_drafted, len(out) - 1, t=time.perf_counter(),
                                      gpu_s=dict(timing) or None))
                    try:
                        for t in out[:-1]:
                            emitted += 1
                            self._check(t, emitted)
                            st.gen_tokens = emitted
                            yield t
                    except GeneratorExit:
                        self.in_sync = False
                        raise
                    tok = out[-1]
                else:
                    ids, lg = self.be.decode(tok, n_cand)
                    tok = sampler.pick(ids, lg)
                    if obs is not None:
                        obs(StepEvent([tok], t=time.perf_counter()))
        finally:
            st.gen_s = time.perf_counter() - t1
            if req.spec and timing.get("draft_s", 0.0) + timing.get("verify_s", 0.0) > 0:
                st.extra.update(draft_s=timing["draft_s"], verify_s=timing["verify_s"],
                                other_s=max(0.0, st.gen_s - timing["draft_s"] - timing["verify_s"]))
