"""`wgmtp bench`: llama-bench style rows (prompt and generation tok/s, with and without MTP per
draft length), plus what explains them: the adapter's measured streaming-read bandwidth, the bytes
a generated token reads and the fraction of the peak that decode reaches, dispatches and
submissions per token, host (Python) time per token, and the verify/decode time ratio. With the
n-gram drafters or adaptive n in --spec-type's list, the speculative rows come from a one-slot
batching engine (bench_parallel.py), the only place those run.

With --view / --view-png the live view (wgmtp/view) watches the one-sequence generation runs
(the tg rows), so its figures then include the view's cost; the engine rows are not watched.

Performance is measured side by side in one run; nothing here is ever asserted in a test.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Callable

import numpy as np

from ..errors import WgmtpError
from .args import integer, integers, ints_of, real
from .run import add_spec_args, add_view_args, spec_settings, uses_engine


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmark prompt processing and generation (llama-bench style)")
    p.add_argument("-m", "--model", required=False, default=None, help="GGUF model (default: the demo model)")
    p.add_argument("-md", "--model-draft", dest="mtp_file", default=None,
                   help="MTP sidecar GGUF, or with --spec-type draft-simple the draft model")
    p.add_argument("-p", "--n-prompt", type=integer(1), default=128, help="prompt tokens (pp test)")
    p.add_argument("-n", "--n-gen", type=integer(1), default=64, help="generated tokens (tg tests)")
    add_spec_args(p, default="draft-mtp", n_max_list=True, adaptive=False)
    p.add_argument("--synthetic-acceptance", type=real(0, 1), default=None, metavar="P",
                   help="force each draft accepted with probability P (speedup curve on random MTP heads; "
                        "the generated text is then meaningless)")
    p.add_argument("-r", "--reps", type=integer(1), default=3)
    p.add_argument("--device", default=None)
    p.add_argument("--prefill-chunk", type=integer(1, 4096), default=64)
    p.add_argument("--parallel", type=integers(1, 16), default=None, metavar="N,N,..",
                   help="also decode N sequences at once (e.g. 1,2,4,8): aggregate and per-sequence tok/s, "
                        "and the GPU time of a batched step over a one-sequence step (n-gram drafters and "
                        "adaptive n: 1 unless given)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    add_view_args(p)
    p.set_defaults(fn=cmd_bench)


def _weight_type(gm) -> str:
    ft = gm.config.file_type
    try:
        import gguf
        if ft is not None:
            return gguf.LlamaFileType(ft).name.replace("MOSTLY_", "").replace("ALL_", "")
    except ValueError:
        pass
    counts: dict[str, int] = {}
    for n in gm.used_tensors:
        t = gm.tensors[n]
        counts[t.qtype.name] = counts.get(t.qtype.name, 0) + t.n_bytes
    return max(counts, key=counts.get)


def bytes_per_token(be, ctx_len: float) -> dict:
    """What one decode step reads: every trunk weight once (one embedding row; k of NE experts),
    the KV of every attention layer up to the context, and the GDN state (read and written)."""
    gm, c = be.gm, be.cfg
    w = 0
    for n in gm.used_tensors:
        if gm.is_mtp_tensor(n):
            continue
        t = gm.tensors[n]
        if n == "token_embd.weight" and not c.tied_embeddings:
            w += t.n_bytes // max(1, c.n_vocab)
        elif n.endswith("_exps.weight"):          # MoE: only the selected experts are read
            w += t.n_bytes * c.n_expert_used // c.n_expert
        else:
            w += t.n_bytes
    n_attn = sum(1 for i in range(c.n_layer) if not c.is_gdn[i])
    kv = n_attn * 2 * ctx_len * c.n_head_kv * c.head_dim * (2 if be.ctx.f16 else 4)
    n_gdn = sum(1 for i in range(c.n_layer) if c.is_gdn[i])
    gdn = n_gdn * 2 * 4 * (c.ssm_dt_rank * c.head_v_dim * c.head_k_dim + c.conv_dim * (c.conv_kernel - 1))
    return {"weights": w, "kv": int(kv), "gdn_state": gdn, "total": int(w + kv + gdn)}


def synthetic_runner(base: type) -> type:
    """`--synthetic-acceptance P` (like llama.cpp's server option): a runner whose greedy rounds
    pretend the first drafts were accepted with probability P each (the text is then meaningless).
    The state follows the forced count: next batch from plane n - k, pending hidden row k + 1.
    A bench-only subclass: the production runner has no such switch."""
    class SyntheticAcceptance(base):
        synthetic_p: float | None = None
        _syn_rng = np.random.default_rng(0)

        def _greedy_outcome(self, k: int, out: list[int], n_valid: int) -> tuple[int, list[int]]:
            if self.synthetic_p is None:
                return k, out
            ks = 0
            while ks < n_valid and self._syn_rng.random() < self.synthetic_p:
                ks += 1
            if ks != k:
                self.set_accepted(ks)
            return ks, (out + [out[-1]] * (ks + 1))[: ks + 1]
    return SyntheticAcceptance


def run_bench(a: argparse.Namespace, viewer: Callable[[Any], Any] | None = None) -> tuple[list[dict], dict]:
    """The rows and what explains them. `viewer(model)` makes a live view (view.app.View) that
    watches the tg runs; the measurement then runs under it (View.run)."""
    from ..api import Model, resolve_model
    from ..kernels import bandwidth
    from ..models.qwen35 import GGUFModel
    from ..models.qwen35.runner import Qwen35Runner

    path = resolve_model(a.model)
    n_max_list = ints_of(a.spec_draft_n_max)
    settings = spec_settings(a, n_max=max(n_max_list))
    gm = GGUFModel(path, settings.files(a.mtp_file)[0])
    engine = uses_engine(settings)
    if engine and a.synthetic_acceptance is not None:
        raise WgmtpError("--synthetic-acceptance measures draft-mtp on the one-sequence runner: drop the n-gram "
                         "drafters and --spec-adaptive from the run")
    if settings.mtp and any(n > 0 for n in n_max_list) and not gm.has_mtp:
        if a.synthetic_acceptance is None:
            raise WgmtpError(f"{path}: no MTP block for --spec-draft-n-max > 0 (give -md, or use 0)")
    if engine:      # the session measures plain decoding; the drafters run on the engine below
        n_max_list = [n for n in n_max_list if n == 0]
    n_ctx = a.n_prompt + a.n_gen + 32
    runner = Qwen35Runner if a.synthetic_acceptance is None else synthetic_runner(Qwen35Runner)
    t_open = time.perf_counter()
    be = runner(gm, device=a.device or "auto", n_ctx=n_ctx, prefill_chunk=a.prefill_chunk, eog=set(), progress=True)
    t_open = time.perf_counter() - t_open
    up_bytes, up_s = be.model.load_stats
    bw = bandwidth.measure(be.ctx)
    adapter = be.ctx.name
    wtype = _weight_type(gm)
    rng = np.random.default_rng(0)
    rows: list[dict] = []
    base = {"engine": "wgmtp", "model": path, "weight_type": wtype, "adapter": adapter,
            "weights_bytes": gm.weight_bytes(mtp=False), "peak_gb_s": bw["gb_s"],
            "load_s": round(t_open, 3), "upload_gb_s": round(up_bytes / max(up_s, 1e-9) / 1e9, 3)}
    view = viewer(Model(gm, be, adapter, n_ctx)) if viewer is not None else None
    observe = view.observe if view is not None else None

    def measure() -> int:
        _measure(a, gm, be, n_ctx=n_ctx, rng=rng, n_max_list=n_max_list, base=base, bw=bw, rows=rows,
                 observe=observe)
        return 0
    if view is None:
        measure()
    else:
        view.run(measure)
        print(view.summary(), file=sys.stderr)
        for row in rows:                    # measured under the view (the engine rows below are not)
            row["viewed"] = True
    if a.parallel or engine:
        from .bench_parallel import run_parallel
        rows += run_parallel(a, gm, base, counts=None if a.parallel else [1])
    info = {"adapter": adapter, "bandwidth": bw, "model": path, "weight_type": wtype,
            "weights_bytes": base["weights_bytes"], "load_s": base["load_s"], "upload_gb_s": base["upload_gb_s"]}
    return rows, info


def _measure(a: argparse.Namespace, gm, be, *, n_ctx: int, rng: np.random.Generator, n_max_list: list[int],
             base: dict, bw: dict, rows: list[dict], observe: Callable[[Any], None] | None) -> None:
    """The one-sequence rows (pp, then tg per draft length) into `rows`; `observe` watches the tg
    generations (the live view), None: nothing does."""
    from ..engine import GenRequest, Session
    V = gm.config.n_vocab

    # warm-up: compile every pipeline the measured runs use (not timed)
    sess = Session(be, n_ctx, set())
    list(sess.generate([int(x) for x in rng.integers(0, V, a.n_prompt)], GenRequest(max_tokens=2)))
    for n_max in n_max_list:
        if n_max > 0 and gm.has_mtp:
            list(sess.generate([1, 2, 3], GenRequest(max_tokens=n_max + 2, spec=True, n_max=n_max,
                                                     p_min=a.spec_draft_p_min, draft_vocab=a.spec_draft_vocab)))
    # pp: a fresh prompt of n_prompt tokens, one prefill
    tps = []
    for _ in range(a.reps):
        prompt = [int(x) for x in rng.integers(0, V, a.n_prompt)]
        list(sess.generate(prompt, GenRequest(max_tokens=1)))
        tps.append(sess.stats.prompt_tokens / sess.stats.prompt_s)
    rows.append(dict(base, test=f"pp{a.n_prompt}", n_max=0, tok_s=float(np.mean(tps)), tok_s_std=float(np.std(tps))))

    for n_max in n_max_list:
        spec = n_max > 0
        if spec and not gm.has_mtp:
            continue
        if a.synthetic_acceptance is not None:
            be.synthetic_p = a.synthetic_acceptance if spec else None
        tps, acc, mal, per_tok = [], [], [], []
        for _ in range(a.reps):
            prompt = [int(x) for x in rng.integers(0, V, 8)]
            r0 = (be.runner.dispatches, be.runner.submissions, be.runner.host_s)
            t0 = time.perf_counter()
            out = list(sess.generate(prompt, GenRequest(max_tokens=a.n_gen, spec=spec, n_max=max(1, n_max),
                                                        p_min=a.spec_draft_p_min,
                                                        draft_vocab=a.spec_draft_vocab, observe=observe)))
            st = sess.stats
            wall = time.perf_counter() - t0 - st.prompt_s
            n_tok = max(1, len(out) - 1)
            tps.append(st.gen_tokens / st.gen_s if st.gen_s > 0 else 0.0)
            if spec:
                acc.append(st.spec.acceptance)
                mal.append(st.spec.mean_accepted_len)
            per_tok.append(((be.runner.dispatches - r0[0]) / n_tok, (be.runner.submissions - r0[1]) / n_tok,
                            (be.runner.host_s - r0[2]) / n_tok, wall / n_tok))
        pt = np.mean(np.array(per_tok), axis=0)
        bpt = bytes_per_token(be, 8 + a.n_gen / 2)
        tok_s = float(np.mean(tps))
        eff = bpt["total"] * tok_s / 1e9 * (1.0 if not spec else 1.0 / max(1e-9, np.mean(mal) if mal else 1.0))
        row = dict(base, test=f"tg{a.n_gen}" + (f"+mtp{n_max}" if spec else ""), n_max=n_max, tok_s=tok_s,
                   tok_s_std=float(np.std(tps)), bytes_per_token=bpt["total"],
                   eff_gb_s=bpt["total"] * tok_s / 1e9 if not spec else eff,
                   frac_peak=(bpt["total"] * tok_s / 1e9 if not spec else eff) / bw["gb_s"],
                   dispatches_per_token=float(pt[0]), submissions_per_token=float(pt[1]),
                   host_ms_per_token=float(pt[2] * 1e3), wall_ms_per_token=float(pt[3] * 1e3),
                   host_frac=float(pt[2] / pt[3]) if pt[3] else 0.0)
        if spec:
            row.update(acceptance=float(np.mean(acc)), mean_accepted_len=float(np.mean(mal)))
            tv = be.time_programs(n_max)
            row.update(verify_decode_ratio=tv["ratio"], decode_gpu_ms=tv["decode_s"] * 1e3,
                       verify_gpu_ms=tv["verify_s"] * 1e3, timing=tv["timing"])
            if a.synthetic_acceptance is not None:
                row["synthetic_acceptance"] = a.synthetic_acceptance
            if a.spec_draft_vocab:
                row["draft_vocab"] = a.spec_draft_vocab
        rows.append(row)


def bench_viewer(a: argparse.Namespace) -> Callable[[Any], Any] | None:
    """The live view's factory when --view or --view-png asks for one (checked before any load)."""
    if a.view_every and not a.view_png:
        raise WgmtpError("--view-every N writes frames of --view-png FILE: give --view-png too")
    if not (a.view or a.view_png):
        return None
    from ..view.app import View, check_view
    check_view(window=a.view)
    label = (f"wgmtp bench: tg{a.n_gen} with {a.spec_type}, n_max {a.spec_draft_n_max}, "
             f"{a.reps} reps each, greedy on random prompts")
    return lambda model: View(model, label, window=a.view, png=a.view_png, every=a.view_every, size=a.view_size,
                              linger=-1.0 if a.view_linger is None else a.view_linger)


def cmd_bench(a: argparse.Namespace) -> int:
    if a.spec_type == "none":
        a.spec_draft_n_max = "0"
    rows, info = run_bench(a, bench_viewer(a))
    if a.json:
        print(json.dumps(rows, indent=1))
        return 0
    from rich.console import Console
    from rich.table import Table
    con = Console(width=max(Console().width, 150))
    bw = info["bandwidth"]
    con.print(f"[bold]{info['model']}[/] ({info['weight_type']}, {info['weights_bytes'] / 2**20:.1f} MiB) on "
              f"{info['adapter']}: streaming read {bw['gb_s']:.1f} GB/s ({bw['timing']}); loaded in "
              f"{info['load_s']:.2f} s (device and weights; the weights' upload {info['upload_gb_s']:.2f} GB/s)")
    t = Table()
    for col in ("test", "t/s", "accept", "mean len", "verify/decode", "bytes/tok", "eff GB/s", "of peak",
                "disp/tok", "subm/tok", "host ms/tok", "host %"):
        t.add_column(col, justify="right")
    par = [r for r in rows if "parallel" in r]
    rows = [r for r in rows if "parallel" not in r]
    for r in rows:
        t.add_row(r["test"], f"{r['tok_s']:.2f} ± {r['tok_s_std']:.2f}",
                  f"{r['acceptance']:.3f}" if "acceptance" in r else "",
                  f"{r['mean_accepted_len']:.2f}" if "mean_accepted_len" in r else "",
                  f"{r['verify_decode_ratio']:.2f}" if r.get("verify_decode_ratio") else "",
                  f"{r['bytes_per_token'] / 2**20:.2f} MiB" if "bytes_per_token" in r else "",
                  f"{r['eff_gb_s']:.2f}" if "eff_gb_s" in r else "",
                  f"{100 * r['frac_peak']:.0f}%" if "frac_peak" in r else "",
                  f"{r['dispatches_per_token']:.0f}" if "dispatches_per_token" in r else "",
                  f"{r['submissions_per_token']:.2f}" if "submissions_per_token" in r else "",
                  f"{r['host_ms_per_token']:.2f}" if "host_ms_per_token" in r else "",
                  f"{100 * r['host_frac']:.0f}%" if "host_frac" in r else "")
    con.print(t)
    if par:
        tp = Table(title="parallel sequences (greedy, 8-token prompts)")
        for col in ("test", "aggregate t/s", "per-seq t/s", "vs 1 seq", "accept", "step GPU ms", "step / 1-seq step"):
            tp.add_column(col, justify="right")
        for r in par:
            tp.add_row(r["test"], f"{r['tok_s']:.2f} ± {r['tok_s_std']:.2f}", f"{r['per_seq_tok_s']:.2f}",
                       f"{r['vs_single']:.2f}x" if "vs_single" in r else "",
                       f"{r['acceptance']:.3f}" if "acceptance" in r else "",
                       f"{r['step_gpu_ms']:.2f}" if "step_gpu_ms" in r else "",
                       f"{r['step_ratio']:.2f}" if "step_ratio" in r else "")
        con.print(tp)
    con.print(f"command: wgmtp bench {' '.join(sys.argv[2:])}")
    return 0
