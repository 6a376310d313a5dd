"""Weights on the GPU: uploaded from the memory-mapped GGUF in their quantized form (repacked
losslessly into word-aligned blocks, quants.repack_for_gpu), split by rows into parts so that no
binding exceeds the adapter's max_storage_buffer_binding_size (or WGMTP_MAX_BINDING_BYTES).

Every kernel that reads a weight dispatches once per part, over that part's rows.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from gguf import GGMLQuantizationType as QT

from .. import quants
from ..errors import DeviceError
from .device import GPUContext


@dataclass
class Part:
    buffer: Any
    row0: int
    rows: int


@dataclass
class GPUTensor:
    """A 2-D (or 1-D, rows = 1) weight: `rows` x `cols` of `qtype`, in row-contiguous parts."""
    name: str
    qtype: QT
    rows: int
    cols: int
    row_words: int
    parts: list[Part] = field(default_factory=list)
    sources: tuple[str, ...] = ()      # the file's tensors stacked by rows into this one (upload_concat)

    @property
    def members(self) -> tuple[str, ...]:
        """The file tensors this weight holds, in row order: itself, or the stacked members."""
        return self.sources or (self.name,)

    @property
    def nbytes(self) -> int:
        return self.rows * self.row_words * 4


def rows_per_part(ctx: GPUContext, row_words: int, rows: int) -> int:
    cap = min(ctx.max_binding, ctx.limits.get("max-buffer-size", 1 << 62))
    per = max(1, cap // (row_words * 4))
    if per < 1 or row_words * 4 > cap:
        raise DeviceError(f"one row of {row_words * 4} bytes exceeds the binding limit {cap}")
    return min(rows, per)


def upload_tensor(ctx: GPUContext, name: str, raw: np.ndarray, qtype: QT, shape: tuple[int, ...],
                  progress: Callable[[int], None] | None = None) -> GPUTensor:
    """`raw` as gguf-py maps it; `shape` in GGUF order (ne0 = cols first)."""
    cols = int(shape[0])
    rows = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    rw = quants.gpu_row_words(qtype, cols)
    t = GPUTensor(name, QT(qtype), rows, cols, rw)
    per = rows_per_part(ctx, rw, rows)
    flat = np.asarray(raw).reshape(rows, -1)
    for r0 in range(0, rows, per):
        n = min(per, rows - r0)
        words = quants.repack_for_gpu(flat[r0:r0 + n], qtype, cols)
        t.parts.append(Part(ctx.upload(words, label=f"{name}[{r0}:{r0 + n}]"), r0, n))
        if progress:
            progress(words.nbytes)
    return t


def upload_concat(ctx: GPUContext, name: str, members: list[tuple[np.ndarray, QT, tuple[int, ...]]],
                  progress: Callable[[int], None] | None = None, names: list[str] | None = None) -> GPUTensor | None:
    """Several weights that read the same input, stacked by rows into one tensor (one mat-vec
    dispatch instead of several); None when their types or widths differ (then upload each)."""
    qt, cols = members[0][1], int(members[0][2][0])
    if any(m[1] != qt or int(m[2][0]) != cols for m in members):
        return None
    stacked = np.concatenate([np.asarray(r).reshape(int(np.prod(sh[1:])) if len(sh) > 1 else 1, -1)
                              for r, _, sh in members], axis=0)
    t = upload_tensor(ctx, name, stacked, qt, (cols, stacked.shape[0]), progress)
    t.sources = tuple(names) if names else ()
    return t


def upload_array(ctx: GPUContext, name: str, arr: np.ndarray) -> GPUTensor:
    """A float32 array uploaded as an F32 weight (tests, small tables)."""
    a = np.ascontiguousarray(arr, np.float32)
    shape = tuple(reversed(a.shape)) if a.ndim > 1 else (a.shape[0],)
    return upload_tensor(ctx, name, a, QT.F32, shape)
