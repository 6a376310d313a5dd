"""Recorded programs: lists of dispatches whose pipelines, bind groups and static parameters are
made once at load time, then encoded into one compute pass and submitted once per step.

Static parameters of every dispatch of a program live in one uniform buffer (256-byte slots),
written once when the program is built. Values that change per step (positions, token counts,
snapshot slot) live in a small storage buffer the caller writes once per step, or are produced by
earlier kernels (token ids); nothing is created or written per dispatch in the hot path
(ARCHITECTURE.md, "GPU-resident hot loop").
"""
from __future__ import annotations

import functools
import inspect
import struct
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from .device import GPUContext, map_read
from .shaders import pipelines

SLOT = 256
MAX_WG = 65535


def pack(*vals: Any) -> bytes:
    """Kernel parameters, all 4-byte scalars in WGSL struct order.

    Python int >= 0 -> u32, int < 0 -> i32, float -> f32; numpy scalars keep their type."""
    out = bytearray()
    for v in vals:
        if isinstance(v, (bool, np.bool_)):
            out += struct.pack("<I", int(v))
        elif isinstance(v, np.floating) or isinstance(v, float):
            out += struct.pack("<f", float(v))
        elif isinstance(v, np.signedinteger) and v < 0 or isinstance(v, int) and v < 0:
            out += struct.pack("<i", int(v))
        elif isinstance(v, (int, np.integer)):
            out += struct.pack("<I", int(v))
        else:
            raise TypeError(f"cannot pack parameter {v!r}")
    while len(out) % 16:
        out += b"\0\0\0\0"
    return bytes(out)


