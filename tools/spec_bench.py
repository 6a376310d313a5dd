#!/usr/bin/env python3
"""Every drafter and combination side by side, on a fixed set of prompt kinds, in one run.

Per prompt kind (code to edit and repeat, a passage to quote, free prose, a list, a question) and
per speculative setting (plain; draft-mtp at fixed n 1..4; ngram-simple and ngram-mod; draft-mtp
with ngram-simple at a fixed n; adaptive n over draft-mtp and over draft-mtp with ngram-simple; the
n-gram settings again with long rounds, --long-cap 48):
generation tok/s, speedup over plain on the same prompt, draft acceptance (accepted / drafted),
mean accepted length (tokens per verify round) and drafts per verify round, printed as markdown
tables (or --json). Greedy, so every setting must print plain decoding's tokens; the `same`
column says it did.

All runs share one one-slot engine (wgmtp.open_engine(n_parallel=1)), warmed up first (every
round program built), its settings interleaved per prompt (in turn forwards and backwards).
ngram-mod's shared table is emptied before each run so no run learns from another; the engine's
measured round costs (which adaptive n reads) carry over, as in a server that has been running a
while. With no -m the demo model (wgmtp/data/wgmtp-demo.gguf) runs, on raw prompts: it is not an
assistant and does not follow instructions, but it falls into repetition of its own, which the
n-gram drafters follow.

    .venv/bin/python tools/spec_bench.py --device 0 -n 128

Measurements only; nothing here is asserted anywhere.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wgmtp.api import open_engine, resolve_model  # noqa: E402
from wgmtp.batching import BatchEngine, Request  # noqa: E402
from wgmtp.drafters import NgramParams, SpecSettings, parse_spec_types  # noqa: E402
from wgmtp.models.qwen35.slots import N_DRAFT_MAX, N_LONG_MAX  # noqa: E402
from wgmtp.tokenizer import Tokenizer  # noqa: E402

_CODE = "def add_all(items):\n    total = 0\n    for item in items:\n        total = total + item\n    return total\n"
_PASSAGE = ("The built-in function len() returns the number of items in a container. For a dictionary, it "
            "returns the number of keys. For a string, it returns the number of characters.")
PROMPTS = {
    "code": "Rename total to count in this function:\n\n" + _CODE + "\nThe function after the change:\n\ndef add_all",
    "quote": _PASSAGE + '\n\nThe passage, quoted:\n\n"The built-in function',
    "prose": "The command line",
    "list": "The following functions are provided by the module:\n\n* ",
    "question": "How do I create a virtual environment?\n\n",
}


@dataclass(frozen=True)
class Variant:
    name: str
    spec: str
    n_max: int
    adaptive: bool = False


def variants(mtp_n: list[int], cap: int, combo_n: int, draft_n: list[int] = (), long_cap: int = 0) -> list[Variant]:
    """The settings measured, plain first (the baseline of every speedup); draft_n: draft-simple's
    fixed lengths (with --draft); long_cap > cap: the n-gram settings again with long rounds."""
    return ([Variant("none", "none", 0)]
            + [Variant(f"draft-simple n={n}", "draft-simple", n) for n in draft_n]
            + [Variant(f"draft-mtp n={n}", "draft-mtp", n) for n in mtp_n]
            + [Variant(f"ngram-simple n={cap}", "ngram-simple", cap), Variant(f"ngram-mod n={cap}", "ngram-mod", cap),
               Variant(f"draft-mtp,ngram-simple n={combo_n}", "draft-mtp,ngram-simple", combo_n),
               Variant(f"draft-mtp adaptive n<={cap}", "draft-mtp", cap, True),
               Variant(f"draft-mtp,ngram-simple adaptive n<={cap}", "draft-mtp,ngram-simple", cap, True)]
            + ([Variant(f"ngram-simple n={long_cap}", "ngram-simple", long_cap),
                Variant(f"ngram-mod n={long_cap}", "ngram-mod", long_cap),
                Variant(f"draft-mtp,ngram-simple adaptive n<={long_cap}", "draft-mtp,ngram-simple", long_cap, True)]
               if long_cap > cap else []))


def run_one(eng: BatchEngine, prompt: list[int], v: Variant, n_gen: int, ngram: NgramParams) -> dict:
    """One greedy generation: its tokens and the numbers of a table row."""
    eng.forget_ngrams()
    s = SpecSettings(parse_spec_types(v.spec), n_max=v.n_max, ngram=ngram, adaptive=v.adaptive)
    h = eng.submit(Request(prompt=prompt, max_tokens=n_gen, **s.request_fields()))
    eng.run_until_idle()
    st, sp = h.stats, h.stats.spec
    return {"tokens": h.result(), "gen_tokens": st.gen_tokens, "gen_s": st.gen_s,
            "tok_s": st.gen_tokens / st.gen_s if st.gen_s > 0 else 0.0,
            "acceptance": sp.acceptance if sp else None, "mean_accepted_len": sp.mean_accepted_len if sp else None,
            "drafts_per_round": sp.drafted / sp.verify_rounds if sp and sp.verify_rounds else None,
            "verify_rounds": sp.verify_rounds if sp else 0}


def measure(eng: BatchEngine, tok: Tokenizer, vs: list[Variant], n_gen: int, reps: int,
            ngram: NgramParams) -> list[dict]:
    """Rows per (prompt kind, setting); with reps > 1 the median tok/s of the repetitions."""
    rows = []
    for i, (kind, text) in enumerate(PROMPTS.items()):
        ids = tok.encode(text)
        runs: dict[str, list[dict]] = {v.name: [] for v in vs}
        for r in range(reps):       # settings interleaved, in turn forwards and backwards: a slow spell
            for v in vs if (i + r) % 2 == 0 else vs[::-1]:      # of the machine hits them alike
                runs[v.name].append(run_one(eng, ids, v, n_gen, ngram))
        plain = runs[vs[0].name][0]["tokens"]
        base = statistics.median(r["tok_s"] for r in runs[vs[0].name])
        for v in vs:
            rs = runs[v.name]
            tps = statistics.median(r["tok_s"] for r in rs)
            row = {k: x for k, x in rs[0].items() if k != "tokens"}
            row.update(prompt=kind, spec=v.name, tok_s=tps, speedup=tps / base if base else 0.0,
                       gen_s=sum(r["gen_s"] for r in rs) / reps, same=all(r["tokens"] == plain for r in rs))
            rows.append(row)
        print(f"{kind}: done", file=sys.stderr, flush=True)
    return rows


def totals(rows: list[dict], vs: list[Variant]) -> dict[str, float]:
    """Per setting: all prompts' tokens over all their time, over plain's."""
    tps = {}
    for v in vs:
        rs = [r for r in rows if r["spec"] == v.name]
        tps[v.name] = sum(r["gen_tokens"] for r in rs) / sum(r["gen_s"] for r in rs)
    return {k: x / tps[vs[0].name] for k, x in tps.items()}


def _f(x: float | None, fmt: str) -> str:
    return "" if x is None else format(x, fmt)


def markdown(rows: list[dict], vs: list[Variant]) -> str:
    kinds = list(PROMPTS)
    tot = totals(rows, vs)
    at = {(r["prompt"], r["spec"]): r for r in rows}
    out = ["| setting | " + " | ".join(kinds) + " | all |", "| --- |" + " ---: |" * (len(kinds) + 1)]
    for v in vs:
        cells = [f"{at[k, v.name]['speedup']:.2f}x" + ("" if at[k, v.name]["same"] else " (differs!)") for k in kinds]
        out.append(f"| {v.name} | " + " | ".join(cells) + f" | {tot[v.name]:.2f}x |")
    out.append("| plain tok/s | " + " | ".join(f"{at[k, vs[0].name]['tok_s']:.1f}" for k in kinds) + " | |")
    out += ["", "| prompt | setting | tok/s | speedup | acceptance | mean accepted length | drafts/round | same |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        out.append(f"| {r['prompt']} | {r['spec']} | {r['tok_s']:.1f} | {r['speedup']:.2f}x | "
                   f"{_f(r['acceptance'], '.3f')} | {_f(r['mean_accepted_len'], '.2f')} | "
                   f"{_f(r['drafts_per_round'], '.2f')} | {'yes' if r['same'] else 'NO'} |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", default=None, help="GGUF model (default: the demo model)")
    ap.add_argument("-md", "--model-draft", dest="mtp_file", default=None, help="MTP sidecar GGUF")
    ap.add_argument("--device", default="auto", help="adapter index or name substring (wgmtp devices)")
    ap.add_argument("-n", "--n-gen", type=int, default=128, help="tokens generated per prompt and setting")
    ap.add_argument("-r", "--reps", type=int, default=1, help="repetitions (median tok/s)")
    ap.add_argument("--mtp-n", default="1,2,3,4", help="fixed draft-mtp lengths")
    ap.add_argument("--cap", type=int, default=N_DRAFT_MAX, help="n_max of the n-gram and adaptive settings")
    ap.add_argument("--combo-n", type=int, default=3, help="n_max of the fixed draft-mtp,ngram-simple setting")
    ap.add_argument("--long-cap", type=int, default=N_LONG_MAX,
                    help="n_max of the long-round n-gram settings (0: none; MTP's rounds stay at --cap)")
    ap.add_argument("--spec-ngram-size-n", type=int, default=12)
    ap.add_argument("--spec-ngram-size-m", type=int, default=48)
    ap.add_argument("--spec-ngram-min-hits", type=int, default=1)
    ap.add_argument("--draft", default=None, help="a draft model (same vocabulary): adds draft-simple rows")
    ap.add_argument("--draft-n", default="2,4,8", help="fixed draft-simple lengths (with --draft)")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    a = ap.parse_args()
    mtp_n = [int(x) for x in a.mtp_n.split(",") if x.strip()]
    vs = variants(mtp_n, a.cap, a.combo_n, [int(x) for x in a.draft_n.split(",") if x.strip()] if a.draft else [],
                  a.long_cap)
    n_max = max(v.n_max for v in vs)
    path = resolve_model(a.model)
    prompt_max = max(len(p) for p in PROMPTS.values())      # characters: at least as many as tokens
    eng = open_engine(path, device=a.device, mtp=a.mtp_file, n_parallel=1, n_ctx=prompt_max + a.n_gen + n_max + 8,
                      spec="draft-mtp,ngram-simple,ngram-mod" + (",draft-simple" if a.draft else ""), n_max=n_max,
                      progress=False, draft=a.draft)
    tok = Tokenizer.from_gguf(eng.rn.gm)
    t0 = time.perf_counter()
    eng.warm_up(n_max)
    rows = measure(eng, tok, vs, a.n_gen, a.reps,
                   NgramParams(a.spec_ngram_size_n, a.spec_ngram_size_m, a.spec_ngram_min_hits))
    if a.json:
        print(json.dumps({"model": path, "adapter": eng.rn.device_name, "n_gen": a.n_gen, "rows": rows}, indent=1))
    else:
        print(f"{Path(path).name} on {eng.rn.device_name}, greedy, {a.n_gen} tokens per prompt, "
              f"{time.perf_counter() - t0:.0f} s\n")
        print(markdown(rows, vs))
        print(f"\ncommand: tools/spec_bench.py {' '.join(sys.argv[1:])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
