"""Runs op-suite cases in child processes, so that a driver that crashes, aborts or hangs costs one
case, named, and the run goes on.

Parent side (`run_suite`, the Python API under `wgmtp check`):
  * the adapters are listed by a child (`python -m wgmtp.check.worker --list`): even enumerating
    them has crashed on broken drivers;
  * each adapter variant (subgroups on/off, f16 on/off where the adapter has them) gets a child
    that opens the device once and runs that variant's cases in order; the parent waits for each
    case with a timeout;
  * when a child dies (signal, abort, device lost) or hangs, the case it had started is reported
    as `crash` or `hang` with the child's last stderr lines, and a new child continues with the
    next case. After a case ends in `error` (an exception, a wgpu validation error, a lost device)
    the child exits and a fresh one continues too, so a broken device does not spill into the
    cases after it.

Child side (`python -m wgmtp.check.worker --adapter I --subgroups 0|1 --f16 0|1 [--extra PATH]`,
case ids as a JSON list on stdin) writes a JSON-lines journal on its stdout (anything native
code prints to stdout is redirected to stderr first):
    {"type": "hello", "variant": ..., "subgroups": ..., "f16": ..., "max_binding": ..., "subgroup_sizes": ...}
    {"type": "unusable", "reason": ...}          (the adapter cannot run compute shaders)
    {"type": "start", "case": ID}                 before each case
    {"type": "result", "case": ID, "outcome": {...}}   after it
    {"type": "done"}
A journal line is flushed before the case runs, so the parent always knows which case was
running when the child died.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

RESTART_RC = 3
STARTUP_TIMEOUT = 120.0


# ==== child ===================================================================================

def _journal() -> Callable[[dict], None]:
    """A line writer on the original stdout; fd 1 then points at stderr so that native code
    printing to stdout cannot corrupt the journal."""
    fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    out = os.fdopen(fd, "w", buffering=1, encoding="utf-8")

    def emit(obj: dict) -> None:
        out.write(json.dumps(obj, default=_jsonable) + "\n")
        out.flush()
    return emit


def _jsonable(x: Any) -> Any:
    try:
        import numpy as np
        if isinstance(x, np.generic):
            return x.item()
    except ImportError:  # pragma: no cover
        pass
    return str(x)


def _num(x: Any) -> Any:
    """JSON has no inf/nan: null (the row's note says what differed)."""
    if isinstance(x, float) and (x != x or x in (float("inf"), float("-inf"))):
        return None
    return x


class _WgpuErrors(logging.Handler):
    """Collects the errors wgpu-py logs instead of raising (uncaptured validation errors, device
    lost): they belong to the case that was running."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.messages.append(record.getMessage().strip().splitlines()[0][:300])
        except Exception:  # pragma: no cover
            self.messages.append("wgpu error (unprintable)")


def _first_line(e: BaseException) -> str:
    """The exception's type and message; wgpu's multi-line "Caused by:" chains folded into one
    line (their last line says what was wrong)."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip() and ln.strip() != "Caused by:"]
    msg = lines[0] if lines else ""
    if len(lines) > 1:
        msg += " -- " + " / ".join(lines[1:])
    return f"{type(e).__name__}: {msg}"[:600]


def _where(e: BaseException) -> str:
    """The innermost frame outside wgpu-py (the case or kernel wrapper that made the call)."""
    frames = [f for f in traceback.extract_tb(e.__traceback__) if f"{os.sep}wgpu{os.sep}" not in f.filename]
    if not frames:
        return ""
    f = frames[-1]
    return f" (at {os.path.basename(f.filename)}:{f.lineno} in {f.name})"


def child_main(argv: list[str] | None = None) -> int:
    import argparse
    ap = argparse.ArgumentParser(prog="python -m wgmtp.check.worker")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--adapter", type=int)
    ap.add_argument("--subgroups", type=int, default=1)
    ap.add_argument("--f16", type=int, default=1)
    ap.add_argument("--extra", default=None)
    a = ap.parse_args(argv)
    emit = _journal()
    os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.gettempdir())

    if a.list:
        from ..gpu.adapters import describe
        from ..gpu.device import kill_switches
        emit({"type": "adapters", "adapters": describe(probe=False), "kill_switches": kill_switches()})
        return 0

    ids = json.loads(sys.stdin.read() or "[]")
    from ..gpu.device import open_context
    from ..gpu.shaders import pipelines
    try:
        ctx = open_context(a.adapter, subgroups=bool(a.subgroups), f16=bool(a.f16))
        pipelines(ctx).get("copy_row")
    except Exception as e:
        emit({"type": "unusable", "reason": _first_line(e)})
        return 0
    try:
        from ..gpu.adapters import probe_subgroup_sizes
        sizes = probe_subgroup_sizes(ctx)
    except Exception:
        sizes = None
    emit({"type": "hello", "variant": ctx.variant(), "subgroups": ctx.subgroups, "f16": ctx.f16,
          "max_binding": ctx.max_binding, "subgroup_sizes": sizes, "pid": os.getpid()})

    from . import cases as S
    cases = {c.id: c for c in S.all_cases(S.load_extra(a.extra))}
    errs = _WgpuErrors()
    logging.getLogger("wgpu").addHandler(errs)
    for cid in ids:
        emit({"type": "start", "case": cid})
        errs.messages.clear()
        c = cases.get(cid)
        t0 = time.perf_counter()
        chk = S.Check()
        try:
            if c is None:
                raise KeyError(f"no case {cid!r} in this worker")
            c.fn(ctx, chk)
            out = chk.outcome()
        except S.Skip as e:
            out = {"status": "skip", "note": str(e)}
        except Exception as e:
            out = {"status": "error", "note": _first_line(e) + _where(e)}
        if errs.messages:
            out["status"] = "error"
            out["note"] = "; ".join(filter(None, [out.get("note"), "wgpu: " + " | ".join(errs.messages[:3])]))
        out["time_s"] = round(time.perf_counter() - t0, 4)
        for k in ("max_abs", "max_rel", "tol"):
            if k in out:
                out[k] = _num(out[k])
        emit({"type": "result", "case": cid, "outcome": out})
        if out["status"] == "error":
            return RESTART_RC      # a fresh device for the next case
    emit({"type": "done"})
    return 0


