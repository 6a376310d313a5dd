"""Tables, summary lines and the `--json` document of `wgmtp check`.

JSON document (schema_version 1; fields are only ever added, a change of meaning bumps the
version). Numbers that are not finite (a NaN against a number) are written as null, with the
row's note saying what differed.

    {
      "schema_version": 1,
      "tool": "wgmtp check",
      "wgmtp_version": str,
      "created": str,                      # ISO 8601, UTC
      "host": {"python": str, "platform": str, "wgpu": str},
      "options": {"device": str|null, "ops": [str]|null, "case": str|null, "timeout_s": number},
      "kill_switches": {str: str},         # WGMTP_* variables in force
      "adapters": [{                       # the adapters selected (wgmtp.gpu.adapters.describe, unprobed)
          "index": int, "backend": str, "type": str, "vendor": str, "device": str, "driver": str,
          "features": [str], "limits": {str: int},
          "usable": bool|null,             # false: it cannot run compute shaders (see unusable_reason)
          "unusable_reason": str|null,
          "subgroup_sizes": [int]|null,    # as probed by the worker (null without subgroups)
          "variants": [str]                # names of its variants that were run
      }],
      "variants": [{                       # one per adapter variant, in run order
          "adapter": int, "adapter_name": str,
          "variant": str,                  # e.g. "vulkan", "vulkan-nosg-nof16", "opengl-nosg-nof16"
          "subgroups": bool, "f16": bool,
          "families": [str]|null,          # null: every selected family; else only these (the
                                           # f16-only variants run the f16-dependent families)
          "status": "ran"|"unusable"|"aborted",
          "note": str,
          "counts_as_failure": bool,       # only with "unusable": the adapter was asked for by --device
          "worker": {"variant": str, "subgroups": bool, "f16": bool, "max_binding": int,
                     "subgroup_sizes": [int]|null} | null,
          "workers_started": int,          # > 1 after crashes, hangs or errors (a fresh worker each)
          "time_s": number,                # wall time of the variant, worker start-ups included
          "counts": COUNTS,
          "rows": [ROW]
      }],
      "model": null | {"adapter": {...}, "rows": [ROW], "counts": COUNTS},   # `-m` mode
      "counts": COUNTS,                    # over every row (op suite and model)
      "ok": bool,                          # no fail/crash/hang/error, no aborted variant, no
                                           # unusable adapter that was asked for by --device
      "exit_status": int,                  # 0 when ok, else 1
      "time_s": number
    }
    COUNTS = {"pass": int, "fail": int, "crash": int, "hang": int, "error": int, "skip": int}
    ROW = {
      "family": str,                       # op family (-o name); "model" for model-mode rows
      "op": str,                           # the kernel (e.g. "add_rmsnorm", "kv_store")
      "case": str,                         # the case within the family (shape, type, ...)
      "id": str,                           # "family/case": what --case matches
      "tags": [str],                       # "batch" (batch-invariance suite), "rollback", "segments"
      "status": "pass"|"fail"|"crash"|"hang"|"error"|"skip",
      "max_abs": number|null,              # largest |gpu - twin| over the case's comparisons
      "max_rel": number|null,              # max_abs of a comparison / largest |twin| it compared
      "tol": number|null,                  # the bound at the element nearest to (or furthest past)
                                           # its bound; 0 for exact comparisons
      "exact": bool|null,                  # every comparison was exact equality
      "time_s": number|null,               # the case's time (pipeline compiles included)
      "note": str,                         # why it failed / crashed / was skipped ('' otherwise)
      # optional: "checks": int (comparisons made), "failed_checks": [str], "layer": int|str (model)
    }
"""
from __future__ import annotations

import datetime
import json
import platform
import sys
from typing import Any

SCHEMA_VERSION = 1
STATUSES = ("pass", "fail", "crash", "hang", "error", "skip")
BAD = ("fail", "crash", "hang", "error")
_WORDS = {"pass": "passed", "fail": "failed", "crash": "crashed", "hang": "hung", "error": "errors", "skip": "skipped"}
_STYLE = {"pass": "green", "fail": "bold red", "crash": "bold magenta", "hang": "bold magenta", "error": "bold red",
          "skip": "yellow"}


def count(rows: list[dict]) -> dict[str, int]:
    c = {s: 0 for s in STATUSES}
    for r in rows:
        c[r.get("status", "error") if r.get("status") in c else "error"] += 1
    return c


def counts_line(c: dict[str, int]) -> str:
    return ", ".join(f"{c[s]} {_WORDS[s]}" for s in STATUSES)


def normalize_model_rows(rows: list[dict]) -> list[dict]:
    """Model-mode rows (op, case, max_abs, max_rel, tol, status, time_s, optional layer, note)
    completed to the ROW schema."""
    out = []
    for r in rows:
        r = dict(r)
        r.setdefault("family", "model")
        r.setdefault("op", "?")
        r.setdefault("case", "")
        r.setdefault("id", f"model/{r['op']} {r['case']}".rstrip())
        r.setdefault("tags", [])
        r.setdefault("status", "error")
        for k in ("max_abs", "max_rel", "tol", "exact", "time_s"):
            v = r.get(k)
            if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
                v = None
            r[k] = v
        r["note"] = r.get("note") or ""
        out.append(r)
    return out


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("wgmtp")
    except Exception:
        return "unknown"


def _wgpu_version() -> str:
    try:
        import wgpu
        return str(wgpu.__version__)
    except Exception:
        return "unknown"


