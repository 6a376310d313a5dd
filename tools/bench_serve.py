#!/usr/bin/env python3
"""Serving benchmark: N concurrent streaming clients (the official `openai` client) against a
running `wgmtp serve` (or any OpenAI-compatible server, llama-server included).

A row per concurrency level and speculative setting (plain: speculative.n_max 0; MTP: the
server's default n_max, or --n-max): requests/s, aggregate generated tok/s (all clients' tokens
over the wall time), time to first token and inter-token latency p50/p99, and the draft
acceptance from the responses' `timings` (draft_n_accepted / draft_n). The latency is measured
between streamed text chunks as a client sees them; with MTP one chunk may carry several tokens
(an accepted draft run), so its gaps are fewer and longer than one token's.

    .venv/bin/wgmtp serve -np 4 --spec-type draft-mtp &
    .venv/bin/python tools/bench_serve.py --concurrency 1,2,4,8 --requests 16 --max-tokens 64

Measurements only; nothing here is asserted anywhere.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time

import numpy as np
import openai

PROMPTS = ["The built-in function len() returns the number of items in a container. For a dictionary, it",
           "The following functions are provided by the module", "To create a virtual environment, run",
           "Changed in version 3.11:", "The socket module", "Return a new list", "The os module provides",
           "A dictionary maps keys to values. To iterate over"]


async def one(ac: openai.AsyncOpenAI, model: str, prompt: str, max_tokens: int, n_max: int | None) -> dict:
    extra = {} if n_max is None else {"speculative.n_max": n_max}
    t0 = time.perf_counter()
    ttft, last, gaps, timings = None, None, [], {}
    stream = await ac.completions.create(model=model, prompt=prompt, max_tokens=max_tokens, temperature=0,
                                         stream=True, extra_body=extra)
    async for c in stream:
        now = time.perf_counter()
        timings = (c.model_extra or {}).get("timings") or timings
        if not c.choices or not c.choices[0].text:
            continue
        if ttft is None:
            ttft = now - t0
        elif last is not None:
            gaps.append(now - last)
        last = now
    n = timings.get("predicted_n", 0)
    return {"ttft": ttft or 0.0, "itl": gaps, "tokens": n, "draft_n": timings.get("draft_n", 0),
            "draft_acc": timings.get("draft_n_accepted", 0), "end": time.perf_counter()}


async def level(base: str, key: str, model: str, conc: int, n_req: int, max_tokens: int, n_max: int | None) -> dict:
    ac = openai.AsyncOpenAI(base_url=base, api_key=key, max_retries=0, timeout=600)
    sem = asyncio.Semaphore(conc)

    async def guarded(i: int) -> dict:
        async with sem:
            return await one(ac, model, PROMPTS[i % len(PROMPTS)], max_tokens, n_max)

    t0 = time.perf_counter()
    rs = await asyncio.gather(*[guarded(i) for i in range(n_req)])
    wall = time.perf_counter() - t0
    ttft = np.array([r["ttft"] for r in rs]) * 1e3
    itl = np.array([x for r in rs for x in r["itl"]] or [0.0]) * 1e3
    dn, da = sum(r["draft_n"] for r in rs), sum(r["draft_acc"] for r in rs)
    return {"concurrency": conc, "spec": "plain" if n_max == 0 else f"mtp{'' if n_max is None else n_max}",
            "requests": n_req, "req_s": n_req / wall, "tok_s": sum(r["tokens"] for r in rs) / wall,
            "ttft_p50_ms": float(np.percentile(ttft, 50)), "ttft_p99_ms": float(np.percentile(ttft, 99)),
            "itl_p50_ms": float(np.percentile(itl, 50)), "itl_p99_ms": float(np.percentile(itl, 99)),
            "acceptance": da / dn if dn else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base-url", default="http://127.0.0.1:8080/v1")
    ap.add_argument("--api-key", default="none")
    ap.add_argument("--model", default=None, help="model name (default: the first of GET /v1/models)")
    ap.add_argument("--concurrency", default="1,2,4", help="comma-separated client counts")
    ap.add_argument("--requests", type=int, default=0, help="requests per level (default: 2 x concurrency)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--n-max", type=int, default=None, help="speculative.n_max of the MTP rows (default: the server's)")
    ap.add_argument("--no-mtp", action="store_true", help="plain rows only (a server without draft-mtp)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    model = a.model or openai.OpenAI(base_url=a.base_url, api_key=a.api_key).models.list().data[0].id
    rows = []
    for conc in [int(x) for x in a.concurrency.split(",") if x.strip()]:
        for n_max in [0] + ([] if a.no_mtp else [a.n_max]):
            rows.append(asyncio.run(level(a.base_url, a.api_key, model, conc, a.requests or 2 * conc, a.max_tokens,
                                          n_max)))
            if not a.json:
                r = rows[-1]
                acc = f"{r['acceptance']:.3f}" if r["acceptance"] is not None else ""
                if len(rows) == 1:
                    print("| clients | spec | req/s | tok/s | TTFT p50 / p99 ms | ITL p50 / p99 ms | acceptance |")
                    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
                print(f"| {conc} | {r['spec']} | {r['req_s']:.2f} | {r['tok_s']:.1f} | {r['ttft_p50_ms']:.0f} / "
                      f"{r['ttft_p99_ms']:.0f} | {r['itl_p50_ms']:.1f} / {r['itl_p99_ms']:.1f} | {acc} |", flush=True)
    if a.json:
        print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
