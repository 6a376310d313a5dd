"""Open a qwen35 GGUF (and an optional MTP sidecar), validate it, and describe it.

Everything is memory-mapped through `gguf_reader.GGUFReader` (a fast stand-in for gguf-py's reader,
which needs seconds for a 248k-token vocabulary): nothing is copied until a tensor is used.
The result is a typed `ModelConfig` and a tensor catalog (name, ggml type, shape, absolute file
offset) that the numpy reference and the GPU uploader both read from.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from gguf import GGMLQuantizationType as QT, GGUFValueType as VT

from .errors import (
    BadMetadataError, GGUFError, MissingTensorError, NotGGUFError, ShapeMismatchError,
    TruncatedGGUFError, UnsupportedArchError, UnsupportedTensorTypeError,
)
from .gguf_reader import GGUFReader

SUPPORTED_TYPES = (QT.F32, QT.F16, QT.BF16, QT.Q8_0, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1,
                   QT.Q4_K, QT.Q5_K, QT.Q6_K)
ARCHS = ("qwen35", "qwen35moe")
KNOWN_UNSUPPORTED_ARCHS = {"qwen3next": "qwen3next is not supported (different V-head order)"}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the catalog. `shape` is in GGUF order (ne0 first, the contiguous dim)."""
    name: str
    qtype: QT
    shape: tuple[int, ...]
    offset: int            # absolute byte offset in `path`
    n_bytes: int
    path: str

    @property
    def np_shape(self) -> tuple[int, ...]:
        """numpy order: `{in, out}` in GGUF is `[out, in]`."""
        return tuple(reversed(self.shape))

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape))


@dataclass(frozen=True)
class ModelConfig:
    """The hyper-parameters of a qwen35 model, read and checked from GGUF metadata."""
    arch: str
    n_embd: int                 # E
    n_layer: int                # NL: trunk layers
    block_count: int            # NL + MTP layers
    n_mtp: int                  # nextn_predict_layers (0 or 1)
    n_ctx_train: int
    n_ff: int                   # F
    n_head: int                 # H
    n_head_kv: int              # Hkv
    head_dim: int               # D
    n_rot: int                  # R
    rope_base: float
    eps: float
    conv_kernel: int            # Kc
    ssm_d_state: int            # Dk (= Dv)
    ssm_n_group: int            # Hk
    ssm_dt_rank: int            # Hv
    ssm_d_inner: int            # value_dim = Hv*Dv
    is_gdn: tuple[bool, ...]    # per block (length block_count); MTP blocks False
    n_vocab: int                # rows of token_embd
    tied_embeddings: bool
    file_type: int | None = None
    rope_sections: tuple[int, ...] = ()
    n_expert: int = 0           # NE (qwen35moe); 0 = dense FFN
    n_expert_used: int = 0      # k
    n_ff_exp: int = 0           # Fe
    n_ff_shexp: int = 0         # Fs (0 = no shared expert)

    @property
    def is_moe(self) -> bool:
        return self.n_expert > 0

    @property
    def head_k_dim(self) -> int:          # Dk
        return self.ssm_d_state

    @property
    def head_v_dim(self) -> int:          # Dv
        return self.ssm_d_inner // self.ssm_dt_rank

    @property
    def key_dim(self) -> int:
        return self.ssm_n_group * self.ssm_d_state

    @property
    def value_dim(self) -> int:
        return self.ssm_d_inner

    @property
    def conv_dim(self) -> int:
        return 2 * self.key_dim + self.value_dim

    @property
    def mtp_layer(self) -> int:
        """Block index of the (first) MTP block: it follows the trunk."""
        return self.n_layer

    def layer_kinds(self) -> str:
        """A compact pattern: G = GDN, A = gated attention, e.g. 'GGGA GGGA'."""
        s = "".join("G" if g else "A" for g in self.is_gdn[: self.n_layer])
        return " ".join(s[i:i + 4] for i in range(0, len(s), 4))


# --------------------------------------------------------------------------------------------
# metadata access

