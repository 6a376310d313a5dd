"""The numpy reference: batch invariance, chunked GDN, rollback, lossless speculation."""
from __future__ import annotations

import numpy as np
import pytest

from wgmtp.engine import GenRequest, Session
from wgmtp.models.qwen35 import GGUFModel
from wgmtp.reference import ops
from wgmtp.reference.backend import RefBackend
from wgmtp.reference.model import RefModel
from wgmtp.sampling import SamplerParams

MODELS = [
    dict(),                                                        # GGGA, Hv > Hk, untied, F32
    dict(tied=True, layer_pattern="GA", n_layer=4, wtype="Q8_0", seed=1),
    dict(n_embd=256, n_ff=256, wtype="Q4_K_M", seed=2, ssm_n_group=1, ssm_dt_rank=2, ssm_d_state=32),
    dict(n_expert=8, n_expert_used=2, block_out_scale=0.2, mtp_copy=True, seed=3),          # qwen35moe
]


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))


@pytest.mark.parametrize("kw", MODELS[:2])
def test_prefill_batch_equals_single_steps(synth, kw):
    m = RefModel(GGUFModel(synth(**kw)))
    toks = list(np.random.default_rng(0).integers(0, m.cfg.n_vocab, 24))
    st = m.new_state(64)
    lg_batch, h_batch = m.forward(st, toks)
    st2 = m.new_state(64)
    rows = [m.forward(st2, [t])[0][0] for t in toks]
    assert _rel(np.stack(rows), lg_batch) <= 1e-5
    for i in st.ssm:
        assert _rel(st2.ssm[i][0], st.ssm[i][0]) <= 1e-5


def _gdn_inputs(rng, T, Hk, Hv, Dk, strong_decay=False):
    q = ops.l2norm(rng.standard_normal((T, Hk, Dk)).astype(np.float32), 1e-6) / np.sqrt(Dk)
    k = ops.l2norm(rng.standard_normal((T, Hk, Dk)).astype(np.float32), 1e-6)
    v = rng.uniform(-0.3, 5, (T, Hv, Dk)).astype(np.float32)
    g = rng.uniform(-20 if strong_decay else -1.0, -1e-4, (T, Hv)).astype(np.float32)
    beta = rng.uniform(0, 1, (T, Hv)).astype(np.float32)
    M = rng.standard_normal((Hv, Dk, Dk)).astype(np.float32) * 0.1
    return q.astype(np.float32), k, v, g, beta, M


@pytest.mark.parametrize("T,chunk,strong", [(1, 64, False), (37, 16, False), (100, 64, False), (65, 64, True)])
def test_chunked_gdn_equals_recurrence(T, chunk, strong):
    q, k, v, g, beta, M = _gdn_inputs(np.random.default_rng(T), T, 2, 4, 16, strong)
    o1, slots = ops.gdn_recurrence(q, k, v, g, beta, M, 1)
    o2, M2 = ops.gdn_chunked(q, k, v, g, beta, M, chunk)
    assert np.all(np.isfinite(o2))
    assert _rel(o2, o1) <= 1e-5
    assert _rel(M2, slots[0]) <= 1e-5


@pytest.mark.parametrize("n,k", [(1, 0), (3, 0), (3, 1), (3, 2), (4, 4), (4, 1)])
def test_rollback_restores_exact_state(synth, n, k):
    m = RefModel(GGUFModel(synth()))
    rng = np.random.default_rng(n * 10 + k)
    prompt = list(rng.integers(0, m.cfg.n_vocab, 9))
    batch = list(rng.integers(0, m.cfg.n_vocab, n + 1))
    a = m.new_state(64, n_slots=n + 1)
    m.forward(a, prompt)
    b = a.clone()
    m.forward(a, batch)                 # verify [last, d1..dn]
    if n - k:
        a.rollback(n - k)               # accept k drafts
    m.forward(b, batch[:k + 1])         # a run that only ever saw the k+1 kept tokens
    assert a.n_past == b.n_past
    for i in a.ssm:
        assert np.array_equal(a.ssm[i][a.cur_slot], b.ssm[i][b.cur_slot])
        assert np.array_equal(a.conv[i][a.cur_slot], b.conv[i][b.cur_slot])
    for i in a.kv:
        assert np.array_equal(a.kv[i].k[:a.n_past], b.kv[i].k[:b.n_past])
        assert np.array_equal(a.kv[i].v[:a.n_past], b.kv[i].v[:b.n_past])
    # and the next token's logits agree exactly
    t = int(rng.integers(0, m.cfg.n_vocab))
    assert np.array_equal(m.forward(a, [t])[0], m.forward(b, [t])[0])


def _plain(gm, prompt, n, eog=frozenset()):
    s = Session(RefBackend(gm), 256, set(eog))
    return list(s.generate(prompt, GenRequest(max_tokens=n)))