def grid1d(n_groups: int) -> tuple[int, int, int]:
    """Spread n workgroups over x and y (x <= 65535); shaders use wid.x + wid.y * nwg.x."""
    n_groups = max(1, int(n_groups))
    if n_groups <= MAX_WG:
        return (n_groups, 1, 1)
    y = -(-n_groups // MAX_WG)
    return (-(-n_groups // y), y, 1)


@dataclass
class Buf:
    """A buffer and the element range a kernel may touch (bindings span whole buffers unless
    `offset`/`size` are given in bytes, 256-aligned)."""
    buffer: Any
    offset: int = 0
    size: int | None = None


@dataclass
class _Pending:
    shader: str
    entry: str
    defines: dict
    buffers: list
    params: bytes | None
    grid: tuple[int, int, int]
    label: str


@dataclass
class Dispatch:
    pipeline: Any
    bind_group: Any
    grid: tuple[int, int, int]
    label: str


@dataclass(frozen=True)
class OpRecord:
    """What one kernel call did, written by its wrapper (`records`): the op kind (the key of its
    numpy twin in check/trace.py), the model's name for it and where it sits (`ProgramBuilder.at`),
    the step record it ran under, and every argument by name (activations as Act, weights as
    GPUTensor, scalars). The checker needs nothing else to recompute the op."""
    kind: str
    name: str
    where: str
    layer: int
    step: Any
    args: dict


@dataclass
class Program:
    """Dispatches in order; encode into an open compute pass. `ops`: (index of the op's first
    dispatch, index past its last, record) for every kernel call, in order (check/trace.py runs a
    program op by op from them)."""
    label: str
    dispatches: list[Dispatch] = field(default_factory=list)
    param_buffer: Any = None
    ops: list[tuple[int, int, OpRecord]] = field(default_factory=list)

    def encode(self, cpass: Any, start: int = 0, stop: int | None = None) -> None:
        for d in self.dispatches[start:stop]:
            cpass.set_pipeline(d.pipeline)
            cpass.set_bind_group(0, d.bind_group)
            cpass.dispatch_workgroups(*d.grid)

    def __len__(self) -> int:
        return len(self.dispatches)


# Work encoded between a submission's compute passes (buffer copies): a callable taking the command
# encoder, ordered with the programs around it (Runner.submit).
Encode = Callable[[Any], None]


class ProgramBuilder:
    """Collect dispatches, then `build()` makes the param buffer and every bind group once."""

    def __init__(self, ctx: GPUContext, label: str = "") -> None:
        self.ctx = ctx
        self.label = label
        self._items: list[_Pending] = []
        self._ops: list[tuple[int, int, OpRecord]] = []
        self._depth = 0
        self.where, self.layer = label, -1

    def at(self, where: str, layer: int = -1) -> "ProgramBuilder":
        """Name the place of the ops recorded next (like llama.cpp's `cb(cur, name, il)`): the
        model calls it once per block, the kernel wrappers name each op."""
        self.where, self.layer = where, int(layer)
        return self

    @contextmanager
    def op(self, kind: str, name: str, step: Any, args: dict) -> Iterator[None]:
        """Record the dispatches added inside as one op. Nested ops (a wrapper calling another,
        e.g. linear -> matvec) belong to the outermost one."""
        start = len(self._items)
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        if self._depth == 0:
            self._ops.append((start, len(self._items), OpRecord(kind, name, self.where, self.layer, step, args)))

    def add(self, shader: str, buffers: Sequence[Any], params: bytes | None, grid: tuple[int, int, int] | int,
            *, defines: dict | None = None, entry: str = "main", label: str = "") -> None:
        """One dispatch. Binding 0 is the params uniform (when `params` is given), then `buffers`
        in order as bindings 1.. (or 0.. without params)."""
        g = grid1d(grid) if isinstance(grid, int) else tuple(grid)
        if any(x < 1 for x in g):
            return   # nothing to do (empty range)
        self._items.append(_Pending(shader, entry, dict(defines or {}), list(buffers), params, g, label or shader))

    def build(self) -> Program:
        ctx = self.ctx
        pc = pipelines(ctx)
        n_params = sum(1 for it in self._items if it.params is not None)
        pbuf = None
        if n_params:
            import wgpu
            blob = bytearray(SLOT * n_params)
            pbuf = ctx.buffer(len(blob), usage=wgpu.BufferUsage.UNIFORM | wgpu.BufferUsage.COPY_DST,
                              label=f"params:{self.label}")
        prog = Program(self.label, param_buffer=pbuf, ops=list(self._ops))
        slot = 0
        for it in self._items:
            pipe = pc.get(it.shader, it.defines, it.entry)
            entries = []
            b = 0
            if it.params is not None:
                assert len(it.params) <= SLOT, f"{it.shader}: params too large"
                blob[slot * SLOT: slot * SLOT + len(it.params)] = it.params
                entries.append({"binding": 0,
                                "resource": {"buffer": pbuf, "offset": slot * SLOT, "size": len(it.params)}})
                slot += 1
                b = 1
            for x in it.buffers:
                if isinstance(x, Buf):
                    res = {"buffer": x.buffer, "offset": x.offset,
                           "size": x.size if x.size is not None else x.buffer.size - x.offset}
                else:
                    res = {"buffer": x, "offset": 0, "size": x.size}
                entries.append({"binding": b, "resource": res})
                b += 1
            try:
                bg = ctx.device.create_bind_group(layout=pipe.get_bind_group_layout(0), entries=entries,
                                                  label=it.label)
            except Exception as e:
                raise RuntimeError(f"bind group for {it.label} ({it.shader}) failed: {e}") from e
            prog.dispatches.append(Dispatch(pipe, bg, it.grid, it.label))
        if pbuf is not None:
            ctx.queue.write_buffer(pbuf, 0, bytes(blob))
        return prog


def records(kind: str, name: Callable[[dict], str] | str | None = None) -> Callable:
    """Decorator of a kernel wrapper `fn(pb, ...)`: each call is recorded in `pb` as one op of
    `kind` with its arguments bound by parameter name (defaults applied). `name` gives the op's
    default name from those arguments; a caller may pass `op_name=` to choose it."""
    def deco(fn: Callable) -> Callable:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(pb: ProgramBuilder, *a: Any, op_name: str | None = None, **kw: Any) -> Any:
            bound = sig.bind(pb, *a, **kw)
            bound.apply_defaults()
            args = dict(bound.arguments)
            del args[next(iter(sig.parameters))]
            label = op_name or (name(args) if callable(name) else name or kind)
            with pb.op(kind, label, args.get("step"), args):
                return fn(pb, *a, **kw)
        return wrapper
    return deco


@dataclass
class Pending:
    """A submitted step whose reads are not collected yet."""
    staging: Any
    parts: list[tuple[int, int]]
    timed: bool
    dispatches: list[tuple[int, str, str]] | None = None    # a profiled step's (program, its label, dispatch label)


@dataclass(frozen=True)
class DispatchTime:
    """GPU time of one dispatch of a profiled step (each dispatch in a compute pass of its own, with
    timestamps: the time includes one pass boundary, so shares matter more than sums)."""
    program: str
    label: str          # the dispatch's label: kernel, then ':' and what it reads, '[i]' a part of a split
    seconds: float

    @property
    def kernel(self) -> str:
        return self.label.split(":")[0].split("[")[0]


def by_kernel(times: Iterable[DispatchTime]) -> list[tuple[str, float, int]]:
    """(kernel, seconds, dispatches) of a profiled step, the slowest kernel first."""
    agg: dict[str, list] = {}
    for t in times:
        a = agg.setdefault(t.kernel, [0.0, 0])
        a[0] += t.seconds
        a[1] += 1
    return sorted(((k, s, n) for k, (s, n) in agg.items()), key=lambda r: -r[1])


QUERIES_MAX = 4096      # timestamps per query set (wgpu's limit)


@dataclass
class Readback:
    buffer: Any
    offset: int
    size: int


class Runner:
    """Submits programs: one command encoder, one compute pass, one submission per call; the
    readbacks are copied into persistent staging buffers in the same submission."""

    def __init__(self, ctx: GPUContext) -> None:
        self.ctx = ctx
        self.submissions = 0
        self.dispatches = 0
        self.gpu_wait_s = 0.0
        self.host_s = 0.0                     # Python time writing, encoding and submitting
        self.last_gpu_s: list[float] = []     # per program, from the last timed run
        self.last_dispatches: list[DispatchTime] | None = None     # the last profiled step's (profile_next)
        self._profile = False
        self._qs: dict[int, tuple[Any, Any]] = {}

    @property
    def can_time(self) -> bool:
        return "timestamp-query" in self.ctx.features

    def _query(self, n: int) -> tuple[Any, Any]:
        if n not in self._qs:
            import wgpu
            qs = self.ctx.device.create_query_set(type=wgpu.QueryType.timestamp, count=n)
            buf = self.ctx.buffer(n * 8, usage=wgpu.BufferUsage.QUERY_RESOLVE | wgpu.BufferUsage.COPY_SRC)
            self._qs[n] = (qs, buf)
        return self._qs[n]

    def profile_next(self) -> None:
        """Time every dispatch of the next submission (`last_dispatches` once it is collected): each
        in its own compute pass with timestamps, the same dispatches in the same order, so the step's
        results do not change. Call it from the thread that submits (between steps)."""
        if self.can_time:
            self._profile = True

    def _encode_profiled(self, enc: Any, programs: list) -> tuple[list[tuple[int, str, str]], list[Readback]]:
        """Every dispatch in its own timed pass (copies between passes where they come); returns
        (program index, program label, dispatch label) per dispatch and the timestamp reads."""
        import wgpu
        n = sum(len(p) for p in programs if isinstance(p, Program))
        sets = []
        for q0 in range(0, 2 * n, QUERIES_MAX):
            count = min(QUERIES_MAX, 2 * n - q0)
            qs = self.ctx.device.create_query_set(type=wgpu.QueryType.timestamp, count=count)
            buf = self.ctx.buffer(count * 8, usage=wgpu.BufferUsage.QUERY_RESOLVE | wgpu.BufferUsage.COPY_SRC)
            sets.append((qs, buf, count))
        out: list[tuple[int, str, str]] = []
        i_prog = 0
        for p in programs:
            if not isinstance(p, Program):
                p(enc)
                continue
            for i, d in enumerate(p.dispatches):
                q = 2 * len(out)
                cpass = enc.begin_compute_pass(timestamp_writes={
                    "query_set": sets[q // QUERIES_MAX][0], "beginning_of_pass_write_index": q % QUERIES_MAX,
                    "end_of_pass_write_index": q % QUERIES_MAX + 1})
                p.encode(cpass, i, i + 1)
                cpass.end()
                out.append((i_prog, p.label, d.label))
            i_prog += 1
        for qs, buf, count in sets:
            enc.resolve_query_set(qs, 0, count, buf, 0)
        return out, [Readback(buf, 0, count * 8) for _, buf, count in sets]

    def run_range(self, program: Program, start: int, stop: int) -> None:
        """Submit dispatches start..stop-1 of a program on their own (the op-by-op checker)."""
        if stop <= start:
            return
        enc = self.ctx.device.create_command_encoder()
        cpass = enc.begin_compute_pass()
        program.encode(cpass, start, stop)
        cpass.end()
        self.ctx.queue.submit([enc.finish()])
        self.submissions += 1
        self.dispatches += stop - start

    def run(self, programs: Iterable[Program | Encode], *, writes: Iterable[tuple[Any, int, bytes]] = (),
            reads: Sequence[Readback] = (), timed: bool = False) -> list[bytes]:
        """Encode `programs` into one compute pass (with `timed`, one pass each with timestamps:
        their GPU times land in `last_gpu_s`), submit once, and return the `reads`. An `Encode`
        among them (a callable taking the command encoder: buffer copies) ends the pass, runs in
        queue order, and the programs after it start a new one."""
        return self.collect(self.submit(programs, writes=writes, reads=reads, timed=timed))

    def submit(self, programs: Iterable[Program | Encode], *, writes: Iterable[tuple[Any, int, bytes]] = (),
               reads: Sequence[Readback] = (), timed: bool = False) -> "Pending":
        """Like `run`, but return at once: `collect(handle)` waits for the reads later, so the host
        can queue the next step while the GPU runs this one. Each in-flight submission has its own
        staging buffer (GPUContext.staging's ring)."""
        ctx = self.ctx
        t_start = time.perf_counter()
        programs = list(programs)
        for buf, off, data in writes:
            ctx.queue.write_buffer(buf, off, data)
        enc = ctx.device.create_command_encoder()
        n = 0
        n_prog = sum(isinstance(p, Program) for p in programs)
        timed = timed and self.can_time and n_prog > 0
        profiled, self._profile = self._profile and n_prog > 0, self._profile and not n_prog
        if profiled:                # every dispatch timed (profile_next): in place of the per-program timing
            dispatches, qreads = self._encode_profiled(enc, programs)
            n, timed = len(dispatches), False
            reads = list(reads) + qreads
            programs = []
        if timed:
            qs, qbuf = self._query(2 * n_prog)
        cpass, i = None, 0
        for p in programs:
            if not isinstance(p, Program):          # copies between passes
                if cpass is not None:
                    cpass.end()
                    cpass = None
                p(enc)
                continue
            if timed:
                cpass = enc.begin_compute_pass(timestamp_writes={
                    "query_set": qs, "beginning_of_pass_write_index": 2 * i, "end_of_pass_write_index": 2 * i + 1})
            elif cpass is None:
                cpass = enc.begin_compute_pass()
            p.encode(cpass)
            n += len(p)
            i += 1
            if timed:
                cpass.end()
                cpass = None
        if cpass is not None:
            cpass.end()
        if timed:
            enc.resolve_query_set(qs, 0, 2 * n_prog, qbuf, 0)
            reads = list(reads) + [Readback(qbuf, 0, 16 * n_prog)]
        stagings = []
        st = None
        if reads:
            total = sum((r.size + 3) // 4 * 4 for r in reads)
            st = ctx.staging(total)
            off = 0
            for r in reads:
                sz = (r.size + 3) // 4 * 4
                enc.copy_buffer_to_buffer(r.buffer, r.offset, st, off, sz)
                stagings.append((off, r.size))
                off += sz
        ctx.queue.submit([enc.finish()])
        self.host_s += time.perf_counter() - t_start
        self.submissions += 1
        self.dispatches += n
        if profiled:
            return Pending(st, stagings, False, dispatches)
        return Pending(st, stagings, timed)

    def collect(self, h: "Pending") -> list[bytes]:
        if h.staging is None:
            return []
        t0 = time.perf_counter()
        blob = map_read(h.staging, sum((s + 3) // 4 * 4 for _, s in h.parts))
        self.gpu_wait_s += time.perf_counter() - t0
        out = [blob[o:o + s] for o, s in h.parts]
        if h.dispatches is not None:
            self._profiled(h.dispatches, out)
        if h.timed:
            # timestamps are device ticks; WebGPU defines them in ns (a period of 1 on the
            # adapters measured here: lavapipe, NVIDIA)
            t = np.frombuffer(out.pop(), np.uint64).astype(np.float64)
            self.last_gpu_s = [max(0.0, (t[2 * i + 1] - t[2 * i]) * 1e-9) for i in range(len(t) // 2)]
        return out

    def _profiled(self, dispatches: list[tuple[int, str, str]], out: list[bytes]) -> None:
        """A profiled step's times (popped off `out`): last_dispatches, and per program their sum."""
        n_sets = -(-2 * len(dispatches) // QUERIES_MAX)
        blobs = [out.pop() for _ in range(n_sets)][::-1]
        t = np.concatenate([np.frombuffer(b, np.uint64) for b in blobs]).astype(np.float64).reshape(-1, 2)
        secs = np.maximum(0.0, (t[:, 1] - t[:, 0]) * 1e-9)
        self.last_dispatches = [DispatchTime(prog, label, float(x)) for (_, prog, label), x in zip(dispatches, secs)]
        per = [0.0] * (max((i for i, _, _ in dispatches), default=-1) + 1)
        for (i, _, _), x in zip(dispatches, secs):
            per[i] += float(x)
        self.last_gpu_s = per