class _Meta:
    """Typed access to a reader's key/value fields, raising BadMetadataError on misuse."""

    def __init__(self, reader: GGUFReader, path: str) -> None:
        self.r = reader
        self.path = path

    def has(self, key: str) -> bool:
        return key in self.r.fields

    def raw(self, key: str) -> Any:
        f = self.r.fields.get(key)
        if f is None:
            return None
        try:
            return f.contents()
        except Exception as e:  # malformed field
            raise BadMetadataError(self.path, f"metadata key '{key}' cannot be read ({e})") from None

    def is_array(self, key: str) -> bool:
        f = self.r.fields.get(key)
        return f is not None and bool(f.types) and f.types[0] == VT.ARRAY

    def int(self, key: str, default: int | None = None, *, required: bool = False) -> int:
        v = self.raw(key)
        if v is None:
            if required:
                raise BadMetadataError(self.path, f"required metadata key '{key}' is missing")
            return default  # type: ignore[return-value]
        if isinstance(v, list):
            raise BadMetadataError(self.path, f"metadata key '{key}' is an array where a number was expected")
        if isinstance(v, (str, bytes)) or isinstance(v, float) and not float(v).is_integer():
            raise BadMetadataError(self.path, f"metadata key '{key}' = {v!r} is not an integer")
        return int(v)

    def int_or_array(self, key: str, default: int | None = None, *, required: bool = False) -> int | list[int]:
        if self.is_array(key):
            v = self.raw(key)
            try:
                return [int(x) for x in v]
            except (TypeError, ValueError):
                raise BadMetadataError(self.path, f"metadata key '{key}' is not an integer array") from None
        return self.int(key, default, required=required)

    def float(self, key: str, default: float | None = None, *, required: bool = False) -> float:
        v = self.raw(key)
        if v is None:
            if required:
                raise BadMetadataError(self.path, f"required metadata key '{key}' is missing")
            return default  # type: ignore[return-value]
        if isinstance(v, (list, str)):
            raise BadMetadataError(self.path, f"metadata key '{key}' = {v!r} is not a number")
        return float(v)

    def str(self, key: str, default: str | None = None) -> str | None:
        v = self.raw(key)
        if v is None:
            return default
        if not isinstance(v, str):
            raise BadMetadataError(self.path, f"metadata key '{key}' is not a string")
        return v


def open_reader(path: str | os.PathLike[str]) -> GGUFReader:
    """Open a GGUF with the fast reader, turning its failures into one-line GGUFErrors."""
    p = Path(path)
    if not p.exists():
        raise GGUFError(p, "no such file")
    if p.is_dir():
        raise GGUFError(p, "is a directory, not a GGUF file")
    try:
        size = p.stat().st_size
        with open(p, "rb") as fh:
            head = fh.read(8)
    except OSError as e:
        raise GGUFError(p, f"cannot be read ({e.strerror or e})") from None
    if size < 24 or head[:4] != b"GGUF":
        if head[:4] == b"GGUF":
            raise TruncatedGGUFError(p, f"truncated: only {size} bytes, shorter than a GGUF header")
        raise NotGGUFError(p, "not a GGUF file (bad magic; expected 'GGUF')")
    try:
        reader = GGUFReader(p)
    except ValueError as e:
        msg = str(e)
        if "big-endian" in msg:
            raise NotGGUFError(p, msg) from None
        if "is not a valid GGMLQuantizationType" in msg:
            raise UnsupportedTensorTypeError(p, f"a tensor has an unknown ggml type ({msg})") from None
        if "version" in msg:
            raise NotGGUFError(p, f"unsupported GGUF version ({msg})") from None
        raise TruncatedGGUFError(p, f"header is truncated or corrupt ({msg})") from None
    except (IndexError, OverflowError, MemoryError, UnicodeDecodeError, KeyError) as e:
        raise TruncatedGGUFError(p, f"header is truncated or corrupt ({type(e).__name__}: {e})") from None
    # Tensor data must lie inside the file (the reader maps tensor views lazily, so check here).
    for t in reader.tensors:
        end = int(t.data_offset) + int(t.n_bytes)
        if end > size:
            raise TruncatedGGUFError(p, f"truncated: tensor '{t.name}' needs bytes up to {end} "
                                        f"but the file has {size}")
    return reader


# --------------------------------------------------------------------------------------------
# config

