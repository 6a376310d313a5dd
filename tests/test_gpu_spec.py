"""MTP speculative decoding on the GPU: lossless, in step with the reference, exact rollback.

The synthetic models here are "predictable" (make_model's block_out_scale + mtp_copy): the MTP
head then agrees with the trunk often but not always, so rounds accept every draft count from 0
to n and every rollback depth is exercised (random MTP weights would reject nearly everything).
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import sidecar_path
from gpu_util import ctx_params

from wgmtp.api import eog_ids
from wgmtp.engine import GenRequest, Session
from wgmtp.errors import MTPUnavailableError
from wgmtp.gpu.device import open_context
from wgmtp.models.qwen35 import GGUFModel
from wgmtp.models.qwen35.runner import Qwen35Runner
from wgmtp.reference.backend import RefBackend
from wgmtp.sampling import SamplerParams

MODELS = {
    "f32": dict(block_out_scale=0.2, mtp_copy=True, seed=3),
    "q8-ga": dict(block_out_scale=0.2, mtp_copy=True, seed=5, wtype="Q8_0", layer_pattern="GA"),
    "q4km": dict(block_out_scale=0.25, mtp_copy=True, seed=6, n_embd=256, n_ff=256, head_dim=32, n_head=2,
                 n_head_kv=1, ssm_d_state=32, wtype="Q4_K_M"),
    "moe": dict(n_expert=8, n_expert_used=2, block_out_scale=0.2, mtp_copy=True, seed=3, wtype="Q8_0"),
    # tied embeddings make a predictable model repeat one token, so this one has random weights
    # (drafts nearly always rejected: every round rolls back)
    "tied-random": dict(tied=True, wtype="Q5_K", n_embd=256, n_ff=256, seed=9),
}
VARIANTS = ctx_params()


class CaptureRunner(Qwen35Runner):
    """A Qwen35Runner that keeps the logits rows each step and each round computed (test only):
    a feed's last row, a verify's accepted rows. Read after the submission, so no run-ahead."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.capture: list[np.ndarray] = []
        self.run_ahead = False

    def _logit_rows(self, n: int) -> np.ndarray:
        V = self.cfg.n_vocab
        return self.ctx.read_array(self.model.buf.logits.buffer, np.float32, n * V).reshape(n, V)

    def _feed(self, tokens, n_cand):
        out = super()._feed(tokens, n_cand)
        self.capture.append(self._logit_rows(1))
        return out

    def spec_round(self, *a, **kw):
        before = len(self.capture)
        out, n_valid = super().spec_round(*a, **kw)
        if len(self.capture) == before:            # a verify ran (not the n = 0 decode)
            self.capture.append(self._logit_rows(self.last_round["n"] + 1)[: self.last_round["k"] + 1])
        return out, n_valid


def _gpu(variant, path, mtp_path=None, cls=Qwen35Runner, **kw):
    tag, index, opts = variant.values[0] if hasattr(variant, "values") else variant
    gm = GGUFModel(path, mtp_path)
    return gm, cls(gm, eog=eog_ids(gm), progress=False, ctx=open_context(index, **opts), **kw)


def _prompt(gm, seed=0, n=12):
    return [int(x) for x in np.random.default_rng(seed).integers(0, gm.config.n_vocab - 64, n)]


def _run(be, prompt, eog=frozenset(), **req):
    s = Session(be, 512, set(eog))
    out = list(s.generate(prompt, GenRequest(**req)))
    return out, s.stats


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("n_max", [1, 2, 3, 4])
def test_lossless_greedy(synth, name, n_max):
    gm, be = _gpu(VARIANTS[0], synth(**MODELS[name]))
    prompt = _prompt(gm)
    plain, _ = _run(be, prompt, max_tokens=64)
    spec, st = _run(be, prompt, max_tokens=64, spec=True, n_max=n_max)
    assert spec == plain
    k = [r[1] for r in st.spec.rounds]
    if name != "tied-random":
        assert 0 < st.spec.accepted < st.spec.drafted, k      # some drafts kept, some rolled back
        if n_max > 1:
            assert len(set(k)) > 1


@pytest.mark.parametrize("variant", VARIANTS[1:])
def test_lossless_greedy_other_variants(synth, variant):
    gm, be = _gpu(variant, synth(**MODELS["f32"]))
    prompt = _prompt(gm, 1)
    assert _run(be, prompt, max_tokens=48, spec=True, n_max=3)[0] == _run(be, prompt, max_tokens=48)[0]


@pytest.mark.parametrize("n_max", [2, 3, 4])
def test_eos_inside_a_draft(synth, n_max):
    gm, be = _gpu(VARIANTS[0], synth(**MODELS["f32"]))
    prompt = _prompt(gm, 2)
    truth, _ = _run(be, prompt, max_tokens=64)
    hits = 0
    for j in range(8, 40, 3):                     # pretend truth[j] ends generation
        eos = {truth[j]}
        plain, _ = _run(be, prompt, eos, max_tokens=64)
        spec, st = _run(be, prompt, eos, max_tokens=64, spec=True, n_max=n_max)
        assert spec == plain and spec[-1] == truth[j]
        hits += st.spec.rounds[-1][1] > 0         # the EOS was an accepted draft
    assert hits > 0


def test_budget_inside_a_round(synth):
    gm, be = _gpu(VARIANTS[0], synth(**MODELS["f32"]))
    prompt = _prompt(gm, 3)
    for n in (5, 6, 7, 11):
        assert _run(be, prompt, max_tokens=n, spec=True, n_max=4)[0] == _run(be, prompt, max_tokens=n)[0]


