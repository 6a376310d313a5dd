"""shaders/: every kernel is dispatched and every include file only included, each file says what
it is in its header, and docs/ARCHITECTURE.md maps exactly the files there are (no GPU needed).

Kernels are shaders/NAME.wgsl, dispatched by name from wgmtp/ (`<builder>.add("NAME", buffers,
...)` or `pipelines(ctx).get("NAME", ...)`: found by reading the Python source, not by running
it); include files are shaders/include/NAME.wgsl, pulled in by `#include "include/NAME.wgsl"`.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from wgmtp.gpu import shaders as S

ROOT = Path(__file__).resolve().parent.parent
SHADERS = ROOT / "shaders"
INCLUDE = SHADERS / "include"
DOC = ROOT / "docs" / "ARCHITECTURE.md"
_INC = re.compile(r'^\s*#include\s+"([^"]*)"\s*$')


def kernels() -> list[str]:
    return sorted(p.stem for p in SHADERS.glob("*.wgsl"))


def includes() -> list[str]:
    return sorted(p.stem for p in INCLUDE.glob("*.wgsl"))


def wgsl_files() -> list[Path]:
    return sorted(SHADERS.glob("*.wgsl")) + sorted(INCLUDE.glob("*.wgsl"))


def rel(p: Path) -> str:
    return p.relative_to(SHADERS).as_posix()


def include_lines(p: Path) -> list[str]:
    return [m.group(1) for m in map(_INC.match, p.read_text().splitlines()) if m]


def includers() -> dict[str, set[str]]:
    """include stem -> the files (relative to shaders/) with an #include of it."""
    out: dict[str, set[str]] = {}
    for p in wgsl_files():
        for inc in include_lines(p):
            out.setdefault(Path(inc).stem, set()).add(rel(p))
    return out


def header(p: Path) -> str:
    """The leading block of `//` lines."""
    lines = []
    for line in p.read_text().splitlines():
        if not line.startswith("//"):
            break
        lines.append(line)
    return "\n".join(lines)


def dispatches(py: Path) -> set[str]:
    """Shader names a Python file dispatches: the string constants in the first argument of
    `X.add(name, buffers, ...)` or `pipelines(ctx).get(name, ...)` (both arms of a conditional
    name, as in `"matvec_rowwise" if rowwise else "matvec"`)."""
    out = set()
    for n in ast.walk(ast.parse(py.read_text(), str(py))):
        if not (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.args):
            continue
        f = n.func
        is_add = f.attr == "add" and len(n.args) >= 2
        is_get = (f.attr == "get" and isinstance(f.value, ast.Call)
                  and getattr(f.value.func, "id", getattr(f.value.func, "attr", None)) == "pipelines")
        if is_add or is_get:
            out |= {c.value for c in ast.walk(n.args[0]) if isinstance(c, ast.Constant) and isinstance(c.value, str)}
    return out


_DISPATCH: dict[str, dict[str, set[str]]] = {}


def dispatch_map(*dirs: str) -> dict[str, set[str]]:
    """shader name -> the .py files (relative to the repository) under `dirs` that dispatch it."""
    key = ",".join(dirs)
    if key not in _DISPATCH:
        m: dict[str, set[str]] = {}
        for d in dirs:
            for py in sorted((ROOT / d).rglob("*.py")):
                for name in dispatches(py):
                    m.setdefault(name, set()).add(py.relative_to(ROOT).as_posix())
        _DISPATCH[key] = m
    return _DISPATCH[key]


def test_shader_folders_are_split():
    assert kernels() and includes(), "expected kernels in shaders/ and include files in shaders/include/"
    assert not set(kernels()) & set(includes()), "a kernel and an include file share a name"
    assert [p for p in SHADERS.rglob("*.wgsl") if p.parent not in (SHADERS, INCLUDE)] == []


# (a) kernels are dispatched, include files only included

@pytest.mark.parametrize("name", kernels())
def test_kernel_is_dispatched(name):
    assert name in dispatch_map("wgmtp"), f"shaders/{name}.wgsl is dispatched by no module in wgmtp/"


@pytest.mark.parametrize("name", includes())
def test_include_is_included_and_not_dispatched(name):
    assert includers().get(name), f"shaders/include/{name}.wgsl is included by no shader"
    assert name not in dispatch_map("wgmtp", "tests"), \
        f"include file {name} is dispatched as a kernel by {sorted(dispatch_map('wgmtp', 'tests')[name])}"


# (b) every #include names an existing file under include/

@pytest.mark.parametrize("path", wgsl_files(), ids=rel)
def test_includes_name_include_files(path):
    for inc in include_lines(path):
        assert re.fullmatch(r"include/[A-Za-z0-9_]+\.wgsl", inc), \
            f'{rel(path)}: #include "{inc}" must name include/NAME.wgsl'
        assert (SHADERS / inc).is_file(), f'{rel(path)}: #include "{inc}": no such file'
        assert inc != rel(path), f"{rel(path)} includes itself"


# (c) headers

