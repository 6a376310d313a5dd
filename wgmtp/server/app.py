"""The routes: OpenAI's (/v1/chat/completions, /v1/completions, /v1/models) and llama-server's own
(/health, /props, /slots, /tokenize, /detokenize, /apply-template, /completion, /metrics).

Handlers validate, render and tokenize (off the event loop), enqueue, and stream; the engine thread
does all GPU work. Every error is OpenAI-shaped (errors.py); `--api-key` guards everything but
/health.
"""
from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sse_starlette import EventSourceResponse

from .. import __version__
from ..chat import render
from . import errors
from .backend import Backend
from .config import ServerConfig
from .errors import ApiError, as_api_error, error_body
from .generate import Delta, Run, make_plan, watch_disconnect
from .metrics import exposition, registry, timings
from .reasoning import prompt_opens_thought
from .schemas import (
    ApplyTemplateRequest,
    ChatRequest,
    CompletionRequest,
    DetokenizeRequest,
    Message,
    NativeCompletionRequest,
    TokenizeRequest,
    parse,
)
from .streaming import Logprobs

FINGERPRINT = f"wgmtp-{__version__}"
RESERVED_TEMPLATE_VARS = {"messages", "add_generation_prompt", "time_limit", "template"}


def _dump(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def create_app(cfg: ServerConfig, backend: Backend | None = None) -> FastAPI:
    """The ASGI app. The model loads in the background when the app starts (unless `backend` is
    given loaded); until then /health answers 503 and every other endpoint 503 too."""
    b = backend or Backend(cfg)
    reg = registry(b)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        if not b.ready.is_set() and b.error is None:
            b.start_loading()
        yield
        b.close()

    app = FastAPI(title="wgmtp", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.backend = b
    errors.install(app)

    async def auth(request: Request) -> None:
        if not cfg.api_key:
            return
        h = request.headers.get("authorization", "")
        key = h[7:].strip() if h[:7].lower() == "bearer " else request.headers.get("x-api-key", "")
        if not key:
            raise ApiError(401, "no API key: send 'Authorization: Bearer KEY' (the server runs with --api-key)")
        if not secrets.compare_digest(key.encode(), cfg.api_key.encode()):
            raise ApiError(401, "invalid API key")

    async def loaded() -> None:
        if b.error is not None:
            raise ApiError(500, f"the model failed to load: {' '.join(str(b.error).split())[:300]}")
        if not b.ready.is_set():
            raise ApiError(503, "Loading model")

    api = APIRouter(dependencies=[Depends(auth), Depends(loaded)])

    # ---- health and facts

    @app.get("/health")
    @app.get("/v1/health")
    async def health() -> JSONResponse:
        if b.error is not None:
            return JSONResponse(error_body(500, f"the model failed to load: {b.error}"), status_code=500)
        if not b.ready.is_set():
            return JSONResponse(error_body(503, "Loading model"), status_code=503)
        return JSONResponse({"status": "ok"})

    @api.get("/v1/models")
    @api.get("/models")
    async def models() -> dict:
        c = b.engine.rn.cfg
        return {"object": "list", "data": [{
            "id": b.model_id, "object": "model", "created": b.created, "owned_by": "wgmtp",
            "meta": {"n_ctx": b.n_ctx, "n_ctx_train": c.n_ctx_train, "n_vocab": c.n_vocab, "path": b.model_path}}]}

    def spec_settings() -> dict:
        on = b.speculative
        return {"type": cfg.spec().label if on else "none", "n_max": cfg.n_max if on else 0, "p_min": cfg.p_min}

    def spec_params() -> dict:
        """The speculative defaults as llama-server's flat dotted request fields (plus wgmtp's adaptive)."""
        s, on = cfg.spec(), b.speculative
        return {"speculative.type": spec_settings()["type"], "speculative.n_max": s.n_max if on else 0,
                "speculative.n_min": s.n_min if on else 0, "speculative.p_min": s.p_min,
                "speculative.ngram_size_n": s.ngram.size_n, "speculative.ngram_size_m": s.ngram.size_m,
                "speculative.ngram_min_hits": s.ngram.min_hits, "speculative.adaptive": on and s.adaptive}

    @api.get("/props")
    async def props() -> dict:
        return {"default_generation_settings": {
                    "n_ctx": b.n_ctx, "params": {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05,
                                                 **spec_params()}},
                "total_slots": b.engine.n_parallel, "model_path": b.model_path, "model_alias": b.model_id,
                "chat_template": b.template, "chat_template_kwargs": cfg.chat_template_kwargs,
                "reasoning_format": cfg.reasoning_format, "bos_token": b.tok.bos_text, "eos_token": b.tok.eos_text,
                "speculative": spec_settings(), "modalities": {"vision": False, "audio": False},
                "build_info": FINGERPRINT, "is_sleeping": False}

    @api.get("/slots")
    async def slots() -> list:
        eng = b.engine
        running = dict(eng.running)
        out = []
        for s in range(eng.n_parallel):
            seq = running.get(s)
            out.append({"id": s, "n_ctx": b.n_ctx, "is_processing": seq is not None,
                        "id_task": seq.h.id if seq else -1, "n_past": len(eng.hist[s].fed),
                        "speculative": bool(seq and seq.h.req.speculative),
                        "n_decoded": seq.h.stats.gen_tokens if seq else 0})
        return out

    @api.get("/metrics")
    async def metrics() -> Response:
        if not cfg.metrics:
            raise ApiError(501, "this server does not serve metrics: start it with --metrics")
        return Response(exposition(reg), media_type="text/plain; version=0.0.4; charset=utf-8")

    # ---- tokens and templates

    @api.post("/tokenize")
    async def tokenize(request: Request) -> dict:
        body = await parse(request, TokenizeRequest, cfg.max_body_bytes)
        ids = await asyncio.to_thread(b.tok.encode, body.content, body.add_special)
        if body.with_pieces:
            return {"tokens": [{"id": i, "piece": b.tok.decode([i])} for i in ids]}
        return {"tokens": ids}

    @api.post("/detokenize")
    async def detokenize(request: Request) -> dict:
        body = await parse(request, DetokenizeRequest, cfg.max_body_bytes)
        bad = [t for t in body.tokens if not 0 <= t < b.tok.n_vocab]
        if bad:
            raise ApiError(400, f"token id {bad[0]} is outside the vocabulary (0..{b.tok.n_vocab - 1})")
        return {"content": b.tok.decode(body.tokens)}

    def chat_messages(msgs: list[Message]) -> list[dict]:
        out = []
        for m in msgs:
            c = m.content
            if isinstance(c, list):
                kinds = {p.type for p in c} - {"text"}
                if kinds:
                    raise ApiError(400, f"only text content parts are supported (got {sorted(kinds)[0]})")
                c = "".join(p.text or "" for p in c)
            d = dict(m.model_extra or {})
            d.update(role=m.role, content=c if c is not None else "")
            out.append(d)
        return out

    def template_vars(kw: dict | None) -> dict:
        extra = {**cfg.chat_template_kwargs, **(kw or {})}
        bad = sorted(set(extra) & RESERVED_TEMPLATE_VARS)
        if bad:
            raise ApiError(400, f"chat_template_kwargs may not set '{bad[0]}'")
        return {**b.tok.template_vars(), **extra}

    async def render_chat(msgs: list[Message], kw: dict | None) -> str:
        if not msgs:
            raise ApiError(400, "messages must not be empty")
        return await asyncio.to_thread(render, b.template, chat_messages(msgs), True, **template_vars(kw))

    @api.post("/apply-template")
    async def apply_template(request: Request) -> dict:
        body = await parse(request, ApplyTemplateRequest, cfg.max_body_bytes)
        return {"prompt": await render_chat(body.messages, body.chat_template_kwargs)}

    # ---- generation

    def check_model(name: str | None) -> None:
        if name and name not in b.names():
            raise ApiError(400, f"model '{name[:100]}' is not served here (GET /v1/models lists '{b.model_id}')")

    def check_n(n: int) -> None:
        if n != 1:
            raise ApiError(400, f"n={n}: only n=1 is supported")

    def usage(run: Run) -> dict:
        st = run.handle.stats
        n_prompt = len(run.plan.prompt)
        return {"prompt_tokens": n_prompt, "completion_tokens": st.gen_tokens,
                "total_tokens": n_prompt + st.gen_tokens, "prompt_tokens_details": {"cached_tokens": st.reused_tokens}}

    def live_timings(run: Run) -> dict:
        return timings(run.job.handle.stats)

    async def collect(request: Request, run: Run) -> list[Delta]:
        watcher = asyncio.create_task(watch_disconnect(request, run))
        try:
            return [d async for d in run.deltas()]
        finally:
            watcher.cancel()

    def sse(gen) -> EventSourceResponse:  # type: ignore[no-untyped-def]
        async def events():
            async for item in gen:
                yield {"data": item if isinstance(item, str) else _dump(item)}
        return EventSourceResponse(events(), ping=15)

    async def guarded(gen, done: bool, run: Run):  # type: ignore[no-untyped-def]
        """A stream's chunks; an error after the start becomes an error event (then [DONE]). A
        client gone at any point, even before the first token, cancels the request (a no-op once
        it has finished), so its slot frees at the next engine step."""
        try:
            async for x in gen:
                yield x
        except Exception as e:
            a = as_api_error(e)
            yield error_body(a.status, a.message)
        finally:
            run.cancel()
        if done:
            yield "[DONE]"

    @api.post("/v1/chat/completions")
    @api.post("/chat/completions")
    async def chat_completions(request: Request):  # type: ignore[no-untyped-def]
        body = await parse(request, ChatRequest, cfg.max_body_bytes)
        check_model(body.model)
        check_n(body.n)
        if body.top_logprobs is not None and not body.logprobs:
            raise ApiError(400, "top_logprobs needs logprobs: true")
        prompt = await render_chat(body.messages, body.chat_template_kwargs)
        ids = await asyncio.to_thread(b.tok.encode, prompt)
        fmt = body.reasoning_format or cfg.reasoning_format
        if fmt == "auto":
            fmt = "deepseek" if "<think>" in (b.template or "") else "none"
        top = (body.top_logprobs or 0) if body.logprobs else None
        plan = make_plan(b, body, ids, body.max_completion_tokens or body.max_tokens, top_logprobs=top,
                         reasoning=prompt_opens_thought(prompt) if fmt == "deepseek" else None)
        run = Run(b, plan)
        run.submit()
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        lp = Logprobs(b.tok, top or 0)

        def message_of(d: Delta) -> dict:
            m: dict = {}
            if d.reasoning:
                m["reasoning_content"] = d.reasoning
            if d.content:
                m["content"] = d.content
            return m

        if not body.stream:
            ds = await collect(request, run)
            content = "".join(d.content for d in ds)
            reasoning = "".join(d.reasoning for d in ds)
            msg: dict = {"role": "assistant", "content": content}
            if plan.reasoning is not None:
                msg["reasoning_content"] = reasoning or None
            choice: dict = {"index": 0, "message": msg, "finish_reason": run.finish_reason,
                            "logprobs": None}
            if top is not None:
                choice["logprobs"] = {"content": lp.chat([t for d in ds for t in d.ids],
                                                         [c for d in ds for c in d.cands])}
            return {"id": cid, "object": "chat.completion", "created": created, "model": b.model_id,
                    "system_fingerprint": FINGERPRINT, "choices": [choice], "usage": usage(run),
                    "timings": timings(run.handle.stats)}

        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        def chunk(delta: dict, finish: str | None = None, d: Delta | None = None) -> dict:
            ch: dict = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            if top is not None and d is not None and d.ids:
                ch["logprobs"] = {"content": lp.chat(d.ids, d.cands)}
            return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": b.model_id,
                    "system_fingerprint": FINGERPRINT, "choices": [ch], "timings": live_timings(run)}

        async def chunks():
            yield chunk({"role": "assistant", "content": None})
            async for d in run.deltas():
                if d.content or d.reasoning or (top is not None and d.ids):
                    yield chunk(message_of(d), None, d)
                if d.final:
                    yield chunk({}, run.finish_reason)
                    if include_usage:
                        yield {"id": cid, "object": "chat.completion.chunk", "created": created, "model": b.model_id,
                               "system_fingerprint": FINGERPRINT, "choices": [], "usage": usage(run),
                               "timings": timings(run.handle.stats)}
        return sse(guarded(chunks(), done=True, run=run))

    @api.post("/v1/completions")
    @api.post("/completions")
    async def completions(request: Request):  # type: ignore[no-untyped-def]
        body = await parse(request, CompletionRequest, cfg.max_body_bytes)
        check_model(body.model)
        check_n(body.n)
        p = body.prompt
        if isinstance(p, list) and p and isinstance(p[0], str):
            if len(p) != 1:
                raise ApiError(400, f"{len(p)} prompts: one prompt per request is supported")
            p = p[0]
        ids = await asyncio.to_thread(b.tok.encode, p) if isinstance(p, str) else list(p)
        plan = make_plan(b, body, ids, body.max_tokens, top_logprobs=body.logprobs)
        run = Run(b, plan)
        run.submit()
        cid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        lp = Logprobs(b.tok, body.logprobs or 0)

        def logprobs_of(ds: list[Delta]) -> dict | None:
            if body.logprobs is None:
                return None
            return lp.completion([t for d in ds for t in d.ids], [c for d in ds for c in d.cands],
                                 [o for d in ds for o in d.offsets])

        def obj(choice: dict, **more) -> dict:  # type: ignore[no-untyped-def]
            return {"id": cid, "object": "text_completion", "created": created, "model": b.model_id,
                    "system_fingerprint": FINGERPRINT, "choices": [choice], **more}

        if not body.stream:
            ds = await collect(request, run)
            return obj({"index": 0, "text": "".join(d.content for d in ds), "logprobs": logprobs_of(ds),
                        "finish_reason": run.finish_reason}, usage=usage(run), timings=timings(run.handle.stats))

        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        async def chunks():
            async for d in run.deltas():
                if d.content or d.final or (body.logprobs is not None and d.ids):
                    yield obj({"index": 0, "text": d.content, "logprobs": logprobs_of([d]),
                               "finish_reason": run.finish_reason if d.final else None}, timings=live_timings(run))
                if d.final and include_usage:
                    u = obj({}, usage=usage(run), timings=timings(run.handle.stats))
                    u["choices"] = []
                    yield u
        return sse(guarded(chunks(), done=True, run=run))

    @api.post("/completion")
    async def completion(request: Request):  # type: ignore[no-untyped-def]
        """llama.cpp's native completion: n_predict (-1: to the end of the context), return_tokens."""
        body = await parse(request, NativeCompletionRequest, cfg.max_body_bytes)
        check_model(body.model)
        ids = await asyncio.to_thread(b.tok.encode, body.prompt) if isinstance(body.prompt, str) else body.prompt
        if body.n_predict == 0 or body.n_predict < -1:
            raise ApiError(400, f"n_predict {body.n_predict} must be -1 (to the end of the context) or >= 1")
        plan = make_plan(b, body, list(ids), body.n_predict)
        run = Run(b, plan)
        run.submit()

        def final(d_tokens: list[int], content: str) -> dict:
            st = run.handle.stats
            stop_type = "word" if run.stop_word else ("eos" if run.handle.finish_reason == "stop" else "limit")
            out = {"content": content, "id_slot": st.slot, "stop": True, "model": b.model_id,
                   "tokens_predicted": st.gen_tokens, "tokens_evaluated": len(plan.prompt),
                   "tokens_cached": st.reused_tokens, "stop_type": stop_type, "stopping_word": run.stop_word or "",
                   "truncated": False, "timings": timings(st)}
            if body.return_tokens:
                out["tokens"] = d_tokens
            return out

        if not body.stream:
            ds = await collect(request, run)
            return final(run.tokens, "".join(d.content for d in ds))

        async def chunks():
            async for d in run.deltas():
                if d.final:
                    yield final(d.ids, d.content)
                elif d.content or d.ids:
                    c = {"content": d.content, "stop": False, "id_slot": run.job.handle.stats.slot,
                         "timings": live_timings(run)}
                    if body.return_tokens:
                        c["tokens"] = d.ids
                    yield c
        return sse(guarded(chunks(), done=False, run=run))

    app.include_router(api)
    return app
