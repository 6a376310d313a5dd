"""The drafters of --spec-type's list (wgmtp/drafters.py) through every layer that takes them:
the batching engine (lossless for every drafter and combination, greedy and sampled, dense and
MoE, n_max 1..15), adaptive n (it follows acceptance and never changes a token), `wgmtp run`
(the one-slot engine path prints what the one-sequence path prints, chat included) and `wgmtp serve`
(the server's drafters and llama-server's per-request speculative fields)."""
from __future__ import annotations

import io
import sys

import numpy as np
import pytest
from gpu_util import ctx_params

from wgmtp.api import DEMO_MODEL, eog_ids
from wgmtp.batching import BatchEngine, Request
from wgmtp.drafters import NgramParams, SpecSettings, StepCosts
from wgmtp.gpu.device import open_context
from wgmtp.models.qwen35 import GGUFModel
from wgmtp.models.qwen35.slots import N_DRAFT_MAX, SlotRunner
from wgmtp.sampling import SamplerParams

VARIANT = ctx_params()[0]
MODELS = {"dense": dict(block_out_scale=0.2, mtp_copy=True, seed=3),
          "moe": dict(block_out_scale=0.2, mtp_copy=True, seed=5, n_expert=4, n_expert_used=2)}
KINDS = [("ngram-simple",), ("ngram-mod",), ("draft-mtp", "ngram-simple"), ("draft-mtp", "ngram-mod")]
NG = NgramParams(size_n=3, size_m=16)        # short keys: the tiny prompts repeat short stretches
SAMPLED = SamplerParams(temperature=0.8, top_k=20, seed=5)


def engine(path, n_seq: int, n_max: int = N_DRAFT_MAX) -> BatchEngine:
    gm = GGUFModel(path)
    _, index, opts = VARIANT.values[0]
    rn = SlotRunner(gm, n_ctx=128, n_seq=n_seq, n_max=n_max, mtp=True, prefill_chunk=16, eog=eog_ids(gm),
                    progress=False, ctx=open_context(index, **opts))
    return BatchEngine(rn, eog_ids(gm))


def repetitive_prompt(eng: BatchEngine, seed: int = 5) -> list[int]:
    """A random start, what the model says after it, and the start again: the model is likely to
    say the same again, a repetition for the n-gram drafters to follow."""
    base = [int(x) for x in np.random.default_rng(seed).integers(0, eng.rn.cfg.n_vocab, 7)]
    h = eng.submit(Request(prompt=base, max_tokens=20))
    eng.run_until_idle()
    return base + h.result() + base


def fields(types: tuple[str, ...], n_max: int, **kw) -> dict:
    return SpecSettings(types, n_max=n_max, ngram=NG, **kw).request_fields()


@pytest.mark.parametrize("model", list(MODELS))
def test_every_drafter_and_combination_is_lossless(synth, model):
    """Greedy at n_max 1, 3 and 15 for ngram-simple, ngram-mod and each combined with draft-mtp,
    and adaptive n: every request's tokens equal plain decoding's; on the dense model also sampled
    (a fixed seed) for each drafter, equal to plain sampling with that seed. The n-gram drafters do
    draft and get drafts accepted. All share one engine, in mixed batches."""
    eng = engine(synth(**MODELS[model]), n_seq=10)
    prompt = repetitive_prompt(eng)
    hows = [("greedy", SamplerParams())] + ([("sampled", SAMPLED)] if model == "dense" else [])
    runs: dict[tuple, dict] = {}
    for how, samp in hows:
        runs["plain", 0, how] = dict(sampler=samp)
        for types in KINDS:
            for n in (1, 3, 15) if how == "greedy" else (3,):
                runs[types, n, how] = dict(fields(types, n), sampler=samp)
        runs[("draft-mtp", "ngram-simple", "adaptive"), 15, how] = dict(
            fields(("draft-mtp", "ngram-simple"), 15, adaptive=True, n_min=2), sampler=samp)
    hs = {k: eng.submit(Request(prompt=prompt, max_tokens=20, **f)) for k, f in runs.items()}
    eng.run_until_idle()
    for k, h in hs.items():
        assert h.result() == hs["plain", 0, k[2]].result(), f"{model}: {k} changed the output"
    for types in KINDS:
        sp = hs[types, 15, "greedy"].stats.spec
        assert sp.drafted > 0 and sp.accepted > 0, (types, sp.drafted, sp.accepted)


def _record_rounds(eng: BatchEngine, drafts) -> list[int]:
    """Every round's n, with the host drafts given by drafts(seq, n) (an always or never matching
    drafter)."""
    ns: list[int] = []
    make = eng._round
    eng._host_drafts = drafts

    def rec(seq):
        w = make(seq)
        ns.append(w.n)
        return w
    eng._round = rec
    return ns


