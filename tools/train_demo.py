#!/usr/bin/env python3
"""Train the demo model that ships in wgmtp/data/wgmtp-demo.gguf, end to end, on the CPU.

    apt-get install python3-doc          # (Debian/Ubuntu) the corpus: Python's documentation sources
    pip install -e '.[train]'            # torch (CPU build is enough)
    # how the shipped wgmtp/data/wgmtp-demo.gguf was made (65 minutes on a shared 2-core machine):
    nice -n 19 python tools/train_demo.py --minutes 50 --threads 1 --save-ckpt /tmp/demo.pt
    nice -n 19 python tools/train_demo.py --init-ckpt /tmp/demo.pt --mtp-phase 1 --mtp-true 0 --minutes 15 --threads 1

The first run trains everything (the last --mtp-phase of its time the MTP head alone); the second
continues the MTP head alone on the frozen trunk. Use --threads 2 (the default) on an idle machine;
under contention from other jobs one thread was much faster than two.

Steps (each prints what it did):
  1. corpus: the reStructuredText sources of the Python documentation as Debian's `python3-doc`
     (`python3.X-doc`) installs them (/usr/share/doc/python3.X/html/_sources), stripped to plain
     paragraphs; every 20th file is held out and gives the evaluation prompts. `--corpus FILE`
     uses any plain-text file instead (paragraphs separated by blank lines).
  2. tokenizer: byte-level BPE trained with `tokenizers` on the training text, pre-split with the
     `qwen35` regex wgmtp uses, plus <|endoftext|>, <|im_start|>, <|im_end|> laid out as
     tools/make_model.py's build_tokenizer does, and the ChatML chat template.
  3. model: a tiny qwen35 in torch with the real structure -- Gated DeltaNet and gated attention at
     the 3:1 pattern (GGGA GGGA), Hv > Hk with the converter's tiled value-head mapping, partial
     NeoX rope, q/gate interleaved per head, per-head q/k RMSNorm, causal conv1d, gated RMSNorm,
     SwiGLU -- and its MTP head, trained for chained drafting (see `MTP.chain`).
     The MTP loss: for step k the head predicts the token after position p from the embedding of
     x_p and a hidden that is the trunk's post-output_norm h_{p-1} (k = 1) or the head's own
     post-shared_head_norm output of step k-1 at p-1 (k >= 2); its attention sees, for each
     earlier position, the entry the speculative loop would have in its MTP KV cache then.
     Target: the trunk's own next-token distribution at p (self-distillation: a draft is accepted
     when it equals the trunk's greedy token), mixed with the true token (`--mtp-true`). The trunk
     hidden, the embedding and the LM head are detached for the MTP loss, so the head never
     changes the main model. The last `--mtp-phase` fraction of the time trains the head alone
     on the frozen trunk.
  4. export: weights in GGUF layout (norms +1 except ssm_norm, ssm_a = -exp(A_log)) through
     make_model.write_model; an F32 copy is first checked against wgmtp's numpy reference (trunk
     logits, MTP logits, chained MTP steps), then the Q8_0 file is written.
  5. evaluation through wgmtp itself (numpy reference, device=cpu by default): greedy draft
     acceptance at n_max 1, 2, 3 on held-out prompts, and MTP output == plain greedy output.
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import random
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT))

from make_model import SPECIAL_TOKENS, ModelSpec, TokenizerData, write_model  # noqa: E402

DEFAULT_OUT = ROOT / "wgmtp" / "data" / "wgmtp-demo.gguf"
DOC_GLOB = "/usr/share/doc/python3*/html/_sources"
DOC_DIRS = ("tutorial", "faq", "howto", "reference", "library", "using", "extending", "glossary.rst.txt",
            "whatsnew")
PRE_QWEN35 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+"
              r"|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def log(*a) -> None:
    print(*a, flush=True)


# =============================================================================================
# 1. corpus

_ROLE = re.compile(r":[a-zA-Z:+-]+:`(?:[^`<]*<)?~?!?([^`>]*)>?`")
_LINK = re.compile(r"`([^`<]+?)\s*<[^>]*>`_+")
_REF = re.compile(r"`([^`]+)`_+")
_LIT = re.compile(r"``([^`]+)``")
_EMPH = re.compile(r"\*\*?([^*\s][^*]*?)\*\*?")
_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+.:_])\1{2,}\s*$")


def rst_to_paragraphs(text: str) -> list[str]:
    """Plain prose paragraphs from a reST file: directives, comments, literal blocks, tables and
    doctest blocks dropped, inline markup reduced to its text."""
    lines = text.splitlines()
    paras: list[tuple[int, list[str]]] = []
    cur: list[str] = []
    for ln in lines + [""]:
        if ln.strip():
            cur.append(ln.rstrip())
        elif cur:
            ind = min(len(x) - len(x.lstrip()) for x in cur)
            paras.append((ind, [x[ind:] for x in cur]))
            cur = []
    out: list[str] = []
    skip_deeper = None      # indent above which paragraphs are a literal block / directive body we drop
    for ind, pl in paras:
        if skip_deeper is not None:
            if ind > skip_deeper:
                continue
            skip_deeper = None
        first = pl[0]
        if first.startswith(".. "):
            # a directive: keep the prose bodies of description directives (function, class, ...)
            m = re.match(r"\.\. (\w[\w:-]*)::", first)
            kind = m.group(1) if m else ""
            if kind not in ("function", "class", "method", "attribute", "data", "exception", "decorator",
                            "describe", "note", "versionadded", "versionchanged", "seealso", "warning",
                            "impl-detail", "deprecated", "module", "opcode", "index", "cmdoption", "envvar"):
                skip_deeper = ind
            continue
        if first.startswith((">>>", "...", "|", "+-", "$ ", "%", "#", ":", "=")) or _UNDERLINE.match(first):
            continue
        if len(pl) >= 2 and _UNDERLINE.match(pl[-1]):     # a heading (optionally overlined)
            continue
        body = [x for x in pl if not _UNDERLINE.match(x)]
        if any(x.startswith(("   ", "\t")) for x in body[1:]) and not first.startswith(("* ", "- ", "#. ")):
            continue                                        # definition lists, option tables
        s = " ".join(x.strip() for x in body)
        lit = s.endswith("::")
        if lit:
            s = s[:-2].rstrip() + ("" if s.endswith(" ::") else ":")
            skip_deeper = ind
        s = _ROLE.sub(lambda m: m.group(1), s)
        s = _LINK.sub(lambda m: m.group(1), s)
        s = _REF.sub(lambda m: m.group(1), s)
        s = _LIT.sub(lambda m: m.group(1), s)
        s = _EMPH.sub(lambda m: m.group(1), s)
        s = re.sub(r"\s+", " ", s).strip()
        if s.startswith(("* ", "- ")):
            s = s[2:]
        letters = sum(ch.isalpha() for ch in s)
        if len(s) < 40 or letters < 0.6 * len(s) or s.count(" ") < 6:
            continue
        out.append(s)
    return out


@dataclass
class Corpus:
    train_docs: list[str]      # one string per source file: paragraphs joined by blank lines
    heldout_paras: list[str]
    source: str


def find_doc_sources() -> Path:
    cands = sorted(glob.glob(DOC_GLOB))
    if not cands:
        raise SystemExit(
            "corpus missing: the Python documentation sources were not found under "
            f"{DOC_GLOB}.\nInstall them with:  apt-get install python3-doc   (the package python3.X-doc "
            "ships them; e.g. python3.11-doc on Debian 12)\nor give any plain-text file with --corpus FILE.")
    return Path(cands[-1])


def build_corpus(corpus_file: str | None, holdout_every: int = 20) -> Corpus:
    if corpus_file:
        text = Path(corpus_file).read_text(encoding="utf-8")
        paras = [re.sub(r"\s+", " ", p).strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
        held = [p for i, p in enumerate(paras) if i % holdout_every == holdout_every - 1]
        train = [p for i, p in enumerate(paras) if i % holdout_every != holdout_every - 1]
        docs = ["\n\n".join(train[i:i + 8]) for i in range(0, len(train), 8)]
        return Corpus(docs, held, corpus_file)
    root = find_doc_sources()
    files: list[Path] = []
    for d in DOC_DIRS:
        p = root / d
        files += [p] if p.is_file() else sorted(p.rglob("*.rst.txt"))
    if not files:
        raise SystemExit(f"{root} has no .rst.txt sources: reinstall python3-doc (apt-get install python3-doc)")
    docs, held = [], []
    for i, f in enumerate(files):
        paras = rst_to_paragraphs(f.read_text(encoding="utf-8", errors="replace"))
        if not paras:
            continue
        if i % holdout_every == holdout_every // 2:
            held += paras
        else:
            docs.append("\n\n".join(paras))
    return Corpus(docs, held, str(root))


def eval_prompts(paras: list[str], n: int, n_words: int = 10, seed: int = 1) -> list[str]:
    good = [p for p in paras if len(p.split()) >= 3 * n_words and p[0].isupper()]
    rng = random.Random(seed)
    rng.shuffle(good)
    return [" ".join(p.split()[:n_words]) for p in good[:n]]


# =============================================================================================
# 2. tokenizer

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def train_tokenizer(docs: list[str], n_vocab: int) -> tuple[TokenizerData, "object"]:
    """Byte-level BPE (the 256 byte symbols + merges) with exactly n_vocab ids in all: BPE ids
    first, then <|endoftext|> (pad), <|im_start|>, <|im_end|> (eos), as build_tokenizer lays them
    out. Returns (GGUF tokenizer data, the `tokenizers` object used to encode the corpus)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRE_QWEN35), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    n_bpe = n_vocab - len(SPECIAL_TOKENS)
    trainer = trainers.BpeTrainer(vocab_size=n_bpe, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tok.train_from_iterator(docs, trainer=trainer)
    vocab = tok.get_vocab()
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges_raw = json.loads(tok.to_str())["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges_raw]
    base = len(tokens)
    types = [1] * base + [3] * len(SPECIAL_TOKENS)
    tokens = tokens + list(SPECIAL_TOKENS)
    total = -(-len(tokens) // 64) * 64
    for i in range(len(tokens), total):
        tokens.append(f"[PAD{i}]")
        types.append(5)
    return TokenizerData(tokens=tokens, types=types, merges=merges, eos_id=base + 2, pad_id=base), tok


# =============================================================================================
# 3. the torch model

@dataclass
class Dims:
    n_embd: int = 256
    n_layer: int = 8
    pattern: str = "GGGA"
    n_head: int = 4
    n_head_kv: int = 2
    head_dim: int = 64
    n_ff: int = 768
    gdn_k_heads: int = 2
    gdn_v_heads: int = 4
    gdn_dim: int = 64
    conv_kernel: int = 4
    n_vocab: int = 4096
    eps: float = 1e-6
    rope_base: float = 1e7

    @property
    def n_rot(self) -> int:
        return self.head_dim // 4

    def is_gdn(self) -> list[bool]:
        return [self.pattern[i % len(self.pattern)] == "G" for i in range(self.n_layer)]


def build_torch(d: Dims):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class RMSNorm(nn.Module):
        """HF convention: y = x_normed * (1 + w), w starts at 0 (exported as w + 1); the GDN gated
        norm (plus_one=False) is x_normed * w, exported as is."""

        def __init__(self, n: int, plus_one: bool = True) -> None:
            super().__init__()
            self.plus_one = plus_one
            self.weight = nn.Parameter(torch.zeros(n) if plus_one else torch.ones(n))

        def forward(self, x):
            y = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + d.eps)
            return y * (1 + self.weight) if self.plus_one else y * self.weight

        def export(self) -> np.ndarray:
            w = self.weight.detach() + (1 if self.plus_one else 0)
            return w.float().numpy()

    def lin(i: int, o: int, std: float | None = None):
        m = nn.Linear(i, o, bias=False)
        nn.init.normal_(m.weight, std=std if std is not None else 0.02)
        return m

    out_std = 0.02 / math.sqrt(2 * d.n_layer)

    def rope_tables(T: int, device=None):
        half = d.n_rot // 2
        inv = d.rope_base ** (-2.0 * np.arange(half, dtype=np.float64) / d.n_rot)
        ang = np.arange(T, dtype=np.float64)[:, None] * inv
        return (torch.tensor(np.cos(ang), dtype=torch.float32), torch.tensor(np.sin(ang), dtype=torch.float32))

    def rope(x, cs):           # x [B, T, heads, D]
        c, s = cs
        T = x.shape[1]
        c, s = c[:T, None, :], s[:T, None, :]
        half, R = d.n_rot // 2, d.n_rot
        x0, x1 = x[..., :half], x[..., half:R]
        return torch.cat([x0 * c - x1 * s, x0 * s + x1 * c, x[..., R:]], dim=-1)

    class FFN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gate = lin(d.n_embd, d.n_ff)
            self.up = lin(d.n_embd, d.n_ff)
            self.down = lin(d.n_ff, d.n_embd, out_std)

        def forward(self, x):
            return self.down(F.silu(self.gate(x)) * self.up(x))

    class Attn(nn.Module):
        """Gated attention: attn_q rows are [q_h (D) | gate_h (D)] per head h."""

        def __init__(self) -> None:
            super().__init__()
            H, Hkv, D = d.n_head, d.n_head_kv, d.head_dim
            self.q = lin(d.n_embd, 2 * H * D)
            self.k = lin(d.n_embd, Hkv * D)
            self.v = lin(d.n_embd, Hkv * D)
            self.q_norm = RMSNorm(D)
            self.k_norm = RMSNorm(D)
            self.o = lin(H * D, d.n_embd, out_std)

        def project(self, h, cs):
            B, T, _ = h.shape
            H, Hkv, D = d.n_head, d.n_head_kv, d.head_dim
            qg = self.q(h).view(B, T, H, 2, D)
            q = rope(self.q_norm(qg[:, :, :, 0]), cs)
            gate = qg[:, :, :, 1].reshape(B, T, H * D)
            k = rope(self.k_norm(self.k(h).view(B, T, Hkv, D)), cs)
            v = self.v(h).view(B, T, Hkv, D)
            rep = H // Hkv       # GQA: contiguous groups (q head h reads kv head h // rep)
            k = k.transpose(1, 2).repeat_interleave(rep, dim=1)
            v = v.transpose(1, 2).repeat_interleave(rep, dim=1)
            return q.transpose(1, 2), gate, k, v      # q, k, v [B, H, T, D]

        def finish(self, o, gate):                     # o [B, H, T, D]
            B, H, T, D = o.shape
            return self.o(o.transpose(1, 2).reshape(B, T, H * D) * torch.sigmoid(gate))

        def forward(self, h, cs):
            q, gate, k, v = self.project(h, cs)
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0 / math.sqrt(d.head_dim))
            return self.finish(o, gate)

    def gdn_chunked(q, k, v, g, beta, C: int = 64):
        """Chunked gated delta rule (reference section 3.5). q, k [B, H, T, Dk] (q scaled), v
        [B, H, T, Dv], g, beta [B, H, T]. Zero state in; returns o [B, H, T, Dv]."""
        B, H, T, Dk = q.shape
        Dv = v.shape[-1]
        C = min(C, T)
        pad = (-T) % C
        if pad:
            q, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
            g, beta = F.pad(g, (0, pad)), F.pad(beta, (0, pad))
        N = (T + pad) // C
        q, k, v = (x.reshape(B, H, N, C, x.shape[-1]) for x in (q, k, v))
        g, beta = g.reshape(B, H, N, C), beta.reshape(B, H, N, C)
        G = torch.cumsum(g, dim=-1)
        low = torch.ones(C, C, dtype=torch.bool).tril()
        Dm = torch.exp((G[..., :, None] - G[..., None, :]).masked_fill(~low, float("-inf")))
        Lm = (beta[..., :, None] * (k @ k.transpose(-1, -2)) * Dm).tril(-1)
        Amat = Lm + torch.eye(C)
        U = torch.linalg.solve_triangular(Amat, beta[..., None] * v, upper=False, unitriangular=True)
        Wm = torch.linalg.solve_triangular(Amat, beta[..., None] * k * torch.exp(G)[..., None], upper=False,
                                           unitriangular=True)
        Aq = (q @ k.transpose(-1, -2)) * Dm
        S = q.new_zeros(B, H, Dk, Dv)
        outs = []
        eG = torch.exp(G)
        for n in range(N):
            Vn = U[:, :, n] - Wm[:, :, n] @ S
            outs.append((q[:, :, n] * eG[:, :, n, :, None]) @ S + Aq[:, :, n] @ Vn)
            if n + 1 < N:
                Gl = G[:, :, n, -1:]
                S = (S * torch.exp(Gl)[..., None]
                     + (k[:, :, n] * torch.exp(Gl - G[:, :, n])[..., None]).transpose(-1, -2) @ Vn)
        o = torch.stack(outs, dim=2).reshape(B, H, N * C, Dv)
        return o[:, :, :T]

    class GDN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            Hk, Hv, S = d.gdn_k_heads, d.gdn_v_heads, d.gdn_dim
            self.key_dim, self.value_dim = Hk * S, Hv * S
            conv_dim = 2 * self.key_dim + self.value_dim
            self.qkv = lin(d.n_embd, conv_dim)
            self.gate = lin(d.n_embd, self.value_dim)
            self.conv_w = nn.Parameter(torch.empty(conv_dim, d.conv_kernel).uniform_(-0.5, 0.5))
            dt = torch.exp(torch.empty(Hv).uniform_(math.log(1e-3), math.log(0.1)))
            self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))     # inverse softplus
            self.A_log = nn.Parameter(torch.log(torch.empty(Hv).uniform_(1, 16)))
            self.beta = lin(d.n_embd, Hv)
            self.alpha = lin(d.n_embd, Hv)
            self.norm = RMSNorm(S, plus_one=False)
            self.out = lin(self.value_dim, d.n_embd, out_std)

        def forward(self, h, cs=None):
            B, T, _ = h.shape
            Hk, Hv, S = d.gdn_k_heads, d.gdn_v_heads, d.gdn_dim
            mixed = self.qkv(h)
            Cd = mixed.shape[-1]
            c = F.conv1d(F.pad(mixed.transpose(1, 2), (d.conv_kernel - 1, 0)), self.conv_w.unsqueeze(1), groups=Cd)
            c = F.silu(c).transpose(1, 2)
            kd = self.key_dim
            q = c[..., :kd].reshape(B, T, Hk, S)
            k = c[..., kd:2 * kd].reshape(B, T, Hk, S)
            v = c[..., 2 * kd:].reshape(B, T, Hv, S)
            q = q / torch.sqrt(q.pow(2).sum(-1, keepdim=True) + d.eps) / math.sqrt(S)
            k = k / torch.sqrt(k.pow(2).sum(-1, keepdim=True) + d.eps)
            rep = Hv // Hk       # tiled: value head h reads key head h % Hk
            q, k = q.repeat(1, 1, rep, 1), k.repeat(1, 1, rep, 1)
            g = -torch.exp(self.A_log) * F.softplus(self.alpha(h) + self.dt_bias)    # [B, T, Hv]
            beta = torch.sigmoid(self.beta(h))
            o = gdn_chunked(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                            g.transpose(1, 2), beta.transpose(1, 2)).transpose(1, 2)   # [B, T, Hv, S]
            z = self.gate(h).view(B, T, Hv, S)
            y = self.norm(o) * F.silu(z)
            return self.out(y.reshape(B, T, Hv * S))

    class Block(nn.Module):
        def __init__(self, gdn: bool) -> None:
            super().__init__()
            self.is_gdn = gdn
            self.attn_norm = RMSNorm(d.n_embd)
            self.mixer = GDN() if gdn else Attn()
            self.post_norm = RMSNorm(d.n_embd)
            self.ffn = FFN()

        def forward(self, x, cs):
            x = x + self.mixer(self.attn_norm(x), cs)
            return x + self.ffn(self.post_norm(x))

    class MTP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            E = d.n_embd
            self.enorm = RMSNorm(E)
            self.hnorm = RMSNorm(E)
            self.eh_proj = lin(2 * E, E)
            self.attn_norm = RMSNorm(E)
            self.attn = Attn()
            self.post_norm = RMSNorm(E)
            self.ffn = FFN()
            self.shared_head_norm = RMSNorm(E)

        def chain(self, emb, h_trunk, steps: int, lm_head, cs):
            """Unrolled chained drafting, all positions at once.

            Row p of step k takes the embedding of x_p and h_prev: the trunk's h_{p-1} for k = 1,
            step k-1's output h_out at row p-1 for k >= 2 (zeros before position 0), and predicts
            the token after x_p. Its attention reads, at position p - j, the key/value of step
            max(1, k - j): exactly the MTP KV cache of the speculative loop during draft k (committed
            positions hold trunk-fed entries, the draft's own earlier positions chained ones).
            Returns the logits of every step [steps][B, T, V]."""
            B, T, E = emb.shape
            e = self.enorm(emb)
            zero = emb.new_zeros(B, 1, E)
            h_prev = torch.cat([zero, h_trunk[:, :-1]], dim=1)
            Ks, Vs, out = [], [], []
            idx = torch.arange(T)
            off = idx[:, None] - idx[None, :]           # p - q
            causal = off >= 0
            scale = 1.0 / math.sqrt(d.head_dim)
            for k in range(1, steps + 1):
                x = self.eh_proj(torch.cat([e, self.hnorm(h_prev)], dim=-1))
                q, gate, kk, vv = self.attn.project(self.attn_norm(x), cs)
                Ks.append(kk)
                Vs.append(vv)
                if k == 1:
                    o = F.scaled_dot_product_attention(q, kk, vv, is_causal=True, scale=scale)
                else:
                    src = torch.clamp(k - off, min=1)   # which step's entry row p sees at column q
                    sc = None
                    for s in range(1, k + 1):
                        m = (src == s) & causal
                        part = (q @ Ks[s - 1].transpose(-1, -2)) * scale
                        sc = torch.where(m, part, sc if sc is not None else torch.full_like(part, float("-inf")))
                    P = torch.softmax(sc, dim=-1)
                    o = sum((P * ((src == s) & causal)) @ Vs[s - 1] for s in range(1, k + 1))
                x = x + self.attn.finish(o, gate)
                x = x + self.ffn(self.post_norm(x))
                h_out = self.shared_head_norm(x)
                out.append(lm_head(h_out))
                h_prev = torch.cat([zero, h_out[:, :-1]], dim=1)
            return out

    class Qwen35(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(d.n_vocab, d.n_embd)
            nn.init.normal_(self.embed.weight, std=0.02)
            self.layers = nn.ModuleList([Block(g) for g in d.is_gdn()])
            self.output_norm = RMSNorm(d.n_embd)
            self.output = lin(d.n_embd, d.n_vocab)
            self.mtp = MTP()
            self._cs = None

        def cs(self, T: int):
            if self._cs is None or self._cs[0].shape[0] < T:
                self._cs = rope_tables(max(T, 1024))
            return self._cs

        def forward(self, ids, mtp_steps: int = 0, trunk_grad: bool = True, mtp_rows: int | None = None):
            """(trunk logits [B, T, V], post-output_norm hidden [B, T, E], [MTP logits per step]);
            the MTP head runs on the first `mtp_rows` sequences of the batch (default all)."""
            cs = self.cs(ids.shape[1])
            with torch.set_grad_enabled(trunk_grad and torch.is_grad_enabled()):
                x = self.embed(ids)
                for blk in self.layers:
                    x = blk(x, cs)
                h = self.output_norm(x)
                logits = self.output(h)
            mtp = []
            if mtp_steps:
                W = self.output.weight.detach()
                r = ids.shape[0] if mtp_rows is None else mtp_rows
                mtp = self.mtp.chain(self.embed(ids[:r]).detach(), h[:r].detach(), mtp_steps,
                                     lambda y: F.linear(y, W), cs)
            return logits, h, mtp

        def export(self) -> dict[str, np.ndarray]:
            """Weights in GGUF layout (numpy order), converter conventions."""
            def t(p):
                return p.detach().float().numpy().copy()
            W: dict[str, np.ndarray] = {"token_embd.weight": t(self.embed.weight),
                                        "output_norm.weight": self.output_norm.export(),
                                        "output.weight": t(self.output.weight)}

            def attn(i, a: Attn, blk_norm, post_norm):
                W[f"blk.{i}.attn_norm.weight"] = blk_norm.export()
                W[f"blk.{i}.attn_q.weight"] = t(a.q.weight)
                W[f"blk.{i}.attn_k.weight"] = t(a.k.weight)
                W[f"blk.{i}.attn_v.weight"] = t(a.v.weight)
                W[f"blk.{i}.attn_q_norm.weight"] = a.q_norm.export()
                W[f"blk.{i}.attn_k_norm.weight"] = a.k_norm.export()
                W[f"blk.{i}.attn_output.weight"] = t(a.o.weight)
                W[f"blk.{i}.post_attention_norm.weight"] = post_norm.export()

            def ffn(i, f: FFN):
                W[f"blk.{i}.ffn_gate.weight"] = t(f.gate.weight)
                W[f"blk.{i}.ffn_up.weight"] = t(f.up.weight)
                W[f"blk.{i}.ffn_down.weight"] = t(f.down.weight)

            for i, b in enumerate(self.layers):
                if b.is_gdn:
                    m = b.mixer
                    W[f"blk.{i}.attn_norm.weight"] = b.attn_norm.export()
                    W[f"blk.{i}.attn_qkv.weight"] = t(m.qkv.weight)
                    W[f"blk.{i}.attn_gate.weight"] = t(m.gate.weight)
                    W[f"blk.{i}.ssm_conv1d.weight"] = t(m.conv_w)
                    W[f"blk.{i}.ssm_dt.bias"] = t(m.dt_bias)
                    W[f"blk.{i}.ssm_a"] = (-torch.exp(m.A_log.detach())).numpy().copy()
                    W[f"blk.{i}.ssm_beta.weight"] = t(m.beta.weight)
                    W[f"blk.{i}.ssm_alpha.weight"] = t(m.alpha.weight)
                    W[f"blk.{i}.ssm_norm.weight"] = m.norm.export()
                    W[f"blk.{i}.ssm_out.weight"] = t(m.out.weight)
                    W[f"blk.{i}.post_attention_norm.weight"] = b.post_norm.export()
                else:
                    attn(i, b.mixer, b.attn_norm, b.post_norm)
                ffn(i, b.ffn)
            n = d.n_layer
            M = self.mtp
            W[f"blk.{n}.nextn.eh_proj.weight"] = t(M.eh_proj.weight)       # columns [embedding | hidden]
            W[f"blk.{n}.nextn.enorm.weight"] = M.enorm.export()
            W[f"blk.{n}.nextn.hnorm.weight"] = M.hnorm.export()
            W[f"blk.{n}.nextn.shared_head_norm.weight"] = M.shared_head_norm.export()
            attn(n, M.attn, M.attn_norm, M.post_norm)
            ffn(n, M.ffn)
            return {k: np.ascontiguousarray(v, np.float32) for k, v in W.items()}

    return Qwen35()


def model_spec(d: Dims, wtype: str, name: str = "wgmtp-demo") -> ModelSpec:
    return ModelSpec(n_embd=d.n_embd, n_layer=d.n_layer, layer_pattern=d.pattern, full_attention_interval=4,
                     n_head=d.n_head, n_head_kv=d.n_head_kv, head_dim=d.head_dim, n_rot=d.n_rot, n_ff=d.n_ff,
                     ssm_n_group=d.gdn_k_heads, ssm_dt_rank=d.gdn_v_heads, ssm_d_state=d.gdn_dim,
                     conv_kernel=d.conv_kernel, n_vocab=d.n_vocab, mtp=True, tied=False, n_ctx=4096,
                     rope_base=d.rope_base, eps=d.eps, wtype=wtype, name=name)


# =============================================================================================
# 4. training

def soft_ce(logits, target_probs, mask):
    import torch
    lp = torch.log_softmax(logits, dim=-1)
    per = -(target_probs * lp).sum(-1)
    return (per * mask).sum() / mask.sum().clamp(min=1)


def train(model, d: Dims, data: np.ndarray, a, val: np.ndarray | None = None, log_every: int = 25) -> dict:
    import torch
    import torch.nn.functional as F

    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    trunk_params = [p for n, p in model.named_parameters() if not n.startswith("mtp.")]
    mtp_params = [p for n, p in model.named_parameters() if n.startswith("mtp.")]

    def groups(ps):
        decay = [p for p in ps if p.ndim >= 2]
        nod = [p for p in ps if p.ndim < 2]
        return [{"params": decay, "weight_decay": a.wd}, {"params": nod, "weight_decay": 0.0}]

    opt = torch.optim.AdamW(groups(trunk_params) + groups(mtp_params), lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
    T, B = a.seq, a.batch
    budget = a.minutes * 60.0
    t0 = time.time()
    step, hist = 0, []
    K = a.mtp_steps
    wts = [float(x) for x in a.mtp_weights.split(",")][:K]
    wts += [wts[-1]] * (K - len(wts))
    phase2 = False
    n_max_steps = a.steps if a.steps else 10 ** 9
    Bm = max(1, int(round(B * a.mtp_batch_frac)))     # sequences that also train the head in phase 1
    mask_k = [torch.ones(B, T) for _ in range(K)]
    for k in range(K):
        mask_k[k][:, :k] = 0          # rows whose chain would start before position 0
    vrng = np.random.default_rng(123)
    vstarts = vrng.integers(0, len(val) - T - 1, size=8) if val is not None and len(val) > T + 1 else None

    def val_loss() -> float:
        if vstarts is None:
            return float("nan")
        with torch.no_grad():
            vi = torch.from_numpy(np.stack([val[s:s + T] for s in vstarts]).astype(np.int64))
            vt = torch.from_numpy(np.stack([val[s + 1:s + T + 1] for s in vstarts]).astype(np.int64))
            lg, _, _ = model(vi)
            return F.cross_entropy(lg.reshape(-1, d.n_vocab), vt.reshape(-1)).item()

    def lr_at(frac: float) -> float:
        warm = min(0.05, 50 / max(1, n_max_steps)) if a.steps else 0.03
        if frac < warm:
            return a.lr * frac / warm
        return a.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, (frac - warm) / (1 - warm)))))

    phase2_opt = None
    while True:
        el = time.time() - t0
        frac = step / n_max_steps if a.steps else el / budget
        if frac >= 1.0:
            break
        if not phase2 and frac >= 1.0 - a.mtp_phase and a.mtp_phase > 0:
            phase2 = True
            log(f"[train] step {step}: trunk frozen, training the MTP head alone from here")
            phase2_opt = torch.optim.AdamW(groups(mtp_params), lr=a.lr * 0.5, betas=(0.9, 0.95))
            p2_start = frac
        starts = rng.integers(0, len(data) - T - 1, size=B)
        ids = torch.from_numpy(np.stack([data[s:s + T] for s in starts]).astype(np.int64))
        tgt = torch.from_numpy(np.stack([data[s + 1:s + T + 1] for s in starts]).astype(np.int64))
        if not phase2:
            lr = lr_at(frac)
            for gp in opt.param_groups:
                gp["lr"] = lr
            logits, h, mtp = model(ids, mtp_steps=K, mtp_rows=Bm)
            lm = F.cross_entropy(logits.reshape(-1, d.n_vocab), tgt.reshape(-1))
            o = opt
        else:
            f2 = (frac - p2_start) / max(1e-9, 1.0 - p2_start)
            lr = a.lr * 0.5 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, f2))))
            for gp in phase2_opt.param_groups:
                gp["lr"] = lr
            logits, h, mtp = model(ids, mtp_steps=K, trunk_grad=False)
            lm = F.cross_entropy(logits.reshape(-1, d.n_vocab), tgt.reshape(-1)).detach()
            o = phase2_opt
        r = mtp[0].shape[0]
        with torch.no_grad():
            teacher = torch.softmax(logits[:r].detach(), dim=-1)
            onehot = F.one_hot(tgt[:r], d.n_vocab).float()
            target = (1 - a.mtp_true) * teacher + a.mtp_true * onehot
        mtp_losses = [soft_ce(m, target, mask_k[k][:r]) for k, m in enumerate(mtp)]
        loss = (lm if not phase2 else 0) + sum(w * l for w, l in zip(wts, mtp_losses))
        o.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        o.step()
        step += 1
        if step % log_every == 0 or step == 1:
            with torch.no_grad():
                acc = [((m.argmax(-1) == logits[:r].argmax(-1)).float() * mask_k[k][:r]).sum().item()
                       / mask_k[k][:r].sum().item() for k, m in enumerate(mtp)]
            el = time.time() - t0
            rec = {"step": step, "min": round(el / 60, 2), "lr": round(lr, 6), "lm": round(lm.item(), 4),
                   "mtp": [round(x.item(), 3) for x in mtp_losses], "mtp_match": [round(x, 3) for x in acc],
                   "tok_s": round(step * B * T / el)}
            if step % (log_every * 4) == 0 or step == 1:
                rec["val_lm"] = round(val_loss(), 4)
            hist.append(rec)
            log("[train] " + json.dumps(rec))
    return {"steps": step, "minutes": (time.time() - t0) / 60, "tokens": step * B * T, "val_lm": val_loss(),
            "history": hist[-5:]}


