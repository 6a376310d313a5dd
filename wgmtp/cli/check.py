"""`wgmtp check`: the cross-GPU smoke test (README, "Check an adapter").

Without `-m`: the op suite -- every kernel against its numpy twin, the batch-invariance suite,
snapshot rollback and several sequences in one batch (segments) -- on every adapter variant
(subgroups and f16 on and off where the adapter has them), each case in a worker process so a
driver crash or hang is reported naming the case. A table per variant, a summary, `--json FILE`,
exit status 1 on any failure, crash, hang or error.

With `-m model.gguf [-md sidecar]`: model mode (wgmtp/check/model.py): the GPU and the numpy
reference side by side, layer by layer (with `-o` the op suite runs first).

    wgmtp check                          every adapter, every op family
    wgmtp check -o matvec,attention      some families (or tags: batch, rollback, segments)
    wgmtp check --device 0 --case Q4_K   one adapter, cases whose name contains Q4_K
    wgmtp check --list                   the families and cases
    wgmtp check --json out.json          everything, with the adapters' facts (schema: check/report.py)
"""
from __future__ import annotations

import argparse
import os
import time

from .args import integer, real, writable_file


def add_parser(sub) -> None:
    p = sub.add_parser("check", help="every kernel against the numpy reference on every adapter "
                                     "(with -m: a model layer by layer)",
                       description="The cross-GPU smoke test: every kernel against its numpy twin, the "
                                   "batch-invariance suite and snapshot rollback, on every adapter variant; "
                                   "with -m, a whole model layer by layer against the reference.")
    p.add_argument("-o", "--op", dest="ops", default=None, metavar="OP[,OP...]",
                   help="op families or tags to run (see --list); default: all")
    p.add_argument("--case", default=None, metavar="SUBSTR", help="only cases whose id (family/case) contains SUBSTR")
    p.add_argument("--device", default=None, metavar="N|NAME|all",
                   help="adapter index or name substring (see `wgmtp devices`); default: all adapters")
    p.add_argument("--timeout", type=real(0, above=True), default=60.0, metavar="SECONDS",
                   help="per case: a case without a result by then is reported as a hang (default 60)")
    p.add_argument("--json", dest="json_path", type=writable_file, default=None, metavar="FILE",
                   help="write everything as JSON")
    p.add_argument("--list", dest="list_cases", action="store_true", help="list the op families and cases, run nothing")
    p.add_argument("-q", "--quiet", action="store_true", help="tables show only the cases that did not pass")
    g = p.add_argument_group("model mode")
    g.add_argument("-m", "--model", default=None, help="GGUF model: compare it layer by layer with the reference")
    g.add_argument("-md", "--model-draft", dest="mtp_file", default=None, help="MTP sidecar GGUF (mtp-*.gguf)")
    g.add_argument("-p", "--prompt", default=None, help="prompt for model mode")
    g.add_argument("--n-tokens", type=integer(1), default=None, help="prompt tokens in model mode (default: its own)")
    g.add_argument("-c", "--ctx-size", type=integer(1), default=4096, help="context size in model mode")
    p.set_defaults(fn=cmd_check)


def _ops(a: argparse.Namespace) -> list[str] | None:
    if not a.ops:
        return None
    return [o.strip() for o in a.ops.split(",") if o.strip()] or None


def cmd_list(con) -> int:
    from rich.table import Table

    from ..check import cases as S
    t = Table(title="wgmtp check: op families and cases", title_justify="left")
    t.add_column("family")
    t.add_column("cases", justify="right")
    t.add_column("ops")
    t.add_column("case names", overflow="fold")
    for f in S.FAMILIES:
        cs = [c for c in S.CASES if c.family == f]
        t.add_row(f, str(len(cs)), ", ".join(dict.fromkeys(c.kernel for c in cs)), "; ".join(c.name for c in cs))
    con.print(t)
    for tag in S.TAGS:
        cs = [c.id for c in S.CASES if tag in c.tags]
        con.print(f"[cyan]-o {tag}[/]: {len(cs)} cases across {', '.join(dict.fromkeys(c.split('/')[0] for c in cs))}")
    con.print(f"{len(S.CASES)} cases per adapter variant; families that depend on f16 "
              f"({', '.join(S.F16_FAMILIES)}) also run with subgroups and f16 toggled separately")
    return 0