@pytest.mark.parametrize("match", ["always", "never"])
def test_adaptive_n_moves_with_acceptance(synth, match):
    """With drafts that are always right, adaptive n climbs to the cap; with drafts that are
    always wrong it falls to plain steps. Both give plain decoding's tokens. Costs are injected
    (GPU-like: a draft row costs a tenth of a step), so the picks do not depend on timing."""
    eng = engine(synth(**MODELS["dense"]), n_seq=1, n_max=8)
    V = eng.rn.cfg.n_vocab
    prompt = [int(x) for x in np.random.default_rng(1).integers(0, V, 6)]
    want = eng.submit(Request(prompt=prompt, max_tokens=40))
    eng.run_until_idle()
    want = want.result()
    eng.costs = StepCosts(measure=False)
    for n in range(N_DRAFT_MAX + 1):
        eng.costs.set(n, False, 1.0 + 0.1 * n)
    pos = lambda seq: seq.h.stats.gen_tokens     # noqa: E731  (tokens emitted = index of the next one)
    if match == "always":
        ns = _record_rounds(eng, lambda seq, n: want[pos(seq): pos(seq) + n] or None)
    else:
        ns = _record_rounds(eng, lambda seq, n: [(t + 1) % V for t in want[pos(seq): pos(seq) + n]] or None)
    h = eng.submit(Request(prompt=prompt, max_tokens=40, n_max=8, drafters=("ngram-simple",), adaptive=True))
    eng.run_until_idle()
    assert h.result() == want, f"adaptive n with {match} matching drafts changed the output"
    late = ns[len(ns) // 2:]
    if match == "always":       # from the prior's pick up to the cap (the budget's end cuts the last)
        assert ns[0] < 8 in ns and ns[: ns.index(8)] == sorted(ns[: ns.index(8)]), ns
    else:           # down to plain steps, with a rare probe of one draft
        assert ns[0] > 0 and max(late) <= 1 and sum(late) <= len(late) / 4, (ns, sum(late), len(late))


def test_engine_measures_its_round_costs(synth):
    """One sequence: each step is its round's cost, recorded by shape (the first sample of a shape,
    the program build, dropped)."""
    eng = engine(synth(**MODELS["dense"]), n_seq=1, n_max=3)
    h = eng.submit(Request(prompt=[1, 2, 3, 4], max_tokens=12, spec=True, n_max=3))
    eng.run_until_idle()
    assert h.result() and eng.costs.seconds(3, True) > 0 and eng.costs.ratio(3, True) >= 1.0


# ---- wgmtp run

def _main(argv: list[str], capsys, stdin: str | None = None, monkeypatch=None) -> tuple[str, str]:
    from wgmtp.cli import main
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(argv)
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out, out.err


REPEAT = "The module returns a list. The module returns a list. The module returns"


@pytest.mark.parametrize("temp", ["0", "0.8"])
def test_run_with_ngram_drafters_prints_the_plain_text(capsys, temp):
    """`wgmtp run --spec-type ngram-simple` (a one-slot engine) prints what plain `wgmtp run` (the
    one-sequence path) prints, greedy and sampled, with acceptance in the stats line."""
    args = ["run", "-p", REPEAT, "-n", "20", "--temp", temp, "--seed", "3"]
    plain, _ = _main(args, capsys)
    ngram, err = _main(args + ["--spec-type", "ngram-simple", "--spec-ngram-size-n", "3"], capsys)
    assert ngram == plain
    assert "draft acceptance:" in err and "drafts per round:" in err


def test_chat_with_ngram_drafters_and_adaptive_n(capsys, monkeypatch):
    """-cnv through the engine: each turn continues the slot's state; the text equals plain chat's."""
    turns = "Repeat: the module returns a list\nAgain?\n"
    plain, _ = _main(["run", "-cnv", "-n", "12"], capsys, turns, monkeypatch)
    spec, err = _main(["run", "-cnv", "-n", "12", "--spec-type", "draft-mtp,ngram-simple", "--spec-adaptive",
                       "--spec-ngram-size-n", "2"], capsys, turns, monkeypatch)
    assert spec == plain and err.count("generated:") == 2


def test_run_and_serve_with_a_draft_model(capsys, synth):
    """`-md draft.gguf --spec-type draft-simple` (-md then names the draft model, not the MTP
    sidecar): run prints plain's text; with the model as its own draft every draft of a full round
    is accepted; serve loads the draft model and answers as plain decoding does."""
    from starlette.testclient import TestClient

    from wgmtp.cli import build_parser
    from wgmtp.cli.serve import config_from_args
    from wgmtp.server.app import create_app
    target, other = synth(block_out_scale=0.2, mtp_copy=True, seed=3), synth(seed=11, n_layer=3, mtp=False)
    args = ["run", "-m", str(target), "-p", REPEAT, "-n", "16"]
    plain, _ = _main(args, capsys)
    for draft, spec in ((other, "draft-simple"), (target, "draft-simple"), (other, "draft-mtp,draft-simple")):
        out, err = _main(args + ["-md", str(draft), "--spec-type", spec, "--spec-draft-n-max", "5"], capsys)
        assert out == plain and "draft acceptance:" in err, (draft, spec)
    _, err = _main(args + ["-md", str(other), "--spec-type", "draft-simple", "-v"], capsys)
    assert f"draft model: {other} on " in err.splitlines()[-1], err
    # 13 tokens: the first, then two full rounds of 5 drafts and a bonus token, all accepted
    _, err = _main(args[:-1] + ["13", "-md", str(target), "--spec-type", "draft-simple", "--spec-draft-n-max", "5"],
                   capsys)
    assert "draft acceptance: 1.000 (10/10)" in err and "mean accepted length: 6.00" in err, err
    a = build_parser().parse_args(["serve", "-m", str(target), "-md", str(other), "-np", "2", "-c", "128",
                                   "--spec-type", "draft-simple"])
    with TestClient(create_app(config_from_args(a))) as tc:
        tc.app.state.backend.wait_loaded(120)
        r = tc.post("/completion", json={"prompt": REPEAT, "n_predict": 16, "temperature": 0}).json()
        assert REPEAT + r["content"] + "\n" == plain, (r["content"], plain)


# ---- wgmtp serve

def test_serve_drafters_and_per_request_fields():
    """A server with draft-mtp,ngram-simple: /props shows the drafters and defaults; completions
    equal plain decoding whatever speculative.n_max / n_min a request gives (n_min is clamped to
    n_max as llama-server does), and the repetition gets drafts accepted."""
    from starlette.testclient import TestClient

    from wgmtp.cli import build_parser
    from wgmtp.cli.serve import config_from_args
    from wgmtp.server.app import create_app
    a = build_parser().parse_args(["serve", "-np", "1", "-c", "256", "--spec-type", "mtp,ngram-simple",
                                   "--spec-ngram-size-n", "3", "--spec-draft-n-min", "1", "--spec-adaptive"])
    cfg = config_from_args(a)
    assert (cfg.spec_type, cfg.n_min, cfg.ngram.size_n, cfg.adaptive) == ("draft-mtp,ngram-simple", 1, 3, True)
    with TestClient(create_app(cfg)) as tc:
        tc.app.state.backend.wait_loaded(120)
        props = tc.get("/props").json()
        sp = props["default_generation_settings"]["params"]
        assert props["speculative"]["type"] == sp["speculative.type"] == "draft-mtp,ngram-simple"
        assert (sp["speculative.n_min"], sp["speculative.adaptive"], sp["speculative.ngram_size_n"]) == (1, True, 3)
        got = []
        for extra in ({"speculative.n_max": 0}, {}, {"speculative.n_max": 2, "speculative.n_min": 9}):
            r = tc.post("/completion", json={"prompt": REPEAT, "n_predict": 16, "temperature": 0, **extra}).json()
            got.append((r["content"], r["timings"]["draft_n_accepted"]))
        assert got[1][0] == got[0][0] == got[2][0] and got[0][1] == 0 and got[1][1] > 0, got
        r = tc.post("/completion", json={"prompt": "x", "speculative.n_min": -1})
        assert r.status_code == 400 and "speculative.n_min" in r.json()["error"]["message"]
    assert DEMO_MODEL.exists()


@pytest.mark.parametrize("types,n_max,ok", [
    (("draft-mtp",), 48, True),                     # greedy MTP: a long round past the planes
    (("ngram-simple",), 48, True),
    (("draft-mtp", "ngram-mod"), 24, True),
    (("draft-simple",), 15, True),
    (("draft-simple",), 20, False),                 # a draft model's chain: snapshot planes only
])
def test_long_draft_lengths_are_checked_per_drafter(types, n_max, ok):
    """No GPU: which drafters may draft past the snapshot planes' 15 (SpecSettings.check)."""
    s = SpecSettings(types, n_max=n_max)
    if ok:
        s.check()
    else:
        with pytest.raises(Exception, match=f"--spec-draft-n-max {n_max}.*at most 15"):
            s.check()
