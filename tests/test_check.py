"""`wgmtp check`'s op suite (wgmtp/check): it passes on every adapter variant of this machine
through the CLI in a subprocess, its JSON has the documented schema (report.py; checked by a small
validator here, jsonschema is not a dependency), -o / --case / --device select what runs, and the
test-only hooks of tests/check_hooks.py show the isolation: a case that aborts its worker is
reported as a crash naming it and the cases after it still run; a case that hangs is killed after
--timeout; a wgpu validation error is that case's error; a kernel made wrong is caught, with a
non-zero exit status."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from wgmtp import quants
from wgmtp.check import cases as S
from wgmtp.check.cases import linear as SL
from wgmtp.check.report import SCHEMA_VERSION

ROOT = Path(__file__).resolve().parent.parent
HOOKS = str(ROOT / "tests" / "check_hooks.py")
STATUSES = {"pass", "fail", "crash", "hang", "error", "skip"}


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.setdefault("XDG_RUNTIME_DIR", tempfile.gettempdir())
    env["COLUMNS"] = "200"
    return subprocess.run([sys.executable, "-m", "wgmtp.cli", "check", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)


def cli_with_hooks(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """The check command with the test-only `extra_cases` hook set on its Namespace (the hook is
    not a command-line option)."""
    code = ("import sys; from wgmtp.cli import build_parser; "
            f"a = build_parser().parse_args(['check', *sys.argv[1:]]); a.extra_cases = {HOOKS!r}; "
            "sys.exit(a.fn(a))")
    env = dict(os.environ)
    env.setdefault("XDG_RUNTIME_DIR", tempfile.gettempdir())
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=env)


# ---- the documented schema (report.py), checked without jsonschema ------------------------------

def _type_ok(v, t) -> bool:
    if t == "int":
        return isinstance(v, int) and not isinstance(v, bool)
    if t == "number":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    return isinstance(v, {"str": str, "bool": bool, "list": list, "dict": dict}[t])


def _field(errs, where, obj, key, types, nullable=False, enum=None):
    if key not in obj:
        errs.append(f"{where}: missing '{key}'")
        return
    v = obj[key]
    if v is None:
        if not nullable:
            errs.append(f"{where}.{key}: null")
        return
    if not any(_type_ok(v, t) for t in types.split("|")):
        errs.append(f"{where}.{key}: {v!r} is not {types}")
    elif enum is not None and v not in enum:
        errs.append(f"{where}.{key}: {v!r} not in {sorted(enum)}")


def _counts(errs, where, c):
    if not isinstance(c, dict) or set(c) != STATUSES or not all(_type_ok(x, "int") for x in c.values()):
        errs.append(f"{where}: counts {c!r}")


def _row(errs, where, r):
    for k, t, n in (("family", "str", False), ("op", "str", False), ("case", "str", False), ("id", "str", False),
                    ("tags", "list", False), ("max_abs", "number", True), ("max_rel", "number", True),
                    ("tol", "number", True), ("exact", "bool", True), ("time_s", "number", True),
                    ("note", "str", False)):
        _field(errs, where, r, k, t, n)
    _field(errs, where, r, "status", "str", enum=STATUSES)
    if "checks" in r:
        _field(errs, where, r, "checks", "int")
    if "failed_checks" in r:
        _field(errs, where, r, "failed_checks", "list")
    if r.get("status") in ("pass", "fail") and r.get("family") != "model":
        for k in ("max_abs", "max_rel", "tol", "exact"):
            if r.get(k) is None:
                errs.append(f"{where}.{k}: null in a {r['status']} row")


def validate(doc: dict) -> list[str]:
    e: list[str] = []
    _field(e, "doc", doc, "schema_version", "int", enum={SCHEMA_VERSION})
    _field(e, "doc", doc, "tool", "str", enum={"wgmtp check"})
    for k in ("wgmtp_version", "created"):
        _field(e, "doc", doc, k, "str")
    for k in ("host", "options", "kill_switches"):
        _field(e, "doc", doc, k, "dict")
    for k in ("python", "platform", "wgpu"):
        _field(e, "doc.host", doc.get("host", {}), k, "str")
    opts = doc.get("options", {})
    _field(e, "doc.options", opts, "device", "str", True)
    _field(e, "doc.options", opts, "ops", "list", True)
    _field(e, "doc.options", opts, "case", "str", True)
    _field(e, "doc.options", opts, "timeout_s", "number")
    _field(e, "doc", doc, "adapters", "list")
    for i, a in enumerate(doc.get("adapters", [])):
        w = f"adapters[{i}]"
        for k, t in (("index", "int"), ("backend", "str"), ("type", "str"), ("vendor", "str"), ("device", "str"),
                     ("driver", "str"), ("features", "list"), ("limits", "dict"), ("variants", "list")):
            _field(e, w, a, k, t)
        _field(e, w, a, "usable", "bool", True)
        _field(e, w, a, "unusable_reason", "str", True)
        _field(e, w, a, "subgroup_sizes", "list", True)
    _field(e, "doc", doc, "variants", "list")
    for i, v in enumerate(doc.get("variants", [])):
        w = f"variants[{i}]"
        for k, t in (("adapter", "int"), ("adapter_name", "str"), ("variant", "str"), ("subgroups", "bool"),
                     ("f16", "bool"), ("note", "str"), ("workers_started", "int"), ("time_s", "number"),
                     ("rows", "list")):
            _field(e, w, v, k, t)
        _field(e, w, v, "families", "list", True)
        _field(e, w, v, "status", "str", enum={"ran", "unusable", "aborted"})
        _field(e, w, v, "worker", "dict", True)
        if isinstance(v.get("worker"), dict):
            for k, t, n in (("variant", "str", False), ("subgroups", "bool", False), ("f16", "bool", False),
                            ("max_binding", "int", False), ("subgroup_sizes", "list", True)):
                _field(e, f"{w}.worker", v["worker"], k, t, n)
        _counts(e, f"{w}.counts", v.get("counts"))
        for j, r in enumerate(v.get("rows", [])):
            _row(e, f"{w}.rows[{j}]", r)
    if doc.get("model") is not None:
        _field(e, "doc.model", doc["model"], "rows", "list")
        _counts(e, "doc.model.counts", doc["model"].get("counts"))
        for j, r in enumerate(doc["model"].get("rows", [])):
            _row(e, f"model.rows[{j}]", r)
    _counts(e, "doc.counts", doc.get("counts"))
    _field(e, "doc", doc, "ok", "bool")
    _field(e, "doc", doc, "exit_status", "int")
    _field(e, "doc", doc, "time_s", "number")
    return e


# ---- the whole suite on every adapter -----------------------------------------------------------

@pytest.fixture(scope="module")
def full(tmp_path_factory):
    out = tmp_path_factory.mktemp("check") / "out.json"
    p = cli("--json", str(out), "-q", timeout=900)   # every case on every adapter: about 130 s alone, cold
    assert out.exists(), p.stdout + p.stderr
    return p, json.loads(out.read_text())


def usable(doc) -> list[dict]:
    return [a for a in doc["adapters"] if a["usable"]]


def test_op_suite_passes_on_every_adapter(full):
    p, doc = full
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    assert doc["ok"] and doc["exit_status"] == 0
    assert usable(doc), "no adapter could run compute shaders"
    n_all = len(S.CASES)
    n_f16 = sum(c.family in S.F16_FAMILIES for c in S.CASES)
    for a in doc["adapters"]:
        if not a["usable"]:
            assert a["unusable_reason"], a            # reported, not crashed on
            continue
        feats = set(a["features"])
        runs = [v for v in doc["variants"] if v["adapter"] == a["index"]]
        want = 1 + bool(feats & {"subgroup", "shader-f16"}) + 2 * ({"subgroup", "shader-f16"} <= feats)
        if not os.environ.get("WGMTP_DISABLE_SUBGROUPS") and not os.environ.get("WGMTP_DISABLE_F16"):
            assert len(runs) == want, [v["variant"] for v in runs]
        for v in runs:
            assert v["status"] == "ran" and v["workers_started"] == 1, v["note"]
            assert len(v["rows"]) == (n_all if v["families"] is None else n_f16)
            bad = [(r["id"], r["status"], r["note"]) for r in v["rows"] if r["status"] not in ("pass", "skip")]
            assert not bad, bad
            # every family and the batch / rollback suites ran
            ran = {r["family"] for r in v["rows"] if r["status"] == "pass"}
            assert ran == (set(S.FAMILIES) if v["families"] is None else set(S.F16_FAMILIES))
            if v["families"] is None:
                tags = {t for r in v["rows"] if r["status"] == "pass" for t in r["tags"]}
                assert tags == set(S.TAGS)
                matvec_types = {r["case"].split()[1] for r in v["rows"]
                                if r["family"] == "matvec" and r["case"].startswith("batch ")}
                assert len(matvec_types) == len(quants.SUPPORTED)     # batch invariance: every weight type
    assert "OK:" in p.stdout and "passed" in p.stdout


def test_json_schema(full):
    _, doc = full
    errs = validate(doc)
    assert not errs, errs[:20]
    # the validator itself notices breakage
    broken = json.loads(json.dumps(doc))
    broken["variants"][0]["rows"][0]["status"] = "ok"
    del broken["adapters"][0]["driver"]
    assert len(validate(broken)) == 2


# ---- selection ----------------------------------------------------------------------------------

def test_op_and_case_filters(full, tmp_path):
    _, doc = full
    dev = usable(doc)[0]["index"]
    out = tmp_path / "f.json"
    p = cli("-o", "spec,rollback", "--device", str(dev), "--json", str(out))
    assert p.returncode == 0, p.stdout + p.stderr
    d = json.loads(out.read_text())
    assert validate(d) == []
    assert [a["index"] for a in d["adapters"]] == [dev]
    for v in d["variants"]:
        ids = [r["id"] for r in v["rows"]]
        want = [c.id for c in S.CASES if c.family == "spec" or "rollback" in c.tags]
        assert ids == want
    assert "accept" in p.stdout and "rollback" in p.stdout        # the tables
    p = cli("--case", "copy_row", "--device", str(dev), "--json", str(out))
    d = json.loads(out.read_text())
    assert p.returncode == 0 and {r["id"] for v in d["variants"] for r in v["rows"]} == {"spec/copy_row"}
    p = cli("-o", "nosuchop")
    assert p.returncode == 1 and "no such op family" in p.stderr and "matvec" in p.stderr
    p = cli("--list")
    assert p.returncode == 0 and "gdn_chunked" in p.stdout and "rollback" in p.stdout


FAKE_MODEL = """
import sys, types
rows = [dict(op="trunk.attn_qkv", case="[64] F32", max_abs=1e-7, max_rel=1e-8, tol=1e-5, status="pass",
             time_s=0.01, layer=0, note=""),
        dict(op="trunk.ffn_down", case="[64] Q4_K", max_abs=0.5, max_rel=0.1, tol=1e-4, status="fail",
             time_s=0.01, layer=3, note="first divergence")]