# =============================================================================================
# 5. parity with wgmtp's numpy reference

def parity_check(model, d: Dims, tok: TokenizerData, ids: list[int], tmpdir: Path, tol: float) -> dict:
    """Export F32, run wgmtp's numpy reference, compare trunk logits, MTP logits and chained MTP
    steps with the torch forward. Raises on a mismatch larger than `tol`."""
    import torch

    from wgmtp.models.qwen35 import GGUFModel
    from wgmtp.reference.model import RefModel

    path = tmpdir / "parity-f32.gguf"
    write_model(path, model_spec(d, "F32"), tok, model.export())
    gm = GGUFModel(str(path))
    ref = RefModel(gm)
    T = len(ids)
    with torch.no_grad():
        lg, h, mtp = model(torch.tensor([ids]), mtp_steps=3)
    lg, h = lg[0].numpy(), h[0].numpy()
    st = ref.new_state(n_ctx=T + 8)
    rl, rh = ref.forward(st, ids)
    d_trunk = float(np.max(np.abs(rl - lg)))
    # MTP step 1 over all positions: row p = (x_p, h_{p-1}), h_{-1} = 0
    h_in = np.concatenate([np.zeros((1, d.n_embd), np.float32), rh[:-1]])
    ml, _ = ref.mtp_forward(st, ids, h_in, 0)
    d_mtp1 = float(np.max(np.abs(ml - mtp[0][0].numpy())))
    # chained drafting as the speculative loop does it, from position p
    p = T - 4
    ref.mtp_forward(st, ids[:p], h_in[:p], 0)            # KV 0..p-1 from trunk hiddens
    l1, h1 = ref.mtp_forward(st, ids[p:p + 1], rh[p - 1:p], p)
    l2, h2 = ref.mtp_forward(st, ids[p + 1:p + 2], h1, p + 1)
    l3, _ = ref.mtp_forward(st, ids[p + 2:p + 3], h2, p + 2)
    d_chain = max(float(np.max(np.abs(l1[0] - mtp[0][0, p].numpy()))),
                  float(np.max(np.abs(l2[0] - mtp[1][0, p + 1].numpy()))),
                  float(np.max(np.abs(l3[0] - mtp[2][0, p + 2].numpy()))))
    res = {"trunk_logits_maxdiff": d_trunk, "mtp_logits_maxdiff": d_mtp1, "mtp_chain_maxdiff": d_chain,
           "logit_scale": float(np.max(np.abs(rl)))}
    log("[parity] torch vs wgmtp numpy reference (F32 export): " + json.dumps(res))
    if max(d_trunk, d_mtp1, d_chain) > tol:
        raise SystemExit(f"parity check failed (tolerance {tol}): {res} -- a layout bug in the export")
    return res