class OracleRef(RefBackend):
    """The reference with its MTP drafter replaced by an oracle: a test-only subclass."""

    def __init__(self, gm, oracle) -> None:
        super().__init__(gm)
        self.oracle = oracle

    def draft(self, id_last: int, n_max: int, p_min: float, vocab: int = 0) -> list[int]:
        return list(self.oracle(self.st.n_past, id_last, n_max))


def _oracle(truth, prompt_len, wrong_every=3):
    """Drafts from the known greedy continuation, with a wrong draft now and then."""
    def hook(pos, id_last, n_max):
        j = pos - prompt_len + 1          # index in truth of the token after id_last
        d = list(truth[j:j + n_max])
        if d and (pos % wrong_every == 0):
            d[min(len(d) - 1, pos % n_max)] ^= 1
        return d
    return hook


@pytest.mark.parametrize("kw", MODELS)
@pytest.mark.parametrize("n_max", [1, 2, 3, 4])
def test_greedy_spec_equals_plain(synth, kw, n_max):
    gm = GGUFModel(synth(**kw))
    prompt = list(np.random.default_rng(5).integers(0, gm.config.n_vocab, 12))
    truth = _plain(gm, prompt, 40)
    # the model's own MTP head (random weights: drafts mostly rejected)
    be = RefBackend(gm)
    s = Session(be, 256, set())
    spec = list(s.generate(prompt, GenRequest(max_tokens=40, spec=True, n_max=n_max)))
    assert spec == truth
    # oracle drafts: most accepted, some rejected at every position -> every rollback depth
    be = OracleRef(gm, _oracle(truth, len(prompt)))
    s = Session(be, 256, set())
    spec = list(s.generate(prompt, GenRequest(max_tokens=40, spec=True, n_max=n_max)))
    assert spec == truth
    st = s.stats.spec
    assert st.accepted > 0 and (n_max == 1 or st.accepted < st.drafted)


@pytest.mark.parametrize("n_max", [2, 3, 4])
def test_eos_inside_a_draft(synth, n_max):
    gm = GGUFModel(synth())
    prompt = list(np.random.default_rng(7).integers(0, gm.config.n_vocab, 10))
    truth = _plain(gm, prompt, 40)
    eos = truth[13]                                   # pretend this token ends generation
    expect = _plain(gm, prompt, 40, {eos})
    assert expect[-1] == eos and len(expect) <= 14
    be = OracleRef(gm, _oracle(truth, len(prompt), wrong_every=1000))   # all drafts right
    s = Session(be, 256, {eos})
    assert list(s.generate(prompt, GenRequest(max_tokens=40, spec=True, n_max=n_max))) == expect


def test_sampled_spec_equals_sampled_plain(synth):
    """Sample-and-match emits the target's own samples: with one uniform per emitted token,
    speculation changes nothing about the sequence (whatever the drafts)."""
    gm = GGUFModel(synth())
    prompt = list(np.random.default_rng(3).integers(0, gm.config.n_vocab, 10))
    sp = SamplerParams(temperature=1.0, top_k=20, top_p=0.9, min_p=0.0, seed=11)
    plain = list(Session(RefBackend(gm), 256, set()).generate(prompt, GenRequest(max_tokens=30, sampler=sp)))
    be = OracleRef(gm, _oracle(plain, len(prompt)))
    spec = list(Session(be, 256, set()).generate(prompt, GenRequest(max_tokens=30, sampler=sp, spec=True, n_max=3)))
    assert spec == plain
    assert len(set(plain)) > 5                      # really sampled, not a constant


def test_moe_ffn_matches_explicit_math(synth):
    """The MoE FFN of the reference against the formula written out once more, per token."""
    from wgmtp.reference.model import RefWeights
    gm = GGUFModel(synth(n_expert=8, n_expert_used=3, fused_gate_up=True, seed=11))
    w, c = RefWeights(gm), gm.config
    h = np.random.default_rng(0).standard_normal((3, c.n_embd)).astype(np.float32)
    got = RefModel(gm).ffn(h, "blk.0.")
    gu = w["blk.0.ffn_gate_up_exps.weight"]
    for t in range(3):
        lg = w["blk.0.ffn_gate_inp.weight"] @ h[t]
        p = np.exp(lg - lg.max())
        p /= p.sum()
        sel = np.argsort(-p, kind="stable")[:3]
        wt = p[sel] / max(p[sel].sum(), 6.103515625e-5)
        y = sum(wt[j] * (w["blk.0.ffn_down_exps.weight"][e]
                         @ (ops.silu(gu[e, :c.n_ff_exp] @ h[t]) * (gu[e, c.n_ff_exp:] @ h[t])))
                for j, e in enumerate(sel))
        sh = w["blk.0.ffn_down_shexp.weight"] @ (ops.silu(w["blk.0.ffn_gate_shexp.weight"] @ h[t])
                                                 * (w["blk.0.ffn_up_shexp.weight"] @ h[t]))
        y = y + ops.sigmoid(np.dot(w["blk.0.ffn_gate_inp_shexp.weight"], h[t])) * sh
        assert np.allclose(got[t], y, rtol=1e-4, atol=1e-5)
