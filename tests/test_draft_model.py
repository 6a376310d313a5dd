"""A separate draft model (draft-simple, wgmtp/models/qwen35/draft_model.py): its drafts are the
draft model's own greedy decoding of the token history, whatever the rounds before accepted (the
chain's rollback is exact), alone or batched with other sequences; a target verifying them emits
its plain greedy tokens; a draft model with another vocabulary is refused in one line."""
from __future__ import annotations

import numpy as np
import pytest
from gpu_util import ctx_params

from wgmtp.errors import WgmtpError
from wgmtp.gpu.device import open_context
from wgmtp.models.qwen35 import GGUFModel
from wgmtp.models.qwen35.draft_model import DraftModel, split_catchup
from wgmtp.models.qwen35.slots import Feed, Round, SlotRunner

TARGET = dict(block_out_scale=0.2, mtp_copy=True, seed=3)           # has an MTP head: the draft ignores it
OTHER = dict(seed=11, n_layer=3, layer_pattern="GGA", mtp=False)   # same tokenizer
N_CTX, CHUNK = 128, 16
VARIANT = ctx_params()[:1]     # all adapter variants pass too (about 100 s here): one keeps the suite short


def _ctx(variant):
    _, index, opts = variant
    return open_context(index, **opts)


def _draft(path, ctx, n_seq: int = 1, target=None) -> DraftModel:
    gm = GGUFModel(path)
    return DraftModel(gm, target=GGUFModel(target) if target else gm, n_seq=n_seq, n_ctx=N_CTX, n_max=15,
                      prefill_chunk=CHUNK, ctx=ctx)


def _runner(path, ctx, n_max: int = 0) -> SlotRunner:
    return SlotRunner(GGUFModel(path), n_ctx=N_CTX, n_seq=1, n_max=n_max, prefill_chunk=CHUNK, progress=False,
                      ctx=ctx)


def _tokens(n_vocab: int, n: int, seed: int) -> list[int]:
    return [int(x) for x in np.random.default_rng(seed).integers(0, n_vocab, n)]


def _greedy(rn: SlotRunner, history: list[int], n_prompt: int, n: int) -> list[int]:
    """Plain greedy decoding on a fresh slot: the prompt fed as the draft model splits it
    (split_catchup: prefill chunks, then one batch), every later token one decode step, then n
    tokens of greedy continuation."""
    rn.start(0)
    prompt, lead = history[:n_prompt], split_catchup(n_prompt)
    for i in range(0, lead, rn.chunk):
        rn.step([Feed(0, prompt[i: min(i + rn.chunk, lead)], last=False)])
    tok = rn.step([Feed(0, prompt[lead:])])[0].tokens[0]
    for t in history[n_prompt:]:
        tok = rn.step([Round(0, t)])[0].tokens[0]
    out = [tok]
    while len(out) < n:
        out.append(rn.step([Round(0, out[-1])])[0].tokens[0])
    return out


def _accepted(drafts: list[int], k: int, n_vocab: int, rng) -> list[int]:
    """What a target that accepted k of the drafts emits: those k, then a correction that differs
    from draft k + 1 (or, all accepted, any bonus token)."""
    if k == len(drafts):
        return drafts + [int(rng.integers(0, n_vocab))]
    return drafts[:k] + [(drafts[k] + 1 + int(rng.integers(0, n_vocab - 1))) % n_vocab]


ROUNDS = [(1, 0), (3, 3), (7, 2), (15, 15), (15, 4), (3, 1), (7, 7), (15, 0), (1, 1)]   # (n, k accepted)


