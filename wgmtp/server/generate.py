"""One generation request, from its fields to its last chunk: the sampling and speculative settings
(llama-server's defaults and bounds), submission, and the stream of text deltas (stop strings,
reasoning split, logprobs) that every endpoint formats in its own shape."""
from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field, replace

from ..batching import Request, RequestHandle
from ..drafters import SpecSettings
from ..sampling import TOPK_MAX, SamplerParams
from .backend import Backend, Job
from .errors import ApiError
from .reasoning import ReasoningSplit
from .streaming import TextStream

MAX_STOPS = 16
MAX_TOP_LOGPROBS = 20


@dataclass
class Plan:
    """What to generate, validated."""
    prompt: list[int]
    max_tokens: int
    sampler: SamplerParams
    spec: SpecSettings                   # this request's drafters and draft lengths (no types: plain)
    stops: list[str]
    top_logprobs: int | None = None      # None: no logprobs
    reasoning: bool | None = None        # None: no split; True/False: the prompt opened a thought


@dataclass
class Delta:
    content: str = ""
    reasoning: str = ""
    ids: list[int] = field(default_factory=list)         # tokens whose text starts in this delta
    cands: list = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)     # their text offsets in the whole reply
    final: bool = False                                   # the last delta (finish_reason and stats are set)


def _range(name: str, v: float, lo: float, hi: float) -> None:
    if not lo <= v <= hi:
        raise ApiError(400, f"{name} {v} must be in {lo:g}..{hi:g}")


def make_plan(b: Backend, body, prompt: list[int], max_tokens: int | None, *, top_logprobs: int | None = None,
              reasoning: bool | None = None) -> Plan:
    """Validate the sampling, speculative and stop fields shared by every generation endpoint."""
    n_ctx = b.n_ctx
    if max_tokens is None or max_tokens == -1:
        max_tokens = max(1, n_ctx - len(prompt))
    if not 1 <= max_tokens <= n_ctx:
        raise ApiError(400, f"max_tokens {max_tokens} must be in 1..{n_ctx} (the context per slot, -c)")
    temp = 0.8 if body.temperature is None else body.temperature
    _range("temperature", temp, 0.0, 100.0)
    top_k = 40 if body.top_k is None else body.top_k
    if top_k < 0:
        raise ApiError(400, f"top_k {top_k} must be >= 0 (0: all of the top {TOPK_MAX} candidates)")
    top_p = 0.95 if body.top_p is None else body.top_p
    _range("top_p", top_p, 0.0, 1.0)
    min_p = 0.05 if body.min_p is None else body.min_p
    _range("min_p", min_p, 0.0, 1.0)
    seed = body.seed
    if seed is None or seed == -1:
        seed = secrets.randbits(32)
    if not 0 <= seed < 2**64:
        raise ApiError(400, f"seed {seed} must be in 0..2^64-1 (or -1: random)")
    spec = speculative_settings(b, body)
    stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stops) > MAX_STOPS:
        raise ApiError(400, f"{len(stops)} stop strings: at most {MAX_STOPS}")
    if any(not s for s in stops):
        raise ApiError(400, "stop strings must not be empty")
    if top_logprobs is not None and not 0 <= top_logprobs <= MAX_TOP_LOGPROBS:
        raise ApiError(400, f"top_logprobs {top_logprobs} must be in 0..{MAX_TOP_LOGPROBS}")
    return Plan(prompt, max_tokens, SamplerParams(temperature=temp, top_k=top_k, top_p=top_p, min_p=min_p, seed=seed),
                spec, stops, top_logprobs, reasoning)


def speculative_settings(b: Backend, body) -> SpecSettings:
    """The server's drafters with llama-server's per-request fields: speculative.n_max (0: plain
    decoding; at most the server's --spec-draft-n-max), speculative.n_min (clamped to n_max, as
    llama-server does) and speculative.p_min."""
    s = b.cfg.spec()
    n_min = s.n_min if body.n_min is None else body.n_min
    if n_min < 0:
        raise ApiError(400, f"speculative.n_min {n_min} must be >= 0")
    p_min = s.p_min if body.p_min is None else body.p_min
    _range("speculative.p_min", p_min, 0.0, 1.0)
    if body.n_max is not None and body.n_max > 0 and not b.speculative:
        raise ApiError(400, "speculative.n_max > 0 needs a server started with a drafter "
                            "(--spec-type draft-mtp, ngram-simple, ngram-mod)")
    if not b.speculative:
        return SpecSettings()
    n_max = s.n_max if body.n_max is None else body.n_max
    if not 0 <= n_max <= b.engine.rn.n_max:
        raise ApiError(400, f"speculative.n_max {n_max} must be in 0..{b.engine.rn.n_max} (the server's "
                            "--spec-draft-n-max)")
    return replace(s, n_max=n_max, n_min=min(n_min, n_max), p_min=p_min)


class Run:
    """A submitted plan: iterate `deltas()`; afterwards `finish_reason`, `handle` (stats, tokens)."""

    def __init__(self, b: Backend, plan: Plan) -> None:
        self.b, self.plan = b, plan
        self.job: Job | None = None
        self.handle: RequestHandle | None = None
        self.finish_reason = "length"
        self.stop_word: str | None = None
        self.tokens: list[int] = []          # the tokens of the reply as shown (up to a stop string)

    def submit(self) -> None:
        """Enqueue (before any response is sent, so a refusal is an HTTP error)."""
        p = self.plan
        req = Request(prompt=p.prompt, max_tokens=p.max_tokens, sampler=p.sampler, **p.spec.request_fields(),
                      n_cand=TOPK_MAX if p.top_logprobs is not None else 0)
        self.job = self.b.submit(req)

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()

    async def deltas(self):
        """Text deltas until the end; a client that goes away (this generator closed) cancels the request."""
        assert self.job is not None and self.b.tok is not None
        ts = TextStream(self.b.tok, self.plan.stops)
        split = ReasoningSplit(self.plan.reasoning) if self.plan.reasoning is not None else None
        ids: list[int] = []
        cands: list = []
        shown = 0
        ended = False

        def delta(text: str, final: bool) -> Delta:
            nonlocal shown
            n = ts.n_shown(final)
            d = Delta(ids=ids[shown:n], cands=cands[shown:n], offsets=ts.offsets[shown:n])
            shown = n
            if split is None:
                d.content = text
            else:
                r1, c1 = split.push(text)
                r2, c2 = split.flush() if final else ("", "")
                d.reasoning, d.content = r1 + r2, c1 + c2
            return d

        held = ""
        try:
            async for new, cs in self.job.batches():
                ids += new
                cands += cs
                text = ts.push(new)
                if ts.stopped:
                    self.job.cancel()           # the slot frees at the next engine step
                    held = text
                    break
                if text:
                    yield delta(text, False)
            h = await self.job.finished()
            ended = True
            if h.error is not None:
                raise h.error
            tail = held + ts.finish()
            self.handle, self.stop_word = h, ts.stop_word
            self.finish_reason = "stop" if ts.stopped or h.finish_reason in ("stop", "cancelled") else "length"
            self.tokens = ids[: ts.n_shown(True)]
            d = delta(tail, True)
            d.final = True
            yield d
        finally:
            if not ended:
                self.job.cancel()


async def watch_disconnect(request, run: Run, every: float = 0.2) -> None:  # type: ignore[no-untyped-def]
    """For a response that is not streamed: cancel the request when its client goes away."""
    while True:
        await asyncio.sleep(every)
        if await request.is_disconnected():
            run.cancel()
            return

