"""Drafters that cost no GPU time (wgmtp/drafters.py), adaptive n and its cost model, and
host-drafted rounds in the batched runner: a round verifies whatever drafts it is given, so the
output never changes, only how many tokens a round emits (the engine-level sweep over drafters,
combinations and models is tests/test_spec_flags.py)."""
from __future__ import annotations

import numpy as np
import pytest
from gpu_util import ctx_params

from wgmtp.api import eog_ids
from wgmtp.drafters import AdaptiveN, NgramParams, NgramSimple, NgramTable, SpecSettings, StepCosts, parse_spec_types
from wgmtp.errors import BadRequestError, WgmtpError
from wgmtp.gpu.device import open_context
from wgmtp.models.qwen35 import GGUFModel
from wgmtp.models.qwen35.slots import Feed, Round, SlotRunner

MODEL = dict(block_out_scale=0.2, mtp_copy=True, seed=3)


def test_spec_types_parse_like_llama_cpp():
    assert parse_spec_types("draft-mtp,ngram-simple") == ("draft-mtp", "ngram-simple")
    assert parse_spec_types("mtp") == ("draft-mtp",)            # the older spelling
    assert parse_spec_types("none") == () and parse_spec_types(None) == ()
    assert parse_spec_types(["ngram-mod", "mtp", "draft-mtp"]) == ("ngram-mod", "draft-mtp")
    with pytest.raises(BadRequestError, match="unknown --spec-type 'eagle'"):
        parse_spec_types("draft-mtp,eagle")
    with pytest.raises(BadRequestError, match="use none, draft-mtp, mtp, ngram-simple, ngram-mod, draft-simple"):
        parse_spec_types("eagle3")
    assert parse_spec_types("ngram-simple,draft-simple") == ("ngram-simple", "draft-simple")


def test_spec_settings_give_request_fields():
    s = SpecSettings(("draft-mtp", "ngram-simple"), n_max=4, n_min=2, adaptive=True)
    f = s.request_fields()
    assert (f["spec"], f["drafters"], f["n_max"], f["n_min"], f["adaptive"]) == (True, ("ngram-simple",), 4, 2, True)
    off = SpecSettings(("ngram-mod",), n_max=0, adaptive=True).request_fields()
    assert (off["spec"], off["drafters"], off["adaptive"]) == (False, (), False)      # n_max 0: plain decoding
    with pytest.raises(BadRequestError, match="--spec-draft-n-min 5 exceeds --spec-draft-n-max 3"):
        SpecSettings(("draft-mtp",), n_max=3, n_min=5).check()


def test_ngram_simple_drafts_what_followed_the_last_occurrence():
    d = NgramSimple(NgramParams(size_n=3, size_m=4))
    d.extend([1, 2, 3, 9, 9, 5, 1, 2, 3, 7, 8, 6, 4, 1, 2, 3])
    assert d.draft(10) == [7, 8, 6, 4]           # the latest occurrence, at most m tokens
    assert d.draft(2) == [7, 8]                  # at most n_max
    d.extend([0])
    assert d.draft(3) == []                      # key (2, 3, 0) never seen
    strict = NgramSimple(NgramParams(size_n=3, size_m=4, min_hits=3))
    strict.extend([1, 2, 3, 9, 1, 2, 3, 8, 1, 2, 3])
    assert strict.draft(4) == []                 # seen twice before, min-hits 3
    strict.extend([5, 1, 2, 3])
    assert strict.draft(4) == [5, 1, 2, 3]
    period = NgramSimple(NgramParams(size_n=2, size_m=8))
    period.extend([7, 8, 9, 7, 8, 9, 7, 8])
    assert period.draft(7) == [9, 7, 8, 9, 7, 8, 9]     # past the history's end: the period goes on
    with pytest.raises(BadRequestError, match="at least 1"):
        NgramSimple(NgramParams(size_n=0))


def test_ngram_table_is_shared_and_chains():
    t = NgramTable(NgramParams(size_n=2, size_m=8))
    t.add([4, 5, 6, 7, 8], 0)                    # one sequence teaches (4,5)->6, (5,6)->7, (6,7)->8
    assert t.draft([1, 4, 5], 5) == [6, 7, 8]    # another one drafts from it
    assert t.draft([9, 9], 5) == []


def test_adaptive_n_follows_acceptance():
    lo, hi = AdaptiveN(n_max=6), AdaptiveN(n_max=6)
    for _ in range(20):
        lo.update(3, 0)
        hi.update(3, 3)
    assert lo.pick() == 0 and hi.pick() == 6
    mid = AdaptiveN(n_max=6, p={True: [0.6]})
    assert 0 < mid.pick() < 6
    assert AdaptiveN(n_max=6, n_min=4, p={True: [0.6]}).pick() == 4      # never below n_min (but 0)
    assert hi.pick(2) == 2                                               # this round's cap (a short match)
    kinds = AdaptiveN(n_max=6, p={True: [0.0], False: [1.0]})            # MTP never right, n-grams always
    assert kinds.pick(chain=True) == 0 and kinds.pick(chain=False) == 6
    idle = AdaptiveN(n_max=3, p={True: [0.0]})        # stopped drafting: it tries again, now and then
    picks = [idle.pick() for _ in range(40)]
    assert picks[0] == 0 and 1 in picks