@pytest.mark.parametrize("variant", VARIANT)
def test_drafts_are_the_draft_models_greedy_decoding(synth, variant):
    """After every round, whatever it accepted, the drafts equal plain greedy decoding of the draft
    model on the token history: the chain's steps leave no trace (rollback exact); a prompt longer
    than a batch goes ahead in prefill chunks; steady rounds are one submission each."""
    ctx = _ctx(variant)
    path = synth(**OTHER)
    dm, ref = _draft(path, ctx, n_seq=2), _runner(path, ctx)
    V = dm.rn.cfg.n_vocab
    rng = np.random.default_rng(1)
    history = _tokens(V, 21, seed=2)
    dm.start(1)
    dm.feed(1, history)
    for r, (n, k) in enumerate(ROUNDS):
        before = dm.submissions
        drafts = dm.draft([(1, n)])[0]
        assert drafts == _greedy(ref, history, 21, n), f"round {r} (n={n}): drafts differ from greedy decoding"
        assert dm.submissions - before == (2 if r == 0 else 1), "a draft round is one submission"
        assert dm.draft([(1, min(n, 2))])[0] == drafts[:2], "nothing fed: the same drafts again"
        emitted = _accepted(drafts, k, V, rng)
        dm.feed(1, emitted)
        history += emitted
    dm.draft([(1, 3)])
    with pytest.raises(WgmtpError, match="nothing was fed"):
        dm.draft([(1, 7)])          # more drafts than last time, and nothing new to continue from
    with pytest.raises(WgmtpError, match="drafts 0..15"):
        dm.draft([(1, 16)])


@pytest.mark.parametrize("variant", VARIANT)
def test_sequences_batched_draft_as_alone(synth, variant):
    """Three slots drafting in one call (catch-ups in several batches, chains of different lengths
    in one) get the drafts each gets alone."""
    ctx = _ctx(variant)
    path = synth(**OTHER)
    together, alone = _draft(path, ctx, n_seq=3), _draft(path, ctx, n_seq=3)
    V = together.rn.cfg.n_vocab
    rng = np.random.default_rng(4)
    for s, n_prompt in enumerate([5, 30, 9]):
        prompt = _tokens(V, n_prompt, seed=10 + s)
        for dm in (together, alone):
            dm.start(s)
            dm.feed(s, prompt)
    plan = [[(3, 3), (7, 7), (15, 2)], [(15, 15), (1, 0), (7, 6)], [(7, 0), (15, 9), (3, 3)], [(1, 1), (3, 0), (15, 0)]]
    for r, asks in enumerate(plan):
        before = together.submissions
        got = together.draft([(s, n) for s, (n, _) in enumerate(asks)])
        assert r == 0 or together.submissions - before == 1
        want = [alone.draft([(s, n)])[0] for s, (n, _) in enumerate(asks)]
        assert got == want, f"round {r}: batched drafts differ from each sequence's own"
        for s, (n, k) in enumerate(asks):
            emitted = _accepted(got[s], k, V, rng)
            together.feed(s, emitted)
            alone.feed(s, emitted)


def _plain(rn: SlotRunner, prompt: list[int], n: int) -> list[int]:
    rn.start(0)
    out = [rn.step([Feed(0, prompt)])[0].tokens[0]]
    while len(out) < n:
        out.append(rn.step([Round(0, out[-1])])[0].tokens[0])
    return out


def _speculate(rn: SlotRunner, dm: DraftModel, prompt: list[int], n: int, n_tok: int) -> tuple[list[int], list]:
    """Greedy decoding of the target with rounds verifying the draft model's drafts."""
    rn.start(0)
    dm.start(0)
    out = [rn.step([Feed(0, prompt)])[0].tokens[0]]
    dm.feed(0, prompt + out)
    ks = []
    while len(out) < n_tok:
        drafts = dm.draft([(0, n)])[0]
        o = rn.step([Round(0, out[-1], drafts=drafts)])[0]
        ks.append((o.k, len(drafts)))
        out += o.tokens
        dm.feed(0, o.tokens)
    return out[:n_tok], ks


