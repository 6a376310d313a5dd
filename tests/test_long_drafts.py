"""Long drafts (more than the snapshot planes hold): program.slot_long_round verifies n + 1 rows in
sub-batches of 16 and rolls back by rerunning the recurrence of the kept rows of one sub-batch
(docs/ARCHITECTURE.md, "Long drafts"). The recurrent state after every acceptance count must be
the plain decode's, bit for bit, and the output the plain decode's, token for token."""
from __future__ import annotations

import numpy as np
import pytest
from gpu_util import ctx_params

from wgmtp.api import eog_ids
from wgmtp.errors import WgmtpError
from wgmtp.gpu.device import open_context
from wgmtp.models.qwen35 import GGUFModel
from wgmtp.models.qwen35.slots import N_LONG_MAX, Feed, Round, SlotRunner

MODEL = dict(block_out_scale=0.2, mtp_copy=True, seed=3)
MOE = dict(block_out_scale=0.2, n_expert=4, n_expert_used=2, seed=5)


def _runner(path, variant, mtp: bool, n_seq: int = 2) -> SlotRunner:
    gm = GGUFModel(path)
    _, index, opts = variant
    return SlotRunner(gm, n_ctx=160, n_seq=n_seq, n_max=N_LONG_MAX, mtp=mtp, prefill_chunk=64, eog=set(),
                      progress=False, ctx=open_context(index, **opts))


def _plain(rn: SlotRunner, slot: int, prompt: list[int], n: int) -> list[int]:
    rn.start(slot)
    out = [rn.step([Feed(slot, prompt)])[0].tokens[0]]
    while len(out) < n:
        out.append(rn.step([Round(slot, out[-1])])[0].tokens[0])
    return out


def _state(rn: SlotRunner, slot: int) -> list[np.ndarray]:
    """The recurrent state a slot's next batch starts from: its src plane of every GDN layer."""
    st, s = rn.model.state, rn.slots[slot]
    ctx, out = rn.ctx, []
    for i in sorted(st.conv):
        for buf, act, plane in ((st.conv[i], st.conv_at(i, slot), st.conv_plane),
                                (st.ssm[i], st.ssm_at(i, slot), st.ssm_plane)):
            out.append(ctx.read_array(buf, np.uint32, plane, act.offset + s.src_plane * plane))
    return out


def _pending(rn: SlotRunner, slot: int) -> np.ndarray:
    """The MTP head's pending hidden of a slot (its cand_hidden row), as bits."""
    E = rn.cfg.n_embd
    return rn.ctx.read_array(rn.model.state.cand_hidden, np.uint32, E, rn.slots[slot].p_row * E)


def _wrong(tok: int, V: int) -> int:
    return (tok + 1) % V


@pytest.mark.parametrize("variant", ctx_params())
@pytest.mark.parametrize("mtp", [False, True])
def test_long_round_state_is_plain_decodings_after_every_acceptance(synth, variant, mtp):
    """Rounds of 48 drafts (49 rows, 4 sub-batches) whose first wrong draft is at every position
    k (and none): the round emits plain decoding's k + 1 tokens, and the recurrent state it leaves
    is bit-identical to the one after plain decoding of the same tokens; then the next tokens are
    plain decoding's too. Every k on the first adapter variant, the sub-batch edges on the others."""
    rn = _runner(synth(**MODEL), variant, mtp)
    V = rn.cfg.n_vocab
    prompt = [int(x) for x in np.random.default_rng(7).integers(0, V, 5)]
    want = _plain(rn, 0, prompt, 52)
    # the plain state after each prefix: decode again, reading the state after every token
    rn.start(0)
    plain_states = {1: None}
    tok = rn.step([Feed(0, prompt)])[0].tokens[0]
    plain_states[1] = _state(rn, 0)
    for i in range(1, 51):
        tok = rn.step([Round(0, tok)])[0].tokens[0]
        plain_states[i + 1] = _state(rn, 0)
    # every k on the first adapter variant; the sub-batch boundaries on the others
    for k in range(49) if variant[0] == "vulkan" else (0, 14, 15, 16, 31, 32, 47, 48):
        rn.start(0)
        first = rn.step([Feed(0, prompt)])[0].tokens[0]
        drafts = list(want[1:49])
        if k < 48:
            drafts[k] = _wrong(drafts[k], V)
        out = rn.step([Round(0, first, drafts=drafts)])[0]
        assert out.k == k and out.tokens == want[1:k + 2], f"k={k}: {out.k} {out.tokens[:4]}"
        got = _state(rn, 0)
        emitted = 1 + len(out.tokens)           # tokens fed so far: the prompt's answer + the round's
        for a, b in zip(got, plain_states[emitted]):
            assert np.array_equal(a, b), f"k={k}: the state after the round is not plain decoding's"
        nxt = rn.step([Round(0, out.tokens[-1])])[0].tokens
        assert nxt == [want[emitted]], f"k={k}: the next token after the round differs"