def _layer_flags(meta: _Meta, arch: str, block_count: int, n_layer: int) -> tuple[bool, ...]:
    key = f"{arch}.attention.recurrent_layers"
    if meta.has(key):
        v = meta.raw(key)
        if not isinstance(v, list) or len(v) != block_count:
            raise BadMetadataError(meta.path, f"'{key}' must be a bool array of length block_count="
                                              f"{block_count}, got {len(v) if isinstance(v, list) else v!r}")
        flags = tuple(bool(x) for x in v)
        if any(flags[n_layer:]):
            raise BadMetadataError(meta.path, f"'{key}' marks an MTP block (index >= {n_layer}) as recurrent")
        return flags
    interval = meta.int(f"{arch}.full_attention_interval", 4)
    if interval < 1:
        raise BadMetadataError(meta.path, f"'{arch}.full_attention_interval' = {interval} must be >= 1")
    return tuple(i < n_layer and (i + 1) % interval != 0 for i in range(block_count))


def _uniform(meta: _Meta, key: str, v: int | list[int], flags: Iterable[bool]) -> int:
    """Per-layer arrays are accepted when every layer that uses the value agrees."""
    if isinstance(v, int):
        return v
    vals = {x for x, use in zip(v, flags) if use and x != 0}
    if len(vals) > 1:
        raise BadMetadataError(meta.path, f"'{key}' varies per layer ({sorted(vals)}); not supported")
    return vals.pop() if vals else 0


def _check(path: str, cond: bool, msg: str) -> None:
    if not cond:
        raise BadMetadataError(path, msg)


