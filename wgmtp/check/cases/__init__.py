"""The op suite of `wgmtp check`: every kernel against its numpy twin (wgmtp/reference) over a
FIXED grid of shapes and weight types, awkward sizes included, with the bounds of
wgmtp/tolerances.py (equality where the arithmetic is identical), plus the batch-invariance suite
(N = 1..16, bit-exact) and snapshot rollback of the recurrent state.

The cases drive the kernels through their public wrappers (wgmtp/kernels/*.py) at small sizes
(the whole suite runs in seconds on lavapipe). They live in the package because an installed
`wgmtp check` cannot import tests/; tests/test_kernel_*.py import them and their input builders
(Layer, Batch, rand_rows, logit_rows, make_weight, fill_cache, ...) from here, and run a case with
`require(case_fn, ctx, **params)`.

One module per kernel family, mirroring wgmtp/kernels/: linear (matvec, matmul, embed), norm
(rmsnorm), rope, sample (argmax, topk), attention, gdn (ssm_conv, gdn, gdn_chunked), moe,
elementwise, spec, bandwidth; common holds what several of them share (Case, Skip, Check,
require, run, steps, Batch, ...). Each family module's `cases()` builds its case list; nothing is
registered on import. `all_cases()` joins them in FAMILIES order.

A case is `Case(family, name, fn, op, tags)`; `fn(ctx, chk)` runs kernels on the GPUContext and
records every comparison in `chk` (a `Check`); it raises `Skip` when it does not apply to the
adapter variant. The case list is static (it does not depend on the adapter), so the parent
process can name the cases, filter them and resume after a crash without touching a GPU.

Families (`wgmtp check -o NAME`): see FAMILIES. Tags select across families: `batch` (the
batch-invariance suite), `rollback` (snapshot planes and rollback).

`CASES` (an attribute of this package, built on each access) is `tuple(all_cases())`: every case
without the test hooks' extras.
"""
from __future__ import annotations

from . import attention, bandwidth, elementwise, gdn, linear, moe, norm, rope, sample, spec
from .common import Case, Check, Skip, require

__all__ = ["FAMILIES", "TAGS", "F16_FAMILIES", "Case", "Check", "Skip", "require", "all_cases", "names", "select",
           "load_extra"]

FAMILIES = ("matvec", "matmul", "embed", "rmsnorm", "rope", "argmax", "topk", "attention", "ssm_conv", "gdn",
            "gdn_chunked", "moe", "elementwise", "spec", "bandwidth")
"""Op families in the order they run (names usable with -o)."""
TAGS = ("batch", "rollback", "segments")
"""Cross-family selections usable with -o."""
F16_FAMILIES = ("attention",)
"""Families whose shaders depend on shader-f16 (the f16 KV cache); only these run in the variants
that differ from another one by f16 alone."""

_MODULES = (linear, norm, rope, sample, attention, gdn, moe, elementwise, spec, bandwidth)
"""The family modules, in the order of their first family in FAMILIES."""


def all_cases(extra: list[Case] | None = None) -> list[Case]:
    """Every case in family order; `extra` cases (test hooks) run first in their family."""
    own = [c for m in _MODULES for c in m.cases()]
    out: list[Case] = []
    extra = list(extra or [])
    fams = list(FAMILIES) + sorted({c.family for c in extra} - set(FAMILIES))
    for f in fams:
        out += [c for c in extra if c.family == f]
        out += [c for c in own if c.family == f]
    return out


def __getattr__(name: str):
    if name == "CASES":
        return tuple(all_cases())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def names() -> list[str]:
    return list(FAMILIES) + list(TAGS)


def select(cases: list[Case], ops: list[str] | None = None, substr: str | None = None) -> list[Case]:
    """Cases of the op families or tags in `ops` (all when None) whose id contains `substr`
    (case-insensitive)."""
    out = cases
    if ops:
        want = set(ops)
        out = [c for c in out if c.family in want or want & set(c.tags)]
    if substr:
        s = substr.lower()
        out = [c for c in out if s in c.id.lower()]
    return out


def load_extra(path: str | None) -> list[Case]:
    """Cases from a test-only module (a .py path or an importable name) that defines CASES."""
    if not path:
        return []
    import importlib
    import importlib.util
    import os
    if os.path.exists(path):
        spec = importlib.util.spec_from_file_location("wgmtp_check_extra", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    else:
        mod = importlib.import_module(path)
    cases = list(getattr(mod, "CASES"))
    for c in cases:
        if not isinstance(c, Case):
            raise TypeError(f"{path}: CASES holds {type(c).__name__}, not wgmtp.check.cases.Case")
    return cases
