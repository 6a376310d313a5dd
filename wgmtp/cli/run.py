"""`wgmtp run`: generate from a prompt, or chat (`-cnv`), streaming tokens to stdout.

Flags follow llama.cpp's names. With no `-m` the demo model that ships in the package runs.
Plain and draft-mtp runs go through the one-sequence path (`wgmtp.load`); the n-gram drafters and
adaptive n exist only in the batching engine, so those runs go through a one-slot engine
(`api.EngineModel`), with the same output.
"""
from __future__ import annotations

import argparse
import sys
import time

from ..api import resolve_model
from ..drafters import ADAPTIVE_DEFAULT, NgramParams, SpecSettings, parse_spec_types, spec_label
from ..engine import N_DRAFT_MAX as SESSION_DRAFT_MAX
from ..errors import BadRequestError, WgmtpError
from ..models.qwen35.slots import N_LONG_MAX
from .args import MAX_PROMPT_FILE, integer, integers, read_prompt_file, real, seed, writable_file


def add_model_args(p: argparse.ArgumentParser) -> None:
    """Arguments shared by run, bench and check."""
    p.add_argument("-m", "--model", default=None, help="GGUF model (default: the shipped demo model)")
    p.add_argument("-md", "--model-draft", dest="mtp_file", default=None,
                   help="MTP sidecar GGUF (mtp-*.gguf), or with --spec-type draft-simple the draft model")
    p.add_argument("-c", "--ctx-size", type=integer(1), default=4096, help="context size (tokens)")
    p.add_argument("--device", default=None, help="adapter index or name substring (see `wgmtp devices`), or cpu")
    p.add_argument("--check-tensors", action="store_true",
                   help="refuse weights holding NaN or infinity before running (reads every block's scales)")


def spec_type_arg(value: str) -> str:
    """--spec-type: llama.cpp's comma-separated list of drafters (drafters.parse_spec_types; `mtp`
    is the older spelling of `draft-mtp`), in its canonical spelling ("none" for no drafter)."""
    try:
        return spec_label(parse_spec_types(value))
    except BadRequestError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_spec_args(p: argparse.ArgumentParser, *, default: str = "none", n_max_lo: int = 1,
                  n_max_list: bool = False, adaptive: bool | None = None) -> None:
    """--spec-type and the --spec-* flags of run, bench and serve, with llama.cpp's names and
    defaults (bench takes a list of draft lengths, and adaptive n only when asked: its rows are
    per draft length). adaptive None: ADAPTIVE_DEFAULT (spec_settings)."""
    p.add_argument("--spec-type", type=spec_type_arg, default=default, metavar="TYPE[,TYPE]",
                   help="speculative decoding, a comma-separated list of none, draft-mtp (or mtp), ngram-simple, "
                        "ngram-mod, draft-simple (a draft model: -md draft.gguf); with several, an n-gram match "
                        "drafts when there is one, else the draft model, else MTP")
    p.add_argument("--device-draft", default=None,
                   help="adapter of draft-simple's model (index or name substring; default: the model's)")
    if n_max_list:
        p.add_argument("--spec-draft-n-max", type=integers(0, N_LONG_MAX), default="0,1,2,3",
                       help=f"comma-separated draft lengths (0..{N_LONG_MAX}; draft models and sampled rounds 0..15); "
                            "0 = plain decoding "
                            "(--spec-type none: only 0)")
    else:
        p.add_argument("--spec-draft-n-max", type=integer(n_max_lo, N_LONG_MAX), default=3,
                       help=f"drafts per round at most ({n_max_lo}..{N_LONG_MAX}: greedy MTP and n-gram drafts; draft "
                            "models and sampled rounds draft at most 15; with --spec-adaptive the cap)")
    p.add_argument("--spec-draft-n-min", type=integer(0, N_LONG_MAX), default=0,
                   help="rounds that would draft fewer tokens run as plain steps")
    p.add_argument("--spec-draft-p-min", type=real(0, 1), default=0.0,
                   help="stop MTP drafting below this top probability")
    p.add_argument("--spec-draft-vocab", type=integer(0), default=0, metavar="N",
                   help="MTP drafts among token ids < N only (a cheaper draft LM head; BPE ids are roughly in "
                        "frequency order; output unchanged); 0 = the whole vocabulary")
    p.add_argument("--spec-ngram-size-n", type=integer(1), default=12, help="n-gram drafters: key tokens")
    p.add_argument("--spec-ngram-size-m", type=integer(1), default=48, help="n-gram drafters: draft tokens at most")
    p.add_argument("--spec-ngram-min-hits", type=integer(1), default=1,
                   help="n-gram drafters: occurrences of the key needed to draft")
    on = ADAPTIVE_DEFAULT if adaptive is None else adaptive
    p.add_argument("--spec-adaptive", action=argparse.BooleanOptionalAction, default=adaptive,
                   help="choose each round's draft length from the sequence's acceptance and the measured cost "
                        f"of a round (--spec-draft-n-max is the cap; default {'on' if on else 'off'})")


