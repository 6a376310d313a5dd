"""`wgmtp check -m` and WGMTP_CHECK=1: a wrong kernel is named by layer and op; the acceptance
canary fires when the GPU's MTP head is corrupted. The wrong kernel is injected by monkeypatching
a kernel wrapper in this process (a test-only hook, not an option of the shipped code)."""
from __future__ import annotations

import argparse

import numpy as np
import pytest

from wgmtp import cli
from wgmtp.check.model import run_model_check
from wgmtp.kernels import norm as K_norm

PRED = dict(block_out_scale=0.2, mtp_copy=True, seed=3)


def _args(path, **kw):
    return argparse.Namespace(model=str(path), mtp_file=None, device=None, n_tokens=10, **kw)


@pytest.fixture
def wrong_gated_norm(monkeypatch):
    """The gated_rmsnorm kernel computes with a wrong epsilon while the model asks for the right
    one (its record says the right one): plausible numbers, wrong ones -- a kernel bug."""
    real = K_norm.dispatch_norm

    def wrong(pb, step, x, y, w, n, heads, max_tok, eps, *, mode="", **kw):
        return real(pb, step, x, y, w, n, heads, max_tok, 0.5 if mode == "GATED" else eps, mode=mode, **kw)
    monkeypatch.setattr(K_norm, "dispatch_norm", wrong)


@pytest.mark.parametrize("fuse", ["all", "none"])
def test_model_check_passes(synth, monkeypatch, fuse):
    """Every op of a prompt and of speculative rounds within its twin's bound, with every mat-vec
    fusion on (a fused op is checked as one: norm + projection, projection + add, gate/up + SwiGLU)
    and with none."""
    monkeypatch.setenv("WGMTP_FUSE", fuse)
    res = run_model_check(_args(synth(**PRED)))
    bad = [r for r in res["rows"] if r["status"] not in ("pass", "skip")]
    assert not bad, bad
    ops = {r["op"] for r in res["rows"]}
    if fuse == "all":
        fused = ("trunk.attn_norm+gdn_in", "trunk.attn_norm+attn_in", "trunk.post_attention_norm+ffn_gate_up+swiglu",
                 "trunk.ssm_out+add", "trunk.attn_output+add", "trunk.ffn_down+add")
    else:
        fused = ("trunk.attn_norm", "trunk.gdn_in", "trunk.attn_in", "trunk.post_attention_norm",
                 "trunk.ffn_gate_up", "trunk.swiglu", "trunk.ssm_out", "trunk.attn_output", "trunk.ffn_down")
    for op in fused + ("trunk.embed", "trunk.output_norm", "trunk.ssm_conv", "trunk.gdn", "trunk.attention",
                      "mtp.eh_proj", "mtp.shared_head_norm", "draft.attention", "head.lm_head", "head.accept",
                      "model.logits",
                      "spec.lossless", "spec.acceptance"):
        assert op in ops, op
    assert res["first_divergence"] is None


def test_wrong_kernel_is_named(synth, wrong_gated_norm):
    res = run_model_check(_args(synth(**PRED)))
    assert res["first_divergence"].startswith("trunk layer 0 op gated_rmsnorm"), res["first_divergence"]
    failed = [r for r in res["rows"] if r["status"] == "fail"]
    assert failed[0]["op"] == "trunk.gated_rmsnorm" and failed[0]["layer"] == 0
    # every op that read the wrong values directly is still judged on its own inputs: they pass
    assert all(r["status"] == "pass" for r in res["rows"] if r["op"] in ("trunk.ssm_out", "trunk.gdn"))


def test_wgmtp_check_env_stops_at_first_divergence(synth, wrong_gated_norm, monkeypatch, capsys):
    monkeypatch.setenv("WGMTP_CHECK", "1")
    rc = cli.main(["run", "-m", str(synth(**PRED)), "-p", "hello", "-n", "4"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0
    assert len(err) == 1 and "WGMTP_CHECK" in err[0] and "layer 0 op gated_rmsnorm" in err[0], err


def test_wgmtp_check_env_passes(synth, monkeypatch, capsys):
    monkeypatch.setenv("WGMTP_CHECK", "1")
    rc = cli.main(["run", "-m", str(synth(**PRED)), "-p", "hello", "-n", "6", "--spec-type", "draft-mtp"])
    assert rc == 0, capsys.readouterr().err


def test_acceptance_canary_fires_on_corrupted_mtp_head(synth):
    """Corrupt the MTP head's eh_proj on the GPU only (as a driver bug in that path would): the
    GPU's drafts get worse than the reference's and the canary says so."""
    def corrupt(be):
        be.model.upload(mtp=True)
        W = be.model.w[f"blk.{be.cfg.mtp_layer}.nextn.eh_proj.weight"]
        for p in W.parts:
            noise = np.random.default_rng(0).standard_normal(p.rows * W.row_words).astype(np.float32)
            be.ctx.queue.write_buffer(p.buffer, 0, noise.tobytes())
    res = run_model_check(_args(synth(**PRED)), backend_hook=corrupt)
    row = next(r for r in res["rows"] if r["op"] == "spec.acceptance")
    assert row["status"] == "fail" and "MTP" in row["note"], row
    lossless = next(r for r in res["rows"] if r["op"] == "spec.lossless")
    assert lossless["status"] == "pass"          # still lossless: bad drafts are only rejected