def build_document(*, adapters: list[dict], variants: list[dict], kill_switches: dict, options: dict,
                   time_s: float, model: dict | None = None) -> dict:
    for v in variants:
        v["counts"] = count(v["rows"])
    doc = {
        "schema_version": SCHEMA_VERSION,
        "tool": "wgmtp check",
        "wgmtp_version": _version(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": {"python": sys.version.split()[0], "platform": platform.platform(), "wgpu": _wgpu_version()},
        "options": options,
        "kill_switches": dict(kill_switches),
        "adapters": adapters,
        "variants": variants,
        "model": None,
    }
    finalize(doc, model, time_s)
    return doc


def finalize(doc: dict, model: dict | None, time_s: float) -> dict:
    """(Re)compute counts, ok and exit_status, with the model section if any."""
    if model is not None:
        rows = normalize_model_rows(model.get("rows", []))
        doc["model"] = {"adapter": model.get("adapter", {}), "rows": rows, "counts": count(rows)}
    rows = [r for v in doc["variants"] for r in v["rows"]] + (doc["model"]["rows"] if doc["model"] else [])
    c = count(rows)
    ok = not any(c[s] for s in BAD)
    ok = ok and not any(v["status"] == "aborted" for v in doc["variants"])
    ok = ok and not any(v["status"] == "unusable" and v.get("counts_as_failure") for v in doc["variants"])
    if doc["variants"] or doc["model"] is None:     # the op suite ran: at least one variant must have
        ok = ok and any(v["status"] == "ran" for v in doc["variants"])
    doc["counts"] = c
    doc["ok"] = bool(ok)
    doc["exit_status"] = 0 if ok else 1
    doc["time_s"] = round(float(time_s), 3)
    return doc


def _finite(x: Any) -> Any:
    """The document with every non-finite float as null (JSON has no inf/NaN)."""
    if isinstance(x, float):
        return x if x == x and x not in (float("inf"), float("-inf")) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def write_json(path: str, doc: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(_finite(doc), f, indent=1, allow_nan=False, default=str)
        f.write("\n")


# ---- text output ------------------------------------------------------------------------------

def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, (int, float)):
        return "0" if x == 0 else f"{x:.3g}"
    return str(x)


def _tol(r: dict) -> str:
    if r.get("status") in ("crash", "hang", "error", "skip"):
        return "-"
    if r.get("exact"):
        return "exact"
    return _fmt(r.get("tol"))


def variant_title(adapter: dict, v: dict) -> str:
    fam = f"; only {', '.join(v['families'])}" if v.get("families") else ""
    return (f"[{adapter['index']}] {adapter['device']} ({adapter['backend']}) -- {v['variant']}: "
            f"subgroups {'on' if v['subgroups'] else 'off'}, f16 {'on' if v['f16'] else 'off'}{fam}")


def print_rows(console, title: str, rows: list[dict], *, quiet: bool = False) -> None:
    """The per-variant table: op, case, max abs, max rel, tol, status, time; then the notes of the
    rows that did not pass."""
    from rich.table import Table
    shown = [r for r in rows if r.get("status") != "pass"] if quiet else rows
    if shown:
        t = Table(title=title, title_justify="left")
        for name, just in (("op", "left"), ("case", "left"), ("max abs", "right"), ("max rel", "right"),
                           ("tol", "right"), ("status", "left"), ("time", "right")):
            t.add_column(name, justify=just, overflow="fold")
        if any("layer" in r for r in shown):
            t.add_column("layer", justify="right")
        for r in shown:
            st = r.get("status", "error")
            cells = [r.get("op", ""), r.get("case", ""), _fmt(r.get("max_abs")), _fmt(r.get("max_rel")), _tol(r),
                     f"[{_STYLE.get(st, '')}]{st}[/]", "-" if r.get("time_s") is None else f"{r['time_s']:.2f}s"]
            if any("layer" in x for x in shown):
                cells.append(_fmt(r.get("layer")))
            t.add_row(*cells)
        console.print(t)
    elif quiet:
        console.print(f"{title}: every case passed")
    for r in rows:
        if r.get("status") not in ("pass",) and r.get("note"):
            st = r["status"]
            console.print(f"  [{_STYLE.get(st, '')}]{st}[/] {r.get('id') or r.get('case')}: {r['note']}",
                          markup=True, highlight=False, soft_wrap=True)


def variant_summary(adapter: dict, v: dict) -> str:
    head = f"[{adapter['index']}] {adapter['device']} ({adapter['backend']}) {v['variant']}"
    if v["status"] == "unusable":
        return f"{head}: not usable -- {v['note']}"
    s = f"{head}: {counts_line(count(v['rows']))} in {v.get('time_s', 0):.1f} s"
    if v["status"] == "aborted":
        s += f" -- ABORTED: {v['note']}"
    return s


def print_summary(console, doc: dict) -> None:
    by_index = {a["index"]: a for a in doc["adapters"]}
    if doc["variants"]:
        console.print("[bold]summary[/]")
        for v in doc["variants"]:
            console.print("  " + variant_summary(by_index.get(v["adapter"], {"index": v["adapter"], "device": "?",
                                                                              "backend": "?"}), v),
                          highlight=False, soft_wrap=True)
    if doc.get("model"):
        console.print(f"  model: {counts_line(doc['model']['counts'])}", highlight=False)
    verdict = "[green]OK[/]" if doc["ok"] else "[bold red]FAILED[/]"
    console.print(f"{verdict}: {counts_line(doc['counts'])} in {doc['time_s']:.1f} s", highlight=False)