def cmd_check(a: argparse.Namespace) -> int:
    from rich.console import Console

    from ..check import report
    from ..gpu.device import kill_switches
    con = Console()
    if not con.is_terminal and not os.environ.get("COLUMNS"):
        con = Console(width=160)          # logs and CI: tables wide enough not to wrap every cell
    if a.list_cases:
        return cmd_list(con)
    t0 = time.perf_counter()
    ks = kill_switches()
    con.print("kill switches: " + (", ".join(f"{k}={v}" for k, v in ks.items()) if ks else "none set"),
              highlight=False)
    ops = _ops(a)
    doc = None
    if not a.model or ops:
        # extra_cases: a test-only hook (tests/check_hooks.py), set on the Namespace by Python code;
        # deliberately not a command-line option
        doc = run_op_suite(con, device=a.device, ops=ops, case=a.case, timeout=a.timeout, quiet=a.quiet,
                           extra_cases=getattr(a, "extra_cases", None))
    model = None
    if a.model:
        try:
            from ..check.model import run_model_check
        except ImportError:
            con.print("wgmtp check: model mode is not available in this build (wgmtp/check/model.py is missing)")
            return 2
        model = run_model_check(a)
        rows = report.normalize_model_rows(model.get("rows", []))
        ad = model.get("adapter") or {}
        name = ad.get("name") or f"{ad.get('device', '?')} ({ad.get('backend', '?')})"
        title = f"model {a.model}" + (f" on {name}" + (f" -- {ad['variant']}" if ad.get("variant") else "")
                                      if ad else "")
        report.print_rows(con, title, rows, quiet=a.quiet)
    if doc is None:
        doc = report.build_document(adapters=[], variants=[], kill_switches=ks,
                                    options={"device": a.device, "ops": ops, "case": a.case, "timeout_s": a.timeout},
                                    time_s=0.0, model=model)
    report.finalize(doc, model, time.perf_counter() - t0)
    report.print_summary(con, doc)
    if a.json_path:
        report.write_json(a.json_path, doc)
        con.print(f"wrote {a.json_path}", highlight=False)
    return doc["exit_status"]


def run_op_suite(con, *, device=None, ops=None, case=None, timeout=60.0, quiet=False, extra_cases=None) -> dict:
    """The op suite with live output: a table per variant as soon as it is done."""
    from ..check import report
    from ..check.worker import run_suite
    status = {"n": 0, "total": 0, "spinner": None}

    def start(ad, v, n):
        status.update(n=0, total=n, title=f"[{ad['index']}] {ad['device']} ({ad['backend']}) {v.name}")
        if con.is_terminal:
            status["spinner"] = con.status(f"{status['title']}: starting")
            status["spinner"].start()

    def row(v, r):
        status["n"] += 1
        if status["spinner"] is not None:
            status["spinner"].update(f"{status['title']}: {status['n']}/{status['total']} ({r['id']}: {r['status']})")

    def done(ad, rec):
        if status["spinner"] is not None:
            status["spinner"].stop()
            status["spinner"] = None
        if rec["status"] == "unusable":
            con.print(report.variant_summary(ad, rec), highlight=False)
            return
        report.print_rows(con, report.variant_title(ad, rec), rec["rows"], quiet=quiet)
        con.print(report.variant_summary(ad, rec), highlight=False)

    try:
        return run_suite(device=device, ops=ops, case=case, timeout=timeout, extra_cases=extra_cases,
                         on_variant_start=start, on_variant=done, on_row=row)
    finally:
        if status["spinner"] is not None:
            status["spinner"].stop()
