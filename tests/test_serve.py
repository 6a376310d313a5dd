"""`wgmtp serve` (wgmtp/server/) end to end, on loopback only: the official `openai` client against
a live server on the demo model (uvicorn in a thread), checked against the `wgmtp run` path
(wgmtp.load(...).generate) and against each request run alone; hostile requests; disconnects.

The server runs a Qwen3-style chat template (below) so the reasoning split is exercised the way a
Qwen3.5/3.6 file's template drives it. The demo model is not an assistant and never writes
`</think>` itself, so the split at a generated `</think>` is checked on the real tokenizer's
tokens pushed through the same pipeline (TextStream + ReasoningSplit).
"""
from __future__ import annotations

import asyncio
import socket
import threading
import time

import httpx
import openai
import pytest
import uvicorn

from wgmtp.api import DEMO_MODEL, load
from wgmtp.chat import ChatTemplateError, render
from wgmtp.server.app import create_app
from wgmtp.server.backend import Backend
from wgmtp.server.config import ServerConfig
from wgmtp.server.reasoning import ReasoningSplit, prompt_opens_thought
from wgmtp.server.streaming import TextStream

KEY = "test-key"
N_CTX = 512

# Qwen3's template's <think> handling (history: the thought is cut from earlier replies; the
# generation prompt closes an empty thought when enable_thinking is false), with the generation
# prompt opening the thought when thinking is on, as Qwen3.5/3.6 templates do.
QWEN_TEMPLATE = """{%- for message in messages %}
{%- if message.role == "assistant" %}
{%- set content = message.content %}
{%- if '</think>' in content %}
{%- set content = content.split('</think>')[-1].lstrip('\\n') %}
{%- endif %}
{{- '<|im_start|>assistant\\n' + content + '<|im_end|>\\n' }}
{%- else %}
{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
{{- '<|im_start|>assistant\\n' }}
{%- if enable_thinking is defined and enable_thinking is false %}
{{- '<think>\\n\\n</think>\\n\\n' }}
{%- else %}
{{- '<think>\\n' }}
{%- endif %}
{%- endif %}"""

