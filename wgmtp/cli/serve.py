"""`wgmtp serve`: an OpenAI-compatible HTTP server in llama-server's image (wgmtp/server/).

Flags follow llama-server's names. With no `-m` it serves the demo model. It binds to 127.0.0.1
unless --host says otherwise: there is no TLS, and --api-key is the only access control.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import WgmtpError
from .args import integer, real, writable_file
from .run import add_model_args, add_spec_args, spec_settings, view_size


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="OpenAI-compatible HTTP server (llama-server's endpoints and flags)")
    add_model_args(p)
    p.add_argument("-np", "--parallel", type=integer(1, 16), default=4, help="slots: sequences decoded at once")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=integer(0, 65535), default=8080)
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on every endpoint but /health")
    add_spec_args(p, n_max_lo=0)    # --spec-draft-n-max: the default and the most a request may ask
    p.add_argument("--chat-template-kwargs", default=None, metavar="JSON",
                   help='extra chat template variables for every request, e.g. \'{"enable_thinking": false}\'')
    p.add_argument("--chat-template-file", default=None, help="a Jinja chat template to use instead of the file's")
    p.add_argument("--reasoning-format", choices=["auto", "none", "deepseek"], default="auto",
                   help="deepseek: a <think> block goes to reasoning_content; none: all in content; "
                        "auto: deepseek when the chat template has <think>")
    p.add_argument("--metrics", action="store_true", help="serve Prometheus metrics at GET /metrics")
    p.add_argument("-a", "--alias", default=None, help="the model name clients see (default: the file name)")
    p.add_argument("--max-queue", type=integer(0), default=64, help="requests that may wait for a slot; more get 503")
    p.add_argument("--prefill-chunk", type=integer(1, 4096), default=64)
    g = p.add_argument_group("live view (needs wgmtp[view])")
    g.add_argument("--view", action="store_true",
                   help="watch the requests in a window: a lane per slot (its text coloured by how each token came, "
                        "its acceptance), requests running and queued, tok/s over all slots")
    g.add_argument("--view-png", type=writable_file, default=None, metavar="FILE",
                   help="render the view offscreen (no display needed) and write a frame to FILE at shutdown, "
                        "and every request's tokens and classes to FILE's .json")
    g.add_argument("--view-every", type=real(0, above=True), default=0.0, metavar="S",
                   help="with --view-png, also write a frame every S seconds (FILE-00001.png, ...)")
    g.add_argument("--view-size", type=view_size, default=(1280, 800), metavar="WxH", help="view size in pixels")
    p.set_defaults(fn=cmd_serve)


def config_from_args(a: argparse.Namespace):
    from ..server.config import ServerConfig
    kw: dict = {}
    if a.chat_template_kwargs:
        try:
            kw = json.loads(a.chat_template_kwargs)
        except json.JSONDecodeError as e:
            raise WgmtpError(f"--chat-template-kwargs is not JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(kw, dict):
            raise WgmtpError("--chat-template-kwargs must be a JSON object, e.g. '{\"enable_thinking\": false}'")
    template = None
    if a.chat_template_file:
        try:
            template = Path(a.chat_template_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise WgmtpError(f"{a.chat_template_file}: cannot read the chat template ({e})") from None
    if a.parallel < 1:
        raise WgmtpError(f"-np {a.parallel} must be at least 1")
    if a.max_queue < 0:
        raise WgmtpError(f"--max-queue {a.max_queue} must be >= 0")
    s = spec_settings(a)
    return ServerConfig(model=a.model, mtp_file=a.mtp_file, n_ctx=a.ctx_size, n_parallel=a.parallel, host=a.host,
                        port=a.port, api_key=a.api_key, spec_type=s.label, n_max=s.n_max, n_min=s.n_min,
                        p_min=s.p_min, draft_vocab=s.draft_vocab, ngram=s.ngram, adaptive=s.adaptive,
                        chat_template_kwargs=kw, chat_template=template,
                        reasoning_format=a.reasoning_format, metrics=a.metrics, alias=a.alias, device=a.device,
                        device_draft=a.device_draft,
                        max_queue=a.max_queue, prefill_chunk=a.prefill_chunk, check_tensors=a.check_tensors)


def cmd_serve(a: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ..server.app import create_app
    except ImportError as e:
        raise WgmtpError(f"wgmtp serve needs the serving libraries ({e.name} is missing): "
                         "pip install 'wgmtp[serve]'") from None
    if a.view_every and not a.view_png:
        raise WgmtpError("--view-every S writes frames of --view-png FILE: give --view-png too")
    view = open_view(a)         # before the model loads: no display, or the view extra missing
    cfg = config_from_args(a)
    print(f"wgmtp serve: http://{cfg.host}:{cfg.port} (loading the model; GET /health answers 200 when ready)",
          flush=True)
    if view is None:
        uvicorn.run(create_app(cfg), host=cfg.host, port=cfg.port, log_level="warning")
        return 0
    cfg.observer = view.observer
    return serve_viewed(a, cfg, view, create_app(cfg))


def open_view(a: argparse.Namespace):
    """The server's live view when asked for (--view, --view-png), checked before anything loads."""
    if not (a.view or a.view_png):
        return None
    from ..view.app import check_view
    check_view(window=a.view)
    from ..view.serve import ServeView
    spec = spec_settings(a)
    label = (f"{spec.label}, n_max {spec.n_max}{', adaptive' if spec.adaptive else ''}" if spec.types
             else "plain decoding") + f", {a.parallel} slots (each request's own sampling)"
    return ServeView(label, window=a.view, png=a.view_png, every_s=a.view_every, size=a.view_size)


def serve_viewed(a: argparse.Namespace, cfg, view, app) -> int:
    """uvicorn on a worker thread (the view's frames need the main thread), until Ctrl-C, SIGTERM or
    the window closes; then what the view wrote."""
    import sys

    import uvicorn

    from ..api import EngineModel
    server = uvicorn.Server(uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="warning"))
    b = app.state.backend
    model: list = []

    def loaded():
        if b.engine is not None and not model:
            model.append(EngineModel(b.engine))
        return model[0] if model else None

    def stop() -> None:
        server.should_exit = True
    rc = view.run(server.run, stop, loaded, lambda: b.error)
    print(view.summary(), file=sys.stderr)
    return rc
