"""Generic GGUF reading: open a file (mapped, nothing copied until a tensor is used), typed access
to its metadata, its tensor catalog (name, ggml type, shape, absolute offset) and what it says of
its tokenizer. Every failure a file can cause is a one-line GGUFError naming the file.

Nothing here knows a model: the qwen35 configuration, its expected tensors and their validation
live in wgmtp/models/qwen35/. `gguf_reader.GGUFReader` is the fast reader underneath (gguf-py's
needs seconds for a 248k-token vocabulary).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType as VT

from . import quants
from .errors import (
    BadMetadataError,
    GGUFError,
    NotGGUFError,
    ShapeMismatchError,
    TruncatedGGUFError,
    UnsupportedTensorTypeError,
)
from .gguf_reader import GGUFReader


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


class Meta:
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



def catalog(reader: GGUFReader, path: str) -> dict[str, TensorInfo]:
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




def tokenizer_info(reader: GGUFReader, path: str) -> TokenizerInfo:
    m = Meta(reader, path)
    toks = reader.fields.get("tokenizer.ggml.tokens")
    merges = reader.fields.get("tokenizer.ggml.merges")
    return TokenizerInfo(
        model=m.str("tokenizer.ggml.model"), pre=m.str("tokenizer.ggml.pre"),
        n_tokens=len(toks) if toks is not None else 0,
        n_merges=len(merges) if merges is not None else 0,
        eos_id=m.int("tokenizer.ggml.eos_token_id", None), bos_id=m.int("tokenizer.ggml.bos_token_id", None),
        pad_id=m.int("tokenizer.ggml.padding_token_id", None),
        chat_template=m.str("tokenizer.chat_template"),
    )


def check_tensor(info: TensorInfo, name: str, shape: tuple[int, ...]) -> None:
    """A catalog entry has the expected GGUF-order shape (trailing 1s allowed) and a type wgmtp
    reads (quants.SUPPORTED)."""
    if tuple(info.shape[: len(shape)]) != shape or any(d != 1 for d in info.shape[len(shape):]):
        raise ShapeMismatchError(info.path, f"tensor '{name}' has shape {list(info.shape)}, "
                                            f"expected {list(shape)} from the metadata")
    if info.qtype not in quants.SUPPORTED:
        raise UnsupportedTensorTypeError(info.path, f"tensor '{name}' has type {info.qtype.name}, "
                                                    f"which wgmtp does not support")