# =============================================================================================
# 6. evaluation through wgmtp

def evaluate(path: Path, prompts: list[str], n_tokens: int, device: str = "cpu", n_maxes=(1, 2, 3)) -> dict:
    import wgmtp
    m = wgmtp.load(str(path), device=device, n_ctx=512)
    res: dict = {"device": m.device_name, "prompts": len(prompts), "tokens_per_prompt": n_tokens}
    plain = []
    t0 = time.time()
    for p in prompts:
        plain.append(list(m.generate_ids(p, max_tokens=n_tokens)))
    res["plain_s"] = round(time.time() - t0, 1)
    mismatches = 0
    for n in n_maxes:
        acc = dr = rounds = 0
        per = np.zeros(n)
        t0 = time.time()
        for p, ref in zip(prompts, plain):
            out = list(m.generate_ids(p, max_tokens=n_tokens, spec="draft-mtp", n_max=n))
            mismatches += out != ref
            st = m.stats
            acc += st["accepted"]
            dr += st["drafted"]
            rounds += st["verify_rounds"]
            per += (np.array(st["acceptance_per_pos"][:n] + [0] * (n - len(st["acceptance_per_pos"][:n])))
                    * st["verify_rounds"])
        res[f"n_max={n}"] = {"acceptance": round(acc / max(1, dr), 4), "accepted": acc, "drafted": dr,
                             "mean_accepted_len": round(acc / max(1, rounds), 3),
                             "per_position": [round(x, 3) for x in (per / max(1, rounds))],
                             "seconds": round(time.time() - t0, 1)}
        log(f"[eval] n_max {n}: acceptance {acc / max(1, dr):.3f} ({acc}/{dr}), "
            f"mean accepted per round {acc / max(1, rounds):.2f}")
    res["mtp_equals_plain"] = mismatches == 0
    res["sample"] = {"prompt": prompts[0], "continuation": m.tokenizer.decode(plain[0])}
    return res