def spec_settings(a: argparse.Namespace, n_max: int | None = None) -> SpecSettings:
    """The --spec-* flags as one SpecSettings (n_max: bench's draft length of the moment)."""
    # the numpy reference has no engine: there adaptive n is on only when asked for (then an error)
    default = ADAPTIVE_DEFAULT and getattr(a, "device", None) != "cpu"
    adaptive = default if a.spec_adaptive is None else a.spec_adaptive
    s = SpecSettings(parse_spec_types(a.spec_type), n_max=a.spec_draft_n_max if n_max is None else n_max,
                     n_min=a.spec_draft_n_min, p_min=a.spec_draft_p_min, adaptive=adaptive,
                     ngram=NgramParams(a.spec_ngram_size_n, a.spec_ngram_size_m, a.spec_ngram_min_hits),
                     draft_vocab=getattr(a, "spec_draft_vocab", 0))
    s.check()
    return s


def uses_engine(s: SpecSettings) -> bool:
    """Whether a run needs the batching engine: the n-gram drafters, adaptive n and draft lengths
    past the one-sequence runner's exist only there."""
    return bool(s.types) and (bool(s.given) or s.adaptive or s.n_max > SESSION_DRAFT_MAX)


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
    add_spec_args(p)
    p.add_argument("--no-display-prompt", action="store_true", help="do not echo the prompt")
    p.add_argument("-v", "--verbose", action="store_true")
    add_view_args(p)
    p.set_defaults(fn=cmd_run)


def view_size(s: str) -> tuple[int, int]:
    """--view-size WxH, each side 320..8192 pixels."""
    w, sep, h = s.lower().partition("x")
    try:
        size = (int(w), int(h)) if sep else None
    except ValueError:
        size = None
    if size is None or not all(320 <= v <= 8192 for v in size):
        raise argparse.ArgumentTypeError(f"{s!r}: give WIDTHxHEIGHT, each 320..8192 pixels (e.g. 1280x800)")
    return size


def add_view_args(p: argparse.ArgumentParser) -> None:
    """The live view (wgmtp/view, README "Live view: `--view`")."""
    g = p.add_argument_group("live view (needs wgmtp[view])")
    g.add_argument("--view", action="store_true",
                   help="watch the generation in a window: each token coloured by how it came, acceptance, "
                        "tok/s, GPU time per round")
    g.add_argument("--view-png", type=writable_file, default=None, metavar="FILE",
                   help="render the view offscreen (no display needed) and write the final frame to FILE, "
                        "and the colour of every token to FILE's .json")
    g.add_argument("--view-every", type=integer(1), default=0, metavar="N",
                   help="with --view-png, also write a frame every N tokens (FILE-000NN.png)")
    g.add_argument("--view-size", type=view_size, default=(1280, 800), metavar="WxH", help="view size in pixels")
    g.add_argument("--view-linger", type=real(0), default=None, metavar="S",
                   help="close the window S seconds after the generation ends (default: when you close it)")


def load_from_args(a: argparse.Namespace, spec: SpecSettings | None = None):
    """wgmtp.load with the CLI's arguments, or a one-slot engine where `spec` needs one
    (uses_engine); returns (model, load seconds)."""
    from ..api import EngineModel, load, open_engine
    t0 = time.perf_counter()
    dev = a.device if a.device not in (None, "auto") else "auto"
    path, check = resolve_model(a.model), getattr(a, "check_tensors", False)
    if spec is not None and uses_engine(spec):
        if dev == "cpu":
            raise WgmtpError(f"--device cpu (the numpy reference) runs plain and draft-mtp decoding only: "
                             f"--spec-type {spec.label}{' with --spec-adaptive' if spec.adaptive else ''} needs "
                             "a GPU adapter")
        mtp, draft = spec.files(a.mtp_file)
        m = EngineModel(open_engine(path, device=dev, mtp=mtp, n_parallel=1, n_ctx=a.ctx_size, spec=spec.types,
                                    n_max=spec.n_max, check_tensors=check, draft=draft,
                                    device_draft=getattr(a, "device_draft", None)))
    else:
        m = load(path, device=dev, mtp=a.mtp_file, n_ctx=a.ctx_size, check_tensors=check)
    return m, time.perf_counter() - t0


def gen_kwargs(a: argparse.Namespace, max_tokens: int, s: SpecSettings, engine: bool) -> dict:
    """generate()'s arguments; the engine's speculative ones only where the engine runs."""
    kw = dict(max_tokens=max_tokens, temperature=a.temp, seed=a.seed, top_k=a.top_k, top_p=a.top_p,
              min_p=a.min_p, spec=s.label if s.types else None, n_max=s.n_max, p_min=s.p_min,
              draft_vocab=s.draft_vocab)
    if engine:
        kw.update(n_min=s.n_min, adaptive=s.adaptive, ngram=s.ngram)
    return kw


