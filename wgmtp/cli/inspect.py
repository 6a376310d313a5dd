"""`wgmtp inspect`: what a GGUF holds (architecture, tensor types, tokenizer, GPU memory) and
whether wgmtp runs it."""
from __future__ import annotations

import argparse
from collections import defaultdict

from ..errors import GGUFError, WgmtpError
from ..models.qwen35.slots import N_DRAFT_MAX
from .args import integer


def add_parser(sub) -> None:
    p = sub.add_parser("inspect", help="what a GGUF holds and whether wgmtp runs it")
    p.add_argument("file")
    p.add_argument("-md", "--model-draft", dest="mtp_file", default=None, help="MTP sidecar GGUF (mtp-*.gguf)")
    p.add_argument("-c", "--ctx-size", type=integer(1), default=4096)
    p.add_argument("-np", "--parallel", type=integer(1, 16), default=1, help="sequences served at once (slots)")
    p.add_argument("--spec-draft-n-max", type=integer(0, N_DRAFT_MAX), default=3,
                   help="drafts per round (snapshot planes: n + 1)")
    p.set_defaults(fn=cmd_inspect)


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return str(n)


def cmd_inspect(a: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from ..gguf_file import open_reader, supported_types
    from ..models.qwen35 import GGUFModel

    con = Console()
    try:
        gm = GGUFModel(a.file, a.mtp_file)
        gm.check_tensors()
    except GGUFError as e:
        # still show what the header says, then why it cannot run
        try:
            r = open_reader(e.path)
            arch = r.fields.get("general.architecture")
            con.print(f"[bold]{e.path}[/]: arch {arch.contents() if arch else '?'}, "
                      f"{len(r.tensors)} tensors, {len(r.fields)} metadata keys")
        except GGUFError:
            pass
        con.print(f"supported: [red]no[/] ({e.cause})")
        con.print(f"[cyan]weight types wgmtp runs[/] {supported_types()}")
        return 1
    c = gm.config
    con.print(f"[bold]{gm.path}[/]" + (f"  +  MTP sidecar {gm.mtp_path}" if gm.mtp_path else ""))
    name = gm.meta("general.name")
    rows = [
        ("architecture", c.arch + (f"  ({name})" if name else "")),
        ("embedding / FFN", f"E={c.n_embd}  F={c.n_ff}  vocab={c.n_vocab}  context={c.n_ctx_train}"),
        ("layers", f"{c.n_layer} trunk + {c.n_mtp} MTP;  pattern {c.layer_kinds()}  "
                   "(G = Gated DeltaNet, A = gated attention)"),
        ("attention", f"H={c.n_head}  Hkv={c.n_head_kv}  head_dim={c.head_dim}  rope dims={c.n_rot}  "
                      f"base={c.rope_base:g}"),
        ("Gated DeltaNet", f"key heads={c.ssm_n_group}  value heads={c.ssm_dt_rank}  head dim={c.head_k_dim}  "
                           f"conv kernel={c.conv_kernel}"),
        ("embeddings", "tied (LM head = token_embd)" if c.tied_embeddings else "untied (separate output.weight)"),
    ]
    if c.is_moe:
        exp_bytes = sum(gm.tensors[n].n_bytes for n in gm.used_tensors if n.endswith("_exps.weight"))
        fused = any(n.endswith("ffn_gate_up_exps.weight") for n in gm.used_tensors)
        rows.append(("experts", f"{c.n_expert} experts, {c.n_expert_used} used per token, width {c.n_ff_exp}"
                                f"{' (fused gate_up)' if fused else ''}; shared expert width {c.n_ff_shexp or 'none'}; "
                                f"experts take {_human(exp_bytes)} ({_human(exp_bytes * c.n_expert_used / c.n_expert)} "
                                f"read per token)"))
    rows += [
        ("rms eps", f"{c.eps:g}"),
        ("MTP", "present" + (" (from sidecar)" if gm.mtp_path else "") if gm.has_mtp
         else "absent (no nextn block; give -md mtp-*.gguf)"),
    ]
    t = Table(show_header=False, box=None)
    for k, v in rows:
        t.add_row(f"[cyan]{k}[/]", v)
    con.print(t)

    by_type: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for n in gm.used_tensors:
        info = gm.tensors[n]
        by_type[info.qtype.name][0] += 1
        by_type[info.qtype.name][1] += info.n_bytes
    tt = Table(title="tensor types")
    tt.add_column("type")
    tt.add_column("tensors", justify="right")
    tt.add_column("bytes", justify="right")
    for k, (cnt, b) in sorted(by_type.items(), key=lambda kv: -kv[1][1]):
        tt.add_row(k, str(cnt), _human(b))
    con.print(tt)
    con.print(f"[cyan]weight types wgmtp runs[/] {supported_types()}")

    ti = gm.tokenizer_info()
    con.print(f"[cyan]tokenizer[/] {ti.model} / pre '{ti.pre}': {ti.n_tokens} tokens, {ti.n_merges} merges, "
              f"eos={ti.eos_id} bos={ti.bos_id} pad={ti.pad_id}, chat template: "
              f"{'yes' if ti.chat_template else 'no'}")
    # build the tokenizer and render the template once, as `run` does, so both refuse the same files
    template_error = None
    from ..tokenizer import Tokenizer
    try:
        tok = Tokenizer.from_gguf(gm)
    except WgmtpError as e:
        con.print(f"supported: [red]no[/] ({getattr(e, 'cause', str(e))})")
        return 1
    if ti.chat_template:
        from ..chat import render
        try:
            render(ti.chat_template, [{"role": "user", "content": "Hello"}], **tok.template_vars())
        except WgmtpError as e:
            template_error = str(e)

    n_ctx = min(a.ctx_size, c.n_ctx_train)
    n_seq, n_max = max(1, a.parallel), a.spec_draft_n_max
    seqs = "one sequence" if n_seq == 1 else f"{n_seq} sequences of {n_ctx} tokens each, with checkpoints"
    mt = Table(title=f"GPU memory (context {n_ctx}, f16 KV, {seqs})")
    mt.add_column("")
    mt.add_column("weights", justify="right")
    mt.add_column("KV + recurrent state", justify="right")
    mt.add_column("total", justify="right")
    for label, mtp in (("without MTP", False), (f"with MTP (n_max {n_max})", True)):
        if mtp and not gm.has_mtp:
            continue
        w = gm.weight_bytes(mtp=mtp)
        s = gm.state_bytes(n_ctx, mtp=mtp, n_max=n_max, n_seq=n_seq, checkpoints=n_seq > 1)
        mt.add_row(label, _human(w), _human(s), _human(w + s))
    con.print(mt)
    if template_error:
        con.print(f"supported: [yellow]yes, without chat[/] (the chat template cannot be rendered: {template_error}; "
                  "`run -p` works, `run -cnv` and chat requests do not)")
        return 0
    con.print("supported: [green]yes[/]")
    return 0
