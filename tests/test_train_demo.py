"""The shipped demo model (wgmtp/data/wgmtp-demo.gguf) and a smoke test of tools/train_demo.py."""
from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

import wgmtp
from wgmtp.api import DEMO_MODEL

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "The following functions are provided by the module"
N_TOKENS = 32


def _greedy_pair(m) -> tuple[list[int], list[int], dict]:
    plain = list(m.generate_ids(PROMPT, max_tokens=N_TOKENS))
    spec = list(m.generate_ids(PROMPT, max_tokens=N_TOKENS, spec="draft-mtp", n_max=3))
    return plain, spec, m.stats


def test_demo_model_ships_and_is_small():
    assert DEMO_MODEL.is_file(), f"{DEMO_MODEL} is missing (tools/train_demo.py makes it)"
    assert DEMO_MODEL.stat().st_size <= 16 * 2**20
    m = wgmtp.load(DEMO_MODEL, device="cpu", n_ctx=256)
    assert m.gguf.has_mtp
    c = m.config
    assert c.n_layer == 8 and list(c.is_gdn[:8]) == [True, True, True, False] * 2
    assert c.ssm_dt_rank > c.ssm_n_group and c.n_rot < c.head_dim


def test_demo_model_greedy_mtp_equals_plain_cpu():
    m = wgmtp.load(DEMO_MODEL, device="cpu", n_ctx=256)
    plain, spec, st = _greedy_pair(m)
    assert len(plain) == N_TOKENS
    assert spec == plain
    assert st["drafted"] > 0 and st["acceptance"] > 0.3, st
    text = m.tokenizer.decode(plain)
    assert sum(ch.isalpha() for ch in text) > len(text) / 2, text


def test_demo_model_greedy_mtp_equals_plain_gpu():
    from gpu_util import VARIANTS
    if not VARIANTS:
        pytest.skip("no WebGPU adapter that runs compute shaders")
    m = wgmtp.load(DEMO_MODEL, device="auto", n_ctx=256)
    plain, spec, st = _greedy_pair(m)
    assert len(plain) == N_TOKENS
    assert spec == plain
    assert st["drafted"] > 0


def _sample_corpus(n_paras: int = 40, seed: int = 0) -> str:
    """A few KB of made-up English prose (no apt package needed)."""
    rng = random.Random(seed)
    subj = ["The module", "This function", "A queue", "The parser", "Each worker", "The server", "A small cache",
            "The reader", "Every thread", "The compiler", "An iterator", "The scheduler"]
    verb = ["returns", "stores", "reads", "writes", "checks", "creates", "closes", "opens", "updates", "removes"]
    obj = ["a new list of values", "the current state", "the next item in the buffer", "an empty string",
           "the number of bytes", "a copy of the data", "the file on disk", "the result of the call",
           "an error when the input is invalid", "the default settings"]
    tail = ["before it returns.", "when it is called.", "for each element.", "if the flag is set.",
            "after the loop ends.", "in a single pass.", "without blocking.", "at most once."]
    paras = []
    for _ in range(n_paras):
        sents = [f"{rng.choice(subj)} {rng.choice(verb)} {rng.choice(obj)} {rng.choice(tail)}"
                 for _ in range(rng.randint(5, 8))]
        paras.append(" ".join(sents))
    return "\n\n".join(paras) + "\n"


def test_train_script_smoke(tmp_path):
    pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[train]'): "
                                        "the training script needs it")
    sys.path.insert(0, str(ROOT / "tools"))
    import train_demo

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(_sample_corpus(), encoding="utf-8")
    out = tmp_path / "smoke.gguf"
    rc = train_demo.main(["--corpus", str(corpus), "--out", str(out), "--steps", "4", "--threads", "1",
                          "--vocab", "384", "--embd", "64", "--layers", "4", "--ff", "128", "--heads", "2",
                          "--kv-heads", "1", "--head-dim", "32", "--gdn-dim", "32", "--seq", "32",
                          "--batch", "2", "--mtp-phase", "0.5", "--eval-prompts", "1", "--eval-tokens", "6"])
    assert rc == 0
    assert out.is_file()
    m = wgmtp.load(out, device="cpu", n_ctx=128)
    assert m.gguf.has_mtp and list(m.config.is_gdn[:4]) == [True, True, True, False]
    ids = list(m.generate_ids("The module returns", max_tokens=6))
    assert len(ids) == 6
    assert list(m.generate_ids("The module returns", max_tokens=6, spec="draft-mtp", n_max=2)) == ids
