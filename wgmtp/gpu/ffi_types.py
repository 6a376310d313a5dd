"""Opening a device without seconds of C parsing: wgpu-py creates its C structs with
`ffi.new("WGPUSomething *")`, and cffi parses each new type string the first time it sees it,
prefixing every typedef of webgpu.h (about 0.12 s a string with pycparser; 25 of them cost 3 s
of a model load on lavapipe). `prewarm` collects the type strings wgpu-py's own source passes to
cffi and parses them all in one pass into cffi's cache, which is what cffi would hold after
parsing them one by one.

It reaches into cffi's parser (private API): anything unexpected leaves the cache as it was, so
the cost is only the lost speed-up, never a wrong type."""
from __future__ import annotations

import re
from pathlib import Path

_FUNCS = r"new_struct_p|new_struct|new_array|ffi\.new|ffi\.cast|ffi\.callback|ffi\.from_buffer"
_CALL = re.compile(r'\b(' + _FUNCS + r')\(\s*"([^"]+)"')


def type_strings(sources: list[str]) -> set[str]:
    """The cdecl strings cffi will parse for the literal calls in `sources` (new_struct adds " *")."""
    out = set()
    for src in sources:
        for fn, decl in _CALL.findall(src):
            out.add(decl + " *" if fn == "new_struct" else decl)
    return out


_tried = False


def prewarm() -> int:
    """Parse wgpu-py's struct type strings into its ffi's type cache in one pass, once per process
    (later calls return 0 without reading wgpu-py's sources again); the number of types added
    (0 when there was nothing to do or cffi's internals are not as expected)."""
    global _tried
    if _tried:
        return 0
    _tried = True
    try:
        from wgpu.backends.wgpu_native import _api, _helpers
        from wgpu.backends.wgpu_native._ffi import ffi
        sources = [Path(m.__file__).read_text() for m in (_api, _helpers)]
        with ffi._lock:
            todo = sorted(d for d in type_strings(sources) if d not in ffi._parsed_types)
            if not todo:
                return 0
            parser = ffi._parser
            csource = "\n".join(f"void __wgmtp_warm_{i}(\n{d}\n);" for i, d in enumerate(todo))
            ast = parser._parse(csource)[0]
            decls = ast.ext[-len(todo):]
            parsed = {}
            for d, node in zip(todo, decls):
                tp, _quals = parser._get_type_and_quals(node.type.args.params[0].type)
                is_fn = tp.is_raw_function
                if is_fn:
                    tp = tp.as_function_pointer()
                parsed[d] = (ffi._get_cached_btype(tp), is_fn)
            ffi._parsed_types.update(parsed)
            return len(parsed)
    except Exception:       # another cffi or wgpu-py layout: parse lazily, as before
        return 0

