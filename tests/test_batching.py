"""Many sequences at once (wgmtp/batching.py over models/qwen35/slots.py): a request's tokens and
read-back logits are bit-identical whether it runs alone or among others that start, stop and
speculate at staggered times; MTP is lossless per slot; prefix reuse (live state and prompt-end
checkpoint) equals a fresh prefill; memory is refused before allocation; a freed slot is reused at once.

The model is a "predictable" synthetic one (tests/test_gpu_spec.py): its MTP head agrees with the
trunk often but not always, so rounds accept every count of drafts and roll back to every plane.
"""
from __future__ import annotations

import numpy as np
import pytest
from gpu_util import ctx_params

from wgmtp.api import eog_ids
from wgmtp.batching import BatchEngine, Request
from wgmtp.engine import GenRequest, Session
from wgmtp.errors import WgmtpError
from wgmtp.gpu.device import open_context
from wgmtp.models.qwen35 import GGUFModel
from wgmtp.models.qwen35.runner import Qwen35Runner
from wgmtp.models.qwen35.slots import SlotRunner
from wgmtp.sampling import SamplerParams

MODEL = dict(block_out_scale=0.2, mtp_copy=True, seed=3)
VARIANTS = ctx_params()
N_CTX = 256


def _ctx(variant):
    _, index, opts = variant
    return open_context(index, **opts)


def make_engine(path, variant, n_seq: int, *, mtp: bool = True, n_max: int = 3, chunk: int = 16,
                ctx=None) -> BatchEngine:
    gm = GGUFModel(path)
    rn = SlotRunner(gm, n_ctx=N_CTX, n_seq=n_seq, n_max=n_max, mtp=mtp, prefill_chunk=chunk, eog=eog_ids(gm),
                    progress=False, ctx=ctx or _ctx(variant))
    eng = BatchEngine(rn, eog_ids(gm))
    eng.trace = True
    return eng