def stats_line(st: dict) -> str:
    s = (f"prompt: {st['prompt_tokens']} tokens, {st['prompt_tps']:.1f} tok/s | "
         f"generated: {st['gen_tokens']} tokens, {st['gen_tps']:.1f} tok/s")
    if st.get("verify_rounds"):
        per = ", ".join(f"{x:.2f}" for x in st["acceptance_per_pos"])
        s += (f"\ndraft acceptance: {st['acceptance']:.3f} ({st['accepted']}/{st['drafted']}) | "
              f"mean accepted length: {st['mean_accepted_len']:.2f} | per position: [{per}] | "
              f"verify rounds: {st['verify_rounds']} | drafts per round: {st['drafted'] / st['verify_rounds']:.2f}")
        if "draft_s" in st:
            s += (f"\ntime: draft {st['draft_s'] * 1e3:.0f} ms, verify {st['verify_s'] * 1e3:.0f} ms, "
                  f"other {st['other_s'] * 1e3:.0f} ms")
    return s


def _stream(m, prompt, kw: dict, out, stop=None) -> bool:
    """Write pieces as they come; True if interrupted by Ctrl-C (or, with the view, when `stop()`
    says so: Ctrl-C reaches the view's thread). A failure mid-generation ends the text's line
    first, so the error stands on a line of its own."""
    try:
        for piece in m.generate(prompt, **kw):
            out.write(piece)
            out.flush()
            if stop is not None and stop():
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        return True
    except WgmtpError:
        out.write("\n")
        out.flush()
        raise
    return False


def decoding_label(a: argparse.Namespace, s: SpecSettings) -> str:
    """The view header's line of settings."""
    spec = (f"{s.label}, n_max {s.n_max}{', adaptive' if s.adaptive else ''}"
            f"{f', draft vocab {s.draft_vocab}' if s.draft_vocab else ''}") if s.types else "plain decoding"
    return spec + (", greedy" if a.temp <= 0 else f", temp {a.temp:g}, seed {a.seed}")


def open_view(a: argparse.Namespace, m, spec: SpecSettings, kw: dict):
    """The live view when asked for (--view, --view-png); it watches through kw's `observe`."""
    if not (a.view or a.view_png):
        return None
    from ..view.app import View
    v = View(m, decoding_label(a, spec), window=a.view, png=a.view_png, every=a.view_every, size=a.view_size,
             linger=-1.0 if a.view_linger is None else a.view_linger)
    kw["observe"] = v.observe
    return v


def cmd_run(a: argparse.Namespace) -> int:
    if a.prompt is not None and a.file is not None:
        raise WgmtpError("give the prompt with -p or -f, not both")
    if a.view_every and not a.view_png:
        raise WgmtpError("--view-every N writes frames of --view-png FILE: give --view-png too")
    if a.view or a.view_png:
        from ..view.app import check_view
        check_view(window=a.view)       # before the model loads: no display, or the view extra missing
    prompt = a.prompt
    if a.file is not None:
        prompt = read_prompt_file(a.file)
    spec = spec_settings(a)
    m, load_s = load_from_args(a, spec)
    err = sys.stderr
    n = a.n_predict if a.n_predict > 0 else m.n_ctx
    kw = gen_kwargs(a, n, spec, engine=uses_engine(spec))
    view = open_view(a, m, spec, kw)
    if a.chat:
        job = lambda: chat_loop(m, system=prompt, kw=kw)     # noqa: E731
        return run_viewed(a, view, job) if view else job()
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

    def job() -> int:
        out = sys.stdout
        if not a.no_display_prompt:
            out.write(prompt)
            out.flush()
        interrupted = _stream(m, prompt, kw, out, stop=view.stopping if view else None)
        out.write("\n")
        out.flush()
        print(("(interrupted)\n" if interrupted else "") + stats_line(m.stats), file=err)
        if a.verbose:
            print(verbose_line(m, load_s), file=err)
        return 0
    if view is None:
        return job()
    view.add_prompt(prompt)
    return run_viewed(a, view, job)


def run_viewed(a: argparse.Namespace, view, job) -> int:
    """The generation `job` under the live view; then what the view wrote (or, with -v, drew)."""
    rc = view.run(job)
    if a.view_png or a.verbose:
        print(view.summary(), file=sys.stderr)
    return rc


def verbose_line(m, load_s: float) -> str:
    mem = getattr(m.backend, "memory_bytes", None)
    line = (f"adapter: {m.device_name} | load: {load_s:.2f} s | GPU memory: "
            + (f"{mem() / 2**20:.1f} MiB (weights + state)" if mem else "none (numpy reference)"))
    draft = getattr(getattr(m, "engine", None), "draft", None)
    if draft is not None:       # draft-simple's model, perhaps on another adapter (--device-draft)
        line += (f" | draft model: {draft.gm.path} on {draft.ctx.name}, "
                 f"{draft.memory_bytes() / 2**20:.1f} MiB")
    return line


def chat_loop(m, system: str | None, kw: dict) -> int:
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
        wrote = False
        try:
            for piece in sess.reply(user, **kw):
                out.write(piece)
                out.flush()
                wrote = True
        except KeyboardInterrupt:
            out.write("\n(interrupted)")
        except WgmtpError:
            if wrote or interactive:        # the error on a line of its own
                out.write("\n")
                out.flush()
            raise
        out.write("\n")
        out.flush()
        print(stats_line(m.stats), file=err)
    return 0
