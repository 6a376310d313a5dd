"""Weights on the GPU: uploaded from the memory-mapped GGUF in their quantized form (repacked
losslessly into word-aligned blocks, quants.repack_for_gpu), split by rows into parts so that no
binding exceeds the adapter's max_storage_buffer_binding_size (or WGMTP_MAX_BINDING_BYTES).

Every kernel that reads a weight dispatches once per part, over that part's rows.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
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
    sources: tuple[str, ...] = ()      # the file's tensors stacked by rows into this one (stack_job)

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


@dataclass
class UploadJob:
    """One weight to upload: `raw` as gguf-py maps it, or a function making it (a stack of
    projections, a small tensor decoded to f32), run on the repacking thread; `shape` in GGUF
    order (ne0 = cols first); `sources`: the file tensors stacked into it."""
    name: str
    raw: np.ndarray | Callable[[], np.ndarray]
    qtype: QT
    shape: tuple[int, ...]
    sources: tuple[str, ...] = ()


def _repack(ctx: GPUContext, job: UploadJob, scratch: list[np.ndarray]
            ) -> tuple[GPUTensor, list[tuple[int, int, np.ndarray]]]:
    """The job's tensor (no parts yet) and its parts' GPU words, (row0, rows, words) each, the
    repacked ones in `scratch` (one reused buffer per part, grown as needed)."""
    cols = int(job.shape[0])
    rows = int(np.prod(job.shape[1:])) if len(job.shape) > 1 else 1
    rw = quants.gpu_row_words(job.qtype, cols)
    t = GPUTensor(job.name, QT(job.qtype), rows, cols, rw, sources=tuple(job.sources))
    per = rows_per_part(ctx, rw, rows)
    raw = job.raw() if callable(job.raw) else job.raw
    flat = np.asarray(raw).reshape(rows, -1)
    parts = []
    for k, r0 in enumerate(range(0, rows, per)):
        if k == len(scratch):
            scratch.append(np.empty(0, np.uint8))
        src = flat[r0:r0 + per]
        words = quants.repack_for_gpu(src, job.qtype, cols, out=scratch[k])
        if not np.may_share_memory(words, src) and not np.may_share_memory(words, scratch[k]):
            scratch[k] = words.reshape(-1).view(np.uint8)      # a new, larger buffer: reuse it
        parts.append((r0, min(per, rows - r0), words))
    return t, parts


def upload_all(ctx: GPUContext, jobs: list[UploadJob], progress: Callable[[int], None] | None = None,
               lookahead: int = 2) -> dict[str, GPUTensor]:
    """Upload every job, repacking on a worker thread up to `lookahead` weights ahead of the
    queue writes (numpy's copies and wgpu's write release the GIL, so the two overlap: the load
    runs at the speed of the slower one, not of their sum); in job order."""
    out: dict[str, GPUTensor] = {}
    # one scratch set per job in flight: job i's words are in set i % (lookahead + 1), untouched
    # by the worker until job i's writes (which copy them into wgpu's staging) are done
    sets: list[list[np.ndarray]] = [[] for _ in range(lookahead + 1)]
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="wgmtp-repack") as pool:
        pending = [pool.submit(_repack, ctx, j, sets[i % len(sets)]) for i, j in enumerate(jobs[:lookahead])]
        for i in range(len(jobs)):
            t, parts = pending.pop(0).result()
            if i + lookahead < len(jobs):
                k = i + lookahead
                pending.append(pool.submit(_repack, ctx, jobs[k], sets[k % len(sets)]))
            for r0, n, words in parts:
                t.parts.append(Part(ctx.upload(words, label=f"{t.name}[{r0}:{r0 + n}]"), r0, n))
                if progress:
                    progress(words.nbytes)
            out[t.name] = t
    return out


def upload_tensor(ctx: GPUContext, name: str, raw: np.ndarray, qtype: QT, shape: tuple[int, ...],
                  progress: Callable[[int], None] | None = None) -> GPUTensor:
    """`raw` as gguf-py maps it; `shape` in GGUF order (ne0 = cols first)."""
    return upload_all(ctx, [UploadJob(name, raw, qtype, shape)], progress)[name]


def stack_job(name: str, members: list[tuple[np.ndarray | Callable[[], np.ndarray], QT, tuple[int, ...]]],
              names: list[str] | None = None) -> UploadJob | None:
    """Several weights that read the same input, as one job stacking them by rows (one mat-vec
    dispatch instead of several); None when their types or widths differ (then upload each)."""
    qt, cols = members[0][1], int(members[0][2][0])
    if any(m[1] != qt or int(m[2][0]) != cols for m in members):
        return None
    n_rows = sum(int(np.prod(sh[1:])) if len(sh) > 1 else 1 for _, _, sh in members)

    def stacked() -> np.ndarray:
        return np.concatenate([np.asarray(r() if callable(r) else r).reshape(
            int(np.prod(sh[1:])) if len(sh) > 1 else 1, -1) for r, _, sh in members], axis=0)
    return UploadJob(name, stacked, qt, (cols, n_rows), tuple(names) if names else ())


def upload_array(ctx: GPUContext, name: str, arr: np.ndarray) -> GPUTensor:
    """A float32 array uploaded as an F32 weight (tests, small tables)."""
    a = np.ascontiguousarray(arr, np.float32)
    shape = tuple(reversed(a.shape)) if a.ndim > 1 else (a.shape[0],)
    return upload_tensor(ctx, name, a, QT.F32, shape)
