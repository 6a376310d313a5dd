"""WGSL sources: a tiny preprocessor (#include, #if/#else/#endif, {{NAME}}) and a pipeline cache
keyed by (shader, defines) so every pipeline is compiled once per device.

Two kinds of file (docs/ARCHITECTURE.md, "Shaders", maps them): a KERNEL is shaders/NAME.wgsl, compiled on its own
and dispatched by name (`pipelines(ctx).get("NAME")`, `ProgramBuilder.add("NAME", ...)`); an
INCLUDE is shaders/include/NAME.wgsl, never compiled alone, pulled into kernels (or other
includes) by `#include "include/NAME.wgsl"` (the path from shaders/, written out in full). The
preprocessor keeps the two apart: shader_path refuses an include as a kernel, and an #include of
anything outside include/ is an error, so a kernel is never included and an include never
compiled alone.

Variants are text-level because a subgroup builtin must not even appear in the source compiled
for an adapter without the feature (naga rejects it), and the f16 KV cache needs `enable f16;`.
Every context defines SUBGROUPS and F16 from what the device was opened with.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import DeviceError

_HERE = Path(__file__).resolve().parent
SHADER_DIRS = [_HERE.parent.parent / "shaders", _HERE.parent / "shaders"]
"""Where shaders are looked up: the repository's shaders/ (a checkout or an editable install),
then the installed package's wgmtp/shaders/ (pyproject maps wgmtp.shaders to shaders/)."""
INCLUDE_DIR = "include"
"""The sub-folder of the include files; an #include names `include/NAME.wgsl`."""
_INCLUDE = re.compile(r'^\s*#include\s+"([^"]+)"\s*$')
_INCLUDE_NAME = re.compile(r"^include/[A-Za-z0-9_]+\.wgsl$")
_KERNEL_NAME = re.compile(r"^[A-Za-z0-9_]+$")
_IF = re.compile(r"^\s*#if\s+(!?)\s*([A-Za-z_][A-Za-z0-9_]*)\s*$")
_SUBST = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def _find(rel: str) -> Path | None:
    for d in SHADER_DIRS:
        p = d / rel
        if p.exists():
            return p
    return None


def _dirs() -> str:
    return ", ".join(str(d) for d in SHADER_DIRS)


def shader_path(name: str) -> Path:
    """The file of the KERNEL shader `name` ("matvec" or "matvec.wgsl": shaders/matvec.wgsl).
    An include file (shaders/include/) is refused: it only compiles as part of a kernel."""
    stem = name[:-5] if name.endswith(".wgsl") else name
    base = stem[len(INCLUDE_DIR) + 1:] if stem.startswith(INCLUDE_DIR + "/") else stem
    not_kernel = ValueError(f"shader '{name}' is an include file (shaders/{INCLUDE_DIR}/{base}.wgsl), not a "
                            f"kernel: it is compiled only inside the shaders that #include it")
    if base != stem:
        raise not_kernel
    if not _KERNEL_NAME.match(stem):
        raise ValueError(f"shader '{name}': a kernel is named by its file in shaders/ (letters, digits, _), "
                         f"without a folder")
    p = _find(stem + ".wgsl")
    if p is None:
        if _find(f"{INCLUDE_DIR}/{stem}.wgsl"):
            raise not_kernel
        raise FileNotFoundError(f"shader '{stem}.wgsl' not found in {_dirs()}")
    return p


def include_path(inc: str, where: str = "") -> Path:
    """The file of `#include "inc"`: inc must be `include/NAME.wgsl` (shaders/include/NAME.wgsl);
    anything else -- a kernel's file, another folder -- is refused, so a kernel is never included."""
    at = f"{where}: " if where else ""
    if not _INCLUDE_NAME.match(inc):
        raise ValueError(f'{at}#include "{inc}": only files under shaders/{INCLUDE_DIR}/ may be included, '
                         f'written #include "{INCLUDE_DIR}/NAME.wgsl" (kernels are never included)')
    p = _find(inc)
    if p is None:
        raise FileNotFoundError(f'{at}#include "{inc}": not found in {_dirs()}')
    return p