@pytest.mark.parametrize("name", kernels())
def test_kernel_header(name):
    p = SHADERS / f"{name}.wgsl"
    h = header(p)
    assert h, f"shaders/{name}.wgsl must start with a // header comment"
    assert "Bindings" in h, f"shaders/{name}.wgsl: the header states no bindings"
    assert "Dispatch" in h, f"shaders/{name}.wgsl: the header states no dispatch shape"
    named = set(re.findall(r"wgmtp/[A-Za-z0-9_/]+\.py", h))
    assert named & dispatch_map("wgmtp")[name], \
        f"shaders/{name}.wgsl: the header names none of the modules that dispatch it " \
        f"({sorted(dispatch_map('wgmtp')[name])}; it names {sorted(named)})"


@pytest.mark.parametrize("name", includes())
def test_include_header(name):
    h = header(INCLUDE / f"{name}.wgsl")
    assert h.startswith(f"// include/{name}.wgsl -- INCLUDE (not a kernel)"), \
        f"include/{name}.wgsl: the header must start with '// include/{name}.wgsl -- INCLUDE (not a kernel)'"
    assert "Provides:" in h and "Expects:" in h, f"include/{name}.wgsl: the header needs Provides: and Expects:"


# (d) docs/ARCHITECTURE.md lists exactly the shaders there are

def doc_tables() -> list[list[list[str]]]:
    """The markdown tables of docs/ARCHITECTURE.md's "Shaders" section, in order: rows of cells,
    header and rule dropped."""
    tables, cur = [], None
    text = DOC.read_text()
    for line in text[text.index("\n## Shaders\n"):].splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cur is None:
                cur = []
                tables.append(cur)
                continue                      # header row
            if not set("".join(cells)) <= set("-: "):
                cur.append(cells)
        else:
            cur = None
    return tables


def _code(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


_DEFS: dict[str, set[str]] = {}


def defs(path: str) -> set[str]:
    if path not in _DEFS:
        tree = ast.parse((ROOT / path).read_text())
        _DEFS[path] = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    return _DEFS[path]


def modules_and_functions(cell: str) -> dict[str, list[str]]:
    """`a/b.py`: `f`, `g`; `c/d.py`: `h` -> {a/b.py: [f, g], c/d.py: [h]}."""
    out: dict[str, list[str]] = {}
    cur = None
    for tok in _code(cell):
        if tok.endswith(".py"):
            cur = out.setdefault(tok, [])
        elif cur is not None:
            cur.append(tok)
    return out


def test_doc_tables_list_every_shader():
    kern, inc = doc_tables()[:2]
    assert sorted(_code(r[0])[0] for r in kern) == [f"{k}.wgsl" for k in kernels()]
    assert sorted(_code(r[0])[0] for r in inc) == [f"include/{i}.wgsl" for i in includes()]


def test_doc_kernel_table_names_real_code():
    """Each kernel row's module dispatches it, and every function named in the module and twin
    columns is defined where the row says."""
    for row in doc_tables()[0]:
        shader = _code(row[0])[0][:-5]
        mods = modules_and_functions(row[1])
        assert set(mods) & dispatch_map("wgmtp")[shader], \
            f"docs/ARCHITECTURE.md {shader}: {sorted(mods)} do not dispatch it"
        for path, fns in list(mods.items()) + list(modules_and_functions(row[2]).items()):
            assert (ROOT / path).is_file(), f"docs/ARCHITECTURE.md {shader}: no file {path}"
            missing = [f for f in fns if f not in defs(path)]
            assert not missing, f"docs/ARCHITECTURE.md {shader}: {path} defines no {missing}"


def test_doc_include_table_names_includers():
    inc_by = includers()
    for row in doc_tables()[1]:
        name = Path(_code(row[0])[0]).stem
        assert set(_code(row[2])) == inc_by.get(name, set()), f"docs/ARCHITECTURE.md include/{name}.wgsl: included by"


# the preprocessor keeps kernels and includes apart

def test_preprocessor_refuses_mixing(tmp_path, monkeypatch):
    for n in ("quant", "include/quant", "include/quant.wgsl"):
        with pytest.raises(ValueError, match="include file"):
            S.shader_path(n)
    for inc in ("matvec.wgsl", "quant.wgsl", "include/../matvec.wgsl"):
        with pytest.raises(ValueError, match="only files under"):
            S.include_path(inc)
    (tmp_path / "include").mkdir()
    (tmp_path / "a.wgsl").write_text("// a\nconst A: u32 = 1u;\n")
    (tmp_path / "b.wgsl").write_text('// b\n#include "a.wgsl"\n')
    (tmp_path / "c.wgsl").write_text('// c\n#if NOPE\n#include "include/missing.wgsl"\n#endif\n')
    (tmp_path / "d.wgsl").write_text('// d\n#include "include/x.wgsl"\n#include "include/x.wgsl"\nconst D: u32 = 2u;\n')
    (tmp_path / "include" / "x.wgsl").write_text("const X: u32 = {{V}}u;\n")
    monkeypatch.setattr(S, "SHADER_DIRS", [tmp_path])
    with pytest.raises(ValueError, match=r'b\.wgsl:2: #include "a\.wgsl": only files under'):
        S.preprocess("b", {})
    with pytest.raises(FileNotFoundError, match="include/missing.wgsl"):
        S.preprocess("c", {})                 # checked even where the #if is off
    with pytest.raises(ValueError, match="include file"):
        S.preprocess("x", {})
    assert S.preprocess("d", {"V": 7}) == "// d\nconst X: u32 = 7u;\nconst D: u32 = 2u;"
