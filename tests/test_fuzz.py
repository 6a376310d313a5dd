"""A sample of the fuzz suite (tools/fuzz_gguf.py, where the whole of it runs): seeded mutants of
the demo and synthetic models, and every hostile chat template, each through inspect and short
runs (reference, GPU, MTP, chat) in a subprocess with time and memory limits. No mutant may end
in a traceback, a signal, a hang, out of memory, or with the reference and the GPU disagreeing."""
from __future__ import annotations

import random

import fuzz_gguf as F
import pytest

BAD = ("traceback", "signal", "hang", "oom", "disagree")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    srcs = F.sources(tmp)
    return tmp, [(p, p.read_bytes()) for p in srcs]


def _check(r: dict) -> None:
    assert r["class"] not in BAD, f"mutant {r.get('seed')} ({r.get('mutation')}): {r['class']} {r}"


@pytest.mark.parametrize("seed", [7, 19, 23, 42, 77, 101, 256, 1009])
def test_seeded_mutants_fail_cleanly(corpus, seed):
    tmp, blobs = corpus
    rng = random.Random(seed)
    k = rng.randrange(len(blobs))
    data, what = F.mutate(blobs[k][1], F.walk(blobs[k][1]), rng)
    m = tmp / f"m{seed}.gguf"
    m.write_bytes(data)
    r = F.run_mutant(m, timeout=120, mem=4 << 30)
    r.update(seed=seed, mutation=what)
    _check(r)


@pytest.mark.parametrize("i", range(len(F.HOSTILE_TEMPLATES)))
def test_hostile_chat_templates(corpus, i):
    """Each hostile template in the demo model's place: chat refuses it in one line (or renders
    it), nothing hangs, aborts or escapes the sandbox."""
    tmp, blobs = corpus
    src = blobs[0][1]
    L = F.walk(src)
    key, at, n = next(s for s in L.strings if s[0] == "tokenizer.chat_template")
    t = F.HOSTILE_TEMPLATES[i].encode()
    b = bytearray(src)
    b[at + 8: at + 8 + n] = t.ljust(n, b" ")
    m = tmp / f"t{i}.gguf"
    m.write_bytes(bytes(b))
    r = F.run_mutant(m, timeout=120, mem=4 << 30)
    _check(r)
    chat = r["stages"][-1]
    assert chat["argv"][2:4] == ["MODEL", "-cnv"] and chat["class"] in ("ok", "error"), chat