@pytest.mark.parametrize("name", ["f32", "q8-ga", "tied-random"])
def test_rounds_match_reference(synth, name):
    gm, be = _gpu(VARIANTS[0], synth(**MODELS[name]))
    ref = RefBackend(gm, kv_f16=be.ctx.f16)
    prompt = _prompt(gm, 4)
    a, sa = _run(be, prompt, max_tokens=40, spec=True, n_max=3)
    b, sb = _run(ref, prompt, max_tokens=40, spec=True, n_max=3)
    assert a == b
    assert sa.spec.rounds == sb.spec.rounds


def test_p_min_gate_matches_reference(synth):
    gm, be = _gpu(VARIANTS[0], synth(**MODELS["f32"]))
    ref = RefBackend(gm, kv_f16=be.ctx.f16)
    prompt = _prompt(gm, 5)
    a, sa = _run(be, prompt, max_tokens=40, spec=True, n_max=4, p_min=0.6)
    b, sb = _run(ref, prompt, max_tokens=40, spec=True, n_max=4, p_min=0.6)
    assert a == b == _run(be, prompt, max_tokens=40)[0]
    assert sa.spec.rounds == sb.spec.rounds
    assert any(d < 4 for d, _ in sa.spec.rounds)          # the gate cut some chains short


@pytest.mark.parametrize("p_min", [0.0, 0.6])
def test_draft_vocab_matches_reference(synth, p_min):
    """Drafting over token ids < V/2 only (a prefix of the LM head's rows, and the argmax / p-min
    gate over it): the same rounds as the reference restricted the same way, other rounds than
    the whole vocabulary gives (the restriction bites), and the output of plain decoding."""
    gm, be = _gpu(VARIANTS[0], synth(**MODELS["f32"]))
    ref = RefBackend(gm, kv_f16=be.ctx.f16)
    V = gm.config.n_vocab // 2
    prompt = _prompt(gm, 6)
    a, sa = _run(be, prompt, max_tokens=40, spec=True, n_max=3, p_min=p_min, draft_vocab=V)
    b, sb = _run(ref, prompt, max_tokens=40, spec=True, n_max=3, p_min=p_min, draft_vocab=V)
    full, sf = _run(be, prompt, max_tokens=40, spec=True, n_max=3, p_min=p_min)
    assert a == b == full == _run(be, prompt, max_tokens=40)[0]
    assert sa.spec.rounds == sb.spec.rounds
    assert sa.spec.rounds != sf.spec.rounds
    with pytest.raises(ValueError, match="draft vocabulary"):
        _run(be, prompt, max_tokens=4, spec=True, draft_vocab=gm.config.n_vocab + 1)


def test_sampled_speculation_is_exact_and_reproducible(synth):
    """One uniform per emitted token, in order (sampling.py): sample-and-match then emits exactly
    what plain sampling emits from the same stream, because verify rows are bit-identical to
    decode steps (ARCHITECTURE.md, "Batch invariance") and so are their top-k candidates."""
    gm, be = _gpu(VARIANTS[0], synth(**MODELS["f32"]))
    prompt = _prompt(gm, 6)
    sp = SamplerParams(temperature=0.8, top_k=20, top_p=0.95, min_p=0.0, seed=42)
    plain, _ = _run(be, prompt, max_tokens=48, sampler=sp)
    spec, st = _run(be, prompt, max_tokens=48, sampler=sp, spec=True, n_max=3)
    again, _ = _run(be, prompt, max_tokens=48, sampler=sp, spec=True, n_max=3)
    assert spec == plain == again
    assert st.spec.accepted > 0 and len(set(plain)) > 8


def test_rollback_logits_exact(synth):
    """Every verify row's logits equal, bit for bit, the logits plain decoding computes at that
    position: a round that rejected drafts leaves no trace in the next round."""
    gm, be = _gpu(VARIANTS[0], synth(**MODELS["f32"]), cls=CaptureRunner)
    prompt = _prompt(gm, 7)
    plain, _ = _run(be, prompt, max_tokens=40)
    rows_plain = np.concatenate(be.capture)
    be.capture = []
    spec, st = _run(be, prompt, max_tokens=40, spec=True, n_max=3)
    rows_spec = np.concatenate(be.capture)
    assert spec == plain
    assert any(k < d for d, k in st.spec.rounds)
    n = min(len(rows_plain), len(rows_spec))
    assert n >= 39
    assert np.array_equal(rows_spec[:n], rows_plain[:n])


def test_sidecar_equals_combined(synth, model_dir):
    kw = MODELS["f32"]
    combined = synth(**kw)
    trunk = synth(**kw, sidecar=True)
    gm1, be1 = _gpu(VARIANTS[0], combined)
    gm2, be2 = _gpu(VARIANTS[0], trunk, sidecar_path(trunk))
    prompt = _prompt(gm1, 8)
    a, sa = _run(be1, prompt, max_tokens=40, spec=True, n_max=3)
    b, sb = _run(be2, prompt, max_tokens=40, spec=True, n_max=3)
    assert a == b and sa.spec.rounds == sb.spec.rounds


def test_mtp_weights_uploaded_only_when_used(synth):
    gm, be = _gpu(VARIANTS[0], synth(**MODELS["f32"]))
    mtp = f"blk.{gm.config.n_layer}."
    _run(be, _prompt(gm), max_tokens=4)
    assert not any(n.startswith(mtp) for n in be.model.w)
    _run(be, _prompt(gm), max_tokens=4, spec=True, n_max=2)
    assert any(n.startswith(mtp) for n in be.model.w)


def test_no_mtp_block_is_a_clear_error(synth):
    gm, be = _gpu(VARIANTS[0], synth(mtp=False))
    with pytest.raises(MTPUnavailableError) as ei:
        _run(be, _prompt(gm), max_tokens=4, spec=True)
    assert "-md" in str(ei.value)