# =============================================================================================

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Train and export the wgmtp demo model (see the module docstring).")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--corpus", default=None, help="plain-text corpus instead of the Python docs (python3-doc)")
    ap.add_argument("--minutes", type=float, default=60.0, help="training time budget (wall clock)")
    ap.add_argument("--steps", type=int, default=0, help="train exactly this many steps instead of --minutes")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vocab", type=int, default=4096, help="ids in all: BPE (incl. 256 bytes) + 3 specials")
    ap.add_argument("--embd", type=int, default=256)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--ff", type=int, default=768)
    ap.add_argument("--gdn-k-heads", type=int, default=2)
    ap.add_argument("--gdn-v-heads", type=int, default=4)
    ap.add_argument("--gdn-dim", type=int, default=64)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--mtp-steps", type=int, default=3, help="chained MTP steps unrolled in training")
    ap.add_argument("--mtp-weights", default="1,1,1", help="loss weight per chained step")
    ap.add_argument("--mtp-true", type=float, default=0.2,
                    help="share of the true next token in the MTP target (the rest: the trunk's distribution)")
    ap.add_argument("--mtp-phase", type=float, default=0.2, help="final fraction of training for the MTP head alone")
    ap.add_argument("--mtp-batch-frac", type=float, default=0.25,
                    help="share of each batch that also trains the MTP head while the trunk trains")
    ap.add_argument("--save-ckpt", default=None, help="save the torch weights here after training")
    ap.add_argument("--init-ckpt", default=None, help="start from these torch weights")
    ap.add_argument("--type", default="Q8_0", help="weight type of the shipped file")
    ap.add_argument("--eval-prompts", type=int, default=12)
    ap.add_argument("--eval-tokens", type=int, default=64)
    ap.add_argument("--eval-device", default="cpu", help="wgmtp device for the evaluation (cpu = numpy reference)")
    ap.add_argument("--parity-tol", type=float, default=1e-3)
    ap.add_argument("--report", default=None, help="also write the summary as JSON here")
    a = ap.parse_args(argv)

    try:
        import torch
    except ImportError:
        raise SystemExit("torch is needed for training: pip install -e '.[train]'") from None
    torch.set_num_threads(a.threads)
    t_all = time.time()

    corpus = build_corpus(a.corpus)
    n_chars = sum(len(x) for x in corpus.train_docs)
    log(f"[corpus] {corpus.source}: {len(corpus.train_docs)} documents, {n_chars / 1e6:.2f} MB of text for "
        f"training, {len(corpus.heldout_paras)} held-out paragraphs")

    t0 = time.time()
    tokd, htok = train_tokenizer(corpus.train_docs, a.vocab)
    eot = tokd.pad_id
    ids: list[int] = []
    for enc in htok.encode_batch(corpus.train_docs):
        ids += enc.ids + [eot]
    data = np.array(ids, np.int32)
    log(f"[tokenizer] {len(tokd.tokens)} ids ({len(tokd.merges)} merges), {len(data)} training tokens "
        f"({n_chars / len(data):.2f} chars/token), {time.time() - t0:.1f} s")
    # the GGUF tokenizer of wgmtp must encode like the trainer's
    from wgmtp.tokenizer import Tokenizer as WTok
    wt = WTok(tokd.tokens, tokd.types, tokd.merges, pre="qwen35")
    sample = "\n\n".join(corpus.heldout_paras[:20]) or corpus.train_docs[0][:2000]
    if wt.encode(sample) != htok.encode(sample).ids:
        raise SystemExit("tokenizer mismatch between the trained BPE and wgmtp's GGUF tokenizer")

    d = Dims(n_embd=a.embd, n_layer=a.layers, n_head=a.heads, n_head_kv=a.kv_heads, head_dim=a.head_dim,
             n_ff=a.ff, gdn_k_heads=a.gdn_k_heads, gdn_v_heads=a.gdn_v_heads, gdn_dim=a.gdn_dim,
             n_vocab=len(tokd.tokens))
    model = build_torch(d)
    n_par = sum(p.numel() for p in model.parameters())
    n_mtp = sum(p.numel() for n, p in model.named_parameters() if n.startswith("mtp."))
    log(f"[model] {json.dumps(asdict(d))} n_rot={d.n_rot}: {n_par / 1e6:.2f} M parameters "
        f"({n_mtp / 1e6:.2f} M in the MTP head)")

    if a.init_ckpt:
        model.load_state_dict(torch.load(a.init_ckpt))
        log(f"[model] weights from {a.init_ckpt}")
    val = []
    for enc in htok.encode_batch(corpus.heldout_paras):
        val += enc.ids + [eot]
    tr = train(model, d, data, a, val=np.array(val, np.int32))
    if a.save_ckpt:
        torch.save(model.state_dict(), a.save_ckpt)
    log(f"[train] {tr['steps']} steps, {tr['tokens']} tokens, {tr['minutes']:.1f} min")
    model.eval()

    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as td:
        par = parity_check(model, d, tokd, [int(x) for x in data[:48]], Path(td), a.parity_tol)
    write_model(out, model_spec(d, a.type), tokd, model.export())
    size = out.stat().st_size
    log(f"[export] {out}: {size / 2**20:.2f} MiB ({a.type})")

    prompts = eval_prompts(corpus.heldout_paras, a.eval_prompts)
    ev = evaluate(out, prompts, a.eval_tokens, device=a.eval_device) if prompts else {}
    if ev:
        log(f"[eval] greedy MTP output == plain greedy output: {ev['mtp_equals_plain']}")
        log(f"[eval] sample: {ev['sample']['prompt']!r} -> {ev['sample']['continuation']!r}")
    summary = {"corpus": corpus.source, "train_chars": n_chars, "train_tokens_corpus": int(len(data)),
               "dims": asdict(d), "params": n_par, "params_mtp": n_mtp, "file": str(out), "file_bytes": size,
               "type": a.type, "train": tr, "parity": par, "eval": ev, "args": vars(a),
               "total_minutes": round((time.time() - t_all) / 60, 1)}
    if a.report:
        Path(a.report).write_text(json.dumps(summary, indent=1))
    log("[done] " + json.dumps({k: summary[k] for k in ("file_bytes", "params", "total_minutes")}))
    if ev and not ev["mtp_equals_plain"]:
        log("ERROR: greedy output with MTP differs from plain greedy output")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