@pytest.mark.parametrize("variant", VARIANT)
@pytest.mark.parametrize("moe", [False, True], ids=["dense", "moe"])
def test_target_output_is_unchanged(synth, variant, moe):
    """A target verifying draft-model drafts emits its plain greedy tokens for n_max 1, 3, 15, with
    another model drafting (all rejected; dense only), a near one (the target's weights with another block
    scale: partly accepted, so the target rolls back to every plane) and itself (then every draft
    is accepted: the draft's catch-up and chain compute the target's own bits)."""
    ctx = _ctx(variant)
    spec = dict(TARGET, **(dict(n_expert=4, n_layer=2, layer_pattern="GA") if moe else {}))
    target = synth(**spec)
    rn = _runner(target, ctx, n_max=15)
    V, n_tok = rn.cfg.n_vocab, 24
    prompt = _tokens(V, 9, seed=7)
    want = _plain(rn, prompt, n_tok)
    drafters = {"self": _draft(target, ctx),
                "near": _draft(synth(**dict(spec, block_out_scale=0.5, mtp=False)), ctx, target=target)}
    if not moe:
        drafters["other"] = _draft(synth(**OTHER), ctx, target=target)
    mixed: dict[str, list] = {name: [] for name in drafters}
    for name, dm in drafters.items():
        for n in (1, 3, 15):
            got, ks = _speculate(rn, dm, prompt, n, n_tok)
            assert got == want, f"{name} drafting, n_max {n}: the target's output changed"
            mixed[name] += ks
            if name == "self":
                assert all(k == d for k, d in ks), f"n_max {n}: a target drafting for itself must accept all: {ks}"
    assert {0 < k < d for k, d in mixed["near"]} == {True, False}, "the near draft must be partly accepted"


@pytest.mark.parametrize("variant", VARIANT)
def test_another_vocabulary_is_refused(synth, variant):
    ctx = _ctx(variant)
    target = GGUFModel(synth(**TARGET))
    for spec, what in ((dict(tokenizer_vocab=320), r"\(384 tokens\) differs from the target's \(448 tokens\)"),
                       (dict(tokenizer_vocab=380, n_vocab=448), r"\(448 tokens\) differs .* at token id \d+ \('")):
        with pytest.raises(WgmtpError, match=what + ".*draft-simple needs the same tokenizer") as e:
            DraftModel(GGUFModel(synth(**OTHER, **spec)), target=target, n_seq=1, n_ctx=N_CTX, n_max=3, ctx=ctx)
        assert "\n" not in str(e.value) and str(e.value).startswith("draft model ")


@pytest.mark.parametrize("variant", VARIANT)
def test_memory_and_requests_are_checked(synth, variant, monkeypatch):
    """A draft model that does not fit beside the target is refused before allocation; draft
    lengths past n_max and a slot named twice are one-line errors."""
    ctx = _ctx(variant)
    gm = GGUFModel(synth(**OTHER))
    monkeypatch.setenv("WGMTP_MEMORY_BYTES", str(2**30))
    with pytest.raises(WgmtpError, match=r"beside the target's 1.00 GiB, the adapter has 1.00 GiB; lower -c or -np"):
        DraftModel(gm, target=None, n_seq=1, n_ctx=N_CTX, n_max=3, ctx=ctx, reserved=2**30)
    monkeypatch.delenv("WGMTP_MEMORY_BYTES")
    dm = DraftModel(gm, target=None, n_seq=2, n_ctx=N_CTX, n_max=3, prefill_chunk=CHUNK, ctx=ctx)
    dm.start(0)
    dm.feed(0, [1, 2, 3])
    with pytest.raises(WgmtpError, match="drafts 0..3"):
        dm.draft([(0, 4)])
    with pytest.raises(WgmtpError, match="names a slot twice"):
        dm.draft([(0, 1), (0, 2)])
    with pytest.raises(WgmtpError, match="outside its vocabulary"):
        dm.feed(0, [dm.rn.cfg.n_vocab])
    assert len(dm.draft([(0, 3), (1, 0)])[0]) == 3


# ---- draft-simple in the batching engine (what run and serve use) ------------------------------

def _engine_runs(target, draft, spec: str, n_max: int, prompts, sampler=None, n_parallel: int = 2):
    import wgmtp
    from wgmtp.batching import Request
    from wgmtp.sampling import SamplerParams
    eng = wgmtp.open_engine(target, n_parallel=n_parallel, n_ctx=N_CTX, spec=spec, n_max=n_max,
                            prefill_chunk=CHUNK, progress=False, draft=draft)
    fields = {"drafters": tuple(t for t in spec.split(",") if t != "draft-mtp"), "spec": "draft-mtp" in spec,
              "n_max": n_max} if spec != "none" else {}
    hs = [eng.submit(Request(p, max_tokens=20, sampler=sampler or SamplerParams(), **fields)) for p in prompts]
    eng.run_until_idle()
    return [h.result() for h in hs], [h.stats.spec for h in hs]


