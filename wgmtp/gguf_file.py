"""Generic GGUF reading: open a file (mapped, nothing copied until a tensor is used), typed access
to its metadata, its tensor catalog (name, ggml type, shape, absolute offset) and what it says of
its tokenizer. Every failure a file can cause is a one-line GGUFError naming the file.

Nothing here knows a model: the qwen35 configuration, its expected tensors and their validation
live in wgmtp/models/qwen35/. `gguf_reader.GGUFReader` is the fast reader underneath (gguf-py's
needs seconds for a 248k-token vocabulary).
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType as VT

from . import quants
from .errors import (
    BadMetadataError,
    CorruptGGUFError,
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
    if not p.is_file():     # a FIFO or a device would block or never end
        raise GGUFError(p, "is not a regular file (a GGUF model is a file on disk)")
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
    except KeyError as e:           # the reader's duplicate-key report
        msg = str(e.args[0]) if e.args else str(e)
        if msg.startswith("Duplicate "):
            key = msg[len("Duplicate "):].split(" already in list")[0]
            raise CorruptGGUFError(p, f"metadata key '{clip(key)}' appears twice (a key must be unique)") from None
        raise TruncatedGGUFError(p, f"header is truncated or corrupt ({clip(msg)})") from None
    except ValueError as e:
        msg = clip(str(e))
        if msg.startswith("Found duplicated tensor with name "):
            name = msg[len("Found duplicated tensor with name "):]
            raise CorruptGGUFError(p, f"tensor '{name}' appears twice (tensor names must be unique)") from None
        if "big-endian" in msg:
            raise NotGGUFError(p, msg) from None
        if "is not a valid GGMLQuantizationType" in msg:
            raise UnsupportedTensorTypeError(p, f"a tensor has an unknown ggml type ({msg})") from None
        if "version" in msg:
            raise NotGGUFError(p, f"unsupported GGUF version ({msg})") from None
        raise TruncatedGGUFError(p, f"header is truncated or corrupt ({msg})") from None
    except UnicodeDecodeError:
        raise CorruptGGUFError(p, "a metadata key or tensor name is not valid UTF-8") from None
    except (IndexError, OverflowError, MemoryError, struct.error) as e:
        raise TruncatedGGUFError(p, f"header is truncated or corrupt ({type(e).__name__}: {clip(str(e))})") from None
    check_layout(reader, p, size)
    return reader


MAX_DIMS = 4        # ggml's GGML_MAX_DIMS: llama.cpp refuses tensors with more


def clip(text: str, n: int = 80) -> str:
    """A value from a file, cut to a length a one-line message can hold."""
    text = str(text)
    size = len(text)
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[: n + 1])   # one line, always
    return text if len(text) <= n else text[:n] + f"... ({size} characters)"


def check_layout(reader: GGUFReader, p: Path, size: int) -> None:
    """The rules llama.cpp's loader applies to tensor data (gguf.cpp): 1 to 4 dimensions, each at
    least 1; rows of whole blocks of the tensor's type; each data offset a multiple of
    `general.alignment` from the start of the data section; every tensor's bytes inside the file
    and no two tensors' bytes overlapping. A file that breaks one would be read as garbage."""
    a = reader.alignment
    spans = []
    for t in reader.tensors:
        name, qt = clip(t.name), QT(int(t.tensor_type))
        dims = [int(d) for d in t.shape]
        if not 1 <= len(dims) <= MAX_DIMS:
            raise CorruptGGUFError(p, f"tensor '{name}' has {len(dims)} dimensions; GGUF tensors have 1 to {MAX_DIMS}")
        if min(dims) < 1:
            raise CorruptGGUFError(p, f"tensor '{name}' has a dimension of {min(dims)} (shape {dims}); "
                                      "every dimension must be at least 1")
        block = GGML_QUANT_SIZES[qt][0]
        if dims[0] % block:
            raise CorruptGGUFError(p, f"tensor '{name}': rows of {dims[0]} elements are not whole {qt.name} "
                                      f"blocks of {block}")
        rel = int(t.data_offset) - int(reader.data_offset)
        if rel % a:
            raise CorruptGGUFError(p, f"tensor '{name}' data offset {rel} is not a multiple of the file's "
                                      f"alignment {a} (general.alignment)")
        end = int(t.data_offset) + int(t.n_bytes)
        if end > size:
            raise TruncatedGGUFError(p, f"truncated: tensor '{name}' needs bytes up to {end} but the file has {size}")
        spans.append((int(t.data_offset), end, name))
    spans.sort()
    for (s0, e0, n0), (s1, e1, n1) in zip(spans, spans[1:]):
        if s1 < e0:
            raise CorruptGGUFError(p, f"tensors '{n0}' and '{n1}' overlap in the file (bytes {s1}..{min(e0, e1)}); "
                                      "each tensor's data must be its own")



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


def supported_types() -> str:
    """The weight types wgmtp reads and runs on every GPU path, as one line (errors, inspect)."""
    return ", ".join(t.name for t in quants.SUPPORTED)


def check_tensor(info: TensorInfo, name: str, shape: tuple[int, ...]) -> None:
    """A catalog entry has the expected GGUF-order shape (trailing 1s allowed) and a type wgmtp
    reads (quants.SUPPORTED)."""
    if tuple(info.shape[: len(shape)]) != shape or any(d != 1 for d in info.shape[len(shape):]):
        raise ShapeMismatchError(info.path, f"tensor '{name}' has shape {list(info.shape)}, "
                                            f"expected {list(shape)} from the metadata")
    if info.qtype not in quants.SUPPORTED:
        raise UnsupportedTensorTypeError(info.path, f"tensor '{name}' has type {info.qtype.name}, "
                                                    f"which wgmtp does not support (it reads "
                                                    f"{supported_types()})")