def read_config(reader: GGUFReader, path: str, tensors: dict[str, TensorInfo]) -> ModelConfig:
    """Read and validate the qwen35 hyper-parameters of one file."""
    meta = _Meta(reader, path)
    arch = meta.str("general.architecture")
    if arch is None:
        raise BadMetadataError(path, "required metadata key 'general.architecture' is missing")
    if arch not in ARCHS:
        why = KNOWN_UNSUPPORTED_ARCHS.get(arch, f"architecture '{arch}' is not supported (wgmtp runs qwen35 and qwen35moe)")
        raise UnsupportedArchError(path, why)
    a = arch
    block_count = meta.int(f"{a}.block_count", required=True)
    _check(path, 1 <= block_count <= 4096, f"'{a}.block_count' = {block_count} is absurd (expected 1..4096)")
    n_mtp = meta.int(f"{a}.nextn_predict_layers", 0)
    _check(path, 0 <= n_mtp <= 1, f"'{a}.nextn_predict_layers' = {n_mtp}: only 0 or 1 MTP block is supported")
    n_layer = block_count - n_mtp
    _check(path, n_layer >= 1, f"'{a}.block_count' = {block_count} leaves no trunk layer after {n_mtp} MTP block(s)")
    is_gdn = _layer_flags(meta, a, block_count, n_layer)
    attn_flags = [not g for g in is_gdn]

    E = meta.int(f"{a}.embedding_length", required=True)
    _check(path, 1 <= E <= 1 << 16, f"'{a}.embedding_length' = {E} is absurd (expected 1..65536)")
    H = _uniform(meta, f"{a}.attention.head_count",
                 meta.int_or_array(f"{a}.attention.head_count", required=True), attn_flags)
    Hkv = _uniform(meta, f"{a}.attention.head_count_kv",
                   meta.int_or_array(f"{a}.attention.head_count_kv", H), attn_flags)
    _check(path, H >= 1, f"'{a}.attention.head_count' = {H}: need at least one attention head")
    _check(path, Hkv >= 1, f"'{a}.attention.head_count_kv' = {Hkv}: need at least one KV head")
    _check(path, H % Hkv == 0, f"attention heads {H} are not a multiple of KV heads {Hkv}")
    D = meta.int(f"{a}.attention.key_length", E // H)
    Dv_attn = meta.int(f"{a}.attention.value_length", D)
    _check(path, 1 <= D <= 1024, f"'{a}.attention.key_length' = {D} is absurd (expected 1..1024)")
    _check(path, Dv_attn == D, f"attention key_length {D} != value_length {Dv_attn}; not supported")
    R = meta.int(f"{a}.rope.dimension_count", D)
    _check(path, 0 < R <= D and R % 2 == 0, f"'{a}.rope.dimension_count' = {R} must be even and in 2..{D}")
    moe = a == "qwen35moe"
    F = _uniform(meta, f"{a}.feed_forward_length",
                 meta.int_or_array(f"{a}.feed_forward_length", 0 if moe else None, required=not moe), [True] * block_count)
    _check(path, (0 if moe else 1) <= F <= 1 << 20, f"'{a}.feed_forward_length' = {F} is absurd")
    NE = n_used = Fe = Fs = 0
    if moe:
        NE = meta.int(f"{a}.expert_count", required=True)
        _check(path, 1 <= NE <= 4096, f"'{a}.expert_count' = {NE} is absurd (expected 1..4096)")
        n_used = _uniform(meta, f"{a}.expert_used_count", meta.int_or_array(f"{a}.expert_used_count", required=True),
                          [True] * block_count)
        _check(path, 1 <= n_used <= min(NE, 16), f"'{a}.expert_used_count' = {n_used} must be in 1..{min(NE, 16)}")
        Fe = _uniform(meta, f"{a}.expert_feed_forward_length",
                      meta.int_or_array(f"{a}.expert_feed_forward_length", required=True), [True] * block_count)
        _check(path, 1 <= Fe <= 1 << 20, f"'{a}.expert_feed_forward_length' = {Fe} is absurd")
        Fs = meta.int(f"{a}.expert_shared_feed_forward_length", F)
        _check(path, 0 <= Fs <= 1 << 20, f"'{a}.expert_shared_feed_forward_length' = {Fs} is absurd")
    eps = meta.float(f"{a}.attention.layer_norm_rms_epsilon", required=True)
    _check(path, 0 < eps < 1, f"'{a}.attention.layer_norm_rms_epsilon' = {eps} must be in (0, 1)")
    base = meta.float(f"{a}.rope.freq_base", 10000.0)
    _check(path, base > 1, f"'{a}.rope.freq_base' = {base} must be > 1")
    for k in ("type", "factor"):
        if meta.has(f"{a}.rope.scaling.{k}") and meta.raw(f"{a}.rope.scaling.{k}") not in ("none", 1.0, 0.0):
            raise BadMetadataError(path, f"rope scaling ('{a}.rope.scaling.{k}') is not supported")
    sections = meta.raw(f"{a}.rope.dimension_sections")
    sections = tuple(int(x) for x in sections) if isinstance(sections, list) else ()
    ctx = meta.int(f"{a}.context_length", required=True)
    _check(path, 1 <= ctx <= 1 << 24, f"'{a}.context_length' = {ctx} is absurd")

    has_gdn = any(is_gdn)
    Kc = meta.int(f"{a}.ssm.conv_kernel", required=has_gdn) or 4
    S = meta.int(f"{a}.ssm.state_size", required=has_gdn) or 0
    Hk = meta.int(f"{a}.ssm.group_count", required=has_gdn) or 0
    Hv = meta.int(f"{a}.ssm.time_step_rank", required=has_gdn) or 0
    inner = meta.int(f"{a}.ssm.inner_size", required=has_gdn) or 0
    if has_gdn:
        _check(path, 2 <= Kc <= 16, f"'{a}.ssm.conv_kernel' = {Kc} is absurd (expected 2..16)")
        _check(path, 1 <= S <= 1024, f"'{a}.ssm.state_size' = {S} is absurd")
        _check(path, Hk >= 1, f"'{a}.ssm.group_count' = {Hk}: need at least one GDN key head")
        _check(path, Hv >= 1, f"'{a}.ssm.time_step_rank' = {Hv}: need at least one GDN value head")
        _check(path, Hv % Hk == 0, f"GDN value heads {Hv} are not a multiple of key heads {Hk}")
        _check(path, inner % Hv == 0, f"'{a}.ssm.inner_size' = {inner} is not a multiple of value heads {Hv}")
        _check(path, inner // Hv == S, f"GDN value head dim {inner // Hv} != key head dim {S} (llama.cpp requires equal)")

    emb = tensors.get("token_embd.weight")
    if emb is None:
        raise MissingTensorError(path, "required tensor 'token_embd.weight' is missing")
    if len(emb.shape) != 2 or emb.shape[0] != E:
        raise ShapeMismatchError(path, f"tensor 'token_embd.weight' has shape {list(emb.shape)}, "
                                       f"expected [{E}, n_vocab] (embedding_length = {E})")
    ft = meta.int("general.file_type", None)
    return ModelConfig(
        arch=a, n_embd=E, n_layer=n_layer, block_count=block_count, n_mtp=n_mtp, n_ctx_train=ctx,
        n_ff=F, n_head=H, n_head_kv=Hkv, head_dim=D, n_rot=R, rope_base=base, eps=eps,
        conv_kernel=Kc, ssm_d_state=S, ssm_n_group=Hk, ssm_dt_rank=Hv, ssm_d_inner=inner,
        is_gdn=is_gdn, n_vocab=emb.shape[1], tied_embeddings="output.weight" not in tensors,
        file_type=ft, rope_sections=sections, n_expert=NE, n_expert_used=n_used, n_ff_exp=Fe, n_ff_shexp=Fs,
    )


# --------------------------------------------------------------------------------------------
# expected tensors

def _attn_tensors(c: ModelConfig, i: int) -> dict[str, tuple[int, ...]]:
    E, H, Hkv, D = c.n_embd, c.n_head, c.n_head_kv, c.head_dim
    return {
        f"blk.{i}.attn_norm.weight": (E,),
        f"blk.{i}.attn_q.weight": (E, 2 * H * D),
        f"blk.{i}.attn_k.weight": (E, Hkv * D),
        f"blk.{i}.attn_v.weight": (E, Hkv * D),
        f"blk.{i}.attn_q_norm.weight": (D,),
        f"blk.{i}.attn_k_norm.weight": (D,),
        f"blk.{i}.attn_output.weight": (H * D, E),
        f"blk.{i}.post_attention_norm.weight": (E,),
    }


def _gdn_tensors(c: ModelConfig, i: int) -> dict[str, tuple[int, ...]]:
    E, Hv = c.n_embd, c.ssm_dt_rank
    return {
        f"blk.{i}.attn_norm.weight": (E,),
        f"blk.{i}.attn_qkv.weight": (E, c.conv_dim),
        f"blk.{i}.attn_gate.weight": (E, c.value_dim),
        f"blk.{i}.ssm_conv1d.weight": (c.conv_kernel, c.conv_dim),
        f"blk.{i}.ssm_dt.bias": (Hv,),
        f"blk.{i}.ssm_a": (Hv,),
        f"blk.{i}.ssm_beta.weight": (E, Hv),
        f"blk.{i}.ssm_alpha.weight": (E, Hv),
        f"blk.{i}.ssm_norm.weight": (c.head_v_dim,),
        f"blk.{i}.ssm_out.weight": (c.value_dim, E),
        f"blk.{i}.post_attention_norm.weight": (E,),
    }


def _ffn_tensors(c: ModelConfig, i: int, present: set[str] | None = None) -> dict[str, tuple[int, ...]]:
    """Dense FFN, or the MoE FFN (router, experts -- separate gate/up or fused gate_up -- and the
    shared expert with its scalar gate, stored {E} or {E, 1})."""
    E, F = c.n_embd, c.n_ff
    p = f"blk.{i}."
    if not c.is_moe:
        return {p + "ffn_gate.weight": (E, F), p + "ffn_up.weight": (E, F), p + "ffn_down.weight": (F, E)}
    NE, Fe, Fs = c.n_expert, c.n_ff_exp, c.n_ff_shexp
    out = {p + "ffn_gate_inp.weight": (E, NE), p + "ffn_down_exps.weight": (Fe, E, NE)}
    if present is not None and p + "ffn_gate_up_exps.weight" in present:
        out[p + "ffn_gate_up_exps.weight"] = (E, 2 * Fe, NE)
    else:
        out[p + "ffn_gate_exps.weight"] = (E, Fe, NE)
        out[p + "ffn_up_exps.weight"] = (E, Fe, NE)
    if Fs:
        out.update({p + "ffn_gate_inp_shexp.weight": (E,), p + "ffn_gate_shexp.weight": (E, Fs),
                    p + "ffn_up_shexp.weight": (E, Fs), p + "ffn_down_shexp.weight": (Fs, E)})
    return out


def trunk_tensor_shapes(c: ModelConfig, present: set[str] | None = None) -> dict[str, tuple[int, ...]]:
    """Every tensor the trunk needs, with its GGUF-order shape."""
    E, V = c.n_embd, c.n_vocab
    out: dict[str, tuple[int, ...]] = {"token_embd.weight": (E, V), "output_norm.weight": (E,)}
    if not c.tied_embeddings:
        out["output.weight"] = (E, V)
    for i in range(c.n_layer):
        out.update(_gdn_tensors(c, i) if c.is_gdn[i] else _attn_tensors(c, i))
        out.update(_ffn_tensors(c, i, present))
    return out


def mtp_tensor_shapes(c: ModelConfig, present: set[str] | None = None) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    """(required, optional) tensors of the MTP block at index NL."""
    i, E, V = c.mtp_layer, c.n_embd, c.n_vocab
    req = {f"blk.{i}.nextn.eh_proj.weight": (2 * E, E), f"blk.{i}.nextn.enorm.weight": (E,),
           f"blk.{i}.nextn.hnorm.weight": (E,)}
    req.update(_attn_tensors(c, i))
    req.update(_ffn_tensors(c, i, present))
    opt = {f"blk.{i}.nextn.shared_head_norm.weight": (E,), f"blk.{i}.nextn.embed_tokens.weight": (E, V),
           f"blk.{i}.nextn.shared_head_head.weight": (E, V)}
    return req, opt


# --------------------------------------------------------------------------------------------
# the model file

def _catalog(reader: GGUFReader, path: str) -> dict[str, TensorInfo]:
    cat = {}
    for t in reader.tensors:
        cat[t.name] = TensorInfo(name=t.name, qtype=QT(int(t.tensor_type)),
                                 shape=tuple(int(x) for x in t.shape), offset=int(t.data_offset),
                                 n_bytes=int(t.n_bytes), path=path)
    return cat


@dataclass
class TokenizerInfo:
    """What the GGUF says about its tokenizer (the tokenizer itself is built in tokenizer.py)."""
    model: str | None
    pre: str | None
    n_tokens: int
    n_merges: int
    eos_id: int | None
    bos_id: int | None
    pad_id: int | None
    chat_template: str | None


class GGUFModel:
    """A validated qwen35 model: config, catalog and raw tensor views, from one or two files.

    `mtp_path` is an MTP sidecar (`mtp-*.gguf`: token_embd, output_norm, output and the NextN
    block); its NextN tensors replace any in the main file.
    """

    def __init__(self, path: str | os.PathLike[str], mtp_path: str | os.PathLike[str] | None = None) -> None:
        self.path = str(path)
        self.reader = open_reader(path)
        trunk_cat = _catalog(self.reader, self.path)
        self.config = read_config(self.reader, self.path, trunk_cat)
        self.tensors: dict[str, TensorInfo] = dict(trunk_cat)
        self._readers: dict[str, GGUFReader] = {self.path: self.reader}
        self._views: dict[str, np.ndarray] = {t.name: t.data for t in self.reader.tensors}
        self.mtp_path: str | None = None
        if mtp_path is not None:
            self._attach_sidecar(str(mtp_path))
        self._validate()

    # ---- loading

    def _attach_sidecar(self, spath: str) -> None:
        r = open_reader(spath)
        cat = _catalog(r, spath)
        sc = read_config(r, spath, cat)
        c = self.config
        if sc.n_mtp != 1:
            raise BadMetadataError(spath, "MTP sidecar has no MTP block ('nextn_predict_layers' is not 1)")
        for name in ("n_embd", "n_head", "n_head_kv", "head_dim", "n_ff", "n_vocab"):
            if getattr(sc, name) != getattr(c, name):
                raise BadMetadataError(spath, f"MTP sidecar does not match the model: {name} "
                                              f"{getattr(sc, name)} != {getattr(c, name)}")
        if sc.n_layer != c.n_layer:
            raise BadMetadataError(spath, f"MTP sidecar is for a {sc.n_layer}-layer trunk, the model has {c.n_layer}")
        prefix = f"blk.{c.n_layer}."
        for t in r.tensors:
            if t.name.startswith(prefix):
                self.tensors[t.name] = cat[t.name]
                self._views[t.name] = t.data
        self._readers[spath] = r
        self.mtp_path = spath
        if c.n_mtp == 0:  # the trunk was converted with --no-mtp: the sidecar supplies the block
            self.config = replace(c, n_mtp=1, block_count=c.n_layer + 1,
                                  is_gdn=tuple(c.is_gdn[: c.n_layer]) + (False,))

    def _validate(self) -> None:
        c = self.config
        present = set(self.tensors)
        expected = trunk_tensor_shapes(c, present)
        if self.has_mtp:
            req, opt = mtp_tensor_shapes(c, present)
            expected.update(req)
            expected.update({k: v for k, v in opt.items() if k in self.tensors})
        for name, shape in expected.items():
            info = self.tensors.get(name)
            if info is None:
                where = self.mtp_path if (self.mtp_path and name.startswith(f"blk.{c.n_layer}.")) else self.path
                raise MissingTensorError(where, f"required tensor '{name}' is missing")
            if tuple(info.shape[: len(shape)]) != shape or any(d != 1 for d in info.shape[len(shape):]):
                raise ShapeMismatchError(info.path, f"tensor '{name}' has shape {list(info.shape)}, "
                                                    f"expected {list(shape)} from the metadata")
            if info.qtype not in SUPPORTED_TYPES:
                raise UnsupportedTensorTypeError(info.path, f"tensor '{name}' has type {info.qtype.name}, "
                                                            f"which wgmtp does not support")
        self.used_tensors = expected

    # ---- queries

    @property
    def has_mtp(self) -> bool:
        """True when the MTP block is present (in the file or through the sidecar)."""
        c = self.config
        return c.n_mtp >= 1 and f"blk.{c.n_layer}.nextn.eh_proj.weight" in self.tensors

    def is_mtp_tensor(self, name: str) -> bool:
        return name.startswith(f"blk.{self.config.n_layer}.")

    def raw(self, name: str) -> np.ndarray:
        """The tensor's bytes as gguf-py would map them (numpy order; uint8 rows for block types)."""
        info = self.tensors.get(name)
        if info is None:
            raise MissingTensorError(self.path, f"required tensor '{name}' is missing")
        return self._views[name]

    def raw_bytes(self, name: str) -> memoryview:
        """The tensor's bytes exactly as stored (zero-copy view of the memory map)."""
        info = self.tensors[name]
        r = self._readers[info.path]
        return memoryview(r.data[info.offset: info.offset + info.n_bytes])

    def meta(self, key: str, default: Any = None) -> Any:
        v = _Meta(self.reader, self.path).raw(key)
        return default if v is None else v

    def tokenizer_info(self) -> TokenizerInfo:
        m = _Meta(self.reader, self.path)
        toks = self.reader.fields.get("tokenizer.ggml.tokens")
        merges = self.reader.fields.get("tokenizer.ggml.merges")
        return TokenizerInfo(
            model=m.str("tokenizer.ggml.model"), pre=m.str("tokenizer.ggml.pre"),
            n_tokens=len(toks) if toks is not None else 0,
            n_merges=len(merges) if merges is not None else 0,
            eos_id=m.int("tokenizer.ggml.eos_token_id", None), bos_id=m.int("tokenizer.ggml.bos_token_id", None),
            pad_id=m.int("tokenizer.ggml.padding_token_id", None),
            chat_template=m.str("tokenizer.chat_template"),
        )

    def weight_bytes(self, *, mtp: bool) -> int:
        """Bytes of the tensors that would be uploaded (MTP block only when `mtp`)."""
        return sum(self.tensors[n].n_bytes for n in self.used_tensors if mtp or not self.is_mtp_tensor(n))

    def state_bytes(self, n_ctx: int, *, mtp: bool, n_max: int = 3, kv_bytes: int = 2) -> int:
        """KV cache + recurrent state (with n_max snapshot slots when MTP is on), per sequence."""
        c = self.config
        n_attn = sum(1 for i in range(c.n_layer) if not c.is_gdn[i]) + (1 if mtp else 0)
        kv = n_attn * 2 * n_ctx * c.n_head_kv * c.head_dim * kv_bytes
        slots = (n_max + 1) if mtp else 1
        n_gdn = sum(1 for i in range(c.n_layer) if c.is_gdn[i])
        gdn = n_gdn * slots * 4 * (c.ssm_dt_rank * c.head_v_dim * c.head_k_dim
                                   + (c.conv_kernel - 1) * c.conv_dim)
        return kv + gdn


def open_model(path: str | os.PathLike[str], mtp_path: str | os.PathLike[str] | None = None) -> GGUFModel:
    return GGUFModel(path, mtp_path)