@pytest.mark.parametrize("spec", ["draft-simple", "draft-mtp,draft-simple", "ngram-simple,draft-simple"])
def test_engine_with_a_draft_model_is_lossless(synth, spec):
    """Greedy and sampled, several sequences at once: the engine with a draft model emits what plain
    decoding emits; with the target as its own draft every draft is accepted."""
    from wgmtp.sampling import SamplerParams
    target, other = synth(**TARGET), synth(**OTHER)
    V = GGUFModel(target).config.n_vocab
    prompts = [_tokens(V, 5, 1), _tokens(V, 21, 2), [3, 4, 3, 4, 3, 4, 3]]
    for sampler, n_max in ((None, 15), (SamplerParams(temperature=0.8, seed=5), 3)):
        plain, _ = _engine_runs(target, None, "none", 3, prompts, sampler)
        got, _ = _engine_runs(target, other, spec, n_max, prompts, sampler)
        assert got == plain, (spec, n_max, sampler)
    if spec != "draft-simple":
        return
    self_drafted, stats = _engine_runs(target, target, "draft-simple", 7, prompts)
    assert self_drafted == _engine_runs(target, None, "none", 3, prompts)[0]
    # every round accepts all its drafts but a sequence's last, cut by max_tokens or an end token
    assert all(k == n for s in stats for n, k in s.rounds[:-1]), [s.rounds for s in stats]
    assert sum(len(s.rounds) - 1 for s in stats) >= 3


def test_engine_draft_model_errors(synth, tmp_path):
    import wgmtp
    from wgmtp.batching import Request
    from wgmtp.errors import BadRequestError
    target = synth(**TARGET)
    with pytest.raises(BadRequestError, match="draft-simple needs a draft model"):
        wgmtp.open_engine(target, n_parallel=1, n_ctx=N_CTX, spec="draft-simple", progress=False)
    eng = wgmtp.open_engine(target, n_parallel=1, n_ctx=N_CTX, spec="ngram-simple", progress=False)
    with pytest.raises(BadRequestError, match="no draft model"):
        eng.submit(Request([1, 2], drafters=("draft-simple",)))
    big = synth(tokenizer_vocab=400, seed=2)
    with pytest.raises(WgmtpError, match="differs from the target's"):
        wgmtp.open_engine(target, n_parallel=1, n_ctx=N_CTX, spec="draft-simple", progress=False, draft=big)


def test_engine_draft_model_on_another_adapter(synth):
    """--device-draft: the draft model on a second adapter (here llvmpipe's OpenGL beside lavapipe's
    Vulkan); its drafts come back through the host, the output is still plain decoding's."""
    import wgpu

    import wgmtp
    from wgmtp.batching import Request
    if len(wgpu.gpu.enumerate_adapters_sync()) < 2:
        pytest.skip("--device-draft needs a second WebGPU adapter and this machine has one (CI has two: "
                    "lavapipe's Vulkan and llvmpipe's OpenGL)")
    target = synth(**TARGET)
    V = GGUFModel(target).config.n_vocab
    prompts = [_tokens(V, 5, 1), [3, 4, 3, 4, 3, 4, 3]]
    plain, _ = _engine_runs(target, None, "none", 3, prompts)
    eng = wgmtp.open_engine(target, device=0, n_parallel=2, n_ctx=N_CTX, spec="draft-simple", n_max=4,
                            prefill_chunk=CHUNK, progress=False, draft=target, device_draft=1)
    assert eng.draft.ctx is not eng.rn.ctx
    hs = [eng.submit(Request(p, max_tokens=20, drafters=("draft-simple",), n_max=4)) for p in prompts]
    eng.run_until_idle()
    assert [h.result() for h in hs] == plain and all(h.stats.spec.accepted > 0 for h in hs)
