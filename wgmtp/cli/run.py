"""`wgmtp run`: generate from a prompt, or chat (`-cnv`), streaming tokens to stdout.

Flags follow llama.cpp's names. With no `-m` the demo model that ships in the package runs.
"""
from __future__ import annotations

import argparse
import sys
import time

from ..api import resolve_model
from ..errors import WgmtpError
from .args import MAX_PROMPT_FILE, integer, read_prompt_file, real, seed


def add_model_args(p: argparse.ArgumentParser) -> None:
    """Arguments shared by run, bench and check."""
    p.add_argument("-m", "--model", default=None, help="GGUF model (default: the shipped demo model)")
    p.add_argument("-md", "--model-draft", dest="mtp_file", default=None, help="MTP sidecar GGUF (mtp-*.gguf)")
    p.add_argument("-c", "--ctx-size", type=integer(1), default=4096, help="context size (tokens)")
    p.add_argument("--device", default=None, help="adapter index or name substring (see `wgmtp devices`), or cpu")
    p.add_argument("--check-tensors", action="store_true",
                   help="refuse weights holding NaN or infinity before running (reads every block's scales)")


def spec_type_arg(value: str) -> str:
    """--spec-type: `mtp` is the older spelling of `draft-mtp` (what llama.cpp's first MTP users typed)."""
    return "draft-mtp" if value == "mtp" else value


def add_spec_type_arg(p: argparse.ArgumentParser, default: str = "none") -> None:
    p.add_argument("--spec-type", type=spec_type_arg, choices=["none", "draft-mtp"], default=default,
                   help="speculative decoding (mtp is accepted as the older spelling of draft-mtp)")


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="generate text (completion, or chat with -cnv)")
    add_model_args(p)
    p.add_argument("-p", "--prompt", default=None, help="prompt (with -cnv: the system prompt)")
    p.add_argument("-f", "--file", default=None, help="read the prompt from a file")
    p.add_argument("-n", "--n-predict", type=integer(-1), default=128,
                   help="tokens to generate (-1 = until EOS or context end)")
    p.add_argument("--temp", type=real(0), default=0.0, help="temperature (0 = greedy)")
    p.add_argument("--top-k", type=integer(0), default=40, help="0 = all candidates")
    p.add_argument("--top-p", type=real(0, 1), default=0.95)
    p.add_argument("--min-p", type=real(0, 1), default=0.05)
    p.add_argument("-s", "--seed", type=seed, default=0, help="random seed (-1: a random one)")
    p.add_argument("-cnv", "--chat", "--conversation", dest="chat", action="store_true", help="interactive chat")
    add_spec_type_arg(p)
    p.add_argument("--spec-draft-n-max", type=integer(1, 15), default=3, help="max drafts per round (1..15)")
    p.add_argument("--spec-draft-p-min", type=real(0, 1), default=0.0, help="stop drafting below this top probability")
    p.add_argument("--spec-draft-vocab", type=integer(0), default=0, metavar="N",
                   help="draft among token ids < N only (a cheaper draft LM head; BPE ids are roughly in "
                        "frequency order; output unchanged); 0 = the whole vocabulary")
    p.add_argument("--no-display-prompt", action="store_true", help="do not echo the prompt")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(fn=cmd_run)


def load_from_args(a: argparse.Namespace):
    """wgmtp.load with the CLI's arguments; returns (model, load seconds)."""
    from ..api import load
    t0 = time.perf_counter()
    dev = a.device if a.device not in (None, "auto") else "auto"
    m = load(resolve_model(a.model), device=dev, mtp=a.mtp_file, n_ctx=a.ctx_size,
             check_tensors=getattr(a, "check_tensors", False))
    return m, time.perf_counter() - t0


def gen_kwargs(a: argparse.Namespace, max_tokens: int) -> dict:
    if not 1 <= a.spec_draft_n_max <= 15:
        raise WgmtpError(f"--spec-draft-n-max {a.spec_draft_n_max} must be in 1..15")
    return dict(max_tokens=max_tokens, temperature=a.temp, seed=a.seed, top_k=a.top_k, top_p=a.top_p,
                min_p=a.min_p, spec=None if a.spec_type == "none" else a.spec_type,
                n_max=a.spec_draft_n_max, p_min=a.spec_draft_p_min, draft_vocab=a.spec_draft_vocab)