PROMPTS = ["The built-in function len() returns the number of items in a container. For a dictionary, it",
           "The following functions are provided by the module",
           "To create a virtual environment, run",
           "Changed in version 3.11:",
           "The socket module",
           "Return a new list"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    cfg = ServerConfig(n_ctx=N_CTX, n_parallel=4, spec_type="draft-mtp", n_max=3, api_key=KEY, metrics=True,
                       chat_template=QWEN_TEMPLATE, max_body_bytes=1 << 20, max_queue=64, device=None)
    app = create_app(cfg)
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    base = f"http://127.0.0.1:{port}"
    t0 = time.time()
    while True:
        try:
            if httpx.get(base + "/health", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.time() - t0 < 120, "the server did not become healthy"
        time.sleep(0.1)
    yield base, app.state.backend
    srv.should_exit = True
    th.join(30)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key=KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def run_model():
    """The `wgmtp run` path: wgmtp.load + generate."""
    return load(DEMO_MODEL, n_ctx=N_CTX)


def run_text(m, prompt: str, n: int) -> str:
    return "".join(m.generate(prompt, max_tokens=n, temperature=0.0))


def H(extra: dict | None = None) -> dict:
    return {"Authorization": f"Bearer {KEY}", **(extra or {})}


def chat_prompt(messages: list[dict], **kw) -> str:
    return render(QWEN_TEMPLATE, messages, True, bos_token="", eos_token="<|endoftext|>", **kw)


# ---- the openai client: completions and chat, greedy text equals `wgmtp run`

@pytest.mark.parametrize("n_max", [0, 3])
def test_completion_equals_run_path(client, run_model, n_max):
    p = PROMPTS[0]
    want = run_text(run_model, p, 24)
    r = client.completions.create(model="wgmtp-demo.gguf", prompt=p, max_tokens=24, temperature=0,
                                  extra_body={"speculative.n_max": n_max})
    assert r.choices[0].text == want
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 24 and r.usage.prompt_tokens == len(run_model.tokenizer.encode(p))
    t = r.model_extra["timings"]
    assert t["predicted_n"] == 24 and t["prompt_n"] + t["cache_n"] == r.usage.prompt_tokens
    assert (t["draft_n"] > 0) == (n_max > 0) and 0 <= t["draft_n_accepted"] <= t["draft_n"]
    chunks = list(client.completions.create(prompt=p, model="wgmtp-demo.gguf", max_tokens=24, temperature=0,
                                            stream=True, stream_options={"include_usage": True},
                                            extra_body={"speculative.n_max": n_max}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == want
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 24
    assert all("timings" in c.model_extra for c in chunks)


def test_chat_thinking_off_equals_run_path(client, run_model):
    msgs = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What does len() do?"}]
    prompt = chat_prompt(msgs, enable_thinking=False)
    want = run_text(run_model, prompt, 20)
    r = client.chat.completions.create(model="wgmtp-demo.gguf", messages=msgs, max_tokens=20, temperature=0,
                                       extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    m = r.choices[0].message
    assert m.content == want.lstrip() and m.role == "assistant"
    assert m.model_extra.get("reasoning_content") is None
    assert r.usage.prompt_tokens == len(run_model.tokenizer.encode(prompt))
    s = list(client.chat.completions.create(model="wgmtp-demo.gguf", messages=msgs, max_tokens=20, temperature=0,
                                            stream=True,
                                            extra_body={"chat_template_kwargs": {"enable_thinking": False}}))
    assert "".join(c.choices[0].delta.content or "" for c in s if c.choices) == want.lstrip()
    assert s[0].choices[0].delta.role == "assistant"


def test_chat_thinking_on_goes_to_reasoning_content(client, run_model):
    msgs = [{"role": "user", "content": "Explain the socket module."}]
    prompt = chat_prompt(msgs)
    assert prompt_opens_thought(prompt)
    want = run_text(run_model, prompt, 20)
    r = client.chat.completions.create(model="wgmtp-demo.gguf", messages=msgs, max_tokens=20, temperature=0)
    m = r.choices[0].message
    assert m.model_extra["reasoning_content"] == want.strip() and m.content == ""
    s = list(client.chat.completions.create(model="wgmtp-demo.gguf", messages=msgs, max_tokens=20, temperature=0,
                                            stream=True))
    deltas = [c.choices[0].delta for c in s if c.choices]
    assert "".join(d.model_extra.get("reasoning_content") or "" for d in deltas) == want.strip()
    assert not "".join(d.content or "" for d in deltas)
    # --reasoning-format none, per request: everything stays in content, as generated
    r = client.chat.completions.create(model="wgmtp-demo.gguf", messages=msgs, max_tokens=20, temperature=0,
                                       extra_body={"reasoning_format": "none"})
    assert r.choices[0].message.content == want


@pytest.mark.parametrize("opened,text", [
    (False, "<think>\nThe user asks about len().\n</think>\n\nIt counts items."),    # Qwen3: the model opens it
    (True, "\nThe user asks about len().\n</think>\n\nIt counts items."),           # the prompt opened it
    (False, "It counts items.</think> no thought was opened"),
])
def test_reasoning_split_across_token_boundaries(run_model, opened, text):
    """The generated text tokenized by the demo's real tokenizer (so <think> and </think> straddle
    tokens), pushed one token at a time through the server's pipeline, equals the split of the
    whole text, and the whole text when the split is off."""
    tok = run_model.tokenizer
    ids = tok.encode(text)
    assert len(ids) > 10
    ts, sp = TextStream(tok, []), ReasoningSplit(opened)
    r, c = [], []
    for t in ids:
        a, b = sp.push(ts.push([t]))
        r.append(a)
        c.append(b)
    a, b = sp.push(ts.finish())
    a2, b2 = sp.flush()
    reasoning, content = "".join(r) + a + a2, "".join(c) + b + b2
    if "</think>" in text and (opened or text.startswith("<think>")):
        assert reasoning == "The user asks about len()." and content == "It counts items."
    else:
        assert reasoning == "" and content == text


# ---- stop strings, logprobs

@pytest.mark.parametrize("stream", [False, True])
def test_stop_string_across_tokens(server, client, run_model, stream):
    p = PROMPTS[1]
    full = run_text(run_model, p, 30)
    ids = run_model.tokenizer.encode(full)
    # a stop string that starts inside one token and ends inside a later one
    cut = len(run_model.tokenizer.decode(ids[:6])) - 2
    stop = full[cut: cut + 6]
    assert stop not in full[:cut] and len(stop) == 6
    kw = dict(model="wgmtp-demo.gguf", prompt=p, max_tokens=30, temperature=0, stop=[stop, "zzzz-never"])
    if stream:
        cs = list(client.completions.create(stream=True, **kw))
        text, fin = "".join(c.choices[0].text for c in cs), cs[-1].choices[0].finish_reason
    else:
        r = client.completions.create(**kw)
        text, fin = r.choices[0].text, r.choices[0].finish_reason
    assert text == full[:cut] and fin == "stop"
    _wait_idle(server)


@pytest.mark.parametrize("n_max", [0, 3])
def test_logprobs_do_not_change_tokens(client, run_model, n_max):
    msgs = [{"role": "user", "content": "Describe the os module."}]
    kw = dict(model="wgmtp-demo.gguf", messages=msgs, max_tokens=16, temperature=0,
              extra_body={"chat_template_kwargs": {"enable_thinking": False}, "speculative.n_max": n_max})
    plain = client.chat.completions.create(**kw).choices[0].message.content
    r = client.chat.completions.create(logprobs=True, top_logprobs=3, **kw)
    ch = r.choices[0]
    assert ch.message.content == plain
    lp = ch.logprobs.content
    assert len(lp) == r.usage.completion_tokens
    assert "".join(e.token for e in lp).lstrip() == plain
    for e in lp:
        assert e.logprob <= 0 and len(e.top_logprobs) == 3
        assert e.top_logprobs[0].token == e.token and e.top_logprobs[0].logprob == e.logprob   # greedy: the argmax
    c = client.completions.create(model="wgmtp-demo.gguf", prompt=PROMPTS[2], max_tokens=12, temperature=0.7, seed=5,
                                  logprobs=2, extra_body={"speculative.n_max": n_max})
    c2 = client.completions.create(model="wgmtp-demo.gguf", prompt=PROMPTS[2], max_tokens=12, temperature=0.7,
                                   seed=5, extra_body={"speculative.n_max": n_max})
    assert c.choices[0].text == c2.choices[0].text        # sampled: more candidates read, same pick
    assert "".join(c.choices[0].logprobs.tokens) == c.choices[0].text


# ---- many clients at once: each equals the same request alone; metrics equal the timings' sums

def _mix(i: int) -> dict:
    p = PROMPTS[i % len(PROMPTS)] + (" " + "x" * (i % 3))
    kw: dict = dict(model="wgmtp-demo.gguf", max_tokens=8 + i % 4, stream=True, stream_options={"include_usage": True},
                    extra_body={"speculative.n_max": [0, 3, 1, 2][i % 4]})
    if i % 3:
        kw["temperature"] = 0.0
    else:
        kw.update(temperature=0.8, seed=1000 + i)
        kw["extra_body"]["top_k"] = 20
    if i % 2:
        kw["messages"] = [{"role": "user", "content": p}]
        kw["extra_body"]["chat_template_kwargs"] = {"enable_thinking": i % 4 == 1}
        if i % 5 == 0:
            kw.update(logprobs=True, top_logprobs=2)
    else:
        kw["prompt"] = p
        if i % 5 == 0:
            kw["logprobs"] = 2
    return kw


async def _one(ac, kw: dict) -> dict:
    kind = "chat" if "messages" in kw else "text"
    api = ac.chat.completions if kind == "chat" else ac.completions
    out = {"text": "", "reasoning": "", "lp": [], "timings": None, "finish": None}
    async for c in await api.create(**kw):
        if c.choices:
            ch = c.choices[0]
            if kind == "chat":
                out["text"] += ch.delta.content or ""
                out["reasoning"] += (ch.delta.model_extra or {}).get("reasoning_content") or ""
                if ch.logprobs:
                    out["lp"] += [(e.token, e.logprob) for e in ch.logprobs.content]
            else:
                out["text"] += ch.text
                if ch.logprobs:
                    out["lp"] += list(zip(ch.logprobs.tokens, ch.logprobs.token_logprobs))
            out["finish"] = ch.finish_reason or out["finish"]
        out["timings"] = c.model_extra["timings"]
    return out


def _metrics(base: str) -> dict[str, float]:
    r = httpx.get(base + "/metrics", headers=H())
    assert r.status_code == 200
    out = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            name, v = line.rsplit(" ", 1)
            out[name] = float(v)
    return out


N_CLIENTS = 32


def test_concurrent_clients_equal_alone_and_metrics(server):
    base, _ = server
    kws = [_mix(i) for i in range(N_CLIENTS)]

    async def together():
        ac = openai.AsyncOpenAI(base_url=base + "/v1", api_key=KEY, max_retries=0, timeout=300)
        return await asyncio.gather(*[_one(ac, kw) for kw in kws])

    m0 = _metrics(base)
    many = asyncio.run(together())
    m1 = _metrics(base)

    async def alone():
        ac = openai.AsyncOpenAI(base_url=base + "/v1", api_key=KEY, max_retries=0, timeout=300)
        return [await _one(ac, kw) for kw in kws]

    solo = asyncio.run(alone())
    for i, (a, b) in enumerate(zip(many, solo)):
        assert (a["text"], a["reasoning"], a["lp"], a["finish"]) == (b["text"], b["reasoning"], b["lp"], b["finish"]), i
        assert a["timings"]["predicted_n"] == b["timings"]["predicted_n"]
    assert any(r["lp"] for r in many) and any(r["reasoning"] for r in many) and any(r["text"] for r in many)

    def d(name: str) -> float:
        return m1.get(name, 0.0) - m0.get(name, 0.0)
    ts = [r["timings"] for r in many]
    assert d("llamacpp:prompt_tokens_total") == sum(t["prompt_n"] for t in ts)
    assert d("llamacpp:tokens_predicted_total") == sum(t["predicted_n"] for t in ts)
    assert d("llamacpp:spec_decode_num_draft_tokens_total") == sum(t["draft_n"] for t in ts) > 0
    assert d("llamacpp:spec_decode_num_accepted_tokens_total") == sum(t["draft_n_accepted"] for t in ts)
    assert d("llamacpp:spec_decode_num_drafts_total") == sum(t["draft_rounds"] for t in ts)
    for pos in range(3):
        name = f'llamacpp:spec_decode_num_accepted_tokens_per_pos_total{{position="{pos}"}}'
        assert d(name) == sum(t["draft_accepted_per_pos"][pos] for t in ts if len(t["draft_accepted_per_pos"]) > pos)
    assert m1["llamacpp:requests_processing"] == 0 and "llamacpp:requests_deferred" in m1


# ---- disconnects, the queue bound

def _wait_idle(server, timeout: float = 5.0) -> None:
    base, _ = server
    t0 = time.time()
    while any(s["is_processing"] for s in httpx.get(base + "/slots", headers=H()).json()):
        assert time.time() - t0 < timeout, "a slot stayed busy"
        time.sleep(0.02)


def _native_tokens(base: str, body: dict) -> list[int]:
    r = httpx.post(base + "/completion", headers=H(), json=dict(body, return_tokens=True), timeout=120)
    assert r.status_code == 200, r.text
    return r.json()["tokens"]


def test_disconnect_frees_slot_and_queue_bound(server):
    base, b = server
    _wait_idle(server)
    keep = {"prompt": PROMPTS[3], "n_predict": 40, "temperature": 0, "speculative.n_max": 2}
    want = _native_tokens(base, keep)
    long = {"prompt": PROMPTS[4], "n_predict": 400, "temperature": 0, "stream": True}
    old = b.cfg.max_queue
    b.cfg.max_queue = 0
    try:
        with httpx.Client(timeout=120, headers=H()) as hc:
            streams = [hc.stream("POST", base + "/completion", json=long) for _ in range(3)]
            its = []          # hold the line iterators: a collected one closes its connection
            for s in streams:
                its.append(s.__enter__().iter_lines())
                next(x for x in its[-1] if x.startswith("data:"))      # its first token: it runs
            kept = hc.stream("POST", base + "/completion", json=dict(keep, stream=True, return_tokens=True))
            kresp = kept.__enter__()
            kit = kresp.iter_lines()
            first = next(x for x in kit if x.startswith("data:"))
            r = httpx.post(base + "/v1/completions", headers=H(), json={"prompt": "x", "max_tokens": 2})
            assert r.status_code == 503 and "server busy" in r.json()["error"]["message"]
            assert r.json()["error"]["type"] == "unavailable_error"
            for s in streams:           # the clients go away mid-stream
                s.__exit__(None, None, None)
            t0 = time.time()
            while sum(s["is_processing"] for s in hc.get(base + "/slots").json()) > 1:
                assert time.time() - t0 < 3, "the disconnected clients' slots stayed busy"
                time.sleep(0.01)
            import json as _json
            toks = []
            for x in [first] + [y for y in kit if y.startswith("data:")]:
                toks += _json.loads(x[5:]).get("tokens", [])
            kept.__exit__(None, None, None)
    finally:
        b.cfg.max_queue = old
    assert toks == want          # the stream that stayed was not disturbed by the others leaving
    _wait_idle(server)
    assert httpx.post(base + "/v1/completions", headers=H(), json={"prompt": "x", "max_tokens": 2}).status_code == 200


# ---- malformed and hostile requests

HOSTILE = [
    ("/v1/completions", b"{not json", 400, "malformed JSON"),
    ("/v1/completions", b'{"prompt": "\xff\xfe"}', 400, "UTF-8"),
    ("/v1/completions", b"[1, 2]", 400, "JSON object"),
    ("/v1/completions", b'{"prompt": "x", "max_tokens": "many"}', 400, "max_tokens"),
    ("/v1/completions", b'{"prompt": "x", "max_tokens": 1000000000000}', 400, "max_tokens"),
    ("/v1/completions", b'{"prompt": "x", "max_tokens": -5}', 400, "max_tokens"),
    ("/v1/completions", b'{"prompt": "x", "temperature": -1}', 400, "temperature"),
    ("/v1/completions", b'{"prompt": "x", "top_p": 7}', 400, "top_p"),
    ("/v1/completions", b'{"prompt": "x", "n": 3}', 400, "n=3"),
    ("/v1/completions", b'{"prompt": "x", "model": "gpt-4o"}', 400, "not served"),
    ("/v1/completions", b'{"prompt": "x", "speculative.n_max": 9}', 400, "n_max"),
    ("/v1/completions", b'{"prompt": [1, 2, 999999]}', 400, "token ids"),
    ("/v1/completions", b'{"prompt": ""}', 400, "empty prompt"),
    ("/v1/completions", b'{"prompt": "x", "stop": [""]}', 400, "stop"),
    ("/v1/completions", ('{"prompt": [%s]}' % ",".join(["7"] * 600)).encode(), 400, "context"),
    ("/v1/chat/completions", b'{"messages": "hi"}', 400, "messages"),
    ("/v1/chat/completions", b'{"messages": []}', 400, "messages"),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "x"}], "chat_template_kwargs": 5}', 400,
     "chat_template_kwargs"),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": 5}]}', 400, "content"),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "x"}], "top_logprobs": 50, "logprobs": true}',
     400, "top_logprobs"),
    ("/completion", b'{"prompt": "x", "n_predict": "all"}', 400, "n_predict"),
    ("/detokenize", b'{"tokens": [-1]}', 400, "vocabulary"),
    ("/tokenize", b'{"content": 5}', 400, "content"),
    ("/v1/completions", b'{"prompt": "' + b"a" * (1 << 20) + b'"}', 413, "limit"),
]