def prompts(n_vocab: int, lengths: list[int], seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [[int(t) for t in rng.integers(0, n_vocab, n)] for n in lengths]


def bits(trace) -> list:
    """A request's read-back rows as exact bits (logits viewed as uint32)."""
    out = []
    for ids, vals in trace:
        if isinstance(ids, tuple):
            out.append((ids, vals))
        else:
            out.append((tuple(np.asarray(ids).tolist()), np.asarray(vals, np.float32).view(np.uint32).tobytes()))
    return out


def requests(n_vocab: int) -> list[Request]:
    """Eight requests of mixed kinds: plain and MTP n_max 1-3, greedy and seeded sampling, a p-min
    gate, a draft vocabulary, prompts shorter and longer than a prefill chunk, different budgets."""
    ps = prompts(n_vocab, [5, 40, 12, 23, 3, 33, 9, 17])
    samp = lambda seed: SamplerParams(temperature=0.8, top_k=20, top_p=0.9, min_p=0.02, seed=seed)  # noqa: E731
    kinds = [dict(), dict(spec=True, n_max=3), dict(spec=True, n_max=1), dict(sampler=samp(7)),
             dict(spec=True, n_max=2, sampler=samp(11)), dict(spec=True, n_max=3, p_min=0.3), dict(),
             dict(spec=True, n_max=2, draft_vocab=n_vocab // 2)]
    budgets = [20, 24, 12, 16, 20, 9, 30, 14]
    return [Request(prompt=p, max_tokens=b, **k) for p, b, k in zip(ps, budgets, kinds)]


def run_alone(path, variant, req: Request, ctx) -> tuple[list[int], list]:
    eng = make_engine(path, variant, 1, ctx=ctx)
    h = eng.submit(req)
    eng.run_until_idle()
    return h.result(), bits(h.trace)


@pytest.mark.parametrize("variant", VARIANTS)
def test_requests_do_not_depend_on_their_batch(synth, variant):
    """Each of 8 mixed requests gives the same tokens and the same read-back logits bits as when it
    runs alone: among 7 others on 8 slots (two submitted late), and on 3 slots, where requests
    join as slots free up and long prompts are prefilled in chunks between the others' rounds."""
    path = synth(**MODEL)
    ctx = _ctx(variant)
    n_vocab = GGUFModel(path).config.n_vocab
    reqs = requests(n_vocab)
    alone = [run_alone(path, variant, r, ctx) for r in reqs]
    for n_seq in (8, 3):
        eng = make_engine(path, variant, n_seq, ctx=ctx)
        hs = [eng.submit(r) for r in reqs[:6]]
        for _ in range(3):
            eng.step()
        hs += [eng.submit(r) for r in reqs[6:]]
        eng.run_until_idle()
        assert max(len(eng.running), eng.waiting.qsize()) == 0
        for i, (h, (toks, tr)) in enumerate(zip(hs, alone)):
            assert h.result() == toks, f"{n_seq} slots, request {i}: tokens differ in the batch"
            assert bits(h.trace) == tr, f"{n_seq} slots, request {i}: read-back logits differ in the batch"
        spec = [h for h in hs if h.stats.spec is not None and h.stats.spec.drafted]
        assert spec and any(h.stats.spec.accepted for h in spec) and any(
            h.stats.spec.accepted < h.stats.spec.drafted for h in spec), "rounds must both accept and reject"


@pytest.mark.parametrize("variant", VARIANTS[:1])
def test_batched_equals_single_sequence_runner_and_mtp_is_lossless(synth, variant):
    """The batched engine's greedy tokens equal the one-sequence runner's (plain and MTP), and per
    slot MTP output equals plain output, all requests sharing one mixed batch."""
    path = synth(**MODEL)
    ctx = _ctx(variant)
    gm = GGUFModel(path)
    ps = prompts(gm.config.n_vocab, [7, 30, 18], seed=1)
    be = Qwen35Runner(gm, eog=eog_ids(gm), progress=False, ctx=ctx, n_ctx=N_CTX, prefill_chunk=16)
    sess = Session(be, N_CTX, eog_ids(gm))
    single = [list(sess.generate(p, GenRequest(max_tokens=24))) for p in ps]
    eng = make_engine(path, variant, 6, ctx=ctx)
    plain = [eng.submit(Request(prompt=p, max_tokens=24)) for p in ps]
    spec = [eng.submit(Request(prompt=p, max_tokens=24, spec=True, n_max=n)) for p, n in zip(ps, (3, 2, 1))]
    eng.run_until_idle()
    for i, p in enumerate(ps):
        assert plain[i].result() == single[i], f"prompt {i}: batched plain != one-sequence runner"
        assert spec[i].result() == single[i], f"prompt {i}: batched MTP != plain"


@pytest.mark.parametrize("variant", VARIANTS[:1])
def test_prefix_reuse_live_and_checkpoint(synth, variant):
    """A continued request (its prompt extends the slot's history) feeds only the new tokens; a
    next turn that diverges inside the previous answer restarts from the prompt-end checkpoint;
    both give the tokens of a fresh full prefill."""
    path = synth(**MODEL)
    ctx = _ctx(variant)
    n_vocab = GGUFModel(path).config.n_vocab
    p, extra, other = prompts(n_vocab, [21, 6, 5], seed=2)
    for spec in (False, True):
        kw = dict(spec=spec, n_max=3)
        eng = make_engine(path, variant, 2, ctx=ctx)
        h1 = eng.submit(Request(prompt=p, max_tokens=12, **kw))
        eng.run_until_idle()
        ans = h1.result()
        # the chat's next turn: history + answer + new user tokens -> the live state continues
        turn = p + ans + extra
        h2 = eng.submit(Request(prompt=turn, max_tokens=10, **kw))
        eng.run_until_idle()
        assert h2.stats.slot == h1.stats.slot and h2.stats.reused_tokens == len(p) + len(ans) - 1
        assert h2.result() == run_alone(path, variant, Request(prompt=turn, max_tokens=10, **kw), ctx)[0]
        # a turn that rewrites the previous answer: back to the checkpoint at the end of `turn`
        fork = turn + other
        eng.submit(Request(prompt=turn[:-2] + other, max_tokens=4, **kw))   # diverges before the checkpoint
        eng.run_until_idle()
        h3 = eng.submit(Request(prompt=fork, max_tokens=10, **kw))
        eng.run_until_idle()
        assert h3.stats.reused_tokens == len(turn), (h3.stats.reused_tokens, len(turn))
        assert h3.result() == run_alone(path, variant, Request(prompt=fork, max_tokens=10, **kw), ctx)[0]


@pytest.mark.parametrize("variant", VARIANTS[:1])
def test_memory_refused_before_allocation(synth, variant, monkeypatch):
    path = synth(**MODEL)
    ctx = _ctx(variant)
    made = []
    real = ctx.buffer
    monkeypatch.setattr(ctx, "buffer", lambda *a, **k: made.append(a) or real(*a, **k))
    monkeypatch.setenv("WGMTP_MEMORY_BYTES", "100000")
    with pytest.raises(WgmtpError, match=r"lower -c, -np or --spec-draft-n-max"):
        make_engine(path, variant, 8, ctx=ctx)
    assert not made, "nothing may be allocated before the memory check"


@pytest.mark.parametrize("variant", VARIANTS[:1])
def test_slot_freed_mid_generation_is_reused_at_once(synth, variant):
    path = synth(**MODEL)
    ctx = _ctx(variant)
    n_vocab = GGUFModel(path).config.n_vocab
    p1, p2 = prompts(n_vocab, [9, 14], seed=4)
    eng = make_engine(path, variant, 1, ctx=ctx)
    h1 = eng.submit(Request(prompt=p1, max_tokens=100, spec=True))
    for _ in range(3):
        eng.step()
    h2 = eng.submit(Request(prompt=p2, max_tokens=8))
    h1.cancel()
    eng.step()
    assert h1.finish_reason == "cancelled" and eng.running and h2.stats.slot == 0
    eng.run_until_idle()
    assert h2.result() == run_alone(path, variant, Request(prompt=p2, max_tokens=8), ctx)[0]


@pytest.mark.parametrize("variant", VARIANTS[:1])
def test_engine_thread_serves_concurrent_consumers(synth, variant):
    """One thread drives the GPU; requests submitted from several threads stream their tokens."""
    import threading
    path = synth(**MODEL)
    ctx = _ctx(variant)
    n_vocab = GGUFModel(path).config.n_vocab
    ps = prompts(n_vocab, [6, 11, 4], seed=5)
    want = [run_alone(path, variant, Request(prompt=p, max_tokens=10, spec=True), ctx)[0] for p in ps]
    eng = make_engine(path, variant, 3, ctx=ctx)
    eng.start()
    got: dict[int, list[int]] = {}

    def client(i):
        got[i] = list(eng.submit(Request(prompt=ps[i], max_tokens=10, spec=True)))
    threads = [threading.Thread(target=client, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    eng.stop()
    assert [got[i] for i in range(3)] == want
