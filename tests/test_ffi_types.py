"""wgmtp/gpu/ffi_types.py: wgpu-py's C type strings parsed in one pass give cffi the same types
it would parse one by one (same C name and size), and a device opened after the prewarm parses
no type string lazily any more."""
from __future__ import annotations

import json
import subprocess
import sys

from wgmtp.gpu import ffi_types

_DUMP = """
import json, sys
from pathlib import Path
from wgmtp.gpu import ffi_types
from wgpu.backends.wgpu_native import _api, _helpers
from wgpu.backends.wgpu_native._ffi import ffi
n = ffi_types.prewarm() if sys.argv[1] == "warm" else 0
decls = sorted(ffi_types.type_strings([Path(m.__file__).read_text() for m in (_api, _helpers)]))
out = {}
for d in decls:
    t = ffi._typeof(d, consider_function_as_funcptr=True)    # callbacks' types too
    out[d] = [t.cname, t.kind, ffi.sizeof(t.item) if t.kind == "pointer" and t.item.kind == "struct" else 0]
print(json.dumps({"n": n, "types": out}))
"""


def _dump(mode: str) -> dict:
    r = subprocess.run([sys.executable, "-c", _DUMP, mode], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_prewarmed_types_are_the_lazily_parsed_ones():
    warm, lazy = _dump("warm"), _dump("lazy")
    assert warm["n"] > 50                    # wgpu-py's structs, arrays and callbacks
    assert warm["types"] == lazy["types"]


def test_type_strings_of_the_calls():
    src = 'new_struct_p(\n    "WGPUA *", x=1)\nnew_struct("WGPUB", y=2)\nnew_array("WGPUC[]", 3)\n' \
          '@ffi.callback("void(int)")\nffi.cast("intptr_t", p)\nffi.new("uint8_t[]", 4)'
    assert ffi_types.type_strings([src]) == {"WGPUA *", "WGPUB *", "WGPUC[]", "void(int)", "intptr_t", "uint8_t[]"}