# ==== parent ==================================================================================

from ..errors import WgmtpError  # noqa: E402


class WorkerError(WgmtpError):
    """A child that could not even list the adapters."""


def _child_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "wgmtp.check.worker", *args]


def _env() -> dict:
    env = dict(os.environ)
    env.setdefault("XDG_RUNTIME_DIR", tempfile.gettempdir())
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _describe_exit(rc: int) -> str:
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    if rc > 255:
        return f"exit status {rc:#x}"          # Windows NTSTATUS (0xC0000005 = access violation)
    return f"exit status {rc}"


def _tail(path: str, n_lines: int = 6, n_chars: int = 800) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 8192))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    return " | ".join(lines[-n_lines:])[-n_chars:]


class _Child:
    """A worker process, its journal lines on a queue (a reader thread: portable, unlike select on
    pipes), its stderr in a temp file."""

    def __init__(self, args: list[str], stdin_text: str = "") -> None:
        self.err_file = tempfile.NamedTemporaryFile(prefix="wgmtp-check-", suffix=".stderr", delete=False)
        self.proc = subprocess.Popen(_child_cmd(*args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.err_file, env=_env())
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        try:
            self.proc.stdin.write(stdin_text.encode())
            self.proc.stdin.close()
        except OSError:
            pass          # it died at once; the journal says so

    def _read(self) -> None:
        for raw in self.proc.stdout:
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            if isinstance(obj, dict):
                self.lines.put(obj)
        self.lines.put(None)    # EOF

    def next(self, timeout: float) -> dict | None | str:
        """The next journal entry; None at EOF; "timeout"."""
        try:
            return self.lines.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return "timeout"

    def finish(self, kill: bool = False) -> int:
        if kill and self.proc.poll() is None:
            self.proc.kill()
        try:
            rc = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        return rc

    def stderr_tail(self) -> str:
        self.err_file.flush()
        return _tail(self.err_file.name)

    def close(self) -> None:
        try:
            self.err_file.close()
            os.unlink(self.err_file.name)
        except OSError:
            pass


def list_adapters_isolated(timeout: float = STARTUP_TIMEOUT) -> tuple[list[dict], dict]:
    """(describe(probe=False) of every adapter, kill switches in force), from a child process."""
    ch = _Child(["--list"])
    try:
        msg = ch.next(timeout)
        if not isinstance(msg, dict) or msg.get("type") != "adapters":
            rc = ch.finish(kill=True)
            why = "timed out" if msg == "timeout" else _describe_exit(rc)
            raise WorkerError(f"listing the WebGPU adapters failed ({why}): {ch.stderr_tail() or 'no output'}")
        ch.finish()
        return msg["adapters"], msg.get("kill_switches", {})
    finally:
        ch.close()


@dataclass
class Variant:
    """One way of opening an adapter: its features on or off."""
    adapter: int
    backend: str
    subgroups: bool
    f16: bool
    families: tuple[str, ...] | None = None     # None = every family

    @property
    def name(self) -> str:
        return f"{self.backend.lower()}{'' if self.subgroups else '-nosg'}{'' if self.f16 else '-nof16'}"


def plan_variants(adapter: dict) -> list[Variant]:
    """All features the adapter offers (minus WGMTP_DISABLE_*), all off, and where it has both
    subgroups and f16 each alone, for the families whose shaders depend on f16 (the others compile
    the same source as in one of the first two)."""
    from ..gpu.device import env_flag
    from .cases import F16_FAMILIES
    feats = set(adapter.get("features", []))
    sg = "subgroup" in feats and not env_flag("WGMTP_DISABLE_SUBGROUPS")
    h = "shader-f16" in feats and not env_flag("WGMTP_DISABLE_F16")
    i, be = adapter["index"], adapter["backend"]
    out = [Variant(i, be, sg, h)]
    if sg or h:
        out.append(Variant(i, be, False, False))
    if sg and h:
        out += [Variant(i, be, True, False, tuple(F16_FAMILIES)), Variant(i, be, False, True, tuple(F16_FAMILIES))]
    return out


def _row(case, outcome: dict) -> dict:
    r = {"family": case.family, "op": case.kernel, "case": case.name, "id": case.id, "tags": list(case.tags),
         "status": outcome.get("status", "error"), "max_abs": outcome.get("max_abs"),
         "max_rel": outcome.get("max_rel"), "tol": outcome.get("tol"), "exact": outcome.get("exact"),
         "time_s": outcome.get("time_s"), "note": outcome.get("note", "")}
    for k in ("checks", "failed_checks"):
        if k in outcome:
            r[k] = outcome[k]
    return r


def run_variant(v: Variant, cases: list, *, timeout: float = 60.0, extra_cases: str | None = None,
                on_row: Callable[[Variant, dict], None] | None = None) -> dict:
    """Run `cases` on one adapter variant in worker processes; returns the variant's record
    (see report.py): status "ran", "unusable" or "aborted", its rows, worker facts."""
    rec: dict[str, Any] = {"adapter": v.adapter, "variant": v.name, "subgroups": v.subgroups, "f16": v.f16,
                           "families": list(v.families) if v.families else None, "status": "ran", "note": "",
                           "worker": None, "workers_started": 0, "rows": []}
    t_start = time.perf_counter()
    remaining = list(cases)
    by_id = {c.id: c for c in cases}
    args = ["--adapter", str(v.adapter), "--subgroups", str(int(v.subgroups)), "--f16", str(int(v.f16))]
    if extra_cases:
        args += ["--extra", str(extra_cases)]

    def add(case, outcome):
        row = _row(case, outcome)
        rec["rows"].append(row)
        if on_row:
            on_row(v, row)

    while remaining:
        ch = _Child(args, json.dumps([c.id for c in remaining]))
        rec["workers_started"] += 1
        try:
            msg = ch.next(max(STARTUP_TIMEOUT, timeout))
            if isinstance(msg, dict) and msg.get("type") == "unusable":
                ch.finish()
                rec.update(status="unusable", note=f"cannot run compute shaders: {msg.get('reason')}")
                break
            if not (isinstance(msg, dict) and msg.get("type") == "hello"):
                rc = ch.finish(kill=True)
                why = (f"no answer within {max(STARTUP_TIMEOUT, timeout):.0f} s" if msg == "timeout"
                       else _describe_exit(rc))
                rec.update(status="aborted", note=f"the worker failed while opening the device ({why}); "
                                                  f"stderr: {ch.stderr_tail() or '-'}")
                break
            if rec["worker"] is None:
                rec["worker"] = {k: msg.get(k)
                                 for k in ("variant", "subgroups", "f16", "max_binding", "subgroup_sizes")}
            current, t_case, progressed = None, 0.0, False
            while True:
                msg = ch.next(timeout if current else max(STARTUP_TIMEOUT, timeout))
                if msg == "timeout":
                    if current is None:           # between cases: the worker itself is stuck
                        ch.finish(kill=True)
                        rec.update(status="aborted", note="the worker stopped answering between cases")
                        remaining = []
                        break
                    ch.finish(kill=True)
                    add(by_id[current], {"status": "hang", "time_s": round(time.perf_counter() - t_case, 3),
                                         "note": f"no result within {timeout:g} s; the worker was killed "
                                                 f"and a new one went on with the next case"})
                    remaining = [c for c in remaining if c.id != current]
                    break
                if msg is None:                   # EOF: the child ended
                    rc = ch.finish()
                    if current is not None:
                        add(by_id[current], {"status": "crash", "time_s": round(time.perf_counter() - t_case, 3),
                                             "note": f"the worker died ({_describe_exit(rc)}) running this case; "
                                                     f"stderr: {ch.stderr_tail() or '-'}"})
                        remaining = [c for c in remaining if c.id != current]
                    elif rc not in (0, RESTART_RC) and not progressed:
                        rec.update(status="aborted", note=f"the worker died ({_describe_exit(rc)}) between cases; "
                                                          f"stderr: {ch.stderr_tail() or '-'}")
                        remaining = []
                    break
                kind = msg.get("type")
                if kind == "start":
                    current, t_case = msg.get("case"), time.perf_counter()
                    if current not in by_id:
                        current = None
                elif kind == "result":
                    cid = msg.get("case")
                    if cid in by_id:
                        add(by_id[cid], msg.get("outcome") or {})
                        remaining = [c for c in remaining if c.id != cid]
                        progressed = True
                    current = None
                elif kind == "done":
                    ch.finish()
                    remaining = []
                    break
        finally:
            if ch.proc.poll() is None:        # interrupted (Ctrl-C) or an exception here: no orphans
                ch.finish(kill=True)
            ch.close()
    rec["time_s"] = round(time.perf_counter() - t_start, 3)
    return rec


def select_adapters(adapters: list[dict], device: str | int | None) -> list[dict]:
    """--device N|substring|all (None: WGMTP_DEVICE if set, else all; WGMTP_BACKEND filters)."""
    from ..errors import DeviceError
    from ..gpu.device import BACKENDS
    want_be = os.environ.get("WGMTP_BACKEND", "").strip().lower()
    pool = adapters
    if want_be:
        if want_be not in BACKENDS:
            raise DeviceError(f"WGMTP_BACKEND={want_be!r} is not one of vulkan, gl, metal, dx12")
        pool = [a for a in adapters if a["backend"] == BACKENDS[want_be]]
    if device in (None, ""):
        device = os.environ.get("WGMTP_DEVICE") or "all"
    if not pool:
        raise DeviceError("no WebGPU adapter found" + (f" for WGMTP_BACKEND={want_be}" if want_be else "")
                          + "; install a Vulkan driver (on a machine without a GPU: apt install mesa-vulkan-drivers)")
    s = str(device).strip()
    if s.lower() == "all":
        return pool
    if s.isdigit():
        hit = [a for a in pool if a["index"] == int(s)]
        if not hit:
            raise DeviceError(f"--device {s}: no adapter with that index (have: "
                              f"{', '.join(str(a['index']) for a in pool)})")
        return hit
    hit = [a for a in pool if s.lower() in f"{a['device']} {a['vendor']} {a['backend']} {a['type']}".lower()]
    if not hit:
        raise DeviceError(
            f"--device {s!r} matches no adapter (have: "
            f"{'; '.join(str(a['index']) + ': ' + a['device'] + ' (' + a['backend'] + ')' for a in pool)})")
    return hit


def run_suite(device: str | int | None = None, ops: list[str] | None = None, case: str | None = None,
              timeout: float = 60.0, extra_cases: str | None = None, only_variants: list[str] | None = None,
              on_variant_start: Callable[[dict, Variant, int], None] | None = None,
              on_variant: Callable[[dict, dict], None] | None = None,
              on_row: Callable[[Variant, dict], None] | None = None) -> dict:
    """The op suite on the selected adapters, every variant; returns the JSON document of
    report.py (without "model"). `extra_cases` (test hook, not a CLI option): a module path whose
    CASES join their families and run first in them. `only_variants`: only the variants of these names
    (e.g. ["vulkan"]; default all)."""
    from ..errors import WgmtpError
    from . import cases as S
    from .report import build_document
    valid = S.names()
    extra = S.load_extra(extra_cases)
    valid += sorted({c.family for c in extra} - set(valid))
    if ops:
        bad = [o for o in ops if o not in valid]
        if bad:
            raise WgmtpError(f"-o {','.join(bad)}: no such op family (have: {', '.join(valid)})")
    chosen = S.select(S.all_cases(extra), ops, case)
    if not chosen:
        raise WgmtpError(f"no case matches -o {','.join(ops or ['*'])} --case {case!r}")
    t0 = time.perf_counter()
    adapters, ks = list_adapters_isolated()
    picked = select_adapters(adapters, device)
    explicit = device not in (None, "", "all") or bool(os.environ.get("WGMTP_DEVICE"))
    variants: list[dict] = []
    out_adapters: list[dict] = []
    for ad in picked:
        ad = dict(ad)
        out_adapters.append(ad)
        ad.update(usable=None, unusable_reason=None, subgroup_sizes=None, variants=[])
        for v in plan_variants(ad):
            if only_variants is not None and v.name not in only_variants:
                continue
            cs = chosen if v.families is None else [c for c in chosen if c.family in v.families]
            if not cs:
                continue
            if on_variant_start:
                on_variant_start(ad, v, len(cs))
            rec = run_variant(v, cs, timeout=timeout, extra_cases=extra_cases, on_row=on_row)
            rec["adapter_name"] = f"{ad['device']} ({ad['backend']})"
            ad["variants"].append(v.name)
            if rec["status"] == "unusable":
                ad.update(usable=False, unusable_reason=rec["note"])
                rec["counts_as_failure"] = explicit
            else:
                ad["usable"] = True
                if rec["worker"] and rec["worker"].get("subgroup_sizes"):
                    ad["subgroup_sizes"] = rec["worker"]["subgroup_sizes"]
            variants.append(rec)
            if on_variant:
                on_variant(ad, rec)
            if rec["status"] == "unusable":
                break
    return build_document(adapters=out_adapters, variants=variants, kill_switches=ks,
                          options={"device": None if device is None else str(device), "ops": ops, "case": case,
                                   "timeout_s": timeout},
                          time_s=time.perf_counter() - t0)


if __name__ == "__main__":
    sys.exit(child_main())