@pytest.mark.parametrize("variant", ctx_params()[:1])
@pytest.mark.parametrize("kind", ["dense", "moe"])
def test_long_rounds_mixed_with_other_work_are_lossless(synth, variant, kind):
    """Long rounds of 16..48 drafts, right and corrupted, in the same submissions as another
    sequence's plain and short host-drafted rounds: both sequences' output is plain decoding's."""
    rn = _runner(synth(**(MODEL if kind == "dense" else MOE)), variant, mtp=False)
    V = rn.cfg.n_vocab
    ps = [[int(x) for x in np.random.default_rng(s).integers(0, V, 6)] for s in range(2)]
    N = 100
    want = [_plain(rn, s, p, N) for s, p in enumerate(ps)]
    for s in range(2):
        rn.start(s)
    got = [[o.tokens[0]] for o in rn.step([Feed(s, p) for s, p in enumerate(ps)])]
    rng = np.random.default_rng(1)
    ns = []
    while min(len(g) for g in got) < N:
        i0, i1 = len(got[0]), len(got[1])
        n = int(rng.integers(16, N_LONG_MAX + 1))
        d = list(want[0][i0: i0 + n]) + [0] * max(0, n - len(want[0][i0:]))
        if rng.random() < 0.6:
            j = int(rng.integers(0, n))
            d[j] = _wrong(d[j], V)
        work = [Round(0, got[0][-1], drafts=d[: max(1, min(n, rn.n_ctx - rn.slots[0].pos - 2))]),
                Round(1, got[1][-1], drafts=want[1][i1: i1 + 3] or [1]) if i1 % 3 else Round(1, got[1][-1])]
        outs = rn.step(work)
        for s, o in enumerate(outs):
            got[s] += o.tokens
        ns.append((work[0].n, outs[0].k))
    for s in range(2):
        assert got[s][:N] == want[s], f"slot {s}: long rounds changed the output ({ns})"
    assert any(n > 15 and k > 15 for n, k in ns), f"no long round accepted past one sub-batch: {ns}"


@pytest.mark.parametrize("variant", ctx_params()[:1])
@pytest.mark.parametrize("n", [16, N_LONG_MAX])
def test_mtp_long_round_state_is_plain_decodings_after_every_acceptance(synth, variant, n):
    """Greedy MTP rounds of n > 15 drafts, the chain drafting on the GPU in the round's submission,
    their acceptance cut at every count k by the token budget (max_emit) on a model whose MTP
    drafts are all right (tied embeddings: it repeats one token): each emits plain decoding's
    k + 1 tokens and leaves the recurrent state and the MTP pending hidden bit-identical to plain
    decoding's after the same tokens; the next token is plain decoding's too."""
    rn = _runner(synth(**dict(MODEL, tied=True)), variant, mtp=True, n_seq=1)
    V = rn.cfg.n_vocab
    prompt = [int(x) for x in np.random.default_rng(7).integers(0, V, 5)]
    rn.start(0)
    want = [rn.step([Feed(0, prompt)])[0].tokens[0]]
    plain = {1: (_state(rn, 0), _pending(rn, 0))}
    for i in range(1, n + 3):
        want.append(rn.step([Round(0, want[-1])])[0].tokens[0])
        plain[i + 1] = (_state(rn, 0), _pending(rn, 0))
    for k in range(n + 1):
        rn.start(0)
        rn.step([Feed(0, prompt)])
        out = rn.step([Round(0, want[0], n=n, max_emit=k + 1)])[0]
        assert out.k == k and out.tokens == want[1:k + 2], f"k={k}: {out.k} {out.tokens[:4]}"
        emitted = 1 + len(out.tokens)
        got, want_state = _state(rn, 0), plain[emitted][0]
        for a, b in zip(got, want_state):
            assert np.array_equal(a, b), f"k={k}: the state after the MTP round is not plain decoding's"
        assert np.array_equal(_pending(rn, 0), plain[emitted][1]), f"k={k}: the pending hidden differs"
        nxt = rn.step([Round(0, out.tokens[-1])])[0].tokens
        assert nxt == [want[emitted]], f"k={k}: the next token after the round differs"