def preprocess(name: str, defines: dict[str, Any], _seen: set[str] | None = None) -> str:
    """Expand includes (each once), conditionals on defines, and {{NAME}} substitutions of the
    kernel shader `name`."""
    return _expand(shader_path(name), (name if name.endswith(".wgsl") else name + ".wgsl"), defines,
                   set() if _seen is None else _seen)


def _expand(path: Path, label: str, defines: dict[str, Any], seen: set[str]) -> str:
    src = path.read_text()
    name = label                            # for messages: "matvec.wgsl", "include/quant.wgsl"
    out: list[str] = []
    stack: list[tuple[bool, bool]] = []     # (this branch active, parent active)
    active = True
    for ln, line in enumerate(src.splitlines(), 1):
        m = _IF.match(line)
        if m:
            val = bool(defines.get(m.group(2)))
            cond = (not val) if m.group(1) else val
            stack.append((active, cond))
            active = active and cond
            continue
        if line.strip() == "#else":
            if not stack:
                raise ValueError(f"{name}:{ln}: #else without #if")
            parent, cond = stack[-1]
            stack[-1] = (parent, not cond)
            active = parent and not cond
            continue
        if line.strip() == "#endif":
            if not stack:
                raise ValueError(f"{name}:{ln}: #endif without #if")
            active = stack.pop()[0]
            continue
        m = _INCLUDE.match(line)
        if m:                               # checked in inactive branches too
            inc = m.group(1)
            p = include_path(inc, f"{name}:{ln}")
            if active and inc not in seen:
                seen.add(inc)
                out.append(_expand(p, inc, defines, seen))
            continue
        if active:
            out.append(line)
    if stack:
        raise ValueError(f"{name}: unterminated #if")

    def sub(m: re.Match) -> str:
        k = m.group(1)
        if k not in defines:
            raise KeyError(f"{name} uses {{{{{k}}}}} but no value was given")
        v = defines[k]
        return ("true" if v else "false") if isinstance(v, bool) else str(v)
    return _SUBST.sub(sub, "\n".join(out))


class PipelineCache:
    """Compiled compute pipelines of one device, keyed by (shader, entry, defines)."""

    def __init__(self, ctx) -> None:
        self.ctx = ctx
        self._pipes: dict[tuple, Any] = {}
        self.sources: dict[tuple, str] = {}

    def base_defines(self) -> dict[str, Any]:
        return {"SUBGROUPS": self.ctx.subgroups, "F16": self.ctx.f16}

    def get(self, shader: str, defines: dict[str, Any] | None = None, entry: str = "main") -> Any:
        d = self.base_defines()
        d.update(defines or {})
        key = (shader, entry, tuple(sorted(d.items())))
        p = self._pipes.get(key)
        if p is None:
            src = preprocess(shader, d)
            if d.get("F16") and "enable f16;" not in src and "f16" in src:
                src = "enable f16;\n" + src
            try:
                mod = self.ctx.device.create_shader_module(code=src, label=shader)
                p = self.ctx.device.create_compute_pipeline(
                    layout="auto", compute={"module": mod, "entry_point": entry}, label=f"{shader}:{entry}")
            except Exception as e:
                raise DeviceError(f"shader '{shader}' ({entry}, {dict(sorted(d.items()))}) failed to compile on "
                                  f"{self.ctx.name}: {str(e).strip().splitlines()[0] if str(e).strip() else e}") from e
            self._pipes[key] = p
            self.sources[key] = src
        return p


_caches: dict[int, PipelineCache] = {}


def pipelines(ctx) -> PipelineCache:
    c = _caches.get(id(ctx))
    if c is None or c.ctx is not ctx:
        c = _caches[id(ctx)] = PipelineCache(ctx)
    return c
