"""The whole model on the GPU against the numpy reference, on every adapter variant."""
from __future__ import annotations

import numpy as np
import pytest
from gpu_util import VARIANTS, ctx_params  # noqa: F401

from wgmtp import tolerances as tol
from wgmtp.api import eog_ids
from wgmtp.engine import GenRequest, Session
from wgmtp.gpu.device import open_context
from wgmtp.models.qwen35 import GGUFModel
from wgmtp.models.qwen35.runner import Qwen35Runner
from wgmtp.reference.backend import RefBackend

MODELS = {
    "gga-untied-f32": dict(),
    "tied-q8": dict(tied=True, layer_pattern="GA", wtype="Q8_0", seed=1),
    "hv3-f16": dict(ssm_n_group=1, ssm_dt_rank=3, wtype="F16", seed=2, n_layer=3, layer_pattern="GGA"),
    "q4km-256": dict(n_embd=256, n_ff=256, head_dim=32, n_head=2, n_head_kv=1, ssm_d_state=32,
                     wtype="Q4_K_M", seed=3, n_layer=4),
    "moe-q8": dict(n_expert=8, n_expert_used=2, wtype="Q8_0", seed=7),
    "moe-fused-noshexp": dict(n_expert=4, n_expert_used=3, fused_gate_up=True, n_ff_shexp=0, seed=8),
    # norms, gates and conv taps stored in F16/BF16 (not llama.cpp's converter, but valid GGUF)
    "small-f16": dict(seed=5, small_types={"attn_norm": "F16", "ssm_norm": "BF16", "ssm_conv1d": "F16",
                                          "ssm_a": "F16", "output_norm": "BF16", "attn_q_norm": "F16"}),
    "legacy-mix": dict(wtype="Q5_0", types={"attn_qkv": "Q4_0", "ffn_up": "Q4_1", "ffn_down": "Q5_1",
                                           "attn_q": "BF16"}, seed=4),
}


def _gpu(variant, path, **kw):
    """A Qwen35Runner on exactly this variant's context (subgroups/f16 as the variant says)."""
    tag, index, opts = variant
    gm = GGUFModel(path)
    return gm, Qwen35Runner(gm, eog=eog_ids(gm), progress=False, ctx=open_context(index, **opts), **kw)


@pytest.mark.parametrize("variant", ctx_params())
@pytest.mark.parametrize("name", list(MODELS))
def test_logits_and_greedy_match_reference(synth, variant, name):
    path = synth(**MODELS[name])
    gm, be = _gpu(variant, path)
    ref = RefBackend(gm, kv_f16=be.ctx.f16)
    prompt = list(np.random.default_rng(0).integers(0, gm.config.n_vocab, 32))
    # 32 greedy tokens from the reference, then the logits of all 64 positions on both sides
    s_ref = Session(ref, 256, set())
    cont = list(s_ref.generate(prompt, GenRequest(max_tokens=32)))
    seq = prompt + cont
    lr = ref.logits(seq)
    lg = be.logits(seq)
    bound = tol.model_logits_tol(gm.config, lr)
    assert np.abs(lg - lr).max() <= bound, f"max diff {np.abs(lg - lr).max():.3e} > {bound:.3e}"
    # greedy decoding on the GPU gives the same tokens
    s_gpu = Session(be, 256, set())
    assert list(s_gpu.generate(prompt, GenRequest(max_tokens=32))) == cont


@pytest.mark.parametrize("variant", ctx_params()[:1])
def test_prefill_in_chunks_same_continuation(synth, variant):
    path = synth()
    gm, one = _gpu(variant, path, prefill_chunk=64)
    _, chunked = _gpu(variant, path, prefill_chunk=16)
    prompt = list(np.random.default_rng(1).integers(0, gm.config.n_vocab, 45))
    a = list(Session(one, 256, set()).generate(prompt, GenRequest(max_tokens=16)))
    b = list(Session(chunked, 256, set()).generate(prompt, GenRequest(max_tokens=16)))
    assert a == b


@pytest.mark.parametrize("variant", ctx_params()[:1])
def test_run_ahead_decoding(synth, variant):
    """Greedy decoding queues the next step before reading this one's token: same tokens as
    step-by-step decoding, and a continuation after an early stop (EOS) feeds nothing twice."""
    path = synth(seed=12)
    gm, ahead = _gpu(variant, path)
    _, sync = _gpu(variant, path)
    sync.run_ahead = False
    prompt = list(np.random.default_rng(2).integers(0, gm.config.n_vocab, 9))
    a = list(Session(ahead, 256, set()).generate(prompt, GenRequest(max_tokens=24)))
    assert a == list(Session(sync, 256, set()).generate(prompt, GenRequest(max_tokens=24)))
    # stop at an "EOS" (pretend a[7] ends generation), then continue with more prompt
    s = Session(ahead, 256, {a[7]})
    first = list(s.generate(prompt, GenRequest(max_tokens=24)))
    assert ahead.pending_fed and first == a[:first.index(a[7]) + 1]
    more = [5, 6, 7]
    second = list(s.generate(more, GenRequest(max_tokens=10), cont=True))
    fresh = list(Session(sync, 256, set()).generate(prompt + first + more, GenRequest(max_tokens=10)))
    assert second == fresh


@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_prompt_ids_out_of_range_are_refused(synth, device):
    """An id past the vocabulary (or negative) is a one-line BadRequestError on both backends,
    before anything reads an embedding row out of bounds; an empty prompt too."""
    from wgmtp import load
    from wgmtp.errors import BadRequestError
    m = load(synth(), device="cpu" if device == "cpu" else "auto", n_ctx=64, **({} if device == "cpu" else
                                                                                {"progress": False}))
    V = m.config.n_vocab
    for bad in ([10**9], [V], [-1], [1, 2, V + 5]):
        with pytest.raises(BadRequestError, match="out of range"):
            list(m.generate_ids(bad, max_tokens=2))
    with pytest.raises(BadRequestError, match="empty prompt"):
        list(m.generate_ids([], max_tokens=2))
    assert len(list(m.generate_ids([1, 2], max_tokens=2))) == 2      # and the model still serves