@pytest.mark.parametrize("path,body,status,word", HOSTILE, ids=[f"{h[0]}-{i}" for i, h in enumerate(HOSTILE)])
def test_hostile_requests_get_openai_errors(server, path, body, status, word):
    base, _ = server
    r = httpx.post(base + path, content=body, headers=H({"Content-Type": "application/json"}), timeout=60)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "code"} and err["code"] == status
    assert word.lower() in err["message"].lower(), err["message"]
    ok = httpx.post(base + "/v1/completions", headers=H(), json={"prompt": "The", "max_tokens": 2}, timeout=60)
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 2


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}])
def test_api_key_required_everywhere_but_health(server, headers):
    base, _ = server
    for method, path in [("GET", "/v1/models"), ("GET", "/props"), ("GET", "/slots"), ("GET", "/metrics"),
                         ("POST", "/v1/chat/completions"), ("POST", "/v1/completions"), ("POST", "/completion"),
                         ("POST", "/tokenize")]:
        r = httpx.request(method, base + path, headers=headers, json={"prompt": "x"})
        assert r.status_code == 401, (path, r.text)
        assert r.json()["error"]["type"] == "authentication_error"
    assert httpx.get(base + "/health").json() == {"status": "ok"}
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0).models.list()


def test_openai_client_sees_bad_request(client):
    with pytest.raises(openai.BadRequestError, match="not served here"):
        client.completions.create(model="gpt-4o", prompt="x", max_tokens=2)
    assert client.completions.create(model="wgmtp-demo.gguf", prompt="x", max_tokens=2).usage.completion_tokens == 2