def test_adaptive_n_uses_measured_costs():
    """Same acceptance, different adapters: where verify rows are nearly free (a GPU reading the
    weights once for all rows) longer drafts pay; where each row costs as much as a decode step
    (a CPU adapter), drafting does not."""
    costs = StepCosts(measure=False)
    a = AdaptiveN(n_max=8, costs=costs, p={True: [0.7]})
    prior = a.pick()
    assert prior == 3
    costs.set(0, False, 0.050)
    costs.set(1, True, 0.055)
    costs.set(4, True, 0.065)
    assert costs.ratio(4, True) == pytest.approx(1.3) and costs.ratio(2, False) == pytest.approx(1.3)  # prior slope
    assert a.pick() > prior
    costs.set(1, True, 0.100)
    costs.set(4, True, 0.250)
    assert a.pick() == 0


def test_step_costs_drop_the_build_and_take_the_median():
    c = StepCosts()
    c.observe(2, True, 9.0)         # the first step of a shape builds its program
    for t in (0.1, 0.3, 0.2, 5.0, 0.2):
        c.observe(2, True, t)
    assert c.seconds(2, True) == 0.2 and c.seconds(2, False) is None
    assert c.ratio(2, True) == pytest.approx(1.3)      # no plain step measured: the prior's ratio


def _runner(path, variant, mtp: bool, n_seq: int = 3, n_max: int = 4) -> SlotRunner:
    gm = GGUFModel(path)
    _, index, opts = variant
    return SlotRunner(gm, n_ctx=128, n_seq=n_seq, n_max=n_max, mtp=mtp, prefill_chunk=16, eog=eog_ids(gm),
                      progress=False, ctx=open_context(index, **opts))


def _plain(rn: SlotRunner, slot: int, prompt: list[int], n: int) -> list[int]:
    rn.start(slot)
    tok = rn.step([Feed(slot, prompt)])[0].tokens[0]
    out = [tok]
    while len(out) < n:
        tok = rn.step([Round(slot, tok)])[0].tokens[0]
        out.append(tok)
    return out


@pytest.mark.parametrize("variant", ctx_params())
@pytest.mark.parametrize("mtp", [False, True])
def test_host_drafted_rounds_are_lossless_and_roll_back(synth, variant, mtp):
    """Right drafts are all accepted, wrong ones rejected with the state rolled back; mixed in one
    submission with plain rounds (and, with MTP, chain rounds) the tokens equal plain decoding."""
    path = synth(**MODEL)
    rn = _runner(path, variant, mtp)
    V = rn.cfg.n_vocab
    ps = [[int(x) for x in np.random.default_rng(s).integers(0, V, 6)] for s in range(3)]
    want = [_plain(rn, s, p, 14) for s, p in enumerate(ps)]
    for s, p in enumerate(ps):
        rn.start(s)
    toks = [o.tokens[0] for o in rn.step([Feed(s, p) for s, p in enumerate(ps)])]
    got = [[t] for t in toks]
    rng = np.random.default_rng(0)
    ks: dict[bool, list[tuple[int, int]]] = {True: [], False: []}     # slot 0: (k, n) for right / wrong drafts
    while min(len(g) for g in got) < 14:
        work = []
        for s in range(3):
            i = len(got[s])
            right = want[s][i: i + 4]
            if s == 0:          # the true continuation, then a corrupted one every other round
                d = right if i % 2 else right[:1] + [int(rng.integers(0, V))] + right[2:]
                work.append(Round(s, got[s][-1], drafts=d[: max(1, min(4, 13 - i))]))
            elif s == 1:
                work.append(Round(s, got[s][-1]))
            else:
                work.append(Round(s, got[s][-1], n=3) if mtp else Round(s, got[s][-1], drafts=[1, 2]))
        d0 = work[0].drafts
        is_right = d0 == want[0][len(got[0]): len(got[0]) + len(d0)]
        outs = rn.step(work)
        for s, out in enumerate(outs):
            got[s] += out.tokens
        ks[is_right].append((outs[0].k, outs[0].n))
    for s in range(3):
        assert got[s][:14] == want[s], f"slot {s}: host-drafted rounds changed the output"
    assert ks[True] and all(k == n for k, n in ks[True]), f"right drafts must all be accepted: {ks[True]}"
    assert ks[False] and all(k < n for k, n in ks[False]), f"wrong drafts must be rejected: {ks[False]}"


@pytest.mark.parametrize("variant", ctx_params()[:1])
def test_chain_round_without_mtp_is_refused(synth, variant):
    rn = _runner(synth(**MODEL), variant, mtp=False)
    rn.step([Feed(0, [1, 2, 3])])
    with pytest.raises(WgmtpError, match="draft-mtp"):
        rn.step([Round(0, 4, n=2)])
    with pytest.raises(WgmtpError, match="exceeds the engine's --spec-draft-n-max 4"):
        rn.step([Round(0, 4, drafts=[1] * 6)])