@pytest.mark.parametrize("variant", ctx_params()[:1])
def test_mtp_long_rounds_from_every_position_roll_back_exactly(synth, variant):
    """Greedy MTP rounds of 20 drafts from every position of a plain decoding (a checkpoint there,
    restored after each), their drafts rejected where the MTP head is wrong and cut by max_emit
    at every count below: each emits plain decoding's tokens and leaves plain decoding's state and
    pending hidden, bit for bit."""
    rn = _runner(synth(**MODEL), variant, mtp=True, n_seq=1)
    V = rn.cfg.n_vocab
    prompt = [int(x) for x in np.random.default_rng(7).integers(0, V, 5)]
    P, n = 30, 20
    rn.start(0)
    want = [rn.step([Feed(0, prompt)])[0].tokens[0]]
    plain = {1: (_state(rn, 0), _pending(rn, 0))}
    while len(want) < P + n + 2:
        want.append(rn.step([Round(0, want[-1])])[0].tokens[0])
        plain[len(want)] = (_state(rn, 0), _pending(rn, 0))
    rn.start(0)
    rn.step([Feed(0, prompt)])
    ks = []
    for e in range(1, P + 1):         # e tokens emitted, want[e - 1] pending
        rn.checkpoint(0)
        k0 = None
        for cap in [0] + list(range(1, 16)):
            if k0 is not None and cap > k0:
                break
            out = rn.step([Round(0, want[e - 1], n=n, max_emit=cap)])[0]
            k0 = out.k if k0 is None else k0
            assert out.tokens == want[e: e + out.k + 1], f"e={e} cap={cap}: {out.k} {out.tokens[:4]}"
            done = e + len(out.tokens)
            for a, b in zip(_state(rn, 0), plain[done][0]):
                assert np.array_equal(a, b), f"e={e} k={out.k}: the state after the MTP round is not plain decoding's"
            assert np.array_equal(_pending(rn, 0), plain[done][1]), f"e={e} k={out.k}: the pending hidden differs"
            ks.append(out.k)
            rn.restore(0)
        assert rn.step([Round(0, want[e - 1])])[0].tokens == [want[e]]
    assert max(ks) >= 4 and 0 in ks, f"the MTP drafts were never or always accepted: {ks}"


