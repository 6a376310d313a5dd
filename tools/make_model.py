#!/usr/bin/env python3
"""Write synthetic qwen35 GGUFs in exactly the layout llama.cpp's converter writes.

Names, shapes, metadata keys and value conventions follow `reference/qwen35-mtp.md` and the
converter dumps in `reference/gguf-dumps/`: norms with +1 baked in (except `ssm_norm`),
`ssm_a = -exp(A_log)`, GDN value heads in the converter's tiled order (value head h reads key
head h % Hk), `attn_q` with query and gate interleaved per head, F32-forced tensors
(1-D, `ssm_conv1d`), llama.cpp's K-quant fallbacks for rows that are not a multiple of 256,
and the MTP block at index NL either in the same file or in an `mtp-*.gguf` sidecar.

Importable from tests (`from make_model import ModelSpec, make_model`) and a CLI:
    python tools/make_model.py out.gguf --embd 64 --layers 4 --type q8_0 --mtp
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as QT

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from wgmtp import quants  # noqa: E402

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")   # pad, -, eos (as in the dumps)

# Built-in corpus for the synthetic tokenizer: enough English to learn a few hundred merges.
_CORPUS = """\
The quick brown fox jumps over the lazy dog. A model reads every weight once per token, so
decoding is bound by memory bandwidth. Speculative decoding drafts a few tokens with a small
head and verifies them in one batch; the output is the same as plain decoding when the
verification is exact. The gated delta rule keeps a state matrix per head and writes one
rank-one update per token. Attention layers keep a cache of keys and values for every position.
Hello, world! How are you today? I am fine, thank you. What is the time? It is ten past nine.
One, two, three, four, five, six, seven, eight, nine, ten. Numbers like 42 and 3.14159 appear.
Grüße aus Köln, naïve café, 東京, Привет мир, emoji 🙂 and symbols like <, >, & and #.
def main():\n    print("hello")\n    return 0\n
"""


@dataclass
class ModelSpec:
    """Dimensions and options of a synthetic model. Defaults are tiny, for lavapipe tests."""
    n_embd: int = 64
    n_layer: int = 4                   # trunk layers
    layer_pattern: str | None = None   # e.g. "GGGA" repeated; None = full_attention_interval
    full_attention_interval: int = 4
    n_head: int = 4
    n_head_kv: int = 2
    head_dim: int = 16
    n_rot: int | None = None           # default head_dim // 4 (partial rotary 0.25)
    n_ff: int = 128
    ssm_n_group: int = 2               # Hk
    ssm_dt_rank: int = 4               # Hv (> Hk by default: exercises the tiled mapping)
    ssm_d_state: int = 16              # Dk = Dv
    conv_kernel: int = 4
    n_vocab: int | None = None         # None = tokenizer size (rounded up to 64)
    tokenizer_vocab: int = 384         # BPE vocab incl. 256 bytes, before specials
    mtp: bool = True
    tied: bool = False
    sidecar: bool = False              # write the MTP block to mtp-<name>.gguf instead
    n_ctx: int = 4096
    rope_base: float = 1e7
    eps: float = 1e-6
    wtype: str = "F32"                 # file-wide weight type, or "Q4_K_M"
    types: dict[str, str] = field(default_factory=dict)   # per tensor class overrides
    # overrides for the tensors llama.cpp's converter keeps in F32 (1-D ones, conv taps, routers):
    # files from other writers store them in F16 or BF16
    small_types: dict[str, str] = field(default_factory=dict)
    recurrent_layers_key: bool = True  # write qwen35.attention.recurrent_layers
    seed: int = 0
    name: str = "wgmtp-synthetic"
    # A "predictable" model for speculative tests: block outputs scaled by block_out_scale make the
    # next token depend mostly on the current one, and mtp_copy makes the MTP head pass the token
    # embedding straight through eh_proj, so it predicts what the trunk will: drafts are then
    # accepted often, but not always (random weights alone give ~0 acceptance).
    block_out_scale: float = 1.0
    mtp_copy: bool = False
    # qwen35moe: n_expert > 0 writes the MoE architecture (router, experts, shared expert)
    n_expert: int = 0
    n_expert_used: int = 2
    n_ff_exp: int = 64
    n_ff_shexp: int = 64             # 0 = no shared expert
    fused_gate_up: bool = False      # ffn_gate_up_exps instead of ffn_gate_exps + ffn_up_exps
    shexp_gate_2d: bool = False      # store ffn_gate_inp_shexp as {E, 1} instead of {E}

    @property
    def arch(self) -> str:
        return "qwen35moe" if self.n_expert > 0 else "qwen35"

    @property
    def rot(self) -> int:
        return self.n_rot if self.n_rot is not None else max(2, self.head_dim // 4)

    def is_gdn(self) -> list[bool]:
        if self.layer_pattern:
            pat = self.layer_pattern.replace(" ", "")
            return [pat[i % len(pat)] == "G" for i in range(self.n_layer)]
        return [(i + 1) % self.full_attention_interval != 0 for i in range(self.n_layer)]


# --------------------------------------------------------------------------------------------
# tokenizer

@dataclass
class TokenizerData:
    tokens: list[str]
    types: list[int]
    merges: list[str]
    eos_id: int
    pad_id: int


def build_tokenizer(vocab_size: int = 384, corpus: str = _CORPUS, n_vocab: int | None = None) -> TokenizerData:
    """Train a tiny byte-level BPE with the `tokenizers` library and lay it out as GGUF does."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tok.train_from_iterator([corpus] * 4, trainer=trainer)
    vocab = tok.get_vocab()
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    model = tok.to_str()
    import json
    merges_raw = json.loads(model)["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges_raw]
    types = [1] * len(tokens)
    base = len(tokens)
    tokens += list(SPECIAL_TOKENS)
    types += [3] * len(SPECIAL_TOKENS)
    total = n_vocab if n_vocab is not None else -(-len(tokens) // 64) * 64
    if total < len(tokens):
        raise ValueError(f"n_vocab {total} is smaller than the tokenizer ({len(tokens)} tokens)")
    for i in range(len(tokens), total):
        tokens.append(f"[PAD{i}]")
        types.append(5)
    return TokenizerData(tokens=tokens, types=types, merges=merges, eos_id=base + 2, pad_id=base)


# --------------------------------------------------------------------------------------------
# weights

def _class_of(name: str) -> str:
    """Tensor class used for per-class types: 'blk.3.attn_q.weight' -> 'attn_q'."""
    parts = name.split(".")
    if parts[0] == "blk":
        return ".".join(parts[2:-1]) if parts[-1] in ("weight", "bias") else ".".join(parts[2:])
    return parts[0]


def build_weights(spec: ModelSpec, n_vocab: int) -> dict[str, np.ndarray]:
    """Random float32 weights in GGUF layout (numpy order), scaled so activations stay sane.

    The values are drawn in the converter's conventions directly: norm weights already hold
    the +1, `ssm_a` is negative, GDN value heads are in the tiled order. (For random weights a
    permutation of random values is again random, so drawing them in HF order first and
    permuting would not change anything observable.)
    """
    rng = np.random.default_rng(spec.seed)
    E, H, Hkv, D, F = spec.n_embd, spec.n_head, spec.n_head_kv, spec.head_dim, spec.n_ff
    Hk, Hv, S, Kc = spec.ssm_n_group, spec.ssm_dt_rank, spec.ssm_d_state, spec.conv_kernel
    key_dim, value_dim = Hk * S, Hv * S
    conv_dim = 2 * key_dim + value_dim

    def lin(out: int, inp: int, gain: float = 1.0) -> np.ndarray:
        return (rng.standard_normal((out, inp)) * (gain / np.sqrt(inp))).astype(np.float32)

    def norm(n: int, plus_one: bool = True) -> np.ndarray:
        w = rng.standard_normal(n).astype(np.float32) * 0.1
        return (w + 1.0).astype(np.float32) if plus_one else (1.0 + w).astype(np.float32)

    W: dict[str, np.ndarray] = {}
    W["token_embd.weight"] = rng.standard_normal((n_vocab, E)).astype(np.float32)
    W["output_norm.weight"] = norm(E)
    if not spec.tied:
        W["output.weight"] = lin(n_vocab, E, 3.0)

    def attn_block(i: int) -> None:
        W[f"blk.{i}.attn_norm.weight"] = norm(E)
        W[f"blk.{i}.attn_q.weight"] = lin(2 * H * D, E)      # per head: [q (D) | gate (D)]
        W[f"blk.{i}.attn_k.weight"] = lin(Hkv * D, E)
        W[f"blk.{i}.attn_v.weight"] = lin(Hkv * D, E)
        W[f"blk.{i}.attn_q_norm.weight"] = norm(D)
        W[f"blk.{i}.attn_k_norm.weight"] = norm(D)
        W[f"blk.{i}.attn_output.weight"] = lin(E, H * D, 0.7 * spec.block_out_scale)
        W[f"blk.{i}.post_attention_norm.weight"] = norm(E)

    def ffn(i: int) -> None:
        p = f"blk.{i}."
        if spec.n_expert <= 0:
            W[p + "ffn_gate.weight"] = lin(F, E)
            W[p + "ffn_up.weight"] = lin(F, E)
            W[p + "ffn_down.weight"] = lin(E, F, 0.7 * spec.block_out_scale)
            return
        NE, Fe, Fs = spec.n_expert, spec.n_ff_exp, spec.n_ff_shexp
        W[p + "ffn_gate_inp.weight"] = lin(NE, E, 3.0)                   # router: F32, a few clear winners
        gate = np.stack([lin(Fe, E) for _ in range(NE)])
        up = np.stack([lin(Fe, E) for _ in range(NE)])
        if spec.fused_gate_up:
            W[p + "ffn_gate_up_exps.weight"] = np.concatenate([gate, up], axis=1)   # per expert: gate rows, then up
        else:
            W[p + "ffn_gate_exps.weight"], W[p + "ffn_up_exps.weight"] = gate, up
        W[p + "ffn_down_exps.weight"] = np.stack([lin(E, Fe, 0.7 * spec.block_out_scale) for _ in range(NE)])
        if Fs:
            g = (rng.standard_normal(E) / np.sqrt(E)).astype(np.float32)
            W[p + "ffn_gate_inp_shexp.weight"] = g[:, None].T.copy() if spec.shexp_gate_2d else g
            W[p + "ffn_gate_shexp.weight"] = lin(Fs, E)
            W[p + "ffn_up_shexp.weight"] = lin(Fs, E)
            W[p + "ffn_down_shexp.weight"] = lin(E, Fs, 0.7 * spec.block_out_scale)

    flags = spec.is_gdn()
    for i in range(spec.n_layer):
        if flags[i]:
            W[f"blk.{i}.attn_norm.weight"] = norm(E)
            W[f"blk.{i}.attn_qkv.weight"] = lin(conv_dim, E)
            W[f"blk.{i}.attn_gate.weight"] = lin(value_dim, E)
            W[f"blk.{i}.ssm_conv1d.weight"] = (rng.standard_normal((conv_dim, Kc)) * 0.5).astype(np.float32)
            W[f"blk.{i}.ssm_dt.bias"] = (rng.standard_normal(Hv) * 0.5).astype(np.float32)
            a_log = np.log(rng.uniform(0.5, 8.0, Hv))
            W[f"blk.{i}.ssm_a"] = (-np.exp(a_log)).astype(np.float32)
            W[f"blk.{i}.ssm_beta.weight"] = lin(Hv, E)
            W[f"blk.{i}.ssm_alpha.weight"] = lin(Hv, E)
            W[f"blk.{i}.ssm_norm.weight"] = norm(S, plus_one=False)
            W[f"blk.{i}.ssm_out.weight"] = lin(E, value_dim, 0.7 * spec.block_out_scale)
            W[f"blk.{i}.post_attention_norm.weight"] = norm(E)
        else:
            attn_block(i)
        ffn(i)
    if spec.mtp:
        m = spec.n_layer
        W[f"blk.{m}.nextn.eh_proj.weight"] = lin(E, 2 * E)   # columns: [embedding | hidden]
        if spec.mtp_copy:
            W[f"blk.{m}.nextn.eh_proj.weight"][:, :E] = np.eye(E, dtype=np.float32)
            W[f"blk.{m}.nextn.eh_proj.weight"][:, E:] *= 0.1
        W[f"blk.{m}.nextn.enorm.weight"] = norm(E)
        W[f"blk.{m}.nextn.hnorm.weight"] = norm(E)
        W[f"blk.{m}.nextn.shared_head_norm.weight"] = norm(E)
        attn_block(m)
        ffn(m)
        if spec.mtp_copy:
            W[f"blk.{m}.nextn.shared_head_norm.weight"] = W["output_norm.weight"].copy()
    return W


# --------------------------------------------------------------------------------------------
# types

_FILE_TYPES = {"F32": 0, "F16": 1, "BF16": 32, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9,
               "Q4_K": 14, "Q5_K": 16, "Q6_K": 18, "Q4_K_M": 15,
               # llama_ftype of each single type added with issue 20 (Q3_K: its _S mix, MXFP4: MXFP4_MOE)
               "Q2_K": 10, "Q3_K": 11, "IQ2_XXS": 19, "IQ2_XS": 20, "IQ3_XXS": 23, "IQ1_S": 24, "IQ4_NL": 25,
               "IQ3_S": 26, "IQ2_S": 28, "IQ4_XS": 30, "IQ1_M": 31, "MXFP4": 38}
_F32_FORCED = ("ssm_conv1d", "ffn_gate_inp", "ffn_gate_inp_shexp")
_KQUANT_FALLBACK = {QT.Q4_K: QT.Q5_0, QT.Q5_K: QT.Q5_1, QT.Q6_K: QT.Q8_0,
                    # llama.cpp's fallbacks for rows that are not whole 256-blocks
                    QT.Q2_K: QT.Q4_0, QT.Q3_K: QT.Q4_0, QT.IQ4_XS: QT.IQ4_NL, QT.IQ3_XXS: QT.IQ4_NL,
                    QT.IQ3_S: QT.IQ4_NL, QT.IQ2_XXS: QT.IQ4_NL, QT.IQ2_XS: QT.IQ4_NL, QT.IQ2_S: QT.IQ4_NL,
                    QT.IQ1_S: QT.IQ4_NL, QT.IQ1_M: QT.IQ4_NL}


def _use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def tensor_type(spec: ModelSpec, name: str, arr: np.ndarray, ctx: dict) -> QT:
    """The ggml type a tensor is written in, following llama.cpp's quantizer rules."""
    cls = _class_of(name)
    if arr.ndim == 1 or cls in _F32_FORCED:
        return QT[spec.small_types[cls].upper()] if cls in spec.small_types else QT.F32
    if cls in spec.types:
        t = QT[spec.types[cls].upper()]
    elif spec.wtype.upper() == "Q4_K_M":
        t = QT.Q4_K
        layer = int(name.split(".")[1]) if name.startswith("blk.") else -1
        if cls == "output":
            t = QT.Q6_K
        elif cls == "token_embd":
            t = QT.Q6_K if spec.tied else QT.Q4_K
        elif cls in ("attn_qkv", "attn_v"):
            idx = ctx.setdefault("attn_v_seen", 0)
            ctx["attn_v_seen"] = idx + 1
            t = QT.Q6_K if _use_more_bits(idx, ctx["n_attn_v"]) else QT.Q4_K
        elif cls in ("ffn_down", "ffn_down_exps", "ffn_down_shexp"):
            t = QT.Q6_K if _use_more_bits(layer, ctx["n_layer_all"]) else QT.Q4_K
    else:
        t = QT[spec.wtype.upper()]
    cols = arr.shape[-1]
    if t in _KQUANT_FALLBACK and cols % 256 != 0:
        t = _KQUANT_FALLBACK[t]
    blk = gguf.GGML_QUANT_SIZES[t][0]
    if cols % blk != 0:
        t = QT.F16
    return t


# --------------------------------------------------------------------------------------------
# writing

def _write(path: Path, spec: ModelSpec, tok: TokenizerData, tensors: list[tuple[str, np.ndarray, QT]],
           *, block_count: int, n_mtp: int, file_type: int) -> None:
    a = spec.arch
    w = gguf.GGUFWriter(str(path), arch=a)
    w.add_type("model")
    w.add_name(spec.name)
    w.add_block_count(block_count)
    w.add_context_length(spec.n_ctx)
    w.add_embedding_length(spec.n_embd)
    if spec.n_expert > 0:
        w.add_expert_count(spec.n_expert)
        w.add_expert_used_count(spec.n_expert_used)
        w.add_expert_feed_forward_length(spec.n_ff_exp)
        if spec.n_ff_shexp:
            w.add_expert_shared_feed_forward_length(spec.n_ff_shexp)
    else:
        w.add_feed_forward_length(spec.n_ff)
    w.add_head_count(spec.n_head)
    w.add_head_count_kv(spec.n_head_kv)
    half = spec.rot // 2   # IMROPE sections t,h,w cover every rotary pair ([11, 11, 10, 0] for R=64)
    w.add_rope_dimension_sections([half // 3 + (1 if i < half % 3 else 0) for i in range(3)] + [0])
    w.add_rope_freq_base(spec.rope_base)
    w.add_layer_norm_rms_eps(spec.eps)
    w.add_key_length(spec.head_dim)
    w.add_value_length(spec.head_dim)
    w.add_file_type(file_type)
    if n_mtp:
        w.add_nextn_predict_layers(n_mtp)
    w.add_ssm_conv_kernel(spec.conv_kernel)
    w.add_ssm_state_size(spec.ssm_d_state)
    w.add_ssm_group_count(spec.ssm_n_group)
    w.add_ssm_time_step_rank(spec.ssm_dt_rank)
    w.add_ssm_inner_size(spec.ssm_dt_rank * spec.ssm_d_state)
    if spec.recurrent_layers_key:
        flags = spec.is_gdn() + [False] * (block_count - spec.n_layer)
        w.add_array(f"{a}.attention.recurrent_layers", flags)
    w.add_full_attention_interval(spec.full_attention_interval)
    w.add_rope_dimension_count(spec.rot)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen35")
    w.add_token_list(tok.tokens)
    w.add_token_types(tok.types)
    w.add_token_merges(tok.merges)
    w.add_eos_token_id(tok.eos_id)
    w.add_pad_token_id(tok.pad_id)
    w.add_add_bos_token(False)
    w.add_add_eos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)
    for name, arr, t in tensors:
        data = quants.quantize(arr.reshape(-1, arr.shape[-1]) if arr.ndim > 1 else arr[None], t)
        if arr.ndim == 1:
            data = data.reshape(arr.shape[0]) if t in (QT.F32, QT.F16) else data[0]
        else:   # keep 3-D expert tensors 3-D ({in, out, NE} in GGUF)
            data = data.reshape(arr.shape[:-1] + data.shape[-1:])
        w.add_tensor(name, data, raw_dtype=t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def sidecar_path(path: Path) -> Path:
    return path.with_name("mtp-" + path.name)


def make_model(path: str | Path, spec: ModelSpec | None = None, **overrides) -> Path:
    """Write the model (and with `spec.sidecar`, its `mtp-*.gguf`) and return the main path."""
    spec = replace(spec or ModelSpec(), **overrides)
    tok = build_tokenizer(spec.tokenizer_vocab, n_vocab=spec.n_vocab)
    return write_model(path, spec, tok, build_weights(spec, len(tok.tokens)))


def write_model(path: str | Path, spec: ModelSpec, tok: TokenizerData, W: dict[str, np.ndarray]) -> Path:
    """The GGUF writer behind make_model, for any weights in GGUF layout (numpy order, float32):
    trained models (tools/train_demo.py) export through it too. `spec` gives the dimensions,
    types (`wtype`, `types`), MTP/sidecar choice and name; `tok` the tokenizer."""
    path = Path(path)
    ctx = {"n_attn_v": spec.n_layer + (1 if spec.mtp else 0), "n_layer_all": spec.n_layer + (1 if spec.mtp else 0)}
    typed = [(n, a, tensor_type(spec, n, a, ctx)) for n, a in W.items()]
    ft = _FILE_TYPES.get(spec.wtype.upper(), 0)
    mtp_prefix = f"blk.{spec.n_layer}."
    if spec.mtp and spec.sidecar:
        trunk = [x for x in typed if not x[0].startswith(mtp_prefix)]
        _write(path, spec, tok, trunk, block_count=spec.n_layer, n_mtp=0, file_type=ft)
        side_globals = ("token_embd.weight", "output_norm.weight", "output.weight")
        side = [x for x in typed if x[0].startswith(mtp_prefix) or x[0] in side_globals]
        _write(sidecar_path(path), spec, tok, side, block_count=spec.n_layer + 1, n_mtp=1, file_type=ft)
    else:
        _write(path, spec, tok, typed, block_count=spec.n_layer + (1 if spec.mtp else 0),
               n_mtp=1 if spec.mtp else 0, file_type=ft)
    return path


# The configurations of the reference's table (shared/reference/qwen35-mtp.md, 0.3): real widths
# and the real 248,320-token vocabulary (the embedding's rows; the tokenizer stays the synthetic
# one). Layers can be lowered with --layers where the machine cannot hold a model (the width, what
# a mat-vec and the LM head cost, is kept). The reference's table has no 2B, 4B or 9B row: theirs
# are the published HF configs as reported (E, layers, heads, GDN heads, FFN, tying; the 9B's
# 16 q / 32 v GDN heads are also in ../shared/research/anchors.md), for speed at their widths only:
# a real file's own GGUF keys decide.
REAL_VOCAB = 248320
PRESETS: dict[str, dict] = {
    "0.8B": dict(n_embd=1024, n_layer=24, n_head=8, n_head_kv=2, head_dim=256, n_rot=64, n_ff=3584,
                 ssm_n_group=16, ssm_dt_rank=16, ssm_d_state=128, n_vocab=REAL_VOCAB, tied=True),
    "2B": dict(n_embd=2048, n_layer=24, n_head=8, n_head_kv=2, head_dim=256, n_rot=64, n_ff=6144,
               ssm_n_group=16, ssm_dt_rank=16, ssm_d_state=128, n_vocab=REAL_VOCAB, tied=True),
    "4B": dict(n_embd=2560, n_layer=32, n_head=16, n_head_kv=4, head_dim=256, n_rot=64, n_ff=9216,
               ssm_n_group=16, ssm_dt_rank=32, ssm_d_state=128, n_vocab=REAL_VOCAB, tied=True),
    "9B": dict(n_embd=4096, n_layer=32, n_head=16, n_head_kv=4, head_dim=256, n_rot=64, n_ff=12288,
               ssm_n_group=16, ssm_dt_rank=32, ssm_d_state=128, n_vocab=REAL_VOCAB),
    "27B": dict(n_embd=5120, n_layer=64, n_head=24, n_head_kv=4, head_dim=256, n_rot=64, n_ff=17408,
                ssm_n_group=16, ssm_dt_rank=48, ssm_d_state=128, n_vocab=REAL_VOCAB),
    "35B-A3B": dict(n_embd=2048, n_layer=40, n_head=16, n_head_kv=2, head_dim=256, n_rot=64, n_ff=512,
                    ssm_n_group=16, ssm_dt_rank=32, ssm_d_state=128, n_vocab=REAL_VOCAB, n_expert=256,
                    n_expert_used=8, n_ff_exp=512, n_ff_shexp=512),
}

# command-line flag -> ModelSpec field
_FLAGS = {"embd": "n_embd", "layers": "n_layer", "pattern": "layer_pattern", "heads": "n_head", "kv_heads": "n_head_kv",
          "head_dim": "head_dim", "rot": "n_rot", "ff": "n_ff", "gdn_k_heads": "ssm_n_group",
          "gdn_v_heads": "ssm_dt_rank", "gdn_dim": "ssm_d_state", "vocab": "n_vocab",
          "tokenizer_vocab": "tokenizer_vocab", "type": "wtype", "mtp": "mtp", "tied": "tied", "sidecar": "sidecar",
          "seed": "seed", "experts": "n_expert", "experts_used": "n_expert_used"}


def spec_of(preset: str | None = None, **given) -> ModelSpec:
    """A ModelSpec from a preset (PRESETS) with the given fields over it (None: not given)."""
    if preset is not None and preset not in PRESETS:
        raise SystemExit(f"--preset {preset}: one of {', '.join(PRESETS)}")
    kw = dict(PRESETS.get(preset, {}))
    kw.update({k: v for k, v in given.items() if v is not None})
    return ModelSpec(**kw)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--preset", default=None, help=f"a real configuration: {', '.join(PRESETS)} (flags override it)")
    ap.add_argument("--embd", type=int)
    ap.add_argument("--layers", type=int)
    ap.add_argument("--pattern", default=None, help="layer pattern, e.g. GGGA")
    ap.add_argument("--heads", type=int)
    ap.add_argument("--kv-heads", type=int)
    ap.add_argument("--head-dim", type=int)
    ap.add_argument("--rot", type=int, default=None)
    ap.add_argument("--ff", type=int)
    ap.add_argument("--gdn-k-heads", type=int)
    ap.add_argument("--gdn-v-heads", type=int)
    ap.add_argument("--gdn-dim", type=int)
    ap.add_argument("--vocab", type=int, default=None)
    ap.add_argument("--tokenizer-vocab", type=int)
    ap.add_argument("--experts", type=int, help="MoE: experts (0: dense)")
    ap.add_argument("--experts-used", type=int)
    ap.add_argument("--type", default=None,
                    help="F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q4_K Q5_K Q6_K Q4_K_M, and Q2_K Q3_K IQ4_NL IQ4_XS "
                    "MXFP4 IQ3_XXS IQ3_S IQ2_XXS IQ2_XS IQ2_S IQ1_S IQ1_M (wgmtp's round-to-nearest writers)")
    ap.add_argument("--mtp", action=argparse.BooleanOptionalAction, default=None)
    ap.add_argument("--tied", action="store_true", default=None)
    ap.add_argument("--sidecar", action="store_true", default=None, help="write the MTP block to mtp-<name>.gguf")
    ap.add_argument("--seed", type=int)
    a = ap.parse_args(argv)
    spec = spec_of(a.preset, **{field: getattr(a, flag) for flag, field in _FLAGS.items()})
    p = make_model(a.out, spec)
    print(p)
    if spec.sidecar and spec.mtp:
        print(sidecar_path(p))
    return 0


if __name__ == "__main__":
    sys.exit(main())
