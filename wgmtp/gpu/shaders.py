"""WGSL sources: a tiny preprocessor (#include, #if/#else/#endif, {{NAME}}) and a pipeline cache
keyed by (shader, defines) so every pipeline is compiled once per device.

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
_INCLUDE = re.compile(r'^\s*#include\s+"([^"]+)"\s*$')
_IF = re.compile(r"^\s*#if\s+(!?)\s*([A-Za-z_][A-Za-z0-9_]*)\s*$")
_SUBST = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def shader_path(name: str) -> Path:
    fn = name if name.endswith(".wgsl") else name + ".wgsl"
    for d in SHADER_DIRS:
        p = d / fn
        if p.exists():
            return p
    raise FileNotFoundError(f"shader '{fn}' not found in {', '.join(str(d) for d in SHADER_DIRS)}")


def preprocess(name: str, defines: dict[str, Any], _seen: set[str] | None = None) -> str:
    """Expand includes (each once), conditionals on defines, and {{NAME}} substitutions."""
    seen = set() if _seen is None else _seen
    src = shader_path(name).read_text()
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
                raise ValueError(f"{name}.wgsl:{ln}: #else without #if")
            parent, cond = stack[-1]
            stack[-1] = (parent, not cond)
            active = parent and not cond
            continue
        if line.strip() == "#endif":
            if not stack:
                raise ValueError(f"{name}.wgsl:{ln}: #endif without #if")
            active = stack.pop()[0]
            continue
        if not active:
            continue
        m = _INCLUDE.match(line)
        if m:
            inc = m.group(1)
            if inc not in seen:
                seen.add(inc)
                out.append(preprocess(inc, defines, seen))
            continue
        out.append(line)
    if stack:
        raise ValueError(f"{name}.wgsl: unterminated #if")

    def sub(m: re.Match) -> str:
        k = m.group(1)
        if k not in defines:
            raise KeyError(f"{name}.wgsl uses {{{{{k}}}}} but no value was given")
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