mod = types.ModuleType("wgmtp.check.model")
mod.run_model_check = lambda a: {"rows": rows, "adapter": {"name": "fake (Vulkan)", "variant": "vulkan"}}
sys.modules["wgmtp.check.model"] = mod
from wgmtp.cli import main
sys.exit(main(["check", "-m", "fake.gguf", "--json", sys.argv[1]]))
"""


def test_model_mode_rows_in_table_and_json(tmp_path):
    """-m hands over to check/model.py (faked here): its rows get the table, the JSON's "model"
    section in the ROW schema, and the exit status."""
    out = tmp_path / "m.json"
    env = dict(os.environ)
    env.setdefault("XDG_RUNTIME_DIR", tempfile.gettempdir())
    p = subprocess.run([sys.executable, "-c", FAKE_MODEL, str(out)], capture_output=True, text=True, cwd=ROOT,
                       env=env, timeout=60)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "trunk.ffn_down" in p.stdout and "first divergence" in p.stdout
    d = json.loads(out.read_text())
    assert validate(d) == [] and d["variants"] == [] and d["model"]["counts"]["fail"] == 1
    assert [r["layer"] for r in d["model"]["rows"]] == [0, 3]


def test_model_mode_unavailable(tmp_path):
    """An install without wgmtp/check/model.py (simulated: the import fails) says so, exit 2."""
    code = ("import sys; sys.modules['wgmtp.check.model'] = None\n"
            "from wgmtp import cli; sys.exit(cli.main(['check', '-m', 'nonexistent.gguf']))")
    env = dict(os.environ)
    env.setdefault("XDG_RUNTIME_DIR", tempfile.gettempdir())
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert p.returncode == 2 and "model mode is not available" in p.stdout + p.stderr, p.stdout + p.stderr


# ---- isolation and injected failures (tests/check_hooks.py) ---------------------------------

def test_abort_is_a_crash_naming_the_case(full):
    from wgmtp.check.worker import run_suite
    _, doc = full
    dev = usable(doc)[0]["index"]
    first = [v["variant"] for v in doc["variants"] if v["adapter"] == dev][:1]
    d = run_suite(device=str(dev), ops=["elementwise"], extra_cases=HOOKS, only_variants=first)
    assert len(d["variants"]) == 1
    assert validate(d) == []
    assert not d["ok"] and d["exit_status"] == 1
    for v in d["variants"]:
        rows = {r["id"]: r for r in v["rows"]}
        crash = rows["elementwise/hook: abort"]
        assert crash["status"] == "crash" and "hook: abort" in crash["id"]
        assert "died" in crash["note"] and ("SIGABRT" in crash["note"] or os.name == "nt")
        after = [r for r in v["rows"] if r["id"] != crash["id"]]     # the family's cases after it still ran
        assert [r["id"] for r in after] == [c.id for c in S.CASES if c.family == "elementwise"]
        assert all(r["status"] == "pass" for r in after)
        assert v["workers_started"] == 2 and v["counts"]["crash"] == 1


def test_hang_and_validation_error(full):
    from wgmtp.check.worker import run_suite
    _, doc = full
    dev = usable(doc)[0]["index"]
    first = [v["variant"] for v in doc["variants"] if v["adapter"] == dev][:1]
    d = run_suite(device=str(dev), ops=["spec"], timeout=3, extra_cases=HOOKS, only_variants=first)
    assert d["exit_status"] == 1
    v = d["variants"][0]
    st = {r["id"]: r for r in v["rows"]}
    assert st["spec/hook: hang"]["status"] == "hang" and "3 s" in st["spec/hook: hang"]["note"]
    err = st["spec/hook: validation error"]
    assert err["status"] == "error" and "65535" in err["note"], err["note"]
    assert [r["status"] for r in v["rows"][2:]] == ["pass"] * sum(c.family == "spec" for c in S.CASES)
    assert v["workers_started"] == 3               # a fresh worker after the hang and after the error


def test_wrong_kernel_fails_with_nonzero_exit(full, tmp_path):
    _, doc = full
    dev = usable(doc)[0]["index"]
    out = tmp_path / "w.json"
    p = cli_with_hooks("-o", "matvec", "--case", "Q8_0", "--device", str(dev), "--json", str(out))
    assert p.returncode == 1, p.stdout + p.stderr
    d = json.loads(out.read_text())
    assert validate(d) == [] and not d["ok"]
    for v in d["variants"]:
        rows = v["rows"]
        assert rows[0]["id"] == "matvec/hook: make matvec wrong (Q8_0)" and rows[0]["status"] == "pass"
        st = {r["case"]: r for r in rows[1:]}
        fused = [f"{f} Q8_0 67x672 x_pad=0 y_pad=0 N=1..16" for f in SL.FUSIONS]
        assert set(st) == {"Q8_0 67x672", "Q8_0 row parts", "Q8_0 row prefix (draft vocabulary)",
                           "batch Q8_0 N=1..16", *fused}
        for name in ("Q8_0 67x672", "Q8_0 row parts", "Q8_0 row prefix (draft vocabulary)", *fused):
            r = st[name]
            assert r["status"] == "fail" and r["op"] == "matvec" and "out of bound" in r["note"], r
            assert r["max_abs"] >= 0.99                                # the injected +1.0
        assert st["batch Q8_0 N=1..16"]["status"] == "pass"      # the same +1.0 for every N: still invariant
    assert "fail" in p.stdout and "FAILED" in p.stdout


def test_verdict_rules():
    """ok / exit status: an adapter that cannot run compute shaders is reported, and fails the run
    only when --device asked for it; an aborted variant, or no variant run at all, fails it."""
    from wgmtp.check.report import build_document, finalize

    def doc(*variants):
        return build_document(adapters=[], variants=[dict(v, rows=list(v.get("rows", []))) for v in variants],
                              kill_switches={}, options={}, time_s=0.0)
    ran = {"status": "ran", "rows": [{"status": "pass"}, {"status": "skip"}]}
    gl33 = {"status": "unusable", "counts_as_failure": False}
    assert doc(ran, gl33)["ok"]
    assert not doc(ran, dict(gl33, counts_as_failure=True))["ok"]
    assert not doc(gl33)["ok"]
    assert not doc(ran, {"status": "aborted", "rows": []})["ok"]
    d = doc(ran)
    assert finalize(d, {"rows": [{"op": "x", "case": "y", "status": "fail"}]}, 1.0)["exit_status"] == 1
    assert d["counts"] == {"pass": 1, "fail": 1, "crash": 0, "hang": 0, "error": 0, "skip": 1}
