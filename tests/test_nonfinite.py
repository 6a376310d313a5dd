"""Non-finite values in a running model (issue 17): NaN logits are ordered last on the GPU as in
the twins, so GPU and CPU choose the same tokens; a step with no finite logit stops with a one-line
error naming the step; WGMTP_CHECK=1 names the op that first produced NaN or infinity."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT

import wgmtp
from wgmtp import cli, errors
from wgmtp.models.qwen35 import GGUFModel
from wgmtp.sampling import NONFINITE_ID, Sampler, SamplerParams, check_token

PRED = dict(block_out_scale=0.2, mtp_copy=True, seed=3)


def _poison(src: Path, dst: Path, name: str, elems: list[int], value: float = np.nan) -> Path:
    """A copy of `src` whose F32 tensor `name` holds `value` at the given element indices."""
    shutil.copy(src, dst)
    info = GGUFModel(dst).tensors[name]
    assert info.qtype == QT.F32
    data = bytearray(dst.read_bytes())
    for e in elems:
        data[info.offset + 4 * e: info.offset + 4 * e + 4] = np.float32(value).tobytes()
    dst.write_bytes(bytes(data))
    return dst


def test_pick_flags_a_nonfinite_top_candidate():
    s = Sampler(SamplerParams())
    assert s.pick(np.array([7]), np.array([1.0], np.float32)) == 7
    assert s.pick(np.array([7]), np.array([np.nan], np.float32)) == 7 | NONFINITE_ID
    hot = Sampler(SamplerParams(temperature=0.8))
    assert hot.pick(np.array([3, 4]), np.array([-np.inf, -np.inf], np.float32)) == 3 | NONFINITE_ID
    assert check_token(5, 1) == 5
    with pytest.raises(errors.NonFiniteLogitsError, match="^step 4: the logits are not finite"):
        check_token(5 | NONFINITE_ID, 4)


def test_nan_lm_head_rows_are_passed_over_alike(synth, tmp_path):
    """Three LM-head rows of NaN (a NaN logit each, as one NaN block scale gives): the GPU's argmax
    puts NaN last, as the twin does, so GPU and CPU emit the same tokens, none of them a NaN row."""
    bad = [5, 77, 300]
    E = GGUFModel(synth(**PRED)).config.n_embd
    p = _poison(synth(**PRED), tmp_path / "nanrows.gguf", "output.weight",
                [r * E + c for r in bad for c in range(E)])
    runs = {}
    for dev in ("cpu", "auto"):
        m = wgmtp.load(p, device=dev, n_ctx=128)
        for spec in (None, "draft-mtp"):
            runs[dev, spec] = list(m.generate_ids([1, 2, 3, 4], max_tokens=12, spec=spec, n_max=3))
    assert len({tuple(v) for v in runs.values()}) == 1, runs
    assert not set(runs["cpu", None]) & set(bad)


@pytest.mark.parametrize("device", ["cpu", "auto"])
@pytest.mark.parametrize("spec", [[], ["--spec-type", "draft-mtp"]])
def test_no_finite_logit_stops_with_one_line(synth, tmp_path, device, spec):
    """A NaN in the final norm's weight makes every logit NaN: the run stops at step 1 with one
    line, on the GPU as on the CPU, plain or speculative (never 'hello!!!!!')."""
    src = synth(**PRED)
    E = GGUFModel(src).config.n_embd
    p = _poison(src, tmp_path / "nannorm.gguf", "output_norm.weight", list(range(E)))
    r = subprocess.run([sys.executable, "-m", "wgmtp.cli", "run", "-m", str(p), "-p", "hi", "-n", "4",
                        "--device", device, *spec], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wgmtp: error: step 1: the logits are not finite"), r.stderr


def test_wgmtp_check_names_the_op_that_made_the_first_nan(synth, tmp_path, monkeypatch, capsys):
    """One NaN in a layer-1 FFN weight: every later value is NaN; WGMTP_CHECK=1 stops at the op
    that made it (its twin agrees, so no divergence would name it)."""
    p = _poison(synth(**PRED), tmp_path / "nanffn.gguf", "blk.1.ffn_down.weight", [77])
    monkeypatch.setenv("WGMTP_CHECK", "1")
    rc = cli.main(["run", "-m", str(p), "-p", "hello", "-n", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1, err
    assert "WGMTP_CHECK" in err[0] and "layer 1 op" in err[0] and "ffn_down" in err[0], err
    assert "the first op to produce NaN or infinity from finite inputs" in err[0] and "twin agrees" in err[0]


def test_a_batched_request_with_no_finite_logit_ends_alone(synth, tmp_path):
    """In the batched engine (what the server runs) such a request ends with the one-line error,
    plain or speculative, greedy or sampled, and the engine goes on serving the next ones."""
    from wgmtp.batching import Request
    from wgmtp.sampling import SamplerParams as SP
    src = synth(**PRED)
    E = GGUFModel(src).config.n_embd
    p = _poison(src, tmp_path / "nannorm.gguf", "output_norm.weight", list(range(E)))
    eng = wgmtp.open_engine(p, n_parallel=2, n_ctx=64, spec="draft-mtp", progress=False)
    reqs = [Request([1, 2, 3], max_tokens=4), Request([4, 5], max_tokens=4, spec=True),
            Request([6], max_tokens=4, sampler=SP(temperature=0.7, seed=1), spec=True)]
    handles = [eng.submit(r) for r in reqs]
    eng.run_until_idle()
    for h in handles:
        assert h.finish_reason == "error" and h.tokens == []
        with pytest.raises(errors.NonFiniteLogitsError, match="^step 1: the logits are not finite"):
            h.result()
    again = eng.submit(Request([7, 8], max_tokens=2))
    eng.run_until_idle()
    assert again.finish_reason == "error"
