#!/usr/bin/env python3
"""A draft model for `--spec-type draft-simple` cut from a model itself: its first L trunk layers,
then its own final norm and LM head (an early exit, as LayerSkip-style self-speculation drafts).
It has the model's vocabulary by construction, so it passes draft-simple's vocabulary check; how
well it drafts depends on how much the model has settled by layer L. The MTP block is left out.

    .venv/bin/python tools/make_draft.py wgmtp/data/wgmtp-demo.gguf /tmp/demo-draft.gguf --layers 4
    .venv/bin/wgmtp run -md /tmp/demo-draft.gguf --spec-type draft-simple -p "The command line"
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import gguf
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def cut(src: str, dst: str, n_layer: int) -> None:
    from wgmtp.models.qwen35 import GGUFModel
    cfg = GGUFModel(src).config
    if not 1 <= n_layer <= cfg.n_layer:
        raise SystemExit(f"--layers {n_layer}: the model has {cfg.n_layer} trunk layers")
    r = gguf.GGUFReader(src)
    arch = r.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(dst, arch=arch)
    changed = {f"{arch}.block_count": n_layer, f"{arch}.nextn_predict_layers": 0}
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        vt = f.types[0]
        val = f.contents()
        if key in changed:
            val = changed[key]
        elif key == f"{arch}.attention.recurrent_layers":
            val = list(val)[:n_layer]
        elif key == "general.name":
            val = f"{val}-first{n_layer}"
        if vt == gguf.GGUFValueType.ARRAY:
            w.add_key_value(key, val, vt, sub_type=f.types[-1])
        else:
            w.add_key_value(key, val, vt)
    for t in r.tensors:
        m = re.match(r"blk\.(\d+)\.", t.name)
        if m and int(m.group(1)) >= n_layer:
            continue
        w.add_tensor(t.name, np.array(t.data), raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, required=True, help="trunk layers to keep (from the first)")
    a = ap.parse_args()
    cut(a.model, a.out, a.layers)
    print(f"{a.out}: the first {a.layers} layers of {a.model}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
