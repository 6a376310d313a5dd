"""Op-by-op checking of a running model against the numpy twins (WGMTP_CHECK=1, `wgmtp check -m`).

Every kernel wrapper records its call in the program it adds to (gpu.program.OpRecord: op kind,
the model's name and layer for it, its arguments). `OpByOp`, installed as a runner's executor,
submits a program one op at a time: before an op it reads the op's inputs back from the GPU,
after it the outputs, and compares the outputs with the op's numpy twin computed from those same
inputs (check/twins.py builds each comparison from the record alone). An error is pinned to one
op on one layer instead of showing up as drift at the logits (like ggml's check-results build,
but a switch, not a rebuild).
"""
from __future__ import annotations

import numpy as np

from ..errors import WgmtpError
from ..gpu.program import OpRecord, Program, Readback
from ..kernels import Act
from .compare import CheckResult, OpCheck
from .twins import Weights, check_of

f32 = np.float32


class CheckDivergence(WgmtpError):
    """An op's GPU output left its twin's tolerance (WGMTP_CHECK=1 stops on the first)."""


class IO:
    """Reads GPU data for the checks (each read is its own small submission)."""

    def __init__(self, ctx) -> None:
        self.ctx = ctx

    def f32(self, a: Act, n: int) -> np.ndarray:
        return self.ctx.read_array(a.buffer, np.float32, max(n, 0), a.offset) if n > 0 else np.zeros(0, f32)

    def u32(self, a: Act, n: int) -> np.ndarray:
        return self.ctx.read_array(a.buffer, np.uint32, n, a.offset)

    def buf_f32(self, buf, n: int, off: int = 0) -> np.ndarray:
        return self.ctx.read_array(buf, np.float32, n, off)

    def kv(self, cache, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows 0..n_rows-1 of a KVCache (any parts, f16 or f32) as f32 [n, Hkv, D]."""
        row = cache.n_kv_head * cache.head_dim
        dt = np.float16 if cache.f16 else np.float32
        ks, vs = [], []
        for p in cache.parts:
            take = min(p.rows, n_rows - p.row0)
            if take <= 0:
                continue
            ks.append(self.ctx.read_array(p.k, dt, take * row, p.k_off).astype(f32))
            vs.append(self.ctx.read_array(p.v, dt, take * row, p.v_off).astype(f32))
        shape = (n_rows, cache.n_kv_head, cache.head_dim)
        return np.concatenate(ks).reshape(shape), np.concatenate(vs).reshape(shape)


def _step(io: IO, chk: OpCheck) -> tuple[int, int]:
    """(n_tok, pos0) of the op's step record; (0, 0) for an op that runs under none."""
    if chk.step is None:
        return 0, 0
    st = io.u32(chk.step, 2)
    return int(st[0]), int(st[1])


def _nonfinite(a) -> int:
    """Non-finite floats in an array (0 for integer data)."""
    a = np.asarray(a)
    return int(a.size - np.count_nonzero(np.isfinite(a))) if a.dtype.kind == "f" else 0


def _all_finite(inputs) -> bool:
    """Every float array among an op's inputs (dicts, lists and tuples searched) is finite."""
    if isinstance(inputs, dict):
        return all(_all_finite(v) for v in inputs.values())
    if isinstance(inputs, (list, tuple)):
        return all(_all_finite(v) for v in inputs)
    return not isinstance(inputs, np.ndarray) or _nonfinite(inputs) == 0


def run_check(io: IO, chk: OpCheck, inputs: dict) -> CheckResult:
    n, pos0 = _step(io, chk)
    cmps = chk.after(io, inputs, n, pos0)
    res = CheckResult(chk.where, chk.layer, chk.op, chk.shape, True, 0.0, 0.0, 0.0, chk.note)
    res.nonfinite = [f"{c.name} ({k} of {np.size(c.got)})" for c in cmps if (k := _nonfinite(c.got))]
    for c in cmps:
        r = c.evaluate()
        res.max_abs = max(res.max_abs, r["max_abs"])
        res.max_rel = max(res.max_rel, r["max_rel"])
        res.tol = max(res.tol, r["tol"])
        if not r["ok"]:
            res.ok = False
            res.outputs.append(c.name + (f" ({r['note']})" if r.get("note") else ""))
    return res


def read_inputs(io: IO, chk: OpCheck) -> dict:
    return chk.before(io, *_step(io, chk))


class OpByOp:
    """A runner executor (models' `Executor`): runs programs one op at a time, each compared with
    its twin on its own GPU inputs. `results` collects every comparison; with
    `stop_on_divergence` the first failure raises CheckDivergence naming layer and op, and so does
    the first op that makes a NaN or infinity from finite inputs (even where its twin agrees: a
    weight holds one), so a non-finite logit is traced to where it started. `first_nonfinite`
    keeps that op's result either way."""

    def __init__(self, ctx, runner, gm, *, stop_on_divergence: bool = True) -> None:
        self.ctx, self.runner = ctx, runner
        self.io = IO(ctx)
        self.weights = Weights(gm)
        self.stop_on_divergence = stop_on_divergence
        self.results: list[CheckResult] = []
        self.first_nonfinite: CheckResult | None = None
        self._checks: dict[int, tuple[OpRecord, OpCheck]] = {}

    def _op_check(self, rec: OpRecord) -> OpCheck:
        """The comparison of a record, built once per record (kept with it: an id can be reused
        once rebuilt programs drop their old records)."""
        hit = self._checks.get(id(rec))
        if hit is None or hit[0] is not rec:
            hit = self._checks[id(rec)] = (rec, check_of(rec, self.weights, self.ctx))
        return hit[1]

    def __call__(self, programs: list[Program], writes, reads: list[Readback]) -> list[bytes]:
        for buf, off, data in writes:
            self.ctx.queue.write_buffer(buf, off, data)
        for p in programs:
            done = 0
            for start, stop, rec in p.ops:
                self.runner.run_range(p, done, start)       # dispatches outside any op (none today)
                chk = self._op_check(rec)
                inputs = read_inputs(self.io, chk)
                self.runner.run_range(p, start, stop)
                res = run_check(self.io, chk, inputs)
                self.results.append(res)
                if not res.ok and self.stop_on_divergence:
                    raise CheckDivergence("WGMTP_CHECK: " + res.message())
                if res.nonfinite and self.first_nonfinite is None and _all_finite(inputs):
                    self.first_nonfinite = res
                    if self.stop_on_divergence:
                        raise CheckDivergence("WGMTP_CHECK: " + res.nonfinite_message())
                done = stop
            self.runner.run_range(p, done, len(p.dispatches))
        return self.runner.run([], reads=reads)


def attach(backend, *, stop_on_divergence: bool = True) -> OpByOp:
    """Check every op of `backend` (a models runner) as it runs; returns the checker."""
    chk = OpByOp(backend.ctx, backend.runner, backend.gm, stop_on_divergence=stop_on_divergence)
    backend.executor = chk
    return chk


def detach(backend) -> None:
    backend.executor = None
