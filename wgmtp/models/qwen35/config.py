"""The qwen35 / qwen35moe hyper-parameters, read and checked from GGUF metadata keys
(reference/qwen35-mtp.md names each key)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from ...errors import BadMetadataError, MissingTensorError, ShapeMismatchError, UnsupportedArchError
from ...gguf_file import Meta, TensorInfo
from ...gguf_reader import GGUFReader

ARCHS = ("qwen35", "qwen35moe")
KNOWN_UNSUPPORTED_ARCHS = {"qwen3next": "qwen3next is not supported (different V-head order)"}


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


def _layer_flags(meta: Meta, arch: str, block_count: int, n_layer: int) -> tuple[bool, ...]:
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


def _uniform(meta: Meta, key: str, v: int | list[int], flags: Iterable[bool]) -> int:
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
    meta = Meta(reader, path)
    arch = meta.str("general.architecture")
    if arch is None:
        raise BadMetadataError(path, "required metadata key 'general.architecture' is missing")
    if arch not in ARCHS:
        why = KNOWN_UNSUPPORTED_ARCHS.get(arch,
                                          f"architecture '{arch}' is not supported (wgmtp runs qwen35 and qwen35moe)")
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
                 meta.int_or_array(f"{a}.feed_forward_length", 0 if moe else None, required=not moe),
                 [True] * block_count)
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
        _check(path, inner // Hv == S,
               f"GDN value head dim {inner // Hv} != key head dim {S} (llama.cpp requires equal)")

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