def stats_line(st: dict) -> str:
    s = (f"prompt: {st['prompt_tokens']} tokens, {st['prompt_tps']:.1f} tok/s | "
         f"generated: {st['gen_tokens']} tokens, {st['gen_tps']:.1f} tok/s")
    if st.get("verify_rounds"):
        per = ", ".join(f"{x:.2f}" for x in st["acceptance_per_pos"])
        s += (f"\ndraft acceptance: {st['acceptance']:.3f} ({st['accepted']}/{st['drafted']}) | "
              f"mean accepted length: {st['mean_accepted_len']:.2f} | per position: [{per}] | "
              f"verify rounds: {st['verify_rounds']}")
        if "draft_s" in st:
            s += (f"\ntime: draft {st['draft_s'] * 1e3:.0f} ms, verify {st['verify_s'] * 1e3:.0f} ms, "
                  f"other {st['other_s'] * 1e3:.0f} ms")
    return s


def _stream(m, prompt, kw: dict, out) -> bool:
    """Write pieces as they come; True if interrupted by Ctrl-C."""
    try:
        for piece in m.generate(prompt, **kw):
            out.write(piece)
            out.flush()
    except KeyboardInterrupt:
        return True
    return False


def cmd_run(a: argparse.Namespace) -> int:
    if a.prompt is not None and a.file is not None:
        raise WgmtpError("give the prompt with -p or -f, not both")
    prompt = a.prompt
    if a.file is not None:
        prompt = read_prompt_file(a.file)
    m, load_s = load_from_args(a)
    err = sys.stderr
    n = a.n_predict if a.n_predict > 0 else m.n_ctx
    if a.chat:
        return chat_loop(m, a, system=prompt, max_tokens=n)
    if prompt is None:
        try:
            prompt = "" if sys.stdin.isatty() else sys.stdin.read(MAX_PROMPT_FILE + 1)
            prompt.encode("utf-8")
        except (UnicodeDecodeError, UnicodeEncodeError):
            raise WgmtpError("the prompt on standard input is not valid UTF-8") from None
        if len(prompt) > MAX_PROMPT_FILE:
            raise WgmtpError(f"the prompt on standard input is too long (at most {MAX_PROMPT_FILE:,} characters)")
    if not prompt:
        raise WgmtpError("no prompt: give -p TEXT, -f FILE, or use --chat")
    out = sys.stdout
    if not a.no_display_prompt:
        out.write(prompt)
        out.flush()
    interrupted = _stream(m, prompt, gen_kwargs(a, n), out)
    out.write("\n")
    out.flush()
    print(("(interrupted)\n" if interrupted else "") + stats_line(m.stats), file=err)
    if a.verbose:
        print(verbose_line(m, load_s), file=err)
    return 0


def verbose_line(m, load_s: float) -> str:
    mem = getattr(m.backend, "memory_bytes", None)
    return (f"adapter: {m.device_name} | load: {load_s:.2f} s | GPU memory: "
            + (f"{mem() / 2**20:.1f} MiB (weights + state)" if mem else "none (numpy reference)"))


def chat_loop(m, a: argparse.Namespace, system: str | None, max_tokens: int) -> int:
    """Interactive chat: keeps the conversation and its KV/recurrent state between turns; each
    turn feeds only the new text (the chat template's delta)."""
    from ..chat import ChatSession
    sess = ChatSession(m, system=system)
    out, err = sys.stdout, sys.stderr
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            out.write("\n> ")
            out.flush()
        try:
            line = sys.stdin.readline()
        except KeyboardInterrupt:
            break
        except UnicodeDecodeError as e:
            raise WgmtpError(f"the input is not valid UTF-8 (byte {e.start} of the line)") from None
        if not line:
            break
        try:
            line.encode("utf-8")
        except UnicodeEncodeError as e:     # a surrogate-escaped byte: stdin was decoded leniently
            raise WgmtpError(f"the input is not valid UTF-8 (character {e.start} of the line)") from None
        user = line.rstrip("\n")
        if not user.strip():
            continue
        try:
            for piece in sess.reply(user, **gen_kwargs(a, max_tokens)):
                out.write(piece)
                out.flush()
        except KeyboardInterrupt:
            out.write("\n(interrupted)")
        out.write("\n")
        out.flush()
        print(stats_line(m.stats), file=err)
    return 0