# ---- llama-server's native endpoints

def test_native_endpoints(server, client, run_model):
    base, _ = server
    assert [m.id for m in client.models.list().data] == ["wgmtp-demo.gguf"]
    props = httpx.get(base + "/props", headers=H()).json()
    assert props["total_slots"] == 4 and props["chat_template"] == QWEN_TEMPLATE
    assert props["speculative"] == {"type": "draft-mtp", "n_max": 3, "p_min": 0.0}
    slots = httpx.get(base + "/slots", headers=H()).json()
    assert [s["id"] for s in slots] == [0, 1, 2, 3] and all(s["n_ctx"] == N_CTX for s in slots)
    tok = run_model.tokenizer
    r = httpx.post(base + "/tokenize", headers=H(), json={"content": "hello world", "with_pieces": True}).json()
    assert [t["id"] for t in r["tokens"]] == tok.encode("hello world")
    assert "".join(t["piece"] for t in r["tokens"]) == "hello world"
    ids = tok.encode(PROMPTS[0])
    assert httpx.post(base + "/detokenize", headers=H(), json={"tokens": ids}).json()["content"] == PROMPTS[0]
    msgs = [{"role": "user", "content": "hi"}]
    at = httpx.post(base + "/apply-template", headers=H(),
                    json={"messages": msgs, "chat_template_kwargs": {"enable_thinking": False}}).json()
    assert at["prompt"] == chat_prompt(msgs, enable_thinking=False)
    want = list(run_model.generate_ids(PROMPTS[5], max_tokens=12, temperature=0.0))
    r = httpx.post(base + "/completion", headers=H(), json={"prompt": PROMPTS[5], "n_predict": 12, "temperature": 0,
                                                            "return_tokens": True, "cache_prompt": True}).json()
    assert r["tokens"] == want and r["content"] == tok.decode(want, skip_special=True)
    assert r["stop"] is True and r["stop_type"] == "limit" and r["timings"]["predicted_n"] == 12
    # token-id prompt; a second identical prompt + more reuses the slot's history (cache_n)
    more = tok.encode(PROMPTS[5]) + want + [11]
    r2 = httpx.post(base + "/completion", headers=H(), json={"prompt": more, "n_predict": 3, "temperature": 0}).json()
    assert r2["timings"]["cache_n"] > 0 and r2["tokens_cached"] == r2["timings"]["cache_n"]


