"""What a request's statistics say in llama-server's words: the `timings` object of every response
and chunk, and the Prometheus counters of GET /metrics (llama-server's `llamacpp:*` names; the
speculative counters in vLLM's schema, which llama-server adopted).

The counters are sums over finished requests of exactly the numbers their final `timings` carry,
so a client can check one against the other.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ..batching import RequestStats


def timings(st: RequestStats) -> dict:
    """llama-server's `timings` (plus wgmtp's per-position draft counts, vLLM's definitions)."""
    sp = st.spec
    pm, gm = st.prompt_s * 1e3, st.gen_s * 1e3
    t = {"cache_n": st.reused_tokens, "prompt_n": st.prompt_tokens, "prompt_ms": pm,
         "prompt_per_token_ms": pm / st.prompt_tokens if st.prompt_tokens else 0.0,
         "prompt_per_second": st.prompt_tokens / st.prompt_s if st.prompt_s > 0 else 0.0,
         "predicted_n": st.gen_tokens, "predicted_ms": gm,
         "predicted_per_token_ms": gm / st.gen_tokens if st.gen_tokens else 0.0,
         "predicted_per_second": st.gen_tokens / st.gen_s if st.gen_s > 0 else 0.0}
    if sp is not None:
        t.update(draft_n=sp.drafted, draft_n_accepted=sp.accepted, draft_rounds=sp.verify_rounds,
                 draft_accepted_per_pos=list(sp.accepted_per_pos))
    else:
        t.update(draft_n=0, draft_n_accepted=0, draft_rounds=0, draft_accepted_per_pos=[])
    return t


@dataclass
class Totals:
    """Sums over finished requests (updated on the engine thread, read by /metrics)."""
    requests: int = 0
    prompt_tokens: int = 0
    prompt_s: float = 0.0
    predicted: int = 0
    predicted_s: float = 0.0
    drafts: int = 0
    draft_tokens: int = 0
    accepted: int = 0
    accepted_per_pos: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, st: RequestStats) -> None:
        with self.lock:
            self.requests += 1
            self.prompt_tokens += st.prompt_tokens
            self.prompt_s += st.prompt_s
            self.predicted += st.gen_tokens
            self.predicted_s += st.gen_s
            sp = st.spec
            if sp is not None:
                self.drafts += sp.verify_rounds
                self.draft_tokens += sp.drafted
                self.accepted += sp.accepted
                for i, a in enumerate(sp.accepted_per_pos):
                    if i >= len(self.accepted_per_pos):
                        self.accepted_per_pos.append(0)
                    self.accepted_per_pos[i] += a


class _Collector:
    def __init__(self, backend) -> None:  # type: ignore[no-untyped-def]
        self.b = backend

    def collect(self):  # type: ignore[no-untyped-def]
        t, eng = self.b.totals, self.b.engine
        with t.lock:
            c = [("prompt_tokens", "Number of prompt tokens processed.", t.prompt_tokens),
                 ("prompt_seconds", "Prompt process time.", t.prompt_s),
                 ("tokens_predicted", "Number of generation tokens processed.", t.predicted),
                 ("tokens_predicted_seconds", "Predict process time.", t.predicted_s),
                 ("n_decode", "Total number of engine steps (one GPU submission each).", eng.steps if eng else 0),
                 ("spec_decode_num_drafts", "Number of speculative rounds (draft proposals verified).", t.drafts),
                 ("spec_decode_num_draft_tokens", "Number of draft tokens proposed.", t.draft_tokens),
                 ("spec_decode_num_accepted_tokens", "Number of draft tokens accepted.", t.accepted)]
            per_pos = list(t.accepted_per_pos)
            g = [("prompt_tokens_seconds", "Average prompt throughput in tokens/s.",
                  t.prompt_tokens / t.prompt_s if t.prompt_s else 0.0),
                 ("predicted_tokens_seconds", "Average generation throughput in tokens/s.",
                  t.predicted / t.predicted_s if t.predicted_s else 0.0)]
        for name, doc, v in c:
            yield CounterMetricFamily(f"llamacpp:{name}", doc, value=v)
        f = CounterMetricFamily("llamacpp:spec_decode_num_accepted_tokens_per_pos",
                                "Accepted draft tokens at each draft position.", labels=["position"])
        for i, v in enumerate(per_pos):
            f.add_metric([str(i)], v)
        yield f
        g += [("requests_processing", "Number of requests processing.", len(eng.running) if eng else 0),
              ("requests_deferred", "Number of requests deferred (waiting for a slot).",
               eng.waiting.qsize() if eng else 0)]
        for name, doc, v in g:
            yield GaugeMetricFamily(f"llamacpp:{name}", doc, value=v)


def registry(backend) -> CollectorRegistry:  # type: ignore[no-untyped-def]
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Collector(backend))
    return reg


def exposition(reg: CollectorRegistry) -> bytes:
    return generate_latest(reg)