@pytest.mark.parametrize("variant", ctx_params()[:1])
@pytest.mark.parametrize("kind", ["dense", "moe"])
def test_mtp_long_rounds_are_lossless(synth, variant, kind):
    """Greedy MTP rounds of 16 and 20 drafts (long rounds: sub-batched verify, rerun) in the same
    submissions as another sequence's short MTP rounds, plain steps and a long MTP round with a
    p-min gate and a draft vocabulary: both sequences' output is plain decoding's, token for token."""
    rn = _runner(synth(**(dict(MODEL) if kind == "dense" else dict(MOE, mtp_copy=True))), variant, mtp=True)
    V = rn.cfg.n_vocab
    ps = [[int(x) for x in np.random.default_rng(s).integers(0, V, 6)] for s in range(2)]
    N = 80
    want = [_plain(rn, s, p, N) for s, p in enumerate(ps)]
    for n in (16, 20):
        for s in range(2):
            rn.start(s)
        got = [[o.tokens[0]] for o in rn.step([Feed(s, p) for s, p in enumerate(ps)])]
        seen, i = [], 0
        while min(len(g) for g in got) < N:
            room = [rn.n_ctx - rn.slots[s].pos - 2 for s in range(2)]
            other = (Round(1, got[1][-1], n=min(20, room[1]), p_min=0.3, vocab=V // 2) if i % 3 == 0 else
                     Round(1, got[1][-1], n=min(3, room[1])) if i % 3 == 1 else Round(1, got[1][-1]))
            work = [Round(0, got[0][-1], n=min(n, room[0])), other]
            outs = rn.step(work)
            for s, o in enumerate(outs):
                got[s] += o.tokens
                assert 0 <= o.k <= o.n_valid <= work[s].n, f"n={n}: k {o.k}, n_valid {o.n_valid}, n {work[s].n}"
            seen.append((work[0].n, outs[0].k))
            i += 1
        for s in range(2):
            assert got[s][:N] == want[s], f"{kind} n={n}: slot {s}: MTP long rounds changed the output ({seen})"
        assert any(m > 15 and k > 0 for m, k in seen), f"no long MTP round accepted a draft: {seen}"


@pytest.mark.parametrize("variant", ctx_params()[:1])
def test_long_rounds_are_greedy_and_bounded(synth, variant):
    """A sampled round keeps to the planes (15 drafts), host or MTP drafts, and the engine's n_max
    bounds a long round, all as one-line errors; an n_max that the prefill chunk cannot hold is
    refused at load."""
    rn = _runner(synth(**MODEL), variant, mtp=True, n_seq=1)
    rn.step([Feed(0, [1, 2, 3])])
    with pytest.raises(WgmtpError, match="a sampled round drafts at most 15"):
        rn.step([Round(0, 4, n_cand=8, drafts=[1] * 20)])
    with pytest.raises(WgmtpError, match="a sampled round drafts at most 15"):
        rn.step([Round(0, 4, n=16, n_cand=8)])
    with pytest.raises(WgmtpError, match="exceeds the engine's --spec-draft-n-max 48"):
        rn.step([Round(0, 4, drafts=[1] * 49)])
    with pytest.raises(WgmtpError, match="exceeds the engine's --spec-draft-n-max 48"):
        rn.step([Round(0, 4, n=49)])
    gm = GGUFModel(synth(**MODEL))
    with pytest.raises(WgmtpError, match="must fit the prefill chunk of 32 tokens; use at most 30"):
        SlotRunner(gm, n_ctx=64, n_seq=1, n_max=40, prefill_chunk=32, eog=eog_ids(gm), progress=False,
                   ctx=rn.ctx)


@pytest.mark.parametrize("model", ["dense", "moe"])
def test_engine_ngram_drafts_up_to_48_are_lossless(synth, model):
    """The batching engine with --spec-draft-n-max 16, 32 and 48: ngram-simple, ngram-mod and
    draft-mtp + ngram-simple, greedy, and sampled (long matches and MTP chains cut to 15: a sampled
    round keeps to the planes), and draft-mtp alone at 16 and 48, greedy (MTP's own long rounds)
    and sampled, in mixed batches: every request's tokens are plain decoding's, and long rounds
    ran, of n-gram and of MTP drafts (and on the dense model accepted past one sub-batch)."""
    from wgmtp.batching import BatchEngine, Request
    from wgmtp.drafters import NgramParams, SpecSettings
    from wgmtp.sampling import SamplerParams

    gm = GGUFModel(synth(**(MODEL if model == "dense" else dict(MOE, mtp_copy=True))))
    _, index, opts = ctx_params()[0].values[0]
    rn = SlotRunner(gm, n_ctx=256, n_seq=8, n_max=N_LONG_MAX, mtp=True, prefill_chunk=64, eog=eog_ids(gm),
                    progress=False, ctx=open_context(index, **opts))
    eng = BatchEngine(rn, eog_ids(gm))
    base = [int(x) for x in np.random.default_rng(5).integers(0, rn.cfg.n_vocab, 7)]
    h = eng.submit(Request(prompt=base, max_tokens=60))
    eng.run_until_idle()
    prompt = base + h.result() + base
    ng = NgramParams(size_n=3, size_m=48)
    seen: list[tuple[int, int]] = []
    mtp_long: list[tuple[int, int]] = []
    step = rn.step

    def record(work, **kw):
        outs = step(work, **kw)
        seen.extend((w.n, o.k) for w, o in zip(work, outs) if isinstance(w, Round))
        mtp_long.extend((w.n, o.k) for w, o in zip(work, outs) if isinstance(w, Round) and w.n > 15
                        and w.drafts is None)
        return outs
    rn.step = record
    sampled = SamplerParams(temperature=0.8, top_k=20, seed=5)
    runs = {("plain", "greedy"): dict(), ("plain", "sampled"): dict(sampler=sampled),
            ("ngram-mod", 48, "sampled"): dict(SpecSettings(("ngram-mod",), n_max=48, ngram=ng).request_fields(),
                                               sampler=sampled)}
    for types in [("ngram-simple",), ("ngram-mod",), ("draft-mtp", "ngram-simple")]:
        for n in (16, 32, 48):
            runs[types, n, "greedy"] = SpecSettings(types, n_max=n, ngram=ng).request_fields()
    for n in (16, 48):
        runs[("draft-mtp",), n, "greedy"] = SpecSettings(("draft-mtp",), n_max=n).request_fields()
    runs[("draft-mtp",), 16, "sampled"] = dict(SpecSettings(("draft-mtp",), n_max=16).request_fields(),
                                               sampler=sampled)
    hs = {k: eng.submit(Request(prompt=prompt, max_tokens=64, **f)) for k, f in runs.items()}
    eng.run_until_idle()
    for k, h in hs.items():
        assert h.result() == hs["plain", k[-1]].result(), f"{model}: {k} changed the output"
    assert any(n > 15 for n, _ in seen), f"no long round ran: {sorted(set(seen))}"
    assert any(k > 0 for _, k in mtp_long), f"no long MTP round accepted a draft: {sorted(set(mtp_long))}"
    if model == "dense":    # the MoE model's repetition is too short for long matches to hold
        assert any(k > 15 for n, k in seen), f"no long round accepted past one sub-batch: {sorted(set(seen))}"


def test_engine_level_limits_are_the_models():
    """The engine layer's draft limits (drafters.py, which cannot import the model) are the slots'."""
    from wgmtp.drafters import CHAIN_DRAFT_MAX, LONG_DRAFT_MAX
    from wgmtp.models.qwen35.slots import N_DRAFT_MAX
    assert (CHAIN_DRAFT_MAX, LONG_DRAFT_MAX) == (N_DRAFT_MAX, N_LONG_MAX)