def test_health_is_503_while_loading():
    from starlette.testclient import TestClient
    gate = threading.Event()

    class Slow(Backend):
        def load(self) -> None:
            gate.wait(30)
            super().load()

    cfg = ServerConfig(n_ctx=64, n_parallel=1)
    app = create_app(cfg, Slow(cfg))
    with TestClient(app) as tc:
        r = tc.get("/health")
        assert r.status_code == 503 and r.json()["error"]["message"] == "Loading model"
        assert tc.get("/v1/models").status_code == 503
        gate.set()
        app.state.backend.wait_loaded(60)
        assert tc.get("/health").json() == {"status": "ok"}
        assert tc.get("/v1/models").status_code == 200


def test_chat_template_render_time_limit():
    t0 = time.time()
    with pytest.raises(ChatTemplateError, match="took over"):
        render("{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}", [],
               time_limit=0.2)
    assert time.time() - t0 < 2


@pytest.mark.parametrize("cmd", ["run", "bench", "serve"])
def test_spec_type_mtp_is_the_older_spelling(cmd):
    from wgmtp.cli import build_parser
    ap = build_parser()
    assert ap.parse_args([cmd, "--spec-type", "mtp"]).spec_type == "draft-mtp"
    assert ap.parse_args([cmd, "--spec-type", "draft-mtp"]).spec_type == "draft-mtp"
    with pytest.raises(SystemExit):
        ap.parse_args([cmd, "--spec-type", "eagle"])


def test_serve_config_from_flags():
    from wgmtp.cli import build_parser
    from wgmtp.cli.serve import config_from_args
    from wgmtp.errors import WgmtpError
    a = build_parser().parse_args(["serve", "-np", "2", "--spec-type", "mtp", "--chat-template-kwargs",
                                   '{"enable_thinking": false}', "--api-key", "k", "--metrics", "--alias", "demo"])
    c = config_from_args(a)
    assert (c.host, c.port, c.n_parallel, c.spec_type, c.api_key, c.metrics, c.alias) == \
        ("127.0.0.1", 8080, 2, "draft-mtp", "k", True, "demo")
    assert c.chat_template_kwargs == {"enable_thinking": False}
    with pytest.raises(WgmtpError, match="not JSON"):
        config_from_args(build_parser().parse_args(["serve", "--chat-template-kwargs", "{bad"]))
